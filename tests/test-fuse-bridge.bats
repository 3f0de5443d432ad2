#!/usr/bin/env bats
# The FUSE bridge (issue 7): gateway A serves an image with the file plugin and exports it
# through FUSE (--fuse-export $tmp/a.disk --fuse-export-writable); gateway B serves A's FUSE
# file with the fuse plugin to a QEMU guest.  A has no vhost-user front-end at all: its FUSE
# file is its only client.  The guest's data must cross both gateways intact in both
# directions, and A's FUSE side may die (SIGKILL) and come back on the same path (cleaning
# the stale mount itself) under a guest writing with fio: B holds the guest's requests and
# reopens the file, the guest sees no error, and every block verifies.

load test_helper
load guest-integrity

mib=$((1024 * 1024))

setup() {
  blkgate_setup
  # The gateway resolves the directory: compare with what /proc/self/mountinfo shows.
  fx=$(cd "$tmp" && pwd -P)/a.disk
  a_sock=$sockdir/a.sock
  a_log=$tmp/a-gateway.log
  a_img=$tmp/a.img
  a_pid=
  b_pid=
  guest_ready
  requires_plugin file
  requires_plugin fuse
  requires fusermount3
  [ -e /dev/fuse ] || missing "/dev/fuse is not available" || return 1
  "$BLKGATE" --fuse-export "$tmp/probe" --version >/dev/null 2>&1 ||
    missing "blkgate was built without FUSE support"
}

# Guests first (they hold B's requests), then B (it holds A's file open), then A (its image
# may be on slowfs, which blkgate_teardown stops before the gateways); whatever happened, no
# mount may be left at a.disk, stale or not.
teardown() {
  local rc=0 f i pid
  for f in "$tmp"/.pids/guest.*; do
    [ -e "$f" ] || continue
    terminate "${f##*.}" 10 || true
    rm -f "$f"
  done
  for pid in "$b_pid" "$a_pid"; do
    [ -n "$pid" ] && [ -e "$tmp/.pids/gateway.$pid" ] || continue
    if ! alive "$pid"; then
      echo "blkgate (pid $pid) exited before the end of the test" >&2
      rm -f "$tmp/.pids/gateway.$pid"
      rc=1
    elif ! stop_gateway "$pid"; then
      rc=1
    fi
  done
  blkgate_teardown || rc=1
  for ((i = 0; i < 5; i++)); do
    mounted "$fx" || break
    fusermount3 -u -z "$fx" 2>/dev/null || umount -l "$fx"
  done
  if [ $rc -ne 0 ] || [ -z "${BATS_TEST_COMPLETED:-}" ]; then
    for f in "$gwlog" "$a_log"; do
      [ -s "$f" ] || continue
      echo "--- $f (last 40 lines) ---" >&2
      tail -n 40 "$f" >&2
    done
  fi
  return $rc
}

