#!/usr/bin/env bats
# The template plugins of plugins/example (example-sync, example-async) serve real I/O
# through blkgate: what blkgate-io writes reads back, on every queue, across reconnects and
# device resets, and the daemon stops cleanly.  Their conformance run is test-plugins.sh.

load test_helper

setup() {
  blkgate_setup
  [ -x "$BLKGATE_IO" ] || { echo "$BLKGATE_IO does not exist: run make first" >&2; return 1; }
}

# The examples have no optional dependency: they are always built.
requires_example() {
  requires_blkgate
  [ -e "$top_builddir/plugins/example/.libs/blkgate-$1-plugin.so" ] ||
    { echo "the $1 plugin was not built" >&2; return 1; }
}

# io_sequence: writes of several kinds on two queues, read back, then write-zeroes.
io_sequence() {
  head -c 65536 /dev/urandom > "$tmp/in.bin"
  bio -Q 2 "$sock" <<EOF
write 0 1M -P 0x5a
verify 0 1M -P 0x5a
write 1M 3M -S 1234
queue 1
verify 1M 3M -S 1234
write 4M 64k -i $tmp/in.bin
queue 0
verify 4M 64k -i $tmp/in.bin
aio-write 8M 64k -S 7
aio-write 9M 64k -S 8
queue 1
aio-write 10M 64k -S 9
wait
verify 8M 64k -S 7
verify 9M 64k -S 8
verify 10M 64k -S 9
zero 1M 64k
verify 1M 64k -P 0
EOF
}

# check_plugin NAME: the I/O sequence; the data outlives the connection and a reset; the
# disk has the size asked for, write-zeroes and no write cache; SIGTERM stops it cleanly.
check_plugin() {
  requires_example "$1"
  start_gateway --num-queues 2 "$1" 64M
  run -0 bio "$sock" info
  [[ "$output" == *"67108864 bytes"* ]]
  [[ "$output" == *WRITE_ZEROES* ]]
  [[ "$output" != *"F_FLUSH"* && "$output" != *" RO"* ]]
  run -0 io_sequence
  # A new connection, then a guest reset on it: the disk is the daemon's.
  run -0 bio -Q 2 "$sock" -c 'verify 0 1M -P 0x5a' -c reset -c 'queue 1' \
    -c "verify 4M 64k -i $tmp/in.bin" -c 'write 20M 1M -S 5' -c 'verify 20M 1M -S 5'
  # Out of range is refused by the core, not the plugin.
  run -1 bio "$sock" read 64M 4k
  [[ "$output" == *"status IOERR"* ]]
  stop_gateway
  ! grep -q -i 'error\|sanitizer' "$gwlog"
}

@test "example-sync: write, verify, zero on two queues; data outlives connections" {
  check_plugin example-sync
}

@test "example-async: write, verify, zero on two queues; data outlives connections" {
  check_plugin example-async
}

@test "example plugins: size is required, unknown parameters are refused" {
  local p
  for p in example-sync example-async; do
    requires_example "$p"
    run -1 --separate-stderr "$BLKGATE" -f -s "$sock" "$p"
    [[ "$stderr" == *"size=SIZE"* ]]
    run -1 --separate-stderr "$BLKGATE" -f -s "$sock" "$p" size=1M colour=red
    [[ "$stderr" == *"unknown parameter 'colour'"* ]]
    [ ! -e "$sock" ]
  done
}

@test "example-async: a reopen while a front-end is connected moves its queues to new contexts" {
  requires_example example-async
  local pid
  start_gateway -v --num-queues 2 --control "$tmp/ctl.sock" example-async 64M
  # blkgate-io reads its commands from a fifo, so the reopen comes between two of them
  # while it is connected, however slow the machine.
  mkfifo "$tmp/cmds"
  bio -Q 2 "$sock" < "$tmp/cmds" > "$tmp/bio.out" 2>&1 3>&- &
  pid=$!
  exec 4> "$tmp/cmds"
  printf '%s\n' 'write 0 1M -S 3' 'queue 1' 'write 1M 1M -S 4' 'stamp written' >&4
  wait_for_log "$tmp/bio.out" '^stamp written' 20
  run -0 "$top_builddir/src/blkgate-ctl" -c "$tmp/ctl.sock" reopen
  printf '%s\n' 'verify 0 1M -S 3' 'queue 0' 'verify 1M 1M -S 4' 'write 2M 1M -S 5' \
    'verify 2M 1M -S 5' >&4
  exec 4>&-
  wait "$pid" || { cat "$tmp/bio.out" >&2; return 1; }
  grep -q "backend reopened" "$gwlog"
  # Each queue's context was closed and opened again (-v: the plugin's debug lines).
  [ "$(grep -c 'example-async: queue 1 open' "$gwlog")" -eq 2 ]
  stop_gateway
}

@test "example-sync.c stays a small template: under 100 lines of code, a comment on every function" {
  requires gcc
  local src=$top_srcdir/plugins/example/example-sync.c loc
  # Lines of code: without comments (the preprocessor strips them) and blank lines.
  loc=$(gcc -fpreprocessed -dD -E -P "$src" | grep -c -v '^[[:space:]]*$')
  echo "# example-sync.c: $loc lines of code" >&3
  [ "$loc" -lt 100 ]
  # Every function definition (its name at the start of a line, its return type on the
  # line before) has a comment ending on the line before that.
  awk '/^[a-z_]+ \(/ && two_back !~ /\*\/$/ { print "no comment before " $1; bad = 1 }
       { two_back = prev; prev = $0 } END { exit bad }' "$src"
}
