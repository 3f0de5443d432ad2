#!/usr/bin/env bats
# The command line: informational options, argument errors, the pidfile and the socket,
# captive mode (--run), --fd, SIGTERM, and refusing a second front-end.

load test_helper

setup() {
  blkgate_setup
  requires_blkgate
}

# expect_bad_args ARGS...: blkgate -P $pidfile -s $sock ARGS... exits with status 1 and an
# error message on stderr, before listening or writing the pidfile.
expect_bad_args() {
  run -1 --separate-stderr "$BLKGATE" -P "$pidfile" -s "$sock" "$@"
  if [ -s "$pidfile" ]; then
    touch "$tmp/.pids/gateway.$(cat "$pidfile")"
    echo "blkgate wrote a pidfile despite the bad arguments" >&2
    return 1
  fi
  [ -n "$stderr" ]
  [ ! -e "$sock" ]
}

# dump_plugin NAME: --dump-plugin prints KEY=VALUE lines, among them name=NAME.
dump_plugin() {
  requires_plugin "$1"
  run -0 --separate-stderr "$BLKGATE" --dump-plugin "$1"
  grep -q -x "name=$1" <<< "$output"
  [ -z "$(grep -v -E '^[A-Za-z0-9_.-]+=' <<< "$output")" ]
}

# ---------------------------------------------------------------------------------------------
# Informational options

@test "--help prints a usage message naming the options and exits 0" {
  run -0 "$BLKGATE" --help
  [[ $output == *[Uu]sage* ]]
  [[ $output == *PLUGIN* ]]
  [[ $output == *--socket* ]]
  [[ $output == *--print-capabilities* ]]
}

@test "-V and --version print the version and exit 0" {
  run -0 "$BLKGATE" -V
  [[ ${lines[0]} =~ ^blkgate\ [0-9]+\.[0-9]+\.[0-9]+ ]]
  if [ -f "$top_builddir/config.h" ]; then
    version=$(sed -n 's/^#define PACKAGE_VERSION "\(.*\)"$/\1/p' "$top_builddir/config.h")
    [[ ${lines[0]} == "blkgate $version"* ]]
  fi
  first=${lines[0]}
  run -0 "$BLKGATE" --version
  [ "${lines[0]}" = "$first" ]
}

@test "--print-capabilities prints JSON with \"type\": \"block\"" {
  run -0 --separate-stderr "$BLKGATE" --print-capabilities
  if command -v jq >/dev/null; then
    jq -e '.type == "block"' <<< "$output"
    jq -e '(.features // []) | type == "array"' <<< "$output"
  else
    requires python3
    python3 -c 'import json, sys; c = json.load(sys.stdin); sys.exit(c.get("type") != "block")' \
      <<< "$output"
  fi
}

@test "--dump-plugin file" {
  dump_plugin file
}

@test "--dump-plugin memory" {
  dump_plugin memory
}

@test "--dump-plugin null" {
  dump_plugin null
}

# ---------------------------------------------------------------------------------------------
# Argument errors: exit status 1, a message on stderr naming the problem, nothing listening

@test "an unknown option is an error" {
  requires_plugin memory
  expect_bad_args --no-such-option memory size=16M
  [[ $stderr == *no-such-option* ]]
}

@test "a missing plugin name is an error" {
  expect_bad_args
  [[ $stderr == *[Pp]lugin* ]]
}

@test "an unknown plugin is an error" {
  expect_bad_args no-such-plugin size=16M
  [[ $stderr == *no-such-plugin* ]]
}

@test "an unknown plugin parameter is an error" {
  requires_plugin memory
  expect_bad_args memory size=16M bogus=1
  [[ $stderr == *bogus* ]]
}

@test "a plugin parameter without '=' is an error" {
  requires_plugin memory
  expect_bad_args memory size=16M junk
  [[ $stderr == *junk* ]]
}

@test "a bad size is an error" {
  requires_plugin memory
  expect_bad_args memory size=12Q
  [[ $stderr == *12Q* ]]
}

@test "a missing file is an error" {
  requires_plugin file
  expect_bad_args file file="$tmp/does-not-exist"
  [[ $stderr == *"$tmp/does-not-exist"* ]]
}

@test "no socket (neither --socket nor --fd) is an error" {
  requires_plugin memory
  run -1 --separate-stderr "$BLKGATE" -P "$pidfile" memory size=16M
  [ -n "$stderr" ]
  [ ! -e "$pidfile" ]
}

# ---------------------------------------------------------------------------------------------
# Pidfile and socket

@test "-P: the pidfile names the daemon and is written once the socket listens" {
  requires_plugin memory
  requires python3
  start_gateway memory size=64M
  # start_gateway returned when the pidfile appeared: by then the process it names must be
  # listening on the socket.
  listens "$gateway_pid" "$sock"
  run -0 python3 "$vu_probe" "$sock"
  [[ $output == *capacity=131072* ]]
}

@test "the socket is created with mode 0600 whatever the umask" {
  requires_plugin memory
  umask 000
  start_gateway memory size=16M
  [ "$(stat -c %a "$sock")" = 600 ]
}

