#!/usr/bin/env bats
# Logging (blkgate(8) --log, -v).  By default messages go to standard error.  With
# --log=syslog they go to syslog, for real: the gateway runs in a private mount namespace
# (unshare --mount) whose /dev/log is a UNIX datagram socket of a small listener standing in for
# syslogd, which writes every datagram it gets as a line of $tmp/syslog.txt.  Lifecycle events
# and errors must arrive there, with the blkgate tag and the daemon's pid, and nothing on
# standard error; debug lines only with -v; and no line per request: a bench of thousands of
# requests adds none.  Also with --user nobody, once the gateway can no longer open /dev/log.

load test_helper

setup() {
  blkgate_setup
  [ -x "$BLKGATE_IO" ] || { echo "$BLKGATE_IO does not exist: run make first" >&2; return 1; }
  syslog=$tmp/syslog.txt
  logsock=$sockdir/log.sock
}

# Syslog priorities as the lines carry them: facility daemon (3), times 8, plus the severity.
pri_err='<27>'
pri_info='<30>'
pri_debug='<31>'

# start_syslog: the listener on $logsock, appending each datagram as a line to $syslog, and
# $tmp/blkgate, which runs $BLKGATE in a private mount namespace whose /dev/log is $logsock.
start_syslog() {
  requires python3 unshare
  : > "$syslog"
  start_daemon syslog python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "ab", buffering=0) as f:
    while True:
        f.write(s.recv(65536).rstrip(b"\0\n") + b"\n")' "$logsock" "$syslog"
  wait_for_socket "$logsock" 10
  write_ns_wrapper
  printf '#!/bin/bash\nexec %q %q %q %q "$@"\n' "$tmp/with-dev-log" "$logsock" "$tmp/devfs" \
    "$BLKGATE" > "$tmp/blkgate"
  chmod +x "$tmp/blkgate"
}

# $tmp/with-dev-log SOCKET SCRATCH COMMAND...: runs COMMAND in a new mount namespace whose
# /dev/log is SOCKET.  A machine without /dev/log (no syslog daemon) has nothing to mount
# over: the namespace then gets an overlay on /dev (its changes in a tmpfs at SCRATCH, all
# private to the namespace) in which /dev/log can be created.
write_ns_wrapper() {
  cat > "$tmp/with-dev-log" <<'EOF'
#!/bin/bash
set -e
if [ -z "${BLKGATE_TEST_IN_NS:-}" ]; then
  BLKGATE_TEST_IN_NS=1 exec unshare --mount --propagation private "$0" "$@"
fi
sock=$1 scratch=$2
shift 2
if [ ! -e /dev/log ]; then
  mkdir -p "$scratch"
  mount -t tmpfs blkgate-test "$scratch"
  mkdir "$scratch/upper" "$scratch/work"
  mount -t overlay blkgate-test \
    -o "lowerdir=/dev,upperdir=$scratch/upper,workdir=$scratch/work" /dev
  rm -f /dev/log
  touch /dev/log
fi
mount --bind "$sock" /dev/log
exec "$@"
EOF
  chmod +x "$tmp/with-dev-log"
}

# start_in_ns ARGS...: start_gateway ARGS..., run by $tmp/blkgate.
start_in_ns() {
  requires_blkgate
  BLKGATE=$tmp/blkgate start_gateway "$@"
}

# stderr_lines: what the gateways wrote on standard error (start_gateway's own "# ..." lines
# aside).
stderr_lines() {
  grep -v '^# ' "$gwlog" || true
}

# syslog_count PRIORITY TEXT: how many lines of $syslog are TEXT, logged by
# blkgate[$gateway_pid] with PRIORITY (glibc sends "<PRI>TIMESTAMP blkgate[PID]: TEXT").
syslog_count() {
  sed -n "s/^\(<[0-9]*>\).* blkgate\[$gateway_pid\]: /\1/p" "$syslog" |
    grep -c -F -x -e "$1$2" || true
}

syslog_has() {
  [ "$(syslog_count "$1" "$2")" -gt 0 ]
}

# wait_syslog PRIORITY TEXT [N]: waits up to 10 s for N (default 1) such lines.
wait_syslog() {
  local i
  for ((i = 0; i < 100; i++)); do
    [ "$(syslog_count "$1" "$2")" -ge "${3:-1}" ] && return 0
    sleep 0.1
  done
  echo "no '$1$2' from blkgate[$gateway_pid] in $syslog:" >&2
  cat "$syslog" >&2
  return 1
}

