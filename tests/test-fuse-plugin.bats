#!/usr/bin/env bats
# The fuse plugin: an image on a FUSE file system (slowfs, tests/tools/slowfs.c, standing in
# for sshfs and the like), served through the gateway and checked with blkgate-io.  slowfs
# runs as the daemon "slowfs" so that tests can kill it (SIGKILL leaves a dead mount behind,
# unmounted lazily before slowfs mounts again on the same mount point), make it fail a range
# with EIO (SLOWFS_EIO), support fallocate (SLOWFS_FALLOCATE=1), or invalidate its open files
# the way sshfs -o reconnect does (SIGUSR1).

load test_helper

setup() {
  blkgate_setup
  requires_plugin fuse
  slowfs=$top_builddir/tests/slowfs
  mnt=$tmp/mnt
  backing=$tmp/backing.img
  io=$top_builddir/src/blkgate-io
}

# Stop the gateway and slowfs, then make sure no mount is left, even a dead one (which
# mountpoint(1) cannot stat).
teardown() {
  local rc=0
  blkgate_teardown || rc=$?
  if grep -q " $mnt " /proc/mounts 2>/dev/null; then
    fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
  fi
  return $rc
}

# slowfs_mount DELAY [VAR=VALUE...]: slowfs over $backing (created at 64M if missing) on
# $mnt, with the environment variables given; waits until $mnt/disk is there.
slowfs_mount() {
  local delay=$1
  shift
  [ -x "$slowfs" ] || missing "tests/slowfs is not built (libfuse3 missing)" || return 1
  requires fusermount3
  [ -e /dev/fuse ] || missing "/dev/fuse is not available" || return 1
  [ -e "$backing" ] || truncate -s 64M "$backing"
  mkdir -p "$mnt"
  start_daemon slowfs env "$@" "$slowfs" "$backing" "$mnt" "$delay"
  wait_for 10 test -e "$mnt/disk" || { cat "$tmp/slowfs.log" >&2; return 1; }
}

# slowfs_crash: SIGKILL slowfs and detach its dead mount.
slowfs_crash() {
  kill_daemon slowfs KILL
  fusermount3 -u -z "$mnt" 2>/dev/null || umount -l "$mnt"
}

# no_log REGEX: no line of the gateway's log matches REGEX (a bare `! grep` would not fail
# the test).
no_log() {
  ! grep -q -E "$1" "$gwlog"
}

# features: the features line of "blkgate-io SOCK info" with its continuation lines.
features() {
  "$io" "$sock" info | sed -n '/^features/,/^protocol/p' | grep -v '^protocol'
}

# now_ms: monotonic enough for timing a request (wall clock in ms).
now_ms() {
  echo $(( $(date +%s%N) / 1000000 ))
}

@test "fuse: data written through the gateway lands in the FUSE file byte for byte" {
  slowfs_mount 2000
  [ "$(stat -f -c %t "$mnt")" = 65735546 ]
  start_gateway fuse file="$mnt/disk"

  head -c 1M /dev/urandom > "$tmp/a"
  head -c 300k /dev/urandom > "$tmp/b"
  run "$io" "$sock" -c "write 1M 1M -i $tmp/a" -c "write 5000k 300k -i $tmp/b" -c flush \
    -c "read 1M 1M -o $tmp/a.back" -c "verify 5000k 300k -i $tmp/b" -c "verify 0 1M -P 0"
  [ "$status" -eq 0 ]
  cmp "$tmp/a" "$tmp/a.back"
  # In the backing file, where slowfs put it.
  [ "$(sha256_range "$backing" 1M 1M)" = "$(sha256sum < "$tmp/a" | cut -d' ' -f1)" ]
  [ "$(sha256_range "$backing" $((5000 * 1024)) 300k)" = "$(sha256sum < "$tmp/b" | cut -d' ' -f1)" ]
  [ "$(sha256_range "$backing" 0 1M)" = "$(sha256_zeros 1M)" ]
  # And the other way: what is in the backing file is what the guest reads.
  random_at "$backing" $((40 << 20)) 192k
  run "$io" "$sock" -c "read 40M 192k -o $tmp/c.back"
  [ "$status" -eq 0 ]
  cmp <(dd if="$backing" iflag=skip_bytes,count_bytes skip=$((40 << 20)) count=192k status=none) \
    "$tmp/c.back"
}

