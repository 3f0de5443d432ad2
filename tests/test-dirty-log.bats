#!/usr/bin/env bats
# Dirty page logging, page by page, with blkgate-io as the front-end: it starts logging the
# way QEMU does when a migration starts (SET_LOG_BASE with a memfd bitmap, 1 bit per 4 KiB
# guest-physical page from GPA 0 to the end of guest memory, which the back-end answers with
# a u64 as LOG_SHMFD requires; SET_FEATURES(+LOG_ALL); SET_VRING_ADDR(F_LOG) on each ring),
# clears the bitmap, runs one request and checks exactly which pages are dirty:
#   read   its data buffer, its status byte and the used ring (at log_guest_addr)
#   write  its status byte and the used ring, never the data buffer (the device reads it)
# and nothing else (log-check --exactly).  Guest memory is 64 MiB at GPA 1 GiB, so the
# bitmap is (1 GiB + 64 MiB) / 4 KiB / 8 = 34816 bytes.

load test_helper

bio_timeout=10   # seconds, for every blkgate-io call

log_bytes=34816

setup() {
  blkgate_setup
  [ -x "$BLKGATE_IO" ] || { echo "$BLKGATE_IO does not exist: run make first" >&2; return 1; }
  requires_plugin memory
  start_gateway memory size=64M
}

# The checks every test starts from.
read_write_checks=(
  -c 'write 0 1M -S 3'
  -c log-clear -c 'read 0 64k' -c 'log-check --exactly data status used'
  -c log-clear -c 'write 64k 64k -S 4' -c 'log-check --exactly status used !data'
  -c log-clear -c 'verify 0 64k -S 3' -c 'log-check data status used'
)

@test "a read marks its data, status and used-ring pages; a write only status and used ring" {
  run -0 bio "$sock" -c 'write 0 4k' -c log-start "${read_write_checks[@]}"
  clean_output
  [[ "$output" == *"dirty logging on: $log_bytes bytes of bitmap"* ]]
  [ "$(grep -c '^log-check: as expected' <<< "$output")" -eq 3 ]
  # 16 data pages, the status byte's page, the used ring's page.
  [[ "$output" == *"log-check: as expected (18 dirty pages)"* ]]
  [[ "$output" == *"log-check: as expected (2 dirty pages)"* ]]
  grep -q 'dirty logging on (migration)' "$gwlog"
}

@test "the same without REPLY_ACK, without EVENT_IDX, without indirect descriptors" {
  run -0 bio --no-reply-ack --no-event-idx --no-indirect "$sock" -c 'write 0 4k' -c log-start \
    "${read_write_checks[@]}"
  clean_output
  [ "$(grep -c '^log-check: as expected' <<< "$output")" -eq 3 ]
}

@test "GET_ID marks the buffer the serial goes to" {
  run -0 bio "$sock" -c id -c log-start -c log-clear -c id \
    -c 'log-check --exactly data status used'
  clean_output
}

@test "the used ring is logged at SET_VRING_ADDR's log_guest_addr, not where it is mapped" {
  # QEMU sends the used ring's GPA; any other address must be the one logged.
  run -0 bio "$sock" -c 'write 0 4k' -c 'log-start --used-log-addr 0x10000' -c log-clear \
    -c 'read 0 4k' -c 'log-check --exactly data status used gpa:0x10000 !used-ring'
  clean_output
}

@test "every queue logs its own used ring" {
  run -0 bio -Q 2 "$sock" -c 'write 0 4k' -c log-start -c 'queue 1' -c log-clear -c 'read 0 4k' \
    -c 'log-check --exactly data status used' -c 'queue 0' -c 'log-check !used'
  clean_output
}

@test "a second, bigger SET_LOG_BASE mid-run: logging goes on in the new bitmap" {
  run -0 bio "$sock" -c 'write 0 4k' -c log-start -c log-clear -c 'read 0 8k' \
    -c 'log-resize 1M' -c 'log-check --exactly data status used' \
    -c log-clear -c 'read 0 64k' -c 'log-check --exactly data status used' \
    -c 'log-resize 0' -c log-clear -c 'write 0 64k' -c 'log-check --exactly status used'
  clean_output
  [[ "$output" == *"dirty log resized: 1048576 bytes"* ]]
  [[ "$output" == *"dirty log resized: $log_bytes bytes"* ]]
}

@test "logging off (SET_FEATURES without LOG_ALL): no new bits" {
  run -0 bio "$sock" -c 'write 0 4k' -c log-start -c log-stop -c log-clear \
    -c 'read 0 64k' -c 'write 0 64k' -c id -c 'log-check --exactly'
  clean_output
  grep -q 'dirty logging off' "$gwlog"
  # LOG_ALL off while the rings still have F_LOG: nothing either.
  run -0 bio "$sock" -c 'write 0 4k' -c log-start -c 'log-stop --features-only' -c log-clear \
    -c 'read 0 64k' -c 'write 0 64k' -c 'log-check --exactly'
  clean_output
  # F_LOG off on the ring while LOG_ALL stays: buffers and status bytes, not the used ring.
  run -0 bio "$sock" -c 'write 0 4k' -c log-start -c 'log-stop --rings-only' -c log-clear \
    -c 'read 0 64k' -c 'log-check --exactly data status'
  clean_output
}

@test "a reconnect while logging: the new connection logs from its first request" {
  run -0 bio "$sock" -c 'write 0 4k' -c log-start -c reconnect -c log-clear -c 'read 0 64k' \
    -c 'log-check --exactly data status used'
  clean_output
  [ "$(grep -c 'dirty logging on (migration)' "$gwlog")" -eq 2 ]
}

# too_small SIZE: a log of SIZE bytes; the next read breaks the ring (its buffers would be
# logged outside the bitmap), the gateway logs why and serves a new front-end.  The gateway
# still completes that read, and signals the ring's error eventfd before it publishes the
# completion: blkgate-io sees the error at the first or at the second read (which then waits
# its timeout out: -t 2).
too_small() {
  local n
  n=$(wc -l < "$gwlog")
  run "$BLKGATE_IO" -t 2 -k "$sock" -c 'write 0 4k' -c "log-start --size $1" -c 'read 0 4k' \
    -c 'read 4k 4k' -c alive
  clean_output
  [ "$status" -eq 1 ]
  [[ "$output" == *"queue 0: the back-end signalled the ring's error eventfd"* ]]
  [[ "$output" == *"alive: a new front-end got GET_ID and a read served"* ]]
  tail -n +"$((n + 1))" "$gwlog" |
    grep -E 'error: queue 0: .* outside the dirty log: ring stopped until the device is reset'
  alive "$gateway_pid"
}

@test "a log too small for guest memory breaks the ring at the next request, not the gateway" {
  too_small 8                         # 256 KiB of GPA: nothing of guest memory
  too_small $((log_bytes / 2))        # half of it
  too_small $((log_bytes - 1))        # all but the last 8 pages, where the data buffers are
  # And exactly big enough works.
  run -0 bio "$sock" -c 'write 0 4k' -c "log-start --size $log_bytes" -c log-clear \
    -c 'read 0 4k' -c 'log-check --exactly data status used'
  clean_output
}