@test "a stale socket file at the path is replaced" {
  requires_plugin memory
  requires python3
  # A socket that nothing listens on any more.
  python3 -c 'import socket, sys; socket.socket(socket.AF_UNIX).bind(sys.argv[1])' "$sock"
  [ -S "$sock" ]
  start_gateway memory size=16M
  run -0 python3 "$vu_probe" "$sock"
  [[ $output == *capacity=32768* ]]
}

@test "SIGTERM: the daemon exits and removes its socket and pidfile" {
  requires_plugin memory
  start_gateway memory size=16M
  [ -S "$sock" ]
  stop_gateway
  [ ! -e "$sock" ]
  [ ! -e "$pidfile" ]
}

@test "SIGTERM in the foreground (-f): exit status 0, socket and pidfile removed" {
  requires_plugin memory
  start_gateway -f memory size=16M
  pid=$gateway_pid
  rm -f "$tmp/.pids/gateway.$pid"
  kill -TERM "$pid"
  status=0
  wait "$pid" || status=$?
  [ "$status" -eq 0 ]
  [ ! -e "$sock" ]
  [ ! -e "$pidfile" ]
}

@test "--fd: the gateway serves a listening socket it inherits" {
  requires_plugin memory
  requires python3
  python3 -c '
import os, socket, sys
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen(1)
os.dup2(s.fileno(), 3)
os.set_inheritable(3, True)
os.execv(sys.argv[2], sys.argv[2:])' \
    "$sock" "$BLKGATE" --fd 3 -f -P "$pidfile" memory size=16M \
    </dev/null >>"$gwlog" 2>&1 3>&- &
  wait_for 30 test -s "$pidfile" || { cat "$gwlog" >&2; false; }
  gateway_pid=$(cat "$pidfile")
  touch "$tmp/.pids/gateway.$gateway_pid"
  run -0 python3 "$vu_probe" "$sock"
  [[ $output == *capacity=32768* ]]
}

# ---------------------------------------------------------------------------------------------
# Captive mode

@test "--run: the command sees \$socket and its exit status is the gateway's" {
  requires_plugin memory
  run -7 "$BLKGATE" -s "$sock" --run \
    'test -S "$socket" || exit 1; echo "socket=$socket"; exit 7' memory size=16M
  [[ $output == *"socket=$sock"* ]]
  # The gateway went with the command.
  [ ! -e "$sock" ]
  [ -z "$(processes_with "$sock")" ]
}

@test "--run: the gateway serves while the command runs" {
  requires_plugin memory
  requires python3
  run -0 "$BLKGATE" -s "$sock" --run "python3 '$vu_probe' \"\$socket\"" memory size=16M
  [[ $output == *capacity=32768* ]]
}

@test "--run: a guest booted by the command sees the disk" {
  requires_plugin memory
  guest_ready
  run -0 --separate-stderr "$BLKGATE" -s "$sock" --run \
    "'$guest_scripts/run-guest.sh' -g '$BLKGATE_GUEST_DIR' \"\$socket\" 'cat /sys/block/vda/size'" \
    memory size=64M
  [ "$output" = 131072 ]
}

# ---------------------------------------------------------------------------------------------
# One front-end at a time

@test "a second front-end is refused while the first is connected, and the first keeps working" {
  requires_plugin file
  requires python3
  truncate -s 64M "$tmp/disk.img"
  start_gateway -f file file="$tmp/disk.img"

  # The guest writes and reads back 256 KiB at a time in the first 16 MiB until the host puts
  # DONE in sector 100000 (through the file), then does 5 more rounds.
  guest_start g1 "$sock" '
    echo READY
    n=0 more=-1 end=$(( $(date +%s) + 120 ))
    while [ $more -ne 0 ]; do
      head -c 262144 /dev/urandom > w
      dd if=w of=/dev/vda bs=64k seek=$(( n % 64 * 4 )) oflag=direct conv=notrunc status=none
      dd if=/dev/vda of=r bs=64k skip=$(( n % 64 * 4 )) count=4 iflag=direct status=none
      cmp w r || exit 1
      n=$((n + 1))
      if [ $more -gt 0 ]; then
        more=$((more - 1))
      elif dd if=/dev/vda bs=512 skip=100000 count=1 iflag=direct status=none | grep -q DONE; then
        more=5
      fi
      [ $(date +%s) -lt $end ] || { echo "no DONE from the host"; exit 2; }
    done
    echo "rounds=$n"'
  wait_for_log "$tmp/g1.log" '^READY' 120

  # The second front-end gets no answer: the connection is closed or left unanswered.
  run -2 python3 "$vu_probe" --timeout 3 "$sock"
  wait_for_log "$gwlog" '[Rr]efus|[Rr]eject|[Bb]usy|[Aa]lready' 10

  echo DONE | dd of="$tmp/disk.img" bs=512 seek=100000 conv=notrunc status=none
  guest_wait g1 || { cat "$tmp/g1.out" >&2; false; }
  grep -q '^rounds=[1-9]' "$tmp/g1.out"

  # Once the first front-end has gone, a new one is served.
  run -0 python3 "$vu_probe" "$sock"
  [[ $output == *capacity=131072* ]]
}