@test "fuse: discard and write-zeroes are offered only where fallocate works" {
  local info
  slowfs_mount 0
  start_gateway -v fuse file="$mnt/disk"
  info=$(features)
  echo "$info"
  # slowfs without fallocate: the kernel answers EOPNOTSUPP, nothing is offered.
  [[ "$info" == *" FLUSH "* ]]
  [[ "$info" != *DISCARD* ]]
  [[ "$info" != *WRITE_ZEROES* ]]
  grep -q "punch=0 zero_range=0" "$gwlog"
  stop_gateway

  # A file that is not on FUSE (with fallocate): both offered, and the gateway says it is not
  # on FUSE.
  requires_punch_hole "$tmp"
  truncate -s 64M "$tmp/plain.img"
  start_gateway -v fuse file="$tmp/plain.img"
  info=$(features)
  echo "$info"
  [[ "$info" == *DISCARD* ]]
  [[ "$info" == *WRITE_ZEROES* ]]
  grep -q "not on a FUSE file system; serving it all the same" "$gwlog"
  run "$io" "$sock" -c 'write 0 1M -S 3' -c 'zero 64k 64k' -c 'discard 256k 128k' \
    -c 'verify 0 64k -S 3' -c 'verify 64k 64k -P 0' -c 'verify 256k 128k -P 0'
  [ "$status" -eq 0 ]
}

@test "fuse: a FUSE file system with fallocate gets discard and write-zeroes, through FUSE" {
  requires_punch_hole "$tmp"
  local info before
  slowfs_mount 0 SLOWFS_FALLOCATE=1
  start_gateway fuse file="$mnt/disk"
  info=$(features)
  [[ "$info" == *DISCARD* ]]
  [[ "$info" == *WRITE_ZEROES* ]]
  # The probes changed neither the size nor the data.
  [ "$(stat -c %s "$backing")" -eq $((64 << 20)) ]
  run "$io" "$sock" -c 'write 0 4M -S 5' -c flush
  [ "$status" -eq 0 ]
  before=$(allocated_bytes "$backing")
  run "$io" "$sock" -c 'discard 1M 2M' -c 'zero 3M 64k --unmap' -c 'zero 3200k 64k' \
    -c 'verify 0 1M -S 5' -c 'verify 1M 2M -P 0' -c 'verify 3M 64k -P 0' \
    -c 'verify 3200k 64k -P 0'
  [ "$status" -eq 0 ]
  [ "$(allocated_bytes "$backing")" -lt "$before" ]
  [ "$(sha256_range "$backing" 1M 2M)" = "$(sha256_zeros 2M)" ]
  [ "$(stat -c %s "$backing")" -eq $((64 << 20)) ]
}

# crash_under_writes [PLUGIN ARGS...]: 16 writes of 64k (8 at a time, one per worker), each
# 0.4 s in slowfs; slowfs is killed while the first 8 are inside it and mounted again 1.5 s
# later.  Every write must complete, and verify.
crash_under_writes() {
  local i writes=() verifies=() io_pid status=0 t0 t1
  slowfs_mount =400000
  start_gateway fuse file="$mnt/disk" "$@"
  for ((i = 0; i < 16; i++)); do
    writes+=(-c "aio-write $((i * 64))k 64k -S $((i + 1))")
    verifies+=(-c "verify $((i * 64))k 64k -S $((i + 1))")
  done
  t0=$(now_ms)
  "$io" -t 60 "$sock" "${writes[@]}" -c wait "${verifies[@]}" -c flush \
    > "$tmp/io.out" 2>&1 &
  io_pid=$!
  sleep 0.3
  slowfs_crash
  sleep 1.5
  slowfs_mount =1000
  wait "$io_pid" || status=$?
  t1=$(now_ms)
  cat "$tmp/io.out"
  [ "$status" -eq 0 ]
  [ "$(grep -c ': OK$' "$tmp/io.out")" -eq 16 ]
  [ "$(grep -c '^verified' "$tmp/io.out")" -eq 16 ]
  # The writes were held across the gap (16 writes take 0.8 s in slowfs; slowfs died 0.3 s
  # after they were sent: ECONNABORTED for those inside it, ENOTCONN for the next), and the
  # plugin said so.
  [ $((t1 - t0)) -ge 1500 ]
  grep -E -q "lost the file system \((Software caused connection abort|Transport endpoint is not connected)\); holding requests" "$gwlog"
  grep -E -q "reopened after [0-9.]+ s" "$gwlog"
  no_log "failing requests"
  # The data is in the new slowfs's file, too.
  run "$io" "$sock" -c 'verify 0 64k -S 1' -c 'verify 960k 64k -S 16'
  [ "$status" -eq 0 ]
}

