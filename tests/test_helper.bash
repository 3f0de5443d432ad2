# Shared by every tests/test-*.bats: `load test_helper`.
#
# Each test gets, from blkgate_setup (run by the default setup):
#   $tmp       a private directory for images and logs ($BATS_TEST_TMPDIR)
#   $sock      a path for the gateway's socket, short enough for AF_UNIX
#   $pidfile   the gateway's pidfile
#   $gwlog     where the gateway's stderr goes
# and blkgate_teardown (run by the default teardown) stops every gateway, daemon and guest the
# test started.  A test file that needs its own setup or teardown calls these from it.
#
# Environment:
#   BLKGATE            the program under test (default: src/blkgate of the build tree,
#                      $abs_top_builddir if set, else the source tree)
#   BLKGATE_IO         the test client, blkgate-io (default: src/blkgate-io beside it)
#   BLKGATE_GUEST_DIR  where the test guest is built and cached (~/.cache/blkgate-guest)
#   BLKGATE_TEST_REQUIRE_ALL=1
#                      a missing dependency or plugin fails the test instead of skipping it
#                      (for CI, where everything must be there)

bats_require_minimum_version 1.5.0

top_srcdir=$(cd "$BATS_TEST_DIRNAME/.." && pwd)
if [ -n "${abs_top_builddir:-}" ]; then
  top_builddir=$abs_top_builddir
elif [ -n "${BLKGATE:-}" ]; then
  top_builddir=$(cd "$(dirname "$BLKGATE")/.." && pwd)
else
  top_builddir=$top_srcdir
fi
: "${BLKGATE:=$top_builddir/src/blkgate}"
: "${BLKGATE_IO:=$top_builddir/src/blkgate-io}"
: "${BLKGATE_GUEST_DIR:=$HOME/.cache/blkgate-guest}"
export BLKGATE BLKGATE_GUEST_DIR
guest_scripts=$BATS_TEST_DIRNAME/guest
vu_probe=$BATS_TEST_DIRNAME/vhost-user-probe.py

# bio ARGS...: blkgate-io with a timeout ($bio_timeout seconds, 20 unless the test file sets
# it), so that a hung server or a request the plugin holds for ever fails the test.
bio_timeout=20
bio() {
  "$BLKGATE_IO" -t "$bio_timeout" "$@"
}

# clean_output: the last `run` printed no sanitizer report (an ASan build prints to stderr,
# which `run` captures with stdout).
clean_output() {
  [[ "$output" != *Sanitizer* && "$output" != *"runtime error"* ]]
}

# ---------------------------------------------------------------------------------------------
# Per-test directory, setup and teardown

setup() { blkgate_setup; }
teardown() { blkgate_teardown; }

