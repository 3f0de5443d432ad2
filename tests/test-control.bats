#!/usr/bin/env bats
# The control socket (--control PATH) and blkgate-ctl: stats that count what blkgate-io did,
# in JSON and in the Prometheus text format; resize (re-read, or a given size) seen by the
# front-end's config space and by the queues' bounds checks, and by a QEMU 7.2 guest through
# CONFIG_CHANGE_MSG; reopen onto a replaced image; shutdown; and malformed commands refused
# with a clear error while the gateway keeps serving.

load test_helper

: "${BLKGATE_CTL:=$top_builddir/src/blkgate-ctl}"

setup() {
  blkgate_setup
  [ -x "$BLKGATE_CTL" ] || { echo "$BLKGATE_CTL does not exist: run make first" >&2; return 1; }
  ctl=$tmp/ctl.sock
}

ctl() {
  "$BLKGATE_CTL" -c "$ctl" "$@"
}

# json EXPR: evaluates a Python expression on the JSON in $output (bound to j).
json() {
  python3 -c "import json, sys; j = json.loads(sys.stdin.read()); print($1)" <<< "$output"
}

@test "stats: per-queue counts, bytes, histogram and in-flight match what was done" {
  requires_plugin memory
  start_gateway --control "$ctl" memory size=64M
  run -0 ctl stats
  [ "$(json "j['stats']['queues'][0]['reads']")" = 0 ]
  [ "$(json "j['stats']['plugin']")" = memory ]
  [ "$(json "j['stats']['size']")" = $((64 << 20)) ]

  run -0 bio -Q 2 "$sock" -c 'write 0 1M' -c 'write 1M 64k' -c 'read 0 128k' -c flush \
    -c 'queue 1' -c 'read 0 4k' -c 'read 4k 4k' -c 'read 8k 4k'
  run -0 ctl stats
  echo "$output" | head -40
  [ "$(json "j['stats']['queues'][0]['writes']")" -ge 2 ]
  [ "$(json "j['stats']['queues'][0]['bytes_written']")" = $(((1 << 20) + (64 << 10))) ]
  [ "$(json "j['stats']['queues'][0]['bytes_read']")" = $((128 << 10)) ]
  [ "$(json "j['stats']['queues'][0]['flushes']")" = 1 ]
  [ "$(json "j['stats']['queues'][1]['reads']")" = 3 ]
  [ "$(json "j['stats']['queues'][1]['bytes_read']")" = $((12 << 10)) ]
  [ "$(json "j['stats']['queues'][0]['errors']")" = 0 ]
  [ "$(json "j['stats']['queues'][1]['in_flight']")" = 0 ]
  # Every finished request is in the histogram once.
  [ "$(json "sum(b['count'] for b in j['stats']['queues'][1]['latency_us'])")" = 3 ]
  local q0
  q0=$(json "sum(j['stats']['queues'][0][k] for k in ('reads', 'writes', 'flushes', 'discards', 'write_zeroes', 'other'))")
  [ "$(json "sum(b['count'] for b in j['stats']['queues'][0]['latency_us'])")" = "$q0" ]
  # A request past the end is counted as an error.
  run bio "$sock" -c 'read 64M 4k'
  run -0 ctl stats
  [ "$(json "j['stats']['queues'][0]['errors']")" = 1 ]
}

@test "stats --prometheus: counters, gauges and a cumulative histogram" {
  requires_plugin null
  start_gateway --control "$ctl" null size=1G
  run -0 bio "$sock" bench --rw randrw --iodepth 4 --time 0.3
  run -0 ctl stats --prometheus
  echo "$output" | head -30
  [[ "$output" == *'# TYPE blkgate_requests_total counter'* ]]
  [[ "$output" == *'blkgate_size_bytes 1073741824'* ]]
  grep -q -E '^blkgate_requests_total\{queue="0",op="read"\} [1-9][0-9]*$' <<< "$output"
  grep -q -E '^blkgate_in_flight\{queue="0"\} 0$' <<< "$output"
  # Buckets are cumulative and end with +Inf = _count.
  local inf count
  inf=$(sed -n 's/^blkgate_request_duration_seconds_bucket{queue="0",le="+Inf"} //p' <<< "$output")
  count=$(sed -n 's/^blkgate_request_duration_seconds_count{queue="0"} //p' <<< "$output")
  [ -n "$inf" ] && [ "$inf" = "$count" ] && [ "$count" -gt 0 ]
  sed -n 's/^blkgate_request_duration_seconds_bucket{queue="0",le="[^"]*"} //p' <<< "$output" |
    awk 'NR > 1 && $1 < prev { exit 1 } { prev = $1 }'
}

