#!/usr/bin/env bats
# GET_VRING_BASE: drain or suspend, per front-end generation (vhost-user-notes §2.4, §10):
#   no bit 20 (every released QEMU, 7.2 here)  -> drain, whatever the argument
#   bit 20 only (the skip_drain seed)           -> num == 1 suspends, num == 0 drains
#   bits 20 + 23 (the newest revision)          -> message 45 suspends, message 11 drains
# Suspending leaves the unfinished requests marked in the inflight region and writes no more
# guest memory; the migration destination (a second gateway handed the region) resubmits them.
# blkgate-io plays QEMU, since no released QEMU sends these yet.  The image sits behind slowfs
# (random 0-20 ms per request) so that requests are really in flight when the ring stops.

load test_helper

setup() {
  blkgate_setup
  io=$top_builddir/src/blkgate-io
  [ -x "$io" ] || { echo "blkgate-io is not built" >&2; return 1; }
}


# A burst of 16 writes of 256 KiB, each with its own seeded pattern.
burst() {
  local i
  for i in $(seq 0 15); do
    printf -- "-c\naio-write $((i * 256))k 256k -S $((i + 1))\n"
  done
}

verify_burst() {
  local i
  for i in $(seq 0 15); do
    printf -- "-c\nverify $((i * 256))k 256k -S $((i + 1))\n"
  done
}

# field NAME: the value of NAME=VALUE in $output's stop-queue line.
field() {
  sed -n "s/.*stop-queue.* $1=\([^ ]*\).*/\1/p" <<< "$output" | head -n 1
}

@test "without --inflight-migration bits 20 and 23 are not offered, and a skip_drain argument still drains" {
  requires_plugin file
  start_slowfs 64M 20000
  start_gateway file file="$mnt/disk"
  run -0 "$io" "$sock" -c info
  [[ "$output" != *GET_VRING_BASE_INFLIGHT* ]]
  mapfile -t args < <(burst)
  run -0 "$io" --force "$sock" "${args[@]}" -c 'stop-queue 0 --skip-drain --watch 300' \
    -c 'start-queue 0' -c wait
  echo "$output"
  [ "$(field drained)" = yes ]
  [ "$(field index)" = "$(field used_idx)" ]
}

@test "bit 20 only: GET_VRING_BASE with num=1 suspends, the destination resubmits, every write lands" {
  requires_plugin file
  start_slowfs 64M 20000
  start_gateway --inflight-migration file file="$mnt/disk"
  sock=$sockdir/dst.sock pidfile=$tmp/dst.pid start_gateway --inflight-migration \
    file file="$mnt/disk"
  # Ack everything we offer but bit 23 (the seed-series front-end).
  local mask
  mask=$(printf '0x%x' $(( (1 << 23) ^ 0xffffffff )))
  mapfile -t args < <(burst)
  mapfile -t check < <(verify_burst)
  run -0 "$io" --inflight-migration --protocol-features "$mask" "$sockdir/gw.sock" \
    "${args[@]}" -c "migrate $sockdir/dst.sock --skip-drain --watch 300" -c wait "${check[@]}"
  echo "$output"
  [[ "$output" == *"GET_VRING_BASE "*"drained=no"* ]] || [[ "$output" == *"drained=no"* ]]
  grep -q "resubmitting" "$gwlog"
}

@test "bit 20 only: GET_VRING_BASE with num=0 drains" {
  requires_plugin file
  start_slowfs 64M 20000
  start_gateway --inflight-migration file file="$mnt/disk"
  local mask
  mask=$(printf '0x%x' $(( (1 << 23) ^ 0xffffffff )))
  mapfile -t args < <(burst)
  run -0 "$io" --inflight-migration --protocol-features "$mask" "$sock" "${args[@]}" \
    -c 'stop-queue 0 --watch 300' -c 'start-queue 0' -c wait
  echo "$output"
  [ "$(field drained)" = yes ]
}

@test "bits 20+23: message 45 suspends and writes nothing after its reply; the destination completes the rest" {
  requires_plugin file
  start_slowfs 64M 20000
  start_gateway --inflight-migration file file="$mnt/disk"
  sock=$sockdir/dst.sock pidfile=$tmp/dst.pid start_gateway --inflight-migration \
    file file="$mnt/disk"
  mapfile -t args < <(burst)
  mapfile -t check < <(verify_burst)
  run -0 "$io" --inflight-migration "$sockdir/gw.sock" "${args[@]}" \
    -c "migrate $sockdir/dst.sock --msg45 --watch 300" -c wait "${check[@]}"
  echo "$output"
  [[ "$output" == *"GET_VRING_BASE_SKIP_DRAIN"* ]]
  [[ "$output" == *"drained=no"* ]]
  # The destination found the suspended requests in the region and resubmitted them.
  grep -q "resubmitting" "$gwlog"
}

@test "bits 20+23: message 11 always drains, even with num=1" {
  requires_plugin file
  start_slowfs 64M 20000
  start_gateway --inflight-migration file file="$mnt/disk"
  mapfile -t args < <(burst)
  run -0 "$io" --inflight-migration "$sock" "${args[@]}" \
    -c 'stop-queue 0 --skip-drain --watch 300' -c 'start-queue 0' -c wait
  echo "$output"
  [ "$(field drained)" = yes ]
}