blkgate_setup() {
  tmp=$BATS_TEST_TMPDIR
  own_sockdir=
  sockdir=$tmp
  # AF_UNIX paths hold at most 107 bytes; leave room for the names the tests use.
  if [ ${#sockdir} -gt 80 ]; then
    own_sockdir=$(mktemp -d /tmp/bg.XXXXXX)
    sockdir=$own_sockdir
  fi
  sock=$sockdir/gw.sock
  pidfile=$tmp/blkgate.pid
  gwlog=$tmp/blkgate.log
  gateway_pid=
  mkdir -p "$tmp/.pids"
}

blkgate_teardown() {
  local f pid rc=0

  # A failed test shows the output of its last `run`.
  if [ -z "${BATS_TEST_COMPLETED:-}" ] && [ -z "${BATS_TEST_SKIPPED:-}" ] && [ -n "${output:-}" ]; then
    printf -- '--- output of the last command (status %s) ---\n%s\n' "${status:-}" "$output" >&2
  fi
  if [ -z "${BATS_TEST_COMPLETED:-}" ] && [ -z "${BATS_TEST_SKIPPED:-}" ] && [ -n "${stderr:-}" ]; then
    printf -- '--- its stderr ---\n%s\n' "$stderr" >&2
  fi

  # Guests first: they hold connections to the servers.
  for f in "$tmp"/.pids/guest.*; do
    [ -e "$f" ] || continue
    pid=${f##*.}
    terminate "$pid" 10 || true
    rm -f "$f"
  done
  for f in "$tmp"/.pids/daemon.*; do
    [ -e "$f" ] || continue
    terminate "$(cat "$f")" 10 || true
    rm -f "$f"
  done
  for f in "$tmp"/.pids/gateway.*; do
    [ -e "$f" ] || continue
    pid=${f##*.}
    if ! alive "$pid"; then
      echo "blkgate (pid $pid) exited before the end of the test" >&2
      rm -f "$f"
      rc=1
    elif ! stop_gateway "$pid"; then
      rc=1
    fi
  done
  if [ -f "$gwlog" ] && grep -q -E 'ERROR: (Address|Leak)Sanitizer|runtime error:' "$gwlog"; then
    echo "the sanitizers reported errors in $gwlog" >&2
    rc=1
  fi
  if [ $rc -ne 0 ] && [ -s "$gwlog" ]; then
    echo "--- $gwlog (last 30 lines) ---" >&2
    tail -n 30 "$gwlog" >&2
  fi
  # A slowfs mount (start_slowfs) goes once its daemon is stopped.
  if [ -n "${mnt:-}" ] && mountpoint -q "$mnt" 2>/dev/null; then
    fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"
  fi
  [ -z "$own_sockdir" ] || rm -rf "$own_sockdir"
  return $rc
}

# ---------------------------------------------------------------------------------------------
# Processes

# alive PID: true while any thread of PID runs (a zombie counts as exited).
alive() {
  local t state
  # Every thread: after SIGKILL the main thread can be a zombie while others still exit,
  # and the process's files (its listening socket) close only with the last one.
  for t in /proc/"$1"/task/*; do
    state=$(sed 's/.*) //' "$t/stat" 2>/dev/null | cut -d' ' -f1) || continue
    [ -n "$state" ] && [ "$state" != Z ] && return 0
  done
  return 1
}

# wait_gone PID SECONDS: waits for PID to exit; false if it still runs after SECONDS.
wait_gone() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    alive "$1" || { wait "$1" 2>/dev/null || true; return 0; }
    sleep 0.1
  done
  ! alive "$1"
}

# terminate PID SECONDS: SIGTERM, then SIGKILL after SECONDS.  False if SIGKILL was needed.
terminate() {
  [ -n "$1" ] || return 0
  kill -TERM "$1" 2>/dev/null || return 0
  wait_gone "$1" "$2" && return 0
  kill -KILL "$1" 2>/dev/null
  wait_gone "$1" 5
  return 1
}

# wait_for TIMEOUT COMMAND...: runs COMMAND every 0.1 s until it succeeds; false on timeout.
wait_for() {
  local t=$1 i
  shift
  for ((i = 0; i < t * 10; i++)); do
    "$@" && return 0
    sleep 0.1
  done
  return 1
}

# fd_count [PID]: how many fds PID (the gateway by default) holds now.
fd_count() {
  ls "/proc/${1:-$gateway_pid}/fd" | wc -l
}

# fds_back PID N [SECONDS]: waits (10 s by default) until PID holds at most N fds,
# counted afresh each round; on timeout lists them and fails.
fds_back() {
  wait_for "${3:-10}" fds_at_most "$1" "$2" && return 0
  echo "pid $1 holds $(fd_count "$1") fds after ${3:-10} s, $2 before:" >&2
  ls -l "/proc/$1/fd" >&2
  return 1
}

fds_at_most() {
  [ "$(fd_count "$1")" -le "$2" ]
}

# wait_for_socket PATH [SECONDS]
wait_for_socket() {
  wait_for "${2:-30}" test -S "$1" || { echo "no socket at $1 after ${2:-30} s" >&2; return 1; }
}

# wait_for_log FILE REGEX [SECONDS]: waits until a line of FILE matches the extended REGEX.
wait_for_log() {
  wait_for "${3:-60}" grep -q -E "$2" "$1" 2>/dev/null ||
    { echo "no line matching /$2/ in $1 after ${3:-60} s" >&2; return 1; }
}

# listens PID PATH: PID holds the listening AF_UNIX socket bound to PATH.
listens() {
  local inode fd
  inode=$(awk -v p="$2" '$NF == p && $4 == "00010000" { print $7 }' /proc/net/unix | head -n 1)
  [ -n "$inode" ] || return 1
  for fd in /proc/"$1"/fd/*; do
    [ "$(readlink "$fd")" = "socket:[$inode]" ] && return 0
  done
  return 1
}

# processes_with STRING: the pids of the processes whose command line contains STRING.
processes_with() {
  local f args
  for f in /proc/[0-9]*/cmdline; do
    mapfile -d '' args < "$f" 2>/dev/null || continue
    [[ " ${args[*]} " == *"$1"* ]] && { f=${f#/proc/}; echo "${f%/cmdline}"; }
  done
  return 0
}

# start_gateway [ARGS...]: runs "$BLKGATE -P $pidfile -s $sock ARGS...", waits up to 30 s for
# the pidfile, and sets $gateway_pid.  Without -f the gateway daemonizes; with -f it is run in
# the background.  Its stderr goes to $gwlog.  To run a second gateway, override the paths:
#   sock=$sockdir/b.sock pidfile=$tmp/b.pid start_gateway ...
start_gateway() {
  local a i fg='' child='' status

  requires_blkgate
  for a; do
    case $a in -f|--foreground) fg=1 ;; esac
  done
  rm -f "$pidfile"
  echo "# blkgate -P $pidfile -s $sock $*" >> "$gwlog"
  if [ -n "$fg" ]; then
    "$BLKGATE" -P "$pidfile" -s "$sock" "$@" </dev/null >>"$gwlog" 2>&1 3>&- &
    child=$!
  else
    status=0
    "$BLKGATE" -P "$pidfile" -s "$sock" "$@" </dev/null >>"$gwlog" 2>&1 3>&- || status=$?
    if [ $status -ne 0 ]; then
      echo "blkgate exited with status $status:" >&2
      cat "$gwlog" >&2
      return 1
    fi
  fi
  for ((i = 0; i < 300; i++)); do
    grep -q -x '[0-9][0-9]*' "$pidfile" 2>/dev/null && break
    if [ -n "$child" ] && ! alive "$child"; then
      status=0
      wait "$child" || status=$?
      echo "blkgate exited with status $status:" >&2
      cat "$gwlog" >&2
      return 1
    fi
    sleep 0.1
  done
  if [ $i -eq 300 ]; then
    echo "blkgate wrote no pidfile ($pidfile) within 30 s:" >&2
    cat "$gwlog" >&2
    [ -z "$child" ] || terminate "$child" 5 || true
    return 1
  fi
  gateway_pid=$(cat "$pidfile")
  touch "$tmp/.pids/gateway.$gateway_pid"
}

# stop_gateway [PID]: SIGTERM; fails if the gateway is still there 10 s later (it is then
# killed with SIGKILL).
stop_gateway() {
  local pid=${1:-$gateway_pid}
  [ -n "$pid" ] || { echo "stop_gateway: no gateway" >&2; return 1; }
  rm -f "$tmp/.pids/gateway.$pid"
  if ! terminate "$pid" 10; then
    echo "blkgate (pid $pid) did not exit within 10 s of SIGTERM; killed it" >&2
    return 1
  fi
}

# kill_gateway SIGNAL [PID]: for tests that kill the gateway on purpose.
kill_gateway() {
  local pid=${2:-$gateway_pid}
  rm -f "$tmp/.pids/gateway.$pid"
  kill -"$1" "$pid"
  wait_gone "$pid" 10
}

# start_daemon NAME COMMAND...: runs another server (qemu-storage-daemon, nbdkit, ...) in the
# background, output in $tmp/NAME.log, pid in $tmp/.pids/daemon.NAME; stopped by teardown or
# stop_daemon NAME.  COMMAND must not daemonize.
start_daemon() {
  local name=$1
  shift
  "$@" </dev/null >"$tmp/$name.log" 2>&1 3>&- &
  echo $! > "$tmp/.pids/daemon.$name"
}

stop_daemon() {
  local f=$tmp/.pids/daemon.$1
  [ -e "$f" ] || return 0
  terminate "$(cat "$f")" 10 || true
  rm -f "$f"
}

# ---------------------------------------------------------------------------------------------
# Dependencies

# missing MESSAGE: skips the test, or fails it under BLKGATE_TEST_REQUIRE_ALL=1.
missing() {
  if [ "${BLKGATE_TEST_REQUIRE_ALL:-0}" = 1 ]; then
    echo "$1 (and BLKGATE_TEST_REQUIRE_ALL=1)" >&2
    return 1
  fi
  skip "$1"
}

# requires COMMAND...: each COMMAND must be installed.
requires() {
  local c
  for c; do
    command -v "$c" >/dev/null 2>&1 || { missing "$c is not installed" || return 1; }
  done
}

# requires_blkgate: the program under test must exist; a missing one is a failure.
requires_blkgate() {
  [ -x "$BLKGATE" ] && return 0
  echo "$BLKGATE does not exist: build it first (make), or set BLKGATE" >&2
  return 1
}

# requires_plugin NAME: the plugin must be built.  Plugins have optional dependencies
# (liburing for file, ...), so one that was not built skips its tests.
requires_plugin() {
  local dir=$top_builddir/plugins/$1
  requires_blkgate
  if [ -d "$dir" ] && [ -n "$(find "$dir" -name '*.so' 2>/dev/null | head -n 1)" ]; then
    return 0
  fi
  "$BLKGATE" --dump-plugin "$1" >/dev/null 2>&1 || missing "the $1 plugin is not built"
}

# requires_punch_hole DIR: the file system of DIR can punch holes (for discard tests).
requires_punch_hole() {
  local f
  f=$(mktemp "$1/.punch.XXXXXX")
  dd if=/dev/zero of="$f" bs=64k count=4 status=none
  fallocate -p -o 64k -l 64k "$f" 2>/dev/null ||
    { rm -f "$f"; missing "$1 cannot punch holes" || return 1; }
  rm -f "$f"
}

# start_slowfs SIZE DELAY: $mnt/disk, a sparse SIZE backing file behind slowfs (tests/tools/
# slowfs.c), a FUSE file whose every request sleeps (DELAY: a random 0..N us, or =N for exactly
# N us) on one of many threads, so that requests complete out of order.  Unmounted by teardown.
start_slowfs() {
  local slowfs=$top_builddir/tests/slowfs
  [ -x "$slowfs" ] || missing "tests/slowfs is not built (libfuse3 missing)" || return 1
  requires fusermount3
  [ -e /dev/fuse ] || missing "/dev/fuse is not available" || return 1
  mnt=$tmp/mnt
  truncate -s "$1" "$tmp/backing.img"
  mkdir -p "$mnt"
  start_daemon slowfs "$slowfs" "$tmp/backing.img" "$mnt" "$2"
  wait_for 10 test -e "$mnt/disk"
}

# ---------------------------------------------------------------------------------------------
# NBD servers (for the nbd plugin).  Each listens on $sockdir/NAME.nbd, is a start_daemon
# daemon called NAME (log in $tmp/NAME.log) and can be restarted on the same socket.

# start_nbdkit NAME ARGS...: runs "nbdkit -f -U $sockdir/NAME.nbd ARGS..." and waits up to
# 30 s until it listens.  A socket left by a killed nbdkit is removed first (nbdkit will not
# bind over it).
start_nbdkit() {
  local name=$1 path=$sockdir/$1.nbd
  shift
  requires nbdkit
  rm -f "$path"
  start_daemon "$name" nbdkit -f -U "$path" "$@"
  nbd_listening "$name" "$path"
}

# start_qemu_nbd NAME ARGS...: runs "qemu-nbd --persistent --shared=8 -k $sockdir/NAME.nbd
# ARGS..." in the foreground and waits up to 30 s until it listens.  --persistent: it does
# not exit when its last client goes; --shared=8: up to 8 clients at once (qemu-nbd's
# default is 1; -e 1 among ARGS restores it).
start_qemu_nbd() {
  local name=$1 path=$sockdir/$1.nbd
  shift
  requires qemu-nbd
  rm -f "$path"
  start_daemon "$name" qemu-nbd --persistent --shared=8 -k "$path" "$@"
  nbd_listening "$name" "$path"
}

# nbd_listening NAME PATH: waits until daemon NAME listens on PATH; if it exits first,
# prints its log and fails.
nbd_listening() {
  local pid i
  pid=$(cat "$tmp/.pids/daemon.$1")
  for ((i = 0; i < 300; i++)); do
    listens "$pid" "$2" && return 0
    alive "$pid" || break
    sleep 0.1
  done
  echo "$1 (pid $pid) is not listening on $2:" >&2
  cat "$tmp/$1.log" >&2
  return 1
}

# nbd_uri NAME: the NBD URI of the server NAME.
nbd_uri() {
  echo "nbd+unix:///?socket=$sockdir/$1.nbd"
}

# kill_daemon NAME SIGNAL: sends SIGNAL to daemon NAME (a start_daemon process) and waits up
# to 10 s until it is gone; then it is no longer teardown's to stop.
kill_daemon() {
  local f=$tmp/.pids/daemon.$1 pid
  [ -e "$f" ] || { echo "kill_daemon: no daemon $1" >&2; return 1; }
  pid=$(cat "$f")
  kill -"$2" "$pid"
  wait_gone "$pid" 10 || { echo "$1 (pid $pid) still runs 10 s after signal $2" >&2; return 1; }
  rm -f "$f"
}

# ---------------------------------------------------------------------------------------------
# Guests

# guest_run [RUN-GUEST OPTIONS] SOCKET... COMMAND: boots the test guest against the sockets,
# runs COMMAND in it, prints its output and returns its exit status (see guest/run-guest.sh;
# the console log is kept in $tmp/guest.*.log).  Call guest_ready first (in setup): under
# `run`, a skip would not skip the test.
guest_run() {
  local log
  guest_ready || return 125
  log=$(mktemp "$tmp/guest.XXXXXX.log")
  "$guest_scripts/run-guest.sh" -g "$BLKGATE_GUEST_DIR" -l "$log" "$@" 3>&-
}

# guest_start NAME [RUN-GUEST OPTIONS] SOCKET... COMMAND: the same in the background.  The
# console log is $tmp/NAME.log (wait_for_log on it to follow the command); guest_wait NAME
# returns the command's status and leaves its output in $tmp/NAME.out.
guest_start() {
  local name=$1 pid
  shift
  guest_ready
  "$guest_scripts/run-guest.sh" -g "$BLKGATE_GUEST_DIR" -l "$tmp/$name.log" "$@" \
    </dev/null >"$tmp/$name.out" 2>&1 3>&- &
  pid=$!
  echo "$pid" > "$tmp/$name.pid"
  touch "$tmp/.pids/guest.$pid"
}

guest_wait() {
  local pid status=0
  pid=$(cat "$tmp/$1.pid")
  wait "$pid" || status=$?
  rm -f "$tmp/.pids/guest.$pid"
  return $status
}

# guest_ready: QEMU is installed (else the test is skipped) and the guest is built (checked
# once per bats run; build-guest.sh does nothing when its cache is current).
guest_ready() {
  local mark=$BATS_RUN_TMPDIR/guest-ready
  requires qemu-system-x86_64
  [ -e "$mark" ] && return 0
  "$guest_scripts/build-guest.sh" "$BLKGATE_GUEST_DIR" 3>&- ||
    { echo "could not build the test guest in $BLKGATE_GUEST_DIR" >&2; return 1; }
  touch "$mark"
}

# ---------------------------------------------------------------------------------------------
# Data

# sha256_range FILE OFFSET LENGTH: the SHA-256 of LENGTH bytes of FILE at OFFSET.
sha256_range() {
  dd if="$1" iflag=skip_bytes,count_bytes skip="$2" count="$3" bs=1M status=none |
    sha256sum | cut -d' ' -f1
}

# sha256_zeros LENGTH: the SHA-256 of LENGTH zero bytes.
sha256_zeros() {
  head -c "$1" /dev/zero | sha256sum | cut -d' ' -f1
}

# random_at FILE OFFSET LENGTH: writes LENGTH random bytes into FILE at OFFSET.
random_at() {
  head -c "$3" /dev/urandom |
    dd of="$1" oflag=seek_bytes seek="$2" bs=1M conv=notrunc iflag=fullblock status=none
}

# allocated_bytes FILE: the space FILE occupies on disk.
allocated_bytes() {
  echo $(( $(stat -c '%b * %B' "$1") ))
}

# ---------------------------------------------------------------------------------------------
# Restarts under a writing guest (test-restart-guest.bats, test-guest-packed.bats)

# The guest writes with fio at iodepth 32 and verifies everything it wrote (crc32c in every
# block), in passes with a new seed each, so that it is still writing when the last restart
# comes however fast the machine is (one pass takes a couple of seconds here; a restart
# needs QEMU's reconnect, 1 s); dmesg must show no I/O error.
guest_fio_passes='s=0; for pass in 1 2 3 4 5 6 7 8 9 10 11 12; do
  fio --name=w --filename=/dev/vda --rw=randwrite --bs=4k --iodepth=32 --randseed=$pass \
    --ioengine=libaio --direct=1 --size=16M --verify=crc32c --verify_fatal=1 --do_verify=1 \
    > fio.out 2>&1 || { s=$?; break; }; done;
  tail -n 3 fio.out; echo "passes=$pass fio=$s";
  if dmesg | grep -i -E "I/O error|not a head|blk_update_request|id [0-9]+ is not"; then echo dmesg=bad; fi;
  [ $s -eq 0 ]'

# restart_rounds N HOW GATEWAY-ARGS...: N times, once the guest g has connected to the
# current gateway and had a moment to fill its queue, stop the gateway HOW (kill: SIGKILL;
# term: SIGTERM) and start a new one with GATEWAY-ARGS.  The restarts come while the guest
# writes, not by the clock: a guest that is done before a round fails it.
restart_rounds() {
  local n=$1 how=$2 round
  shift 2
  for ((round = 1; round <= n; round++)); do
    wait_for 60 connected_at_least "$round" ||
      { echo "round $round: the guest did not connect to gateway $round" >&2; return 1; }
    kill -0 "$(cat "$tmp/g.pid")" ||
      { echo "round $round: the guest has finished already" >&2; return 1; }
    sleep "0.$((RANDOM % 9 + 1))"
    if [ "$how" = kill ]; then
      kill_gateway KILL
    else
      stop_gateway
    fi
    start_gateway "$@"
  done
}

connected_at_least() {
  [ "$(grep -c "front-end connected" "$gwlog")" -ge "$1" ]
}

# guest_fio_passed: the guest g finished $guest_fio_passes without an error.  Not under run:
# the guest is a child of this shell.
guest_fio_passed() {
  local status=0
  guest_wait g || status=$?
  output=$(cat "$tmp/g.out")
  echo "$output"
  [ "$status" -eq 0 ]
  [[ "$output" == *"fio=0"* ]]
  [[ "$output" != *"dmesg=bad"* ]]
}