@test "fuse: the FUSE daemon killed under writes and remounted: every write completes and verifies" {
  crash_under_writes
}

@test "fuse: the same with direct=on (two file descriptors to reopen)" {
  crash_under_writes direct=on
}

@test "fuse: gone for longer than retry-timeout: IOERR, at once for new requests; then back" {
  local t0 t1 t2
  slowfs_mount =1000
  start_gateway fuse file="$mnt/disk" retry-timeout=2
  run "$io" "$sock" -c 'write 0 64k -S 1'
  [ "$status" -eq 0 ]
  slowfs_crash

  t0=$(now_ms)
  run "$io" -t 30 "$sock" -c 'write 64k 64k -S 2'
  t1=$(now_ms)
  [ "$status" -ne 0 ]
  [[ "$output" == *IOERR* ]]
  echo "held for $((t1 - t0)) ms"
  [ $((t1 - t0)) -ge 1800 ]
  [ $((t1 - t0)) -lt 10000 ]
  # While it stays away, new requests fail at once.
  run "$io" -k "$sock" -c 'write 128k 4k' -c 'read 0 4k'
  t2=$(now_ms)
  [ "$status" -ne 0 ]
  [ "$(grep -c IOERR <<< "$output")" -eq 2 ]
  echo "failed in $((t2 - t1)) ms"
  [ $((t2 - t1)) -lt 1500 ]
  grep -q "lost the file system" "$gwlog"
  grep -q "has been gone for .* (retry-timeout): failing requests with EIO" "$gwlog"
  [ "$(grep -c 'failing requests with EIO' "$gwlog")" -eq 1 ]
  alive "$gateway_pid"

  # Back: requests work again, the data written before is there.
  slowfs_mount =1000
  run "$io" "$sock" -c 'write 64k 64k -S 2' -c 'verify 0 64k -S 1' -c 'verify 64k 64k -S 2'
  [ "$status" -eq 0 ]
  grep -q "reopened after .*; requests work again" "$gwlog"
}

@test "fuse: a real EIO on a live mount reaches the guest at once" {
  local t0 t1
  # Bytes 1M .. 1M+64k fail with EIO in slowfs; the mount itself is fine.
  slowfs_mount =1000 SLOWFS_EIO=1048576:65536
  start_gateway fuse file="$mnt/disk"
  t0=$(now_ms)
  run "$io" -k "$sock" -c 'write 1M 4k' -c 'read 1056k 4k' -c 'write 0 64k -S 1' \
    -c 'verify 0 64k -S 1'
  t1=$(now_ms)
  echo "took $((t1 - t0)) ms"
  [ "$status" -ne 0 ]
  [ "$(grep -c IOERR <<< "$output")" -eq 2 ]
  [[ "$output" == *"verified 65536 bytes at offset 0"* ]]
  [ $((t1 - t0)) -lt 2000 ]
  # Tried once more on a fresh file, then given up; never taken for a lost mount.
  grep -q "EIO on a live mount: reopening the file to try once more" "$gwlog"
  no_log "lost the file system"
  alive "$gateway_pid"
}

@test "fuse: files invalidated by the FUSE daemon (sshfs -o reconnect) are reopened" {
  slowfs_mount =1000
  start_gateway fuse file="$mnt/disk"
  run "$io" "$sock" -c 'write 0 64k -S 1'
  [ "$status" -eq 0 ]
  # From now on slowfs fails every request on the files opened before with EIO.
  kill -USR1 "$(cat "$tmp/.pids/daemon.slowfs")"
  run "$io" "$sock" -c 'write 64k 64k -S 2' -c 'verify 0 64k -S 1' -c 'verify 64k 64k -S 2' \
    -c flush
  [ "$status" -eq 0 ]
  grep -q "EIO on a live mount: reopening the file to try once more" "$gwlog"
  no_log "lost the file system"
}