# mounted PATH: something is mounted at PATH.
mounted() {
  awk -v p="$1" '$5 == p { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# start_a: gateway A (its own socket, pidfile and log), exporting $a_img at $fx; its pid is
# $a_pid.
start_a() {
  sock=$a_sock pidfile=$tmp/a.pid gwlog=$a_log \
    start_gateway --fuse-export "$fx" --fuse-export-writable file file="$a_img"
  a_pid=$gateway_pid
  mounted "$fx"
}

# start_b ARGS...: gateway B, the guest's, serving A's FUSE file with the fuse plugin; its pid
# is $b_pid.
start_b() {
  start_gateway fuse file="$fx" "$@"
  b_pid=$gateway_pid
}

# unmounted PATH: nothing is (a bare `! mounted` would not fail a test).
unmounted() {
  ! mounted "$1"
}

# no_log REGEX: no line of B's log matches REGEX.
no_log() {
  ! grep -q -E "$1" "$gwlog"
}

# log_count FILE REGEX: how many lines of FILE match REGEX.
log_count() {
  local n
  n=$(grep -c -E "$2" "$1" 2>/dev/null)
  echo "${n:-0}"
}

# count_reached FILE REGEX N: at least N lines of FILE match REGEX.
count_reached() {
  [ "$(log_count "$1" "$2")" -ge "$3" ]
}

# wait_for_count FILE REGEX N SECONDS: waits until at least N lines of FILE match REGEX.
wait_for_count() {
  wait_for "$4" count_reached "$1" "$2" "$3" ||
    { echo "fewer than $3 lines matching /$2/ in $1 after $4 s" >&2; return 1; }
}

# image_written: slowfs's backing file (a.img in test 2) has data.
image_written() {
  [ "$(allocated_bytes "$tmp/backing.img")" -gt 0 ]
}

# guest_running: the guest g (guest_start) has not ended.
guest_running() {
  alive "$(cat "$tmp/g.pid")"
}

# reopened_or_guest_gone N: B has reopened A's file N times, or the guest has ended.
reopened_or_guest_gone() {
  count_reached "$gwlog" "reopened after" "$1" || ! guest_running
}

# ---------------------------------------------------------------------------------------------
# The host talks to a running guest through a control disk: /dev/vdb, served by a third
# gateway (file plugin) from $tmp/ctl.img.  The guest says what it has done on its console
# ($tmp/g.log); the host answers with a word in sector 0 of the control disk, which the guest
# polls with O_DIRECT reads.

start_control() {
  truncate -s 1M "$tmp/ctl.img"
  ctl_sock=$sockdir/ctl.sock
  sock=$ctl_sock pidfile=$tmp/ctl.pid gwlog=$tmp/ctl-gateway.log \
    start_gateway file file="$tmp/ctl.img"
}

# tell_guest WORD: puts WORD in sector 0 of the guest's /dev/vdb.
tell_guest() {
  printf '%s\n' "$1" | dd of="$tmp/ctl.img" bs=512 conv=notrunc,sync status=none
}

# In the guest: "$control_says WORD" is true once the host has put WORD on the control disk.
control_says='dd if=/dev/vdb bs=512 count=1 iflag=direct status=none | grep -q'

# ---------------------------------------------------------------------------------------------
# Data integrity across the bridge

# pre_ranges, write_ranges, fio_off, fio_len and integrity_guest: guest-integrity.bash.

@test "fuse bridge: A's data reaches the guest through B, and the guest's writes land in A's image" {
  local r line off len sum nr=0 nw=0
  declare -A want
  truncate -s 64M "$tmp/a.img"
  for r in $pre_ranges; do
    random_at "$tmp/a.img" "${r%:*}" "${r#*:}"
    want[$r]=$(sha256_range "$tmp/a.img" "${r%:*}" "${r#*:}")
  done
  start_a
  start_b retry-timeout=60

  run -0 integrity_guest 600
  [ "${lines[0]}" = "size=$((64 * mib))" ]
  [[ $output == *"fio=0"* ]]
  [[ $output != *"dmesg=bad"* ]]
  for line in "${lines[@]}"; do
    case $line in
      "R "*)
        read -r _ r sum <<< "$line"
        [ "$sum" = "${want[$r]}" ] || { echo "the guest read $r wrong" >&2; return 1; }
        nr=$((nr + 1)) ;;
      "W "*)
        read -r _ off len sum <<< "$line"
        [ "$(sha256_range "$tmp/a.img" "$off" "$len")" = "$sum" ] ||
          { echo "the guest's write at $off+$len is not in a.img" >&2; return 1; }
        nw=$((nw + 1)) ;;
    esac
  done
  [ $nr -eq 4 ]
  [ $nw -eq 3 ]

  # B gone (it flushed A's file at exit): A's image and A's FUSE file are the guest's view of
  # the disk, byte for byte.
  stop_gateway "$b_pid"
  [ "$(sed -n 's/^disk=//p' <<< "$output")" = "$(sha256_range "$tmp/a.img" 0 $((64 * mib)))" ]
  cmp "$fx" "$tmp/a.img"
  # Nothing was written outside the ranges: zero them, and the image is all zeros.
  stop_gateway "$a_pid"
  unmounted "$fx"
  for r in $pre_ranges $write_ranges $fio_off:$fio_len; do
    dd if=/dev/zero of="$tmp/a.img" bs="${r#*:}" count=1 seek="${r%:*}" oflag=seek_bytes \
       conv=notrunc status=none
  done
  cmp -n $((64 * mib)) "$tmp/a.img" /dev/zero
  [ "$(stat -c %s "$tmp/a.img")" -eq $((64 * mib)) ]
  # B's plugin never saw the file system go.
  no_log "lost the file system"
}

# ---------------------------------------------------------------------------------------------
# A's FUSE side killed under a writing guest