@test "stats: in flight and the age of the oldest request while the backend is slow" {
  requires_plugin file
  # Every request on this FUSE file takes 2 s.
  start_slowfs 16M =2000000
  start_gateway --control "$ctl" file file="$mnt/disk" direct=off
  bio "$sock" -c 'read 0 4k' > "$tmp/bio.out" 2>&1 3>&- &
  local bio_pid=$!
  sleep 1
  run -0 ctl stats
  [ "$(json "j['stats']['queues'][0]['in_flight']")" = 1 ]
  [ "$(json "j['stats']['queues'][0]['oldest_in_flight_us']")" -ge 500000 ]
  wait "$bio_pid"
  run -0 ctl stats
  [ "$(json "j['stats']['queues'][0]['in_flight']")" = 0 ]
  [ "$(json "j['stats']['queues'][0]['oldest_in_flight_us']")" = 0 ]
  [ "$(json "j['stats']['queues'][0]['reads']")" -ge 1 ]
}

@test "malformed control commands get a clear error; the gateway keeps serving" {
  requires_plugin memory
  start_gateway --control "$ctl" memory size=16M
  run -1 ctl raw 'not json'
  [[ "$output" == *"not JSON"* ]]
  run -1 ctl raw '[1,2]'
  [[ "$output" == *"expected a JSON object"* ]]
  run -1 ctl raw '{"cmd":"stats"}'
  [[ "$output" == *'expected a string member "command"'* ]]
  run -1 ctl raw '{"command":5}'
  [[ "$output" == *'expected a string member "command"'* ]]
  run -1 ctl raw '{"command":"format-disk"}'
  [[ "$output" == *'unknown command "format-disk"'* ]]
  run -1 ctl resize banana
  [[ "$output" == *'"size" must be'* ]]
  run -1 ctl raw '{"command":"resize","size":-5}'
  [[ "$output" == *'"size" must be'* ]]
  run -1 ctl resize 1T
  [[ "$output" == *"larger than the backend"* ]]
  run -1 ctl resize 1000
  [[ "$output" == *"not a multiple of the block size"* ]]
  run -2 ctl
  [[ "$output" == *usage* ]]
  # Several lines on one connection, one reply each; a too long line: answered, dropped.
  run -0 python3 - "$ctl" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
s.sendall(b'{"command":"stats"}\n\n{"command":"nope"}\n')
f = s.makefile('rb')
a = f.readline(); b = f.readline()
assert b'"ok":true' in a, a
assert b'"ok":false' in b and b'unknown command' in b, b
s.sendall(b'x' * 5000)
c = f.readline()
assert b'line too long' in c, c
assert f.readline() == b'', 'connection not closed'
print('ok')
PY
  # At most 8 clients at once.
  run -0 python3 - "$ctl" <<'PY'
import socket, sys
socks = []
for i in range(8):
    s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1]); socks.append(s)
    s.sendall(b'{"command":"stats"}\n'); assert b'"ok":true' in s.makefile('rb').readline()
s = socket.socket(socket.AF_UNIX); s.connect(sys.argv[1])
line = s.makefile('rb').readline()
assert b'too many control clients' in line, line
print('ok')
PY
  run -0 bio "$sock" -c 'write 0 64k -S 3' -c 'verify 0 64k -S 3'
  run -0 ctl stats
  [ "$(json "j['ok']")" = True ]
}

@test "resize: re-read after the image grew, or a given size; the queues check the new end" {
  requires_plugin file
  truncate -s 16M "$tmp/disk.img"
  start_gateway --control "$ctl" file file="$tmp/disk.img"
  run -0 bio "$sock" info
  [[ "$output" == *"32768 sectors"* ]]
  run bio "$sock" -c 'write 16M 4k -S 1'
  [ "$status" -ne 0 ]

  truncate -s 32M "$tmp/disk.img"
  run -0 ctl resize
  [ "$(json "j['size']")" = $((32 << 20)) ]
  # blkgate-io does not negotiate the back-end channel: nobody to tell.
  [ "$(json "j['front_end_told']")" = False ]
  run -0 bio "$sock" -c 'write 16M 4k -S 1' -c 'verify 16M 4k -S 1' info
  [[ "$output" == *"65536 sectors"* ]]
  run bio "$sock" -c 'write 32M 4k'
  [ "$status" -ne 0 ]
  run -0 ctl stats
  [ "$(json "j['stats']['size']")" = $((32 << 20)) ]

  # Smaller than the file: requests past the new end fail.
  run -0 ctl resize 8M
  run bio "$sock" -c 'read 8M 4k'
  [ "$status" -ne 0 ]
  run -0 bio "$sock" -c 'read 0 4k'
  grep -q "size changed from 33554432 to 8388608 bytes" "$gwlog"
}