@test "by default, and with --log=stderr, messages go to standard error and not to syslog" {
  requires_plugin memory
  start_syslog
  local l

  for l in '' --log=stderr; do
    : > "$gwlog"
    start_in_ns $l memory size=16M
    run -0 bio "$sock" info
    wait_for_log "$gwlog" '^blkgate: front-end disconnected$' 10
    grep -q -x "blkgate: serving the memory plugin on $sock" "$gwlog"
    grep -q -x 'blkgate: front-end connected' "$gwlog"
    stop_gateway
    grep -q -x 'blkgate: SIGTERM received, shutting down' "$gwlog"
    [ ! -s "$syslog" ] || { cat "$syslog" >&2; false; }
  done
  run -1 --separate-stderr "$BLKGATE" -s "$sock" --log=journal memory size=16M
  [[ "$stderr" == *"--log must be stderr or syslog"* ]]
}

@test "--log=syslog: lifecycle events and errors reach syslog with the blkgate tag, none stderr" {
  requires_plugin memory
  start_syslog
  start_in_ns --log=syslog memory size=16M

  run -0 bio "$sock" -c 'write 0 64k -S 1' -c 'verify 0 64k -S 1'
  wait_syslog "$pri_info" "front-end disconnected"
  syslog_has "$pri_info" "serving the memory plugin on $sock"
  syslog_has "$pri_info" "front-end connected"

  # An error while serving: a second front-end is refused while the first is connected.
  # (blkgate-io connects at its first request.)
  bio "$sock" -c 'write 0 4k' -c 'sleep 5' > "$tmp/first.out" 2>&1 3>&- &
  local first=$!
  wait_syslog "$pri_info" "front-end connected" 2
  run -2 python3 "$vu_probe" --timeout 3 "$sock"
  wait_syslog "$pri_err" "refusing a second front-end: one is already connected"
  wait "$first" || { cat "$tmp/first.out" >&2; false; }

  stop_gateway
  wait_syslog "$pri_info" "SIGTERM received, shutting down"
  # Nothing on standard error, and nothing but blkgate's own lines in syslog.
  [ -z "$(stderr_lines)" ] || { stderr_lines >&2; false; }
  [ -z "$(grep -v " blkgate\[$gateway_pid\]: " "$syslog")" ]
  [ -z "$(grep -F "$pri_debug" "$syslog")" ]
}

@test "--log=syslog: errors before serving (the plugin's parameters) still go to stderr" {
  requires_plugin memory
  start_syslog
  run -1 --separate-stderr "$tmp/blkgate" -P "$pidfile" -s "$sock" --log=syslog memory
  [[ "$stderr" == *size* ]]
  [ ! -e "$sock" ]
  [ ! -s "$syslog" ]
}

@test "--log=syslog: no line per request without -v; -v adds debug lines" {
  requires_plugin null
  start_syslog
  local ios n

  start_in_ns --log=syslog null size=1G
  run -0 bio "$sock" bench --rw randrw --iodepth 4 --time 0.5
  ios=$(sed -n 's/^bench .* ios=\([0-9]*\) .*/\1/p' <<< "$output")
  echo "# $ios requests" >&3
  [ "$ios" -ge 1000 ]
  wait_syslog "$pri_info" "front-end disconnected"
  stop_gateway
  wait_syslog "$pri_info" "SIGTERM received, shutting down"
  # Serving, connected, disconnected, SIGTERM: a handful, whatever the number of requests.
  n=$(wc -l < "$syslog")
  [ "$n" -le 6 ] || { cat "$syslog" >&2; false; }
  [ -z "$(grep -F "$pri_debug" "$syslog")" ]
  [ -z "$(stderr_lines)" ] || { stderr_lines >&2; false; }

  : > "$syslog"
  start_in_ns --log=syslog -v null size=1G
  run -0 bio "$sock" bench --rw randrw --iodepth 4 --time 0.5
  wait_syslog "$pri_info" "front-end disconnected"
  n=$(grep -c -F " blkgate[$gateway_pid]: " "$syslog" || true)
  echo "# with -v: $n lines, $(grep -c -F "$pri_debug" "$syslog") of them debug" >&3
  grep -F "$pri_debug" "$syslog" | grep -q " blkgate\[$gateway_pid\]: queue 0: started"
}

@test "--log=syslog --user nobody: lines still arrive once the gateway could not open /dev/log" {
  requires_plugin memory
  [ "$(id -u)" = 0 ] || missing "changing users needs root"
  id nobody >/dev/null 2>&1 || missing "there is no user nobody"
  start_syslog
  # The listener's socket is root's, 0755: nobody could not connect to it.
  chmod 755 "$logsock"

  start_in_ns --log=syslog --user nobody memory size=16M
  [ "$(awk '$1 == "Uid:" { print $3 }' "/proc/$gateway_pid/status")" = "$(id -u nobody)" ]
  run -0 bio "$sock" info
  wait_syslog "$pri_info" "front-end disconnected"
  syslog_has "$pri_info" "front-end connected"
  stop_gateway
  wait_syslog "$pri_info" "SIGTERM received, shutting down"
  [ -z "$(stderr_lines)" ] || { stderr_lines >&2; false; }
}
