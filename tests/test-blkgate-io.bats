#!/usr/bin/env bats
# blkgate-io, the vhost-user-blk front-end, against blkgate (memory, file and null plugins)
# and against qemu-storage-daemon: the same requests must give the same results on both.
# Timings are printed, never asserted.

load test_helper

mib=$((1024 * 1024))

setup() {
  blkgate_setup
  [ -x "$BLKGATE_IO" ] || { echo "$BLKGATE_IO does not exist: run make first" >&2; return 1; }
}

# start_qsd DRIVER-OPTIONS: qemu-storage-daemon exporting one node on $sockdir/qsd.sock.
start_qsd() {
  requires qemu-storage-daemon
  qsd_sock=$sockdir/qsd.sock
  start_daemon qsd qemu-storage-daemon --blockdev "$1,node-name=n" \
    --export type=vhost-user-blk,id=e,node-name=n,addr.type=unix,addr.path="$qsd_sock",writable=on,num-queues=2
  wait_for_socket "$qsd_sock" 10
}

# The sequence both servers must agree on: writes of a byte pattern, a seeded pattern and
# a file, read back and verified, a flush, and a write-zeroes.
io_sequence() {
  head -c 65536 /dev/urandom > "$tmp/in.bin"
  bio -Q 2 "$1" <<EOF
id
write 0 1M -P 0x5a
verify 0 1M -P 0x5a
write 1M 3M -S 1234
verify 1M 3M -S 1234
write 4M 64k -i $tmp/in.bin
verify 4M 64k -i $tmp/in.bin
read 4M 64k -o $tmp/out.bin
queue 1
verify 1M 3M -S 1234
flush
zero 5M 64k
verify 5M 64k -P 0
EOF
}

@test "blkgate-io --help lists the commands; a missing socket is a clear error" {
  run -0 "$BLKGATE_IO" --help
  [[ "$output" == *bench* && "$output" == *reconnect* && "$output" == *bad-chain* ]]
  run -1 bio "$tmp/nothing.sock" info
  [[ "$output" == *"cannot connect"* ]]
}

@test "info and id against blkgate (memory plugin)" {
  requires_plugin memory
  start_gateway --serial bio-serial memory size=64M

  run -0 bio "$sock" info
  clean_output
  [[ "$output" == *"capacity                   131072 sectors (67108864 bytes)"* ]]
  [[ "$output" == *"protocol features"*CONFIG* ]]
  run -0 bio "$sock" id
  [ "$output" = bio-serial ]
}

@test "write, read, verify, flush, discard, zero against blkgate (memory plugin)" {
  requires_plugin memory
  start_gateway memory size=64M

  run -0 io_sequence "$sock"
  clean_output
  cmp "$tmp/in.bin" "$tmp/out.bin"
  run -0 bio "$sock" -c 'discard 0 1M' -c 'verify 0 1M -P 0'
  # A mismatch and an I/O error both fail the command.
  run -1 bio "$sock" verify 1M 4k -P 0x5a
  [[ "$output" == *"mismatch at offset 1048576"* ]]
  run -1 bio "$sock" read 64M 4k
  [[ "$output" == *"status IOERR"* ]]
}

@test "blkgate (file plugin): what blkgate-io writes is in the file, byte for byte" {
  requires_plugin file
  truncate -s 64M "$tmp/disk.img"
  start_gateway file file="$tmp/disk.img"

  run -0 io_sequence "$sock"
  clean_output
  [ "$(sha256_range "$tmp/disk.img" 0 $mib)" = \
    "$(head -c $mib /dev/zero | tr '\0' '\132' | sha256sum | cut -d' ' -f1)" ]
  [ "$(sha256_range "$tmp/disk.img" $((4 * mib)) 65536)" = "$(sha256sum < "$tmp/in.bin" | cut -d' ' -f1)" ]
  [ "$(sha256_range "$tmp/disk.img" $((5 * mib)) 65536)" = "$(sha256_zeros 65536)" ]
  # The seeded pattern read back with -o equals the file.
  run -0 bio "$sock" read 1M 3M -o "$tmp/seeded.bin"
  [ "$(sha256_range "$tmp/disk.img" $mib $((3 * mib)))" = "$(sha256sum < "$tmp/seeded.bin" | cut -d' ' -f1)" ]
  # And data put in the file on the host is what blkgate-io reads.
  random_at "$tmp/disk.img" $((8 * mib)) 65536
  dd if="$tmp/disk.img" of="$tmp/host.bin" bs=65536 skip=$((8 * 16)) count=1 status=none
  run -0 bio "$sock" verify 8M 64k -i "$tmp/host.bin"
}