@test "reopen: the gateway moves to a replaced image; a bench across the reopen sees no error" {
  requires_plugin file
  truncate -s 16M "$tmp/disk.img"
  start_gateway --control "$ctl" file file="$tmp/disk.img"
  run -0 bio "$sock" -c 'write 0 1M -S 1'
  # Replace the image: the old fd keeps the old file until the reopen.
  cp "$tmp/disk.img" "$tmp/new.img"
  random_at "$tmp/new.img" $((2 << 20)) 65536
  mv "$tmp/new.img" "$tmp/disk.img"
  run -0 bio "$sock" -c 'verify 0 1M -S 1'
  # A bench runs across the reopen, without an error.
  bio -Q 2 "$sock" bench --rw randwrite --iodepth 16 --queues 2 --time 2 > "$tmp/bench.out" 2>&1 3>&- &
  local bench_pid=$!
  sleep 0.5
  run -0 ctl reopen
  wait "$bench_pid"
  grep -q ' errors=0 ' "$tmp/bench.out"
  grep -q "backend reopened" "$gwlog"
  # Reads now come from the new file.
  run -0 bio "$sock" -c "read $((2 << 20)) 64k -o $tmp/read.bin"
  [ "$(sha256sum < "$tmp/read.bin" | cut -d' ' -f1)" = "$(sha256_range "$tmp/disk.img" $((2 << 20)) 65536)" ]
}

@test "shutdown: the gateway exits cleanly and removes both sockets" {
  requires_plugin null
  start_gateway --control "$ctl" null size=1G
  run -0 ctl shutdown
  wait_gone "$gateway_pid" 10
  rm -f "$tmp/.pids/gateway.$gateway_pid"
  [ ! -e "$sock" ]
  [ ! -e "$ctl" ]
  grep -q "shutdown asked on the control socket" "$gwlog"
}

@test "--control: a path that is not a socket, or a live one, is refused" {
  requires_plugin null
  touch "$tmp/file"
  run -1 --separate-stderr "$BLKGATE" -f -s "$sock" --control "$tmp/file" null size=1G
  [[ "$stderr" == *"exists and is not a socket"* ]]
  [ ! -e "$sock" ]
  start_gateway --control "$ctl" null size=1G
  run -1 --separate-stderr "$BLKGATE" -f -s "$tmp/other.sock" --control "$ctl" null size=1G
  [[ "$stderr" == *"another server is listening"* ]]
  run -0 ctl stats
}

@test "resize seen by a QEMU 7.2 guest: /sys/block/vda/size changes (CONFIG_CHANGE_MSG)" {
  requires_plugin file
  guest_ready
  truncate -s 64M "$tmp/disk.img"
  start_gateway --control "$ctl" file file="$tmp/disk.img"
  guest_start g "$sock" 'echo size=$(cat /sys/block/vda/size); echo READY;
    i=0; while [ $i -lt 600 ]; do s=$(cat /sys/block/vda/size);
      [ "$s" != 131072 ] && { echo NEWSIZE=$s; break; }; sleep 0.1; i=$((i+1)); done;
    dd if=/dev/vda of=/dev/null bs=4096 skip=$((100 << 8)) count=1 && echo READ_NEW_END_OK'
  wait_for_log "$tmp/g.log" READY 120
  truncate -s 128M "$tmp/disk.img"
  run -0 ctl resize
  [ "$(json "j['front_end_told']")" = True ]
  guest_wait g
  cat "$tmp/g.out"
  grep -q "size=131072" "$tmp/g.out"
  grep -q "NEWSIZE=262144" "$tmp/g.out"
  grep -q "READ_NEW_END_OK" "$tmp/g.out"
}

@test "stats: the nbd plugin's reconnects and resent requests, and reopen onto a new server" {
  requires_plugin nbd
  truncate -s 64M "$tmp/nbd.img"
  start_nbdkit srv file "$tmp/nbd.img"
  start_gateway --control "$ctl" nbd "$(nbd_uri srv)"
  run -0 ctl stats
  [ "$(json "j['stats']['backend'].get('reconnects', 0)")" = 0 ]
  # nbdkit goes and comes back while a front-end is connected: the plugin reconnects
  # and says so in stats.
  bio "$sock" -c 'write 0 1M -S 1' -c 'sleep 2' -c 'verify 0 1M -S 1' -c 'write 1M 64k -S 2' \
    > "$tmp/bio.out" 2>&1 3>&- &
  local bio_pid=$!
  sleep 0.5
  kill_daemon srv KILL
  start_nbdkit srv file "$tmp/nbd.img"
  wait "$bio_pid"
  run -0 ctl stats
  echo "$output" | tail -8
  [ "$(json "j['stats']['backend']['reconnects']")" -ge 1 ]
  # reopen: new connections to the server at the same URI, same data.
  run -0 ctl reopen
  run -0 bio "$sock" -c 'verify 0 1M -S 1' -c 'verify 1M 64k -S 2'
  run -0 ctl stats --prometheus
  grep -q -E '^blkgate_backend_events_total\{event="reconnects"\} [1-9]' <<< "$output"
}
