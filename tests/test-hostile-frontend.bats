#!/usr/bin/env bats
# A hostile front-end, one named case per test (tests/vu-cases.py sends it): oversized and
# truncated messages, sizes that do not fit the request, missing and extra fds, overlapping
# or unmappable memory regions, rings outside guest memory, a dirty log too small, a
# front-end that stalls mid-message.  Each test checks the gateway's log line, whether the
# connection was closed, that the gateway still listens and serves a proper front-end
# afterwards, and that it holds no more fds than before.

load test_helper

vu_cases=$BATS_TEST_DIRNAME/vu-cases.py

setup() {
  blkgate_setup
  [ -x "$BLKGATE_IO" ] || { echo "$BLKGATE_IO does not exist: run make first" >&2; return 1; }
  requires python3
  requires_plugin memory
  start_gateway memory size=64M
  wait_for_socket "$sock"
  fds=$(fd_count)
  logpos=$(wc -l < "$gwlog")
}

# new_log: what the gateway logged since the test's setup.
new_log() {
  tail -n +"$((logpos + 1))" "$gwlog"
}

# in_new_log GREP-ARGS...: a line the gateway logged since setup matches.
in_new_log() {
  new_log | grep -q "$@"
}

# logged TEXT: the gateway logged the line "blkgate: error: TEXT" since setup.
logged() {
  wait_for 10 in_new_log -x -F "blkgate: error: $1" ||
    { echo "no line 'blkgate: error: $1' in:" >&2; new_log >&2; return 1; }
}

# still_serving: the gateway is alive, listens on $sock, serves a proper front-end, and is
# back to the fds it held before the test (nothing it received was kept).
still_serving() {
  alive "$gateway_pid"
  listens "$gateway_pid" "$sock"
  run -0 "$BLKGATE_IO" -t 20 "$sock" -c 'write 0 64k -S 7' -c 'verify 0 64k -S 7'
  fds_back "$gateway_pid" "$fds"
  ! new_log | grep -q -E 'Sanitizer|runtime error'
}

# hostile CASE: runs the case; its key=value results are in $output.
hostile() {
  run -0 python3 "$vu_cases" "$sock" "$1" --pid "$gateway_pid"
}

# refused CASE LINE...: the case gets each LINE logged and its connection closed.
refused() {
  local c=$1 l
  shift
  hostile "$c"
  [[ "$output" == *"closed=yes"* ]] || { echo "the connection stayed open" >&2; return 1; }
  for l; do logged "$l"; done
  still_serving
}

closing() {
  echo "closing the connection after a failed $1"
}

# ---------------------------------------------------------------------------------------------
# Framing

@test "oversized payload: refused before it is read, connection closed" {
  refused oversized "front-end connection: message payload too large"
}

@test "truncated header then EOF" {
  refused truncated_header "front-end connection: truncated message header"
}

@test "truncated payload then EOF" {
  refused truncated_payload "front-end connection: truncated message payload"
}

@test "payload size not matching the request type" {
  refused wrong_size "bad SET_FEATURES message (2): payload size does not match the request" \
    "$(closing SET_FEATURES)"
}

# ---------------------------------------------------------------------------------------------
# Fds

@test "missing fd: SET_MEM_TABLE without its region's fd" {
  refused missing_fd_mem_table \
    "bad SET_MEM_TABLE message (5): wrong number of file descriptors for the request" \
    "$(closing SET_MEM_TABLE)"
}

@test "missing fd: SET_MEM_TABLE with fewer fds than regions" {
  refused mem_table_fewer_fds \
    "bad SET_MEM_TABLE message (5): memory table size, region count and fds disagree"
}

@test "missing fd: SET_VRING_KICK without an fd or the no-fd flag" {
  refused missing_fd_kick "bad SET_VRING_KICK message (12): vring fd flag and fds disagree" \
    "$(closing SET_VRING_KICK)"
}

@test "missing fd: SET_INFLIGHT_FD" {
  refused missing_fd_inflight \
    "bad SET_INFLIGHT_FD message (32): wrong number of file descriptors for the request"
}

@test "missing fd: SET_LOG_BASE" {
  refused missing_fd_log_base \
    "bad SET_LOG_BASE message (6): wrong number of file descriptors for the request"
}

@test "missing fd: ADD_MEM_REG" {
  refused missing_fd_add_mem_reg \
    "bad ADD_MEM_REG message (37): wrong number of file descriptors for the request"
}

@test "an extra fd: SET_VRING_CALL with the no-fd flag and an fd" {
  refused nofd_call_with_fd "bad SET_VRING_CALL message (13): vring fd flag and fds disagree" \
    "$(closing SET_VRING_CALL)"
}

@test "extra fds on messages that take none are closed at once, not kept till the end" {
  hostile extra_fds
  # With REPLY_ACK the connection stays open, each message acked with a failure, and
  # meanwhile the gateway holds only that connection's socket more than before.
  [[ "$output" == *"closed=no"* ]]
  [[ "$output" == *"ack=1"* ]]
  [[ "$output" == *"held_fds=$((fds + 1))"* ]] ||
    { echo "$output: the gateway had $fds fds before" >&2; return 1; }
  logged "bad SET_OWNER message (3): wrong number of file descriptors for the request"
  logged "bad SET_FEATURES message (2): wrong number of file descriptors for the request"
  logged "bad SET_VRING_NUM message (8): wrong number of file descriptors for the request"
  still_serving
}