@test "message 45 without bit 23 negotiated is refused and the gateway keeps serving" {
  requires_plugin memory
  start_gateway --inflight-migration memory size=16M
  local mask
  mask=$(printf '0x%x' $(( (1 << 23) ^ 0xffffffff )))
  run "$io" --inflight-migration --force --protocol-features "$mask" "$sock" \
    -c 'stop-queue 0 --msg45'
  [ "$status" -ne 0 ]
  grep -q "GET_VRING_BASE_SKIP_DRAIN without it negotiated" "$gwlog"
  run -0 "$io" "$sock" -c 'write 0 4k -P 0x5a' -c 'verify 0 4k -P 0x5a'
}

@test "a front-end acking bit 23 without bit 20 is refused" {
  requires_plugin memory
  start_gateway --inflight-migration memory size=16M
  # SET_PROTOCOL_FEATURES with INFLIGHT_SHMFD and bit 23 but not bit 20.
  run "$io" "$sock" -c 'raw SET_PROTOCOL_FEATURES 0x1 8 0010800000000000 --wait 500'
  grep -q "without the features they need" "$gwlog"
  run -0 "$io" "$sock" -c 'write 0 4k -P 0x33' -c 'verify 0 4k -P 0x33'
}

@test "suspend and migrate: a write completed before the switch-over is never replayed over a newer one" {
  requires_plugin file
  start_slowfs 64M 20000
  start_gateway --inflight-migration file file="$mnt/disk"
  local src_pid=$gateway_pid
  sock=$sockdir/dst.sock pidfile=$tmp/dst.pid start_gateway --inflight-migration \
    file file="$mnt/disk"
  mapfile -t args < <(burst)
  mapfile -t check < <(verify_burst)
  # Old data, acknowledged, on every block the burst then overwrites while in flight.
  run -0 "$io" --inflight-migration "$sockdir/gw.sock" -c 'write 0 4M -S 99' \
    "${args[@]}" -c "migrate $sockdir/dst.sock --msg45 --watch 300" -c wait "${check[@]}" \
    -c 'flush'
  echo "$output"
  [[ "$output" == *"drained=no"* ]]
  grep -q "resubmitting" "$gwlog"
  # The source gateway is gone; a new front-end on the destination reads the newest data.
  stop_gateway "$src_pid"
  run -0 "$io" "$sockdir/dst.sock" "${check[@]}"
}

# The delay filter instead of slowfs: the held writes have not started when the queue
# suspends, so the source cancels them (the filter's aio_cancel) and the destination
# resubmits them.  Needs no FUSE.
@test "bits 20+23 behind --filter=delay: the suspend cancels the held writes, the destination writes them" {
  requires_plugin file
  truncate -s 64M "$tmp/disk.img"
  start_gateway --inflight-migration --filter=stats --filter=delay file file="$tmp/disk.img" \
    wdelay=2s statsfile="$tmp/src.stats"
  local src_pid=$gateway_pid
  sock=$sockdir/dst.sock pidfile=$tmp/dst.pid start_gateway --inflight-migration \
    file file="$tmp/disk.img"
  mapfile -t args < <(burst)
  mapfile -t check < <(verify_burst)
  run -0 "$io" --inflight-migration "$sockdir/gw.sock" "${args[@]}" \
    -c "migrate $sockdir/dst.sock --msg45 --watch 300" -c wait "${check[@]}"
  echo "$output"
  [[ "$output" == *"drained=no"* ]]
  grep -q "resubmitting" "$gwlog"
  # The source never wrote them: every write it saw was cancelled before it started.
  stop_gateway "$src_pid"
  cat "$tmp/src.stats"
  [ "$(sed -n 's/^write.ops=//p' "$tmp/src.stats")" = 16 ]
  [ "$(sed -n 's/^write.errors=//p' "$tmp/src.stats")" = 16 ]
}

# A failing destination: the resubmitted writes fail there, and the front-end is told so.
@test "bits 20+23 with a destination behind --filter=error: the resubmitted writes complete with IOERR" {
  requires_plugin file
  truncate -s 64M "$tmp/disk.img"
  start_gateway --inflight-migration --filter=delay file file="$tmp/disk.img" wdelay=2s
  sock=$sockdir/dst.sock pidfile=$tmp/dst.pid start_gateway --inflight-migration \
    --filter=error file file="$tmp/disk.img" error-write-rate=1 error=EIO
  mapfile -t args < <(burst)
  run -1 "$io" --inflight-migration "$sockdir/gw.sock" "${args[@]}" \
    -c "migrate $sockdir/dst.sock --msg45 --watch 300" -c wait
  echo "$output"
  [[ "$output" == *"drained=no"* ]]
  [[ "$output" == *"status IOERR"* ]]
  # The destination still serves reads.
  run -0 "$io" "$sockdir/dst.sock" -c 'read 0 64k'
}