@test "fuse: strict-flush=on fails the first flush after writes that may have died with the daemon" {
  slowfs_mount =1000
  start_gateway fuse file="$mnt/disk" strict-flush=on
  run "$io" "$sock" -c 'write 0 64k -S 1' -c flush -c 'write 64k 64k -S 2'
  [ "$status" -eq 0 ]
  slowfs_crash
  slowfs_mount =1000
  # The first flush covers the write slowfs acknowledged before it died: it fails; the next
  # one is fine.  Reads and writes were never affected.
  run "$io" -k "$sock" -c 'write 128k 4k -S 3' -c flush -c flush -c 'verify 0 64k -S 1'
  [ "$status" -ne 0 ]
  [ "$(grep -c IOERR <<< "$output")" -eq 1 ]
  [[ "$output" == *"flush"*"IOERR"* ]]
  grep -q "strict-flush: failing the next flush" "$gwlog"
  run "$io" "$sock" -c flush
  [ "$status" -eq 0 ]
}

@test "fuse: without strict-flush the same flush succeeds, and the log warns" {
  slowfs_mount =1000
  start_gateway fuse file="$mnt/disk"
  run "$io" "$sock" -c 'write 0 64k -S 1'
  [ "$status" -eq 0 ]
  slowfs_crash
  slowfs_mount =1000
  run "$io" "$sock" -c flush -c 'verify 0 64k -S 1'
  [ "$status" -eq 0 ]
  grep -q "writes completed since the last flush went to the old file" "$gwlog"
}

@test "fuse: parameters are checked" {
  requires_blkgate
  truncate -s 1M "$tmp/img"
  run "$BLKGATE" -f -s "$sock" fuse
  [ "$status" -ne 0 ]
  [[ "$output" == *"you must supply the file=PATH parameter"* ]]
  run "$BLKGATE" -f -s "$sock" fuse file="$tmp/nonexistent"
  [ "$status" -ne 0 ]
  [[ "$output" == *"nonexistent: No such file or directory"* ]]
  run "$BLKGATE" -f -s "$sock" fuse file=
  [ "$status" -ne 0 ]
  [[ "$output" == *"file= needs a path"* ]]
  run "$BLKGATE" -f -s "$sock" fuse "$tmp"
  [ "$status" -ne 0 ]
  [[ "$output" == *"Is a directory"* ]]
  run "$BLKGATE" -r -f -s "$sock" fuse "$tmp"
  [ "$status" -ne 0 ]
  [[ "$output" == *"not a regular file"* ]]
  local bad
  for bad in retry-timeout=abc retry-timeout=-1 retry-timeout=86401 retry-timeout=1.5 \
             retry-timeout=; do
    run "$BLKGATE" -f -s "$sock" fuse "$tmp/img" "$bad"
    [ "$status" -ne 0 ]
    [[ "$output" == *"expected a whole number of seconds from 0 to 86400"* ]]
  done
  run "$BLKGATE" -f -s "$sock" fuse "$tmp/img" direct=maybe
  [ "$status" -ne 0 ]
  [[ "$output" == *"direct=maybe: expected on or off"* ]]
  run "$BLKGATE" -f -s "$sock" fuse "$tmp/img" strict-flush=2
  [ "$status" -ne 0 ]
  [[ "$output" == *"strict-flush=2: expected on or off"* ]]
  run "$BLKGATE" -f -s "$sock" fuse "$tmp/img" retry=5
  [ "$status" -ne 0 ]
  [[ "$output" == *"unknown parameter 'retry'"* ]]
  [ ! -e "$sock" ]
  run "$BLKGATE" fuse --help
  [ "$status" -eq 0 ]
  [[ "$output" == *"retry-timeout=SECS"* ]]
  [[ "$output" == *"direct=on|off"* ]]
  run "$BLKGATE" --dump-plugin fuse
  [ "$status" -eq 0 ]
  [[ "$output" == *"fuse_hold_and_reopen=yes"* ]]
  [[ "$output" == *"thread_model=parallel"* ]]
}

@test "fuse: direct=on and read-only" {
  slowfs_mount 0
  start_gateway fuse file="$mnt/disk" direct=on
  run "$io" "$sock" -c 'write 3k 9k -S 4' -c 'verify 3k 9k -S 4'
  [ "$status" -eq 0 ]
  stop_gateway
  start_gateway -r fuse file="$mnt/disk"
  run "$io" "$sock" -c 'verify 3k 9k -S 4'
  [ "$status" -eq 0 ]
  run "$io" "$sock" -c 'write 0 4k'
  [ "$status" -ne 0 ]
}

@test "file plugin: a file on FUSE gets a hint about the fuse plugin" {
  requires_plugin file
  slowfs_mount 0
  start_gateway -v file file="$mnt/disk"
  grep -q "on a FUSE file system.*fuse plugin" "$gwlog"
}
