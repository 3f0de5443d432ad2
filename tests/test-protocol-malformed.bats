#!/usr/bin/env bats
# A hostile vhost-user front-end (tests/vu-hostile) cannot crash, hang or leak the gateway:
# malformed framing, wrong sizes, stray or missing fds, bad memory tables, rings outside
# memory, hostile descriptor chains.  After each barrage the gateway still answers a proper
# handshake, logs what it refused, and holds no more fds than before.
#
# BLKGATE_TEST_SEED=N replays a run (vu-hostile prints the seed and, on failure, the
# messages of the failing round and the command that replays it alone).

load test_helper

setup() {
  blkgate_setup
  vu_hostile=
  for f in ${abs_top_builddir:+"$abs_top_builddir/tests/vu-hostile"} \
           "$BATS_TEST_DIRNAME/vu-hostile" "$top_builddir/tests/vu-hostile"; do
    if [ -x "$f" ]; then vu_hostile=$f; break; fi
  done
  [ -n "$vu_hostile" ] || missing "vu-hostile is not built (make -C tests vu-hostile)"
  requires_plugin memory
  seed=${BLKGATE_TEST_SEED:-$(( (RANDOM << 15) | RANDOM ))}
}

# hostile ARGS...: runs vu-hostile against the gateway with ARGS (and the test's seed).
# A failing test shows its output and stderr (the messages of the failing round).
hostile() {
  run --separate-stderr "$vu_hostile" "$sock" --seed "$seed" --pid "$gateway_pid" \
    --timeout 20 "$@"
  [ "$status" -eq 0 ] && [[ "$output" == *"final handshake ok"* ]]
}

@test "malformed vhost-user traffic: 500 hostile connections, the gateway survives" {
  start_gateway memory size=64M
  wait_for_socket "$sock"
  fds=$(fd_count "$gateway_pid")

  hostile --rounds 500

  alive "$gateway_pid"
  # Every connection is gone: no fd received from a refused message is kept.
  fds_back "$gateway_pid" "$fds"
  # It said why it dropped connections.
  grep -q -E 'error: bad [A-Z_]+ message \([0-9]+\): ' "$gwlog"
  grep -q -E 'error: front-end connection: (message payload too large|truncated message)' "$gwlog"
  grep -q -E 'error: closing the connection after a failed [A-Z_]+' "$gwlog"
  grep -q -E 'error: SET_MEM_TABLE region [0-9]+: ' "$gwlog"
}

@test "malformed vhost-user traffic: a read-only gateway with one queue survives too" {
  start_gateway -r --num-queues=1 memory size=1M
  wait_for_socket "$sock"

  hostile --rounds 200

  alive "$gateway_pid"
  grep -q -E 'error: queue index [0-9]+ out of range \(1 queues\)' "$gwlog"
}

@test "hostile rings: descriptor loops, bad indirect tables, runaway indexes, memory swaps" {
  start_gateway memory size=64M
  wait_for_socket "$sock"
  fds=$(fd_count "$gateway_pid")

  hostile --rounds 150 --scenarios ring-fuzz

  alive "$gateway_pid"
  fds_back "$gateway_pid" "$fds"
  grep -q -E 'error: queue [0-9]+: .*: ring stopped until the device is reset' "$gwlog"
}

# The scenarios below find bugs that are not fixed yet (see the test names).

@test "guest memory the region's memfd does not back (mmap past EOF, SIGBUS)" {
  start_gateway memory size=64M
  hostile --rounds 20 --scenarios memfd-hole
  alive "$gateway_pid"
}

@test "inflight region smaller than announced, or its header changed after SET_INFLIGHT_FD" {
  start_gateway memory size=64M
  hostile --rounds 40 --scenarios inflight
  alive "$gateway_pid"
}

@test "a call eventfd at its maximum count does not hang the gateway" {
  start_gateway memory size=64M
  hostile --rounds 2 --scenarios call-saturated
  alive "$gateway_pid"
}

@test "a kick fd that is a pipe or socket at EOF does not make the queue thread spin" {
  start_gateway memory size=64M
  hostile --rounds 2 --scenarios kick-eof
  alive "$gateway_pid"
}