# ---------------------------------------------------------------------------------------------
# Memory regions

@test "overlapping memory regions in guest-physical space" {
  refused overlap_gpa "SET_MEM_TABLE region 1: memory regions overlap in guest-physical space" \
    "$(closing SET_MEM_TABLE)"
}

@test "overlapping memory regions in the front-end's address space" {
  refused overlap_uva \
    "SET_MEM_TABLE region 1: memory regions overlap in front-end address space"
}

@test "ADD_MEM_REG overlapping a region already there" {
  refused overlap_add_mem_reg "ADD_MEM_REG: memory regions overlap in guest-physical space" \
    "$(closing ADD_MEM_REG)"
}

@test "unmappable region: a pipe, an eventfd" {
  refused mmap_pipe "SET_MEM_TABLE region 0: cannot map a guest memory region"
  logpos=$(wc -l < "$gwlog")
  refused mmap_eventfd "SET_MEM_TABLE region 0: cannot map a guest memory region"
}

@test "unmappable region: offset past the end of its file" {
  refused mmap_offset_past_file \
    "SET_MEM_TABLE region 0: memory region is larger than the file that backs it"
}

@test "unmappable region: size 0, size or offset overflowing" {
  local c
  for c in mmap_size_zero mmap_size_overflow mmap_offset_overflow; do
    logpos=$(wc -l < "$gwlog")
    refused $c "SET_MEM_TABLE region 0: memory region size or addresses out of range"
  done
}

# ---------------------------------------------------------------------------------------------
# Rings

@test "ring addresses outside guest memory" {
  refused ring_outside "queue 0: ring addresses are outside guest memory" \
    "$(closing SET_VRING_KICK)"
}

@test "a used ring straddling the end of its memory region" {
  refused ring_straddling "queue 0: ring addresses are outside guest memory"
}

# ---------------------------------------------------------------------------------------------
# Dirty log

@test "SET_LOG_BASE: a log past the end of its file, size 0, an overflowing offset" {
  refused log_past_file "SET_LOG_BASE: dirty log is larger than its file" \
    "$(closing SET_LOG_BASE)"
  logpos=$(wc -l < "$gwlog")
  refused log_size_zero "SET_LOG_BASE: dirty log size or offset out of range"
  logpos=$(wc -l < "$gwlog")
  refused log_offset_overflow "SET_LOG_BASE: dirty log size or offset out of range"
}

# log_refused LOG-START-ARGS: starts logging with those arguments, then a read; the ring
# breaks (its writes would be logged outside the bitmap), the gateway says so and serves on.
log_refused() {
  run "$BLKGATE_IO" -t 2 -k "$sock" -c 'write 0 4k' -c "log-start $1" -c 'read 0 4k' \
    -c 'read 4k 4k'
  [ "$status" -eq 1 ]
  [[ "$output" == *"the back-end signalled the ring's error eventfd"* ]]
  wait_for 10 in_new_log -E "$2" || { new_log >&2; return 1; }
  still_serving
}

@test "a dirty log smaller than guest memory needs: the ring breaks, no write past the log" {
  # Guest memory is 64 MiB at GPA 1 GiB: a bitmap of 34816 bytes covers it; 4096 bytes
  # cover 128 MiB of GPA, none of guest memory.
  log_refused "--size 4096" \
    "error: queue 0: a guest buffer lies outside the dirty log: ring stopped until the device is reset"
}

@test "a used-ring log address outside the log" {
  log_refused "--size 34816 --used-log-addr 0x50000000" \
    "error: queue 0: the used ring lies outside the dirty log: ring stopped until the device is reset"
}

# ---------------------------------------------------------------------------------------------
# Stalls: the main loop never waits for a front-end

# stalled CASE LINE: the front-end of CASE is dropped after the stall timeout with LINE
# logged; meanwhile the gateway's main loop keeps answering others (a second front-end is
# refused at once, not when the stall ends).
stalled() {
  python3 "$vu_cases" "$sock" "$1" > "$tmp/stall.out" &
  local pid=$!
  wait_for 10 in_new_log "front-end connected"
  sleep 1
  # The main loop is free: a second front-end is refused at once, while the first stalls.
  run -2 timeout 20 python3 "$vu_probe" --timeout 3 "$sock"
  logged "refusing a second front-end: one is already connected"
  wait "$pid"
  cat "$tmp/stall.out"
  logged "$2"
  still_serving
}

@test "slow-loris: half a header, then nothing: dropped after 10 s, the main loop free" {
  stalled stall_header \
    "front-end stopped in the middle of a message for 10 s: closing the connection"
}

@test "slow-loris: a payload one byte a second: dropped after 10 s, the main loop free" {
  stalled stall_payload \
    "front-end stopped in the middle of a message for 10 s: closing the connection"
}

@test "a front-end that connects and sends nothing does not hold the only slot" {
  stalled stall_idle \
    "front-end sent no message within 10 s of connecting: closing the connection"
}

@test "a front-end that never reads its replies is dropped, not waited for" {
  # Before, each reply that did not fit waited up to 10 s, the main loop with it.
  hostile unread_replies
  cat <<< "$output"
  logged "GET_FEATURES: the front-end does not read its replies"
  logged "$(closing GET_FEATURES)"
  still_serving
}
