#!/usr/bin/env bats
# A damaged inflight region handed back with SET_INFLIGHT_FD (after a crash the front-end
# returns whatever the region holds; after a migration, a region another gateway wrote): the
# gateway refuses it cleanly, either at SET_INFLIGHT_FD (header) or when the ring starts
# (SET_VRING_KICK: the queue's area), logs why, stays up, and serves the next front-end.
#
# blkgate-io holds the region as QEMU does: a request starts the device (GET_INFLIGHT_FD),
# inflight-set changes a field of the region (blkgate's layout, src/daemon/inflight.h), and
# 'reconnect' hands it back as QEMU does after a back-end crash.  Then 'alive' connects as a
# new front-end (a fresh region) and the data written before is still there.

load test_helper

bio_timeout=10   # seconds, for every blkgate-io call

setup() {
  blkgate_setup
  [ -x "$BLKGATE_IO" ] || { echo "$BLKGATE_IO does not exist: run make first" >&2; return 1; }
  requires_plugin memory
  start_gateway memory size=64M
}

# refused MESSAGE LOG-REGEX [BLKGATE-IO OPTIONS --] COMMANDS...: a request, the COMMANDS
# (inflight-set ...), then reconnect, which must fail because the back-end refuses MESSAGE
# (SET_INFLIGHT_FD or SET_VRING_KICK), with a line matching LOG-REGEX in the gateway's log;
# then the gateway serves a new front-end, the data written before is intact, and the
# gateway is still the same process.
refused() {
  local msg=$1 re=$2 opts=() cmds=() c n
  shift 2
  if [[ " $* " == *" -- "* ]]; then
    while [ "$1" != -- ]; do opts+=("$1"); shift; done
    shift
  fi
  for c; do cmds+=(-c "$c"); done
  n=$(wc -l < "$gwlog")
  run bio -k "${opts[@]}" "$sock" -c 'write 0 64k -S 5' "${cmds[@]}" -c reconnect -c alive \
    -c 'verify 0 64k -S 5'
  clean_output
  [ "$status" -eq 1 ]
  [[ "$output" == *"reconnect: $msg: the back-end refused it"* ]]
  # The reconnect is the only command that failed.
  [ "$(grep -c '^blkgate-io: ' <<< "$output")" -eq 1 ]
  [[ "$output" == *"alive: a new front-end got GET_ID and a read served"* ]]
  [[ "$output" == *"verified 65536 bytes at offset 0"* ]]
  tail -n +"$((n + 1))" "$gwlog" | grep -E "error: $re"
  alive "$gateway_pid"
  [ "$(cat "$pidfile")" = "$gateway_pid" ]
}

@test "control: the region handed back untouched is taken" {
  run -0 bio "$sock" -c 'write 0 64k -S 5' -c 'inflight-dump' -c reconnect -c 'verify 0 64k -S 5'
  clean_output
  [[ "$output" == *"header: magic BLKGINF version 1 header_size 64 num_queues "* ]]
  [[ "$output" == *"q0 at 64: version 1 desc_num 256 last_batch_head "*" used_idx 1 "* ]]
  [[ "$output" == *"reconnected in"* ]]
  run -1 grep -q 'error:' "$gwlog"
}

@test "bad magic: refused at SET_INFLIGHT_FD" {
  refused SET_INFLIGHT_FD 'SET_INFLIGHT_FD: refusing the region: .*bad magic' \
    'inflight-set magic NOTOURS'
}

@test "another layout version or header size: refused at SET_INFLIGHT_FD" {
  refused SET_INFLIGHT_FD 'SET_INFLIGHT_FD: refusing the region: .*unknown layout version' \
    'inflight-set version 2'
  refused SET_INFLIGHT_FD 'SET_INFLIGHT_FD: refusing the region: .*unknown layout version' \
    'inflight-set header_size 128'
}

@test "header sizes inconsistent with each other or with the region: refused at SET_INFLIGHT_FD" {
  local re='SET_INFLIGHT_FD: refusing the region: .*sizes are inconsistent'
  refused SET_INFLIGHT_FD "$re" 'inflight-set queue_stride 64'
  refused SET_INFLIGHT_FD "$re" 'inflight-set queue_stride 0xffffffff'
  refused SET_INFLIGHT_FD "$re" 'inflight-set num_queues 1000'
  refused SET_INFLIGHT_FD "$re" 'inflight-set num_queues 0'
  refused SET_INFLIGHT_FD "$re" 'inflight-set queue_size 0'
  # A bigger queue size means a bigger stride: both changed, the region is too small.
  refused SET_INFLIGHT_FD "$re" 'inflight-set queue_size 1024' 'inflight-set queue_stride 32832'
  refused SET_INFLIGHT_FD "$re" 'inflight-set queue_size 4096'
}

@test "a queue area that does not match the ring: refused when the ring starts" {
  local re='queue 0: inflight region.s queue area does not match this ring'
  refused SET_VRING_KICK "$re" 'inflight-set q0.desc_num 128'
  refused SET_VRING_KICK "$re" 'inflight-set q0.desc_num 0'
  refused SET_VRING_KICK "$re" 'inflight-set q0.version 2'
  # A region for one queue while the guest runs two.
  refused SET_VRING_KICK 'queue 1: ring does not fit the inflight region' \
    -Q 2 -- 'inflight-set num_queues 1'
}

@test "an inflight flag byte of 2: refused when the ring starts" {
  refused SET_VRING_KICK 'queue 0: inflight region holds an invalid flag' \
    'inflight-set q0.desc[7].inflight 2'
  refused SET_VRING_KICK 'queue 0: inflight region holds an invalid flag' \
    'inflight-set q0.desc[255].inflight 0xff'
}

@test "a last-batch list that leaves the ring: refused when the ring starts" {
  # used_idx one behind the used ring: the repair walks one entry, from a head beyond the ring.
  refused SET_VRING_KICK 'queue 0: inflight region.s batch list leaves the ring' \
    'inflight-set q0.used_idx 0' 'inflight-set q0.last_batch_head 300'
  # Two writes: the repair walks two entries, the second through a link beyond the ring.
  refused SET_VRING_KICK 'queue 0: inflight region.s batch list leaves the ring' \
    'write 64k 4k' 'inflight-set q0.used_idx 0' 'inflight-set q0.last_batch_head 0' \
    'inflight-set q0.desc[0].next 999'
  # More entries to walk than the ring has.
  refused SET_VRING_KICK 'queue 0: inflight region.s used index is further off than the ring size' \
    'inflight-set q0.used_idx 0xff00'
}

@test "an inflight flag on a head the guest never made available: the ring stops, not the gateway" {
  local n
  n=$(wc -l < "$gwlog")
  run bio -k "$sock" -c 'write 0 64k -S 5' -c 'inflight-set q0.desc[100].inflight 1' \
    -c 'inflight-set q0.desc[100].counter 7' -c reconnect -c 'read 0 4k' -c alive \
    -c 'verify 0 64k -S 5'
  clean_output
  [ "$status" -eq 1 ]
  [[ "$output" == *"reconnected in"* ]]
  [[ "$output" == *"read: queue 0: the back-end signalled the ring's error eventfd"* ]]
  [ "$(grep -c '^blkgate-io: ' <<< "$output")" -eq 1 ]
  [[ "$output" == *"verified 65536 bytes at offset 0"* ]]
  tail -n +"$((n + 1))" "$gwlog" | grep 'queue 0: resubmitting 1 requests left in flight'
  tail -n +"$((n + 1))" "$gwlog" | grep -E 'error: queue 0: .*ring stopped until the device is reset'
  alive "$gateway_pid"
}