# shm_image SIZE: $img, a new sparse file of SIZE in /dev/shm (tmpfs), removed by teardown.
shm_image() {
  [ -d /dev/shm ] || missing "no /dev/shm (tmpfs)" || return 1
  img=$(mktemp --tmpdir=/dev/shm)   # mktemp's own template: a unique name
  echo "$img" > "$tmp/shm-image"
  truncate -s "$1" "$img"
}

@test "blkgate (file plugin) on tmpfs reads and writes inline: the same bytes as through io_uring" {
  requires_plugin file
  local img mode expect
  shm_image 64M
  # What auto must choose: inline where the kernel refuses RWF_NOWAIT on tmpfs (asked here
  # through Python, not through the plugin's own probe).
  expect=$(python3 -c 'import os, sys, errno
fd = os.open(sys.argv[1], os.O_RDONLY)
try:
    os.preadv(fd, [bytearray(1)], 0, os.RWF_NOWAIT); print("off")
except OSError as e:
    print("on" if e.errno == errno.EOPNOTSUPP else "off")' "$img")
  for mode in auto off; do
    truncate -s 0 "$img"
    truncate -s 64M "$img"
    start_gateway -v file file="$img" inline=$mode
    run -0 io_sequence "$sock"
    clean_output
    # (io_sequence writes new random bytes at 4M each time)
    { sha256_range "$img" 0 $((4 * mib)); sha256_range "$img" $((5 * mib)) $((4 * mib)); } \
      > "$tmp/sum.$mode"
    stop_gateway
  done
  # auto chose the queue thread where tmpfs has no RWF_NOWAIT; off kept io_uring.
  [ "$(grep -o "inline=[a-z]* punch" "$gwlog" | head -n 1)" = "inline=$expect punch" ]
  [ "$(grep -o "inline=[a-z]* punch" "$gwlog" | tail -n 1)" = "inline=off punch" ]
  cmp "$tmp/sum.auto" "$tmp/sum.off"
  [ "$(sha256_range "$img" 0 $mib)" = \
    "$(head -c $mib /dev/zero | tr '\0' '\132' | sha256sum | cut -d' ' -f1)" ]
}

@test "file plugin on tmpfs at depth 32, the queue thread the limit: every request completes, data verifies" {
  requires_plugin file
  local img
  shm_image 256M
  start_gateway file file="$img"
  # The queue thread is usually the limit here (inline copies): publish() then defers
  # notifications while requests wait (how often depends on the machine's speed, so it is not
  # counted).  A notification never sent would leave the bench waiting until bio's timeout.
  run -0 bio "$sock" bench --rw randrw --bs 4k --iodepth 32 --queues 1 --time 3
  clean_output
  [[ "${lines[-1]}" == *" errors=0 "* ]]
  run -0 bio -Q 2 "$sock" -c 'write 0 8M -S 77' -c 'queue 1' -c 'verify 0 8M -S 77'
}

@test "blkgate (null plugin): reads are zeroes, writes succeed" {
  requires_plugin null
  start_gateway null size=1G

  run -0 bio "$sock" -c 'write 0 1M -P 0x77' -c 'verify 0 1M -P 0' -c flush -c 'zero 0 1M'
  clean_output
}

@test "qemu-storage-daemon: the same sequence gives the same file as blkgate" {
  requires_plugin file
  truncate -s 64M "$tmp/gw.img" "$tmp/qsd.img"
  start_gateway file file="$tmp/gw.img"
  start_qsd "driver=file,filename=$tmp/qsd.img"

  run -0 io_sequence "$sock"
  clean_output
  run -0 io_sequence "$qsd_sock"
  clean_output
  cmp "$tmp/in.bin" "$tmp/out.bin"
  # io_sequence writes a fresh random file each time: compare all but that range.
  cmp -n $((4 * mib)) "$tmp/gw.img" "$tmp/qsd.img"
  cmp -i $((5 * mib)) "$tmp/gw.img" "$tmp/qsd.img"
  run -0 bio "$qsd_sock" -c reconnect -c 'verify 1M 3M -S 1234' -c 'stop-queue 0' -c 'start-queue 0' \
    -c 'verify 0 1M -P 0x5a'
  clean_output
}

@test "bench: a 1-second run on 2 queues completes and prints its result line" {
  requires_plugin null
  start_gateway null size=1G

  run -0 bio -Q 2 "$sock" bench --rw randread --bs 4k --iodepth 4 --queues 2 --time 1
  clean_output
  [[ "${lines[-1]}" =~ ^bench\ rw=randread\ bs=4096\ iodepth=4\ queues=2\ .*\ errors=0\ iops=[0-9]+\ mibps=.*\ lat_p99_us=.*\ lat_p999_us= ]]
  run -0 bio "$sock" bench --rw randrw --iodepth 2 --time 0.5 --poll
  [[ "${lines[-1]}" == "bench rw=randrw "* ]]
}

@test "reconnect in the middle of a command sequence: outstanding requests complete" {
  requires_plugin memory
  start_gateway memory size=64M

  run -0 bio "$sock" -c 'write 0 1M -S 7' -c 'aio-write 1M 64k -S 7' -c 'aio-read 0 64k -S 7' \
    -c reconnect -c wait -c 'verify 0 1088k -S 7' -c disconnect -c 'verify 0 1M -S 7'
  clean_output
  [[ "$output" == *"reconnected in"* ]]
  [[ "$output" == *"aio #1 write 65536 bytes at offset 1048576: OK"* ]]
  [[ "$output" == *"aio #2 read 65536 bytes at offset 0: OK"* ]]
}

@test "stop-queue reports the index GET_VRING_BASE returns; start-queue goes on from it" {
  requires_plugin memory
  start_gateway memory size=64M

  run -0 bio -Q 2 "$sock" -c 'write 0 64k' -c 'write 64k 64k' -c 'stop-queue all' \
    -c 'start-queue all' -c 'verify 0 128k -P 0xcd'
  clean_output
  [[ "$output" == *"stop-queue queue=0 msg=GET_VRING_BASE index=2 reply_us="*" used_idx=2 "*"drained=yes"* ]]
  [[ "$output" == *"stop-queue queue=1 msg=GET_VRING_BASE index=0 "* ]]
  [[ "$output" == *"start-queue queue=0 base=2"* ]]
}

# Malformed descriptor chains and hostile requests (bad-chain): test-guest-malicious.bats.

@test "malformed vhost-user messages: blkgate survives and serves the next front-end" {
  requires_plugin memory
  start_gateway memory size=64M

  run -0 bio "$sock" -c 'raw GET_FEATURES 1 0' -c 'raw 99 0x9 0' -c alive \
    -c 'raw SET_MEM_TABLE 1 0 --fd memfd' -c alive -c 'raw GET_FEATURES 0x4 0' -c alive \
    -c 'raw SET_VRING_KICK 1 8 0000000000000000 --fd eventfd --fd eventfd' -c alive \
    -c 'raw GET_CONFIG 1 100 00 --wait 100' -c alive -c 'raw 0xffffffff 0xffffffff 0xffffffff' -c alive
  clean_output
  [[ "$output" == *"reply request=1 (GET_FEATURES) flags=0x5 size=8 fds=0"* ]]
}

@test "migrate: a second gateway on the same file takes over with the returned indexes" {
  requires_plugin file
  truncate -s 64M "$tmp/disk.img"
  start_gateway file file="$tmp/disk.img"
  local second=$sockdir/b.sock
  sock=$second pidfile=$tmp/b.pid start_gateway file file="$tmp/disk.img"

  run -0 bio -Q 2 "$sock" -c 'write 0 1M -S 3' -c 'aio-write 1M 64k -S 3' \
    -c "migrate $second" -c wait -c 'verify 0 1088k -S 3' -c id
  clean_output
  [[ "$output" == *"migrated to $second"* ]]
}

# Slow storage: slowfs (tests/tools/slowfs.c) delays each read and write by a random time up
# to MAX_DELAY_US on several threads, so requests stay in flight and complete out of order.
start_slowfs() {
  slowfs=$top_builddir/tests/slowfs
  mnt=$tmp/mnt
  [ -x "$slowfs" ] || missing "tests/slowfs is not built (libfuse3 missing)" || return 1
  requires fusermount3
  [ -e /dev/fuse ] || missing "/dev/fuse is not available" || return 1
  truncate -s "$1" "$tmp/backing.img"
  mkdir -p "$mnt"
  start_daemon slowfs "$slowfs" "$tmp/backing.img" "$mnt" "$2"
  wait_for 10 test -e "$mnt/disk"
}

teardown() {
  blkgate_teardown
  local rc=$?
  [ ! -f "$tmp/shm-image" ] || rm -f "$(cat "$tmp/shm-image")"
  if [ -n "${mnt:-}" ] && mountpoint -q "$mnt" 2>/dev/null; then
    fusermount3 -u "$mnt" 2>/dev/null || umount -l "$mnt"
  fi
  return $rc
}

# aio_writes N SEED: N asynchronous 64 KiB writes of the seeded pattern from offset 0.
aio_writes() {
  local i
  for ((i = 0; i < $1; i++)); do
    echo "aio-write $((i * 64))k 64k -S $2"
  done
}

@test "GET_VRING_BASE with requests in flight on slow storage: blkgate drains before replying" {
  requires_plugin file
  start_slowfs 64M 100000
  start_gateway file file="$mnt/disk"

  run -0 bio "$sock" < <(aio_writes 16 11; echo 'stop-queue 0 --watch 300';
                         echo 'start-queue 0'; echo wait; echo 'verify 0 1M -S 11')
  clean_output
  # Everything the ring had handed over was complete when the reply came.
  [[ "$output" =~ msg=GET_VRING_BASE\ index=([0-9]+)\ reply_us=[0-9]+\ used_idx=([0-9]+)\ .*drained=yes ]]
  [ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ]
}

@test "kill -9 with requests in flight: a restarted blkgate completes them after reconnect" {
  requires_plugin file
  start_slowfs 64M 200000
  start_gateway file file="$mnt/disk"

  (aio_writes 32 12; echo 'sleep 3'; echo 'reconnect --retry 20'; echo wait
   echo 'verify 0 2M -S 12') | bio "$sock" > "$tmp/bio.out" 2>&1 &
  local bio_pid=$!
  wait_for_log "$tmp/bio.out" 'aio #32 submitted' 20
  kill_gateway KILL
  start_gateway file file="$mnt/disk"
  local status=0
  wait $bio_pid || status=$?
  output=$(cat "$tmp/bio.out")
  [ $status -eq 0 ]
  clean_output
  [[ "$output" == *"verified 2097152 bytes at offset 0"* ]]
  grep -E 'resubmitting|connected' "$gwlog" || true
}

# The same with the delay filter as the slow backend (no FUSE needed): the writes are held
# in the filter when the gateway dies, so none of them reached the file.
@test "kill -9 with writes held by --filter=delay: a restarted blkgate completes them after reconnect" {
  requires_plugin file
  truncate -s 64M "$tmp/disk.img"
  start_gateway --filter=delay file file="$tmp/disk.img" wdelay=30s

  (aio_writes 32 13; echo 'sleep 1'; echo 'reconnect --retry 20'; echo wait
   echo 'verify 0 2M -S 13') | bio "$sock" > "$tmp/bio.out" 2>&1 &
  local bio_pid=$!
  wait_for_log "$tmp/bio.out" 'aio #32 submitted' 20
  kill_gateway KILL
  # Nothing was written: the delay held every write.
  cmp -n 2M "$tmp/disk.img" /dev/zero
  start_gateway file file="$tmp/disk.img"
  local status=0
  wait $bio_pid || status=$?
  output=$(cat "$tmp/bio.out")
  [ $status -eq 0 ]
  clean_output
  [[ "$output" == *"verified 2097152 bytes at offset 0"* ]]
  grep -q resubmitting "$gwlog"
}

# A restarted gateway whose backend fails (--filter=error): the resubmitted writes complete
# with IOERR, not never, and the gateway goes on serving.
@test "kill -9, restart behind --filter=error: the resubmitted writes complete with IOERR" {
  requires_plugin file
  truncate -s 64M "$tmp/disk.img"
  start_gateway --filter=delay file file="$tmp/disk.img" wdelay=30s

  (aio_writes 8 14; echo 'sleep 1'; echo 'reconnect --retry 20'; echo wait) |
    bio -k "$sock" > "$tmp/bio.out" 2>&1 &
  local bio_pid=$!
  wait_for_log "$tmp/bio.out" 'aio #8 submitted' 20
  kill_gateway KILL
  start_gateway --filter=error file file="$tmp/disk.img" error-write-rate=1 error=ENOSPC
  local status=0
  wait $bio_pid || status=$?
  output=$(cat "$tmp/bio.out")
  echo "$output"
  [ $status -ne 0 ]
  [ "$(grep -c 'status IOERR' <<< "$output")" = 8 ]
  run -0 bio "$sock" -c 'read 0 64k -v'
}

# Migration with a slow source: GET_VRING_BASE (no inflight-migration) drains, which with
# the delay filter means waiting for the held writes.
@test "migrate from a slow source (--filter=delay): the drain waits for the held writes" {
  requires_plugin file
  truncate -s 64M "$tmp/disk.img"
  start_gateway --filter=delay file file="$tmp/disk.img" wdelay=300ms
  local second=$sockdir/b.sock
  sock=$second pidfile=$tmp/b.pid start_gateway file file="$tmp/disk.img"

  run -0 bio "$sockdir/gw.sock" < <(aio_writes 16 15; echo "migrate $second --watch 300"
                                    echo wait; echo 'verify 0 1M -S 15')
  clean_output
  [[ "$output" == *"migrated to $second"* ]]
  [[ "$output" == *"verified 1048576 bytes at offset 0"* ]]
  # Everything the source had taken was complete when it replied.
  [[ "$output" =~ msg=GET_VRING_BASE\ index=([0-9]+)\ reply_us=[0-9]+\ used_idx=([0-9]+)\ .*drained=yes ]]
  [ "${BASH_REMATCH[1]}" = "${BASH_REMATCH[2]}" ]
}