# The guest writes with fio (randwrite, iodepth 16) and verifies everything it wrote (crc32c in
# every block), pass after pass until the host puts STOP on its control disk, then prints the
# checksum of the disk; dmesg must show no I/O error.  Each pass writes 16 MiB in the next
# quarter of the disk, with new random offsets and data (randrepeat=0), so that a write lost in
# one pass cannot pass for the previous one's.
guest_fio="echo started; s=0 p=0;
  while [ \$s -eq 0 ] && [ \$p -lt 100 ] && ! $control_says STOP; do
    fio --name=w --filename=/dev/vda --rw=randwrite --bs=4k --iodepth=16 --ioengine=libaio \
      --direct=1 --randrepeat=0 --offset=\$(( p % 4 * 16 ))M --size=16M \
      --verify=crc32c --verify_fatal=1 --do_verify=1 > fio.out 2>&1; s=\$?; p=\$((p + 1));
  done;
  tail -n 3 fio.out; echo passes=\$p; echo fio=\$s;
  if dmesg | grep -i -E 'I/O error|blk_update_request|not a head'; then echo dmesg=bad; fi;
  echo disk=\$(dd if=/dev/vda bs=1M count=64 iflag=direct status=none | sha256sum | cut -c1-64);
  [ \$s -eq 0 ]"

# A's image is on slowfs (tests/tools/slowfs.c: every read and write sleeps a random 0-20 ms
# on one of many threads), so that the guest's requests spend their time inside A, and A dies
# with some of them in flight: the kernel fails those with ECONNABORTED in B, and the next
# ones with ENOTCONN.  (B logs the errno of the first failure it handles, and on a loaded
# machine that is often ENOTCONN even with requests in flight, so the reason is not checked.)
# slowfs itself keeps running; a.img is its backing file, sparse until the guest writes.
@test "fuse bridge: A killed (SIGKILL) and restarted 3 times under guest I/O: B holds and reopens, no guest error" {
  local rounds=3 round status=0 disk
  start_control
  start_slowfs 64M 20000
  a_img=$mnt/disk
  start_a
  start_b retry-timeout=60
  guest_start g -t 900 "$sock" "$ctl_sock" "$guest_fio"
  wait_for_log "$tmp/g.log" started 120
  # fio has started writing (it takes a while to start in a slow guest).
  wait_for 120 image_written || { echo "the guest wrote nothing within 120 s" >&2; return 1; }

  for ((round = 1; round <= rounds; round++)); do
    sleep "$((1 + RANDOM % 2)).$((RANDOM % 10))"
    kill_gateway KILL "$a_pid"
    # The mount A leaves is dead: B's requests fail there and are held.
    mounted "$fx"
    sleep "1.$((RANDOM % 10))"
    start_a
    # A cleaned the stale mount itself: one mount at the path, a live one.
    wait_for_count "$a_log" "$fx is a stale mount" "$round" 10
    [ "$(awk -v p="$fx" '$5 == p' /proc/self/mountinfo | wc -l)" = 1 ]
    # B reopened A's file before the next round (or the rounds would merge into one); a
    # guest that has ended (with an error) sends nothing more to reopen it for.
    wait_for 120 reopened_or_guest_gone "$round" ||
      { echo "B did not reopen A's file within 120 s of round $round" >&2; return 1; }
    guest_running || break
  done
  tell_guest STOP

  guest_wait g || status=$?
  output=$(cat "$tmp/g.out")
  echo "$output"
  [ "$status" -eq 0 ]
  [[ $output == *"fio=0"* ]]
  [[ $output != *"dmesg=bad"* ]]
  grep -E 'lost the file system|reopened|failing' "$gwlog"
  # B lost A's file each time, held the requests, and got the file back.
  [ "$(log_count "$gwlog" "lost the file system .*holding requests")" -ge "$rounds" ]
  [ "$(log_count "$gwlog" "reopened after")" -ge "$rounds" ]
  no_log "failing requests"
  # The guest's view of the disk is A's image (slowfs's backing file), byte for byte, and A's
  # FUSE file.
  disk=$(sed -n 's/^disk=//p' <<< "$output")
  [ "$disk" = "$(sha256_range "$tmp/backing.img" 0 $((64 * mib)))" ]
  [ "$disk" = "$(sha256_range "$fx" 0 $((64 * mib)))" ]
  # And still after B and A have stopped.
  stop_gateway "$b_pid"
  stop_gateway "$a_pid"
  unmounted "$fx"
  [ "$disk" = "$(sha256_range "$tmp/backing.img" 0 $((64 * mib)))" ]
}
