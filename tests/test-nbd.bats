#!/usr/bin/env bats
# The nbd plugin against nbdkit and qemu-nbd, driven by blkgate-io: data reaches the server
# byte for byte (checked on the backing file, or through a second NBD client), the server's
# size, block size and capabilities decide the virtio features, its error replies become
# virtio errors, requests stay in flight together, queues get their own connections when
# the server allows it, and a bad URI, an unreachable server or bad parameters stop blkgate
# before it listens.  Server restarts are in test-nbd-restart.bats.
#
# Many tests put nbdkit's log filter in front of the plugin: its log (one line per request,
# with the connection it came on) shows what really reached the server.

load test_helper

mib=$((1024 * 1024))

setup() {
  blkgate_setup
  [ -x "$BLKGATE_IO" ] || { echo "$BLKGATE_IO does not exist: run make first" >&2; return 1; }
  requires_plugin nbd
}

# offers FEATURE: the output of the last `run bio SOCK info` lists FEATURE (a virtio feature
# name, as blkgate-io prints it) among those blkgate offers.
offers() {
  awk '/^features/ { on = 1; next } /^protocol features/ { on = 0 }
       on { for (i = 1; i <= NF; i++) print $i }' <<< "$output" | tr -d '*' | grep -q -x "$1"
}

# lacks FEATURE: the opposite (a plain `! offers` would not fail a bats test).
lacks() {
  ! offers "$1"
}

# config_field NAME: a field of the config space in the output of the last `run bio info`.
config_field() {
  awk -v f="$1" '$1 == f { print $2 }' <<< "$output"
}

# nbd_log_bytes LOG OP: the bytes of all OP requests (Write, Read, Trim, Zero) in LOG, a log
# of nbdkit's log filter.
nbd_log_bytes() {
  local c sum=0
  for c in $(sed -n "s/.* $2 id=[0-9]* .*count=\(0x[0-9a-f]*\) .*/\1/p" "$1"); do
    sum=$((sum + c))
  done
  echo "$sum"
}

# nbd_log_conns LOG OP [MIN MAX]: the connections (numbers, one a line) that carried OP
# requests, or only those at offsets MIN <= offset < MAX.
nbd_log_conns() {
  local conn off
  sed -n "s/.*connection=\([0-9]*\) $2 id=[0-9]* offset=\(0x[0-9a-f]*\) .*/\1 \2/p" "$1" |
    while read -r conn off; do
      [ -z "${3:-}" ] || { [ $((off)) -ge "$3" ] && [ $((off)) -lt "$4" ]; } || continue
      echo "$conn"
    done | sort -u
}

# nbd_log_max_inflight LOG OP: the most OP requests the server was handling at once.
nbd_log_max_inflight() {
  awk -v op="$2" '$4 == op { if (++n > max) max = n } $4 == "..." op { n-- }
                  END { print max + 0 }' "$1"
}

# expect_no_start ARGS...: "blkgate -P $pidfile -s $sock ARGS..." exits with a failure
# status (not a signal), with a message on stderr, before listening or writing the pidfile.
# It must not hang retrying either.  $status, $stderr as left by run.
expect_no_start() {
  run --separate-stderr timeout 30 "$BLKGATE" -f -P "$pidfile" -s "$sock" "$@"
  if [ -s "$pidfile" ]; then
    touch "$tmp/.pids/gateway.$(cat "$pidfile")"
    echo "blkgate wrote a pidfile" >&2
    return 1
  fi
  [ "$status" -ne 124 ] || { echo "blkgate was still running after 30 s" >&2; return 1; }
  [ "$status" -ne 0 ]
  [ "$status" -lt 128 ]
  [ -n "$stderr" ]
  [ ! -e "$sock" ]
}

# ---------------------------------------------------------------------------------------------
# Data

@test "nbdkit file: what blkgate-io writes is in the file, byte for byte, and back" {
  truncate -s 64M "$tmp/disk.img" "$tmp/expect.img"
  start_nbdkit srv file "$tmp/disk.img"
  start_gateway nbd uri="$(nbd_uri srv)"

  head -c $mib /dev/urandom > "$tmp/in.bin"
  run -0 bio "$sock" -c "write 1M 1M -i $tmp/in.bin" -c 'write 7M 4k -P 0x5a' \
    -c "write 63M 1M -i $tmp/in.bin" -c flush -c "verify 1M 1M -i $tmp/in.bin" \
    -c 'verify 7M 4k -P 0x5a' -c 'verify 8M 1M -P 0'
  clean_output
  dd if="$tmp/in.bin" of="$tmp/expect.img" bs=1M seek=1 conv=notrunc status=none
  dd if="$tmp/in.bin" of="$tmp/expect.img" bs=1M seek=63 conv=notrunc status=none
  head -c 4096 /dev/zero | tr '\0' '\132' |
    dd of="$tmp/expect.img" bs=4k seek=$((7 * 256)) conv=notrunc status=none
  cmp "$tmp/expect.img" "$tmp/disk.img"

  # Data put in the file on the host is what blkgate-io reads.
  random_at "$tmp/disk.img" $((20 * mib)) 65536
  dd if="$tmp/disk.img" of="$tmp/host.bin" bs=64k skip=$((20 * 16)) count=1 status=none
  run -0 bio "$sock" verify 20M 64k -i "$tmp/host.bin"
}

@test "nbdkit memory: a second NBD client (qemu-img, qemu-io) sees what blkgate wrote" {
  requires qemu-img qemu-io
  start_nbdkit srv memory 64M
  start_gateway nbd uri="$(nbd_uri srv)"

  head -c $mib /dev/urandom > "$tmp/in.bin"
  run -0 bio "$sock" -c 'write 0 1M -P 0x3c' -c "write 2M 1M -i $tmp/in.bin" \
    -c 'write 5M 512k -S 77' -c flush -c 'verify 0 1M -P 0x3c' -c "verify 2M 1M -i $tmp/in.bin" \
    -c 'read 5M 512k -o '"$tmp/seeded.bin"
  clean_output
  # The whole export, copied by another client, is what was written and zeroes elsewhere.
  qemu-img convert -f raw -O raw "$(nbd_uri srv)" "$tmp/copy.img"
  [ "$(stat -c %s "$tmp/copy.img")" -eq $((64 * mib)) ]
  truncate -s 64M "$tmp/expect.img"
  head -c $mib /dev/zero | tr '\0' '\074' | dd of="$tmp/expect.img" conv=notrunc status=none
  dd if="$tmp/in.bin" of="$tmp/expect.img" bs=1M seek=2 conv=notrunc status=none
  dd if="$tmp/seeded.bin" of="$tmp/expect.img" bs=512k seek=10 conv=notrunc status=none
  cmp "$tmp/expect.img" "$tmp/copy.img"
  # The seeded pattern as blkgate-io reads it is what the other client reads.
  cmp "$tmp/seeded.bin" <(dd if="$tmp/copy.img" bs=512k skip=10 count=1 status=none)

  # And what another client writes, blkgate reads.
  run -0 qemu-io -f raw -c 'write -P 0x77 8M 64k' "$(nbd_uri srv)"
  run -0 bio "$sock" -c 'verify 8M 64k -P 0x77' -c 'verify 8256k 64k -P 0'
}

@test "qemu-nbd, raw file: the file holds what was written" {
  truncate -s 32M "$tmp/disk.img" "$tmp/expect.img"
  start_qemu_nbd q -f raw "$tmp/disk.img"
  start_gateway nbd uri="$(nbd_uri q)"

  run -0 bio "$sock" info
  [ "$(config_field capacity)" = $((32 * 2048)) ]
  head -c $mib /dev/urandom > "$tmp/in.bin"
  run -0 bio -Q 2 "$sock" -c "write 3M 1M -i $tmp/in.bin" -c 'queue 1' -c 'write 30M 64k -P 0xa1' \
    -c flush -c "verify 3M 1M -i $tmp/in.bin" -c 'queue 0' -c 'verify 30M 64k -P 0xa1'
  clean_output
  dd if="$tmp/in.bin" of="$tmp/expect.img" bs=1M seek=3 conv=notrunc status=none
  head -c 65536 /dev/zero | tr '\0' '\241' |
    dd of="$tmp/expect.img" bs=64k seek=$((30 * 16)) conv=notrunc status=none
  cmp "$tmp/expect.img" "$tmp/disk.img"
}

@test "qemu-nbd with its default of one client at a time (-e 1) serves the gateway" {
  truncate -s 32M "$tmp/disk.img"
  start_qemu_nbd q -e 1 -f raw "$tmp/disk.img"
  # The connection that read the size at start-up must not keep the only slot.
  start_gateway nbd uri="$(nbd_uri q)"

  run -0 bio -Q 2 "$sock" -c 'write 0 1M -S 9' -c 'queue 1' -c 'verify 0 1M -S 9' -c flush
  clean_output
  [ "$(sha256_range "$tmp/disk.img" 0 $mib)" != "$(sha256_zeros $mib)" ]
}

@test "qemu-nbd, qcow2 image: the image holds what was written" {
  requires qemu-img
  qemu-img create -q -f qcow2 "$tmp/disk.qcow2" 48M
  truncate -s 48M "$tmp/expect.img"
  start_qemu_nbd q -f qcow2 "$tmp/disk.qcow2"
  start_gateway nbd uri="$(nbd_uri q)"

  run -0 bio "$sock" info
  [ "$(config_field capacity)" = $((48 * 2048)) ]
  head -c $mib /dev/urandom > "$tmp/in.bin"
  run -0 bio "$sock" -c "write 5M 1M -i $tmp/in.bin" -c 'write 47M 1M -P 0x42' -c flush \
    -c "verify 5M 1M -i $tmp/in.bin" -c 'verify 47M 1M -P 0x42' -c 'verify 0 1M -P 0'
  clean_output
  stop_gateway
  stop_daemon q
  qemu-img check -q "$tmp/disk.qcow2"
  qemu-img convert -f qcow2 -O raw "$tmp/disk.qcow2" "$tmp/copy.img"
  dd if="$tmp/in.bin" of="$tmp/expect.img" bs=1M seek=5 conv=notrunc status=none
  head -c $mib /dev/zero | tr '\0' '\102' |
    dd of="$tmp/expect.img" bs=1M seek=47 conv=notrunc status=none
  cmp "$tmp/expect.img" "$tmp/copy.img"
}

# ---------------------------------------------------------------------------------------------
# Capabilities

@test "size and logical block size come from the server" {
  start_nbdkit srv --filter=blocksize-policy memory 24M \
    blocksize-minimum=4096 blocksize-preferred=4096
  start_gateway nbd uri="$(nbd_uri srv)"

  run -0 bio "$sock" info
  [ "$(config_field capacity)" = 49152 ]
  [ "$(config_field blk_size)" = 4096 ]
  offers FLUSH
  offers DISCARD
  offers WRITE_ZEROES
  lacks RO
  run -0 bio "$sock" -c 'write 0 64k -S 1' -c 'verify 0 64k -S 1'
  # Beyond the end: an error, not a hang.
  run -1 bio "$sock" read 24M 4k
  [[ "$output" == *"status IOERR"* ]]

  stop_gateway
  stop_daemon srv
  start_nbdkit srv memory 24M
  start_gateway nbd uri="$(nbd_uri srv)"
  run -0 bio "$sock" info
  [ "$(config_field blk_size)" = 512 ]
}

@test "a read-only export (nbdkit -r): VIRTIO_BLK_F_RO, reads work, writes fail" {
  truncate -s 16M "$tmp/disk.img"
  random_at "$tmp/disk.img" 0 $mib
  head -c $mib "$tmp/disk.img" > "$tmp/first.bin"
  local before
  before=$(sha256sum < "$tmp/disk.img")
  start_nbdkit srv -r file "$tmp/disk.img"
  start_gateway nbd uri="$(nbd_uri srv)"

  run -0 bio "$sock" info
  offers RO
  lacks DISCARD
  lacks WRITE_ZEROES
  run -0 bio "$sock" verify 0 1M -i "$tmp/first.bin"
  run -1 bio "$sock" write 0 4k -P 0x11
  [[ "$output" == *"status IOERR"* ]]
  run -1 bio "$sock" zero 0 4k
  [[ "$output" == *"status IOERR"* || "$output" == *"status UNSUPP"* ]]
  [ "$(sha256sum < "$tmp/disk.img")" = "$before" ]
  run -0 bio "$sock" verify 0 1M -i "$tmp/first.bin"
}

@test "a server without write-zeroes (nozero filter): no WRITE_ZEROES, zero is UNSUPP" {
  start_nbdkit srv --filter=nozero memory 16M
  start_gateway nbd uri="$(nbd_uri srv)"

  run -0 bio "$sock" info
  lacks WRITE_ZEROES
  offers DISCARD
  offers FLUSH
  run -1 bio "$sock" -c 'write 0 64k -P 0x21' -c 'zero 0 64k'
  [[ "$output" == *"status UNSUPP"* ]]
  run -0 bio "$sock" verify 0 64k -P 0x21
}

@test "a server without flush and trim (eval plugin): no FLUSH, no DISCARD" {
  # A 16 MiB disk in a file, with only pread and pwrite.
  truncate -s 16M "$tmp/disk.img"
  start_nbdkit srv eval get_size='echo 16777216' \
    pread="dd if=$tmp/disk.img skip=\$4 count=\$3 iflag=count_bytes,skip_bytes status=none" \
    pwrite="dd of=$tmp/disk.img seek=\$4 conv=notrunc oflag=seek_bytes status=none"
  start_gateway nbd uri="$(nbd_uri srv)"

  run -0 bio "$sock" info
  lacks FLUSH
  lacks DISCARD
  lacks RO
  run -0 bio "$sock" -c 'write 0 128k -S 5' -c 'verify 0 128k -S 5'
  run -1 bio "$sock" discard 0 64k
  [[ "$output" == *"status UNSUPP"* ]]
  run -0 bio "$sock" -c 'verify 0 128k -S 5'
  [ "$(sha256_range "$tmp/disk.img" 0 65536)" != "$(sha256_zeros 65536)" ]
}

@test "discard and write-zeroes reach the server as NBD trim and write-zeroes" {
  requires qemu-img
  start_nbdkit srv --filter=log memory 16M logfile="$tmp/nbdkit.log"
  start_gateway nbd uri="$(nbd_uri srv)"

  run -0 bio "$sock" -c 'write 0 4M -P 0x11' -c 'discard 0 1M' -c 'zero 1M 1M' \
    -c 'zero 2M 1M --unmap' -c 'verify 1M 2M -P 0' -c 'verify 3M 1M -P 0x11'
  clean_output
  # Not as writes of zeroes: only the 4 MiB of data were written.
  [ "$(nbd_log_bytes "$tmp/nbdkit.log" Write)" = $((4 * mib)) ]
  [ "$(nbd_log_bytes "$tmp/nbdkit.log" Trim)" = $mib ]
  [ "$(nbd_log_bytes "$tmp/nbdkit.log" Zero)" = $((2 * mib)) ]
  grep -E ' Trim id=[0-9]+ offset=0x0 ' "$tmp/nbdkit.log"
  grep -E ' Zero id=[0-9]+ offset=0x100000 ' "$tmp/nbdkit.log"
  # The server holds zeroes there (the memory plugin reads trimmed ranges as zeroes).
  qemu-img convert -f raw -O raw "$(nbd_uri srv)" "$tmp/copy.img"
  [ "$(sha256_range "$tmp/copy.img" 0 $((3 * mib)))" = "$(sha256_zeros $((3 * mib)))" ]
  [ "$(sha256_range "$tmp/copy.img" $((3 * mib)) $mib)" = \
    "$(head -c $mib /dev/zero | tr '\0' '\021' | sha256sum | cut -d' ' -f1)" ]
}

# ---------------------------------------------------------------------------------------------
# Errors from the server

@test "server error replies (error filter): the request fails with IOERR, the gateway serves on" {
  start_nbdkit srv --filter=error memory 16M \
    error-pwrite-rate=100% error-pwrite-file="$tmp/fail-writes" error-pwrite=ENOSPC \
    error-pread-rate=100% error-pread-file="$tmp/fail-reads" \
    error-zero-rate=100% error-zero-file="$tmp/fail-writes"
  start_gateway nbd uri="$(nbd_uri srv)"

  run -0 bio "$sock" -c 'write 0 64k -P 0x01' -c 'verify 0 64k -P 0x01'
  touch "$tmp/fail-writes"
  # An error reply, not a lost connection: the answer comes at once, not after
  # retry-timeout (60 s; blkgate-io gives up after 20).
  run -1 bio "$sock" write 0 64k -P 0x02
  [[ "$output" == *"status IOERR"* ]]
  run -1 bio "$sock" zero 0 64k
  [[ "$output" == *"status IOERR"* ]]
  run -0 bio "$sock" verify 0 64k -P 0x01
  rm "$tmp/fail-writes"
  touch "$tmp/fail-reads"
  run -1 bio "$sock" read 0 64k
  [[ "$output" == *"status IOERR"* ]]
  run -0 bio "$sock" write 64k 64k -P 0x03
  rm "$tmp/fail-reads"
  run -0 bio "$sock" -c 'verify 0 64k -P 0x01' -c 'verify 64k 64k -P 0x03'
  # The errors came from the server, and were not taken for a lost connection.
  grep -q 'injecting ENOSPC error into pwrite' "$tmp/srv.log"
  run ! grep -i -E "lost|reconnect" "$gwlog"
}

@test "ENOTSUP from the server (qemu-nbd over blkdebug) is UNSUPP; EIO is IOERR" {
  truncate -s 16M "$tmp/disk.img"
  local opts=driver=raw,file.driver=blkdebug,file.image.driver=file
  opts+=,file.image.filename=$tmp/disk.img
  opts+=,file.inject-error.0.event=write_aio,file.inject-error.0.iotype=write
  start_qemu_nbd q --image-opts "$opts,file.inject-error.0.errno=95"
  start_gateway nbd uri="$(nbd_uri q)"

  run -1 bio "$sock" write 0 64k -P 0x01
  [[ "$output" == *"status UNSUPP"* ]]
  run -0 bio "$sock" verify 0 64k -P 0
  stop_gateway
  stop_daemon q

  start_qemu_nbd q --image-opts "$opts,file.inject-error.0.errno=5"
  start_gateway nbd uri="$(nbd_uri q)"
  run -1 bio "$sock" write 0 64k -P 0x01
  [[ "$output" == *"status IOERR"* ]]
  run -0 bio "$sock" verify 0 64k -P 0
}

# ---------------------------------------------------------------------------------------------
# Concurrency and connections

# aio_burst N SEED0 [OFFSET-KIB]: N asynchronous 64 KiB writes, write i of seed SEED0+i at
# OFFSET-KIB + 64 i KiB.
aio_burst() {
  local i
  for ((i = 0; i < $1; i++)); do
    echo "aio-write $((${3:-0} + i * 64))k 64k -S $(($2 + i))"
  done
}

@test "slow server (delay filter): 64 writes in flight, reads overtaking them, all land" {
  start_nbdkit srv --filter=log --filter=delay memory 64M \
    delay-write=100ms logfile="$tmp/nbdkit.log"
  start_gateway nbd uri="$(nbd_uri srv)"

  local i
  {
    echo 'write 32M 1M -S 500'
    for ((i = 0; i < 64; i++)); do
      echo "aio-write $((i * 64))k 64k -S $((100 + i))"
      # Reads are not delayed: they complete before the writes submitted ahead of them.
      [ $((i % 4)) -ne 3 ] || echo "aio-read $((32 * 1024 + i * 4))k 64k -S 500"
    done
    echo wait
    for ((i = 0; i < 64; i++)); do
      echo "verify $((i * 64))k 64k -S $((100 + i))"
    done
  } > "$tmp/cmds"
  run -0 bio "$sock" < "$tmp/cmds"
  clean_output
  [ "$(grep -c -E '^aio #[0-9]+ write 65536 bytes at offset [0-9]+: OK' <<< "$output")" -eq 64 ]
  [ "$(grep -c -E '^aio #[0-9]+ read 65536 bytes at offset [0-9]+: OK' <<< "$output")" -eq 16 ]
  [ "$(grep -c '^verified 65536 bytes' <<< "$output")" -eq 64 ]
  # The requests were at the server together, not one after another.
  local most
  most=$(nbd_log_max_inflight "$tmp/nbdkit.log" Write)
  echo "# at most $most writes at the server at once" >&3
  [ "$most" -ge 2 ]
}

@test "two queues on a multi-conn server: one NBD connection per queue" {
  start_nbdkit srv --filter=log memory 64M logfile="$tmp/nbdkit.log"
  start_gateway nbd uri="$(nbd_uri srv)"

  run -0 bio -Q 2 "$sock" -c 'write 0 1M -S 1' -c 'queue 1' -c 'write 1M 1M -S 2' \
    -c 'verify 0 1M -S 1' -c 'queue 0' -c 'verify 1M 1M -S 2'
  clean_output
  cp "$tmp/nbdkit.log" "$tmp/writes.log"
  local q0 q1
  q0=$(nbd_log_conns "$tmp/writes.log" Write 0 $mib)
  q1=$(nbd_log_conns "$tmp/writes.log" Write $mib $((2 * mib)))
  echo "# queue 0 wrote on connection(s) $q0, queue 1 on $q1" >&3
  [ -n "$q0" ]
  [ -n "$q1" ]
  [ "$(wc -l <<< "$q0")" -eq 1 ]
  [ "$(wc -l <<< "$q1")" -eq 1 ]
  [ "$q0" != "$q1" ]

  # Both queues busy at once.
  run -0 bio -Q 2 "$sock" bench --rw randwrite --bs 4k --iodepth 8 --queues 2 --time 1
  clean_output
  [[ "${lines[-1]}" == *" errors=0 "* ]]
  run -0 bio -Q 2 "$sock" bench --rw randread --bs 64k --iodepth 4 --queues 2 --time 0.5
  [[ "${lines[-1]}" == *" errors=0 "* ]]
}

@test "connections=1, or a server without multi-conn: the queues share one connection" {
  start_nbdkit srv --filter=log memory 64M logfile="$tmp/nbdkit.log"
  start_gateway nbd uri="$(nbd_uri srv)" connections=1

  run -0 bio -Q 2 "$sock" -c 'write 0 1M -S 1' -c 'queue 1' -c 'write 1M 1M -S 2' \
    -c 'verify 0 1M -S 1' -c 'queue 0' -c 'verify 1M 1M -S 2'
  [ "$(nbd_log_conns "$tmp/nbdkit.log" Write | wc -l)" -eq 1 ]
  stop_gateway
  stop_daemon srv

  start_nbdkit srv --filter=log --filter=multi-conn memory 64M multi-conn-mode=disable \
    logfile="$tmp/nbdkit2.log"
  start_gateway nbd uri="$(nbd_uri srv)"
  run -0 bio -Q 2 "$sock" -c 'write 0 1M -S 3' -c 'queue 1' -c 'write 1M 1M -S 4' \
    -c 'verify 0 1M -S 3' -c 'queue 0' -c 'verify 1M 1M -S 4'
  clean_output
  [ "$(nbd_log_conns "$tmp/nbdkit2.log" Write | wc -l)" -eq 1 ]
  run -0 bio -Q 2 "$sock" bench --rw randwrite --bs 4k --iodepth 8 --queues 2 --time 0.5
  [[ "${lines[-1]}" == *" errors=0 "* ]]
}

@test "read-only export without multi-conn: still a connection per queue" {
  truncate -s 16M "$tmp/disk.img"
  random_at "$tmp/disk.img" 0 $((2 * mib))
  head -c $((2 * mib)) "$tmp/disk.img" > "$tmp/first.bin"
  start_nbdkit srv -r --filter=log --filter=multi-conn file "$tmp/disk.img" \
    multi-conn-mode=disable logfile="$tmp/nbdkit.log"
  start_gateway nbd uri="$(nbd_uri srv)"

  head -c $mib "$tmp/first.bin" > "$tmp/a.bin"
  tail -c $mib "$tmp/first.bin" > "$tmp/b.bin"
  run -0 bio -Q 2 "$sock" -c "verify 0 1M -i $tmp/a.bin" -c 'queue 1' -c "verify 1M 1M -i $tmp/b.bin"
  clean_output
  local q0 q1
  q0=$(nbd_log_conns "$tmp/nbdkit.log" Read 0 $mib)
  q1=$(nbd_log_conns "$tmp/nbdkit.log" Read $mib $((2 * mib)))
  [ -n "$q0" ]
  [ -n "$q1" ]
  [ "$q0" != "$q1" ]
}

@test "connections=2 with 4 queues: all I/O goes over exactly 2 connections" {
  start_nbdkit srv --filter=log memory 64M logfile="$tmp/nbdkit.log"
  start_gateway nbd uri="$(nbd_uri srv)" connections=2

  run -0 bio -Q 4 "$sock" bench --rw randwrite --bs 4k --iodepth 4 --queues 4 --time 1
  clean_output
  [[ "${lines[-1]}" == *" errors=0 "* ]]
  run -0 bio -Q 4 "$sock" -c 'write 0 1M -S 1' -c 'queue 3' -c 'verify 0 1M -S 1'
  [ "$(nbd_log_conns "$tmp/nbdkit.log" Write | wc -l)" -eq 2 ]
}

@test "connections=2: one queue's requests spread over both connections" {
  start_nbdkit srv --filter=log --filter=delay memory 64M delay-write=5ms \
    logfile="$tmp/nbdkit.log"
  start_gateway nbd uri="$(nbd_uri srv)" connections=2

  run -0 bio "$sock" bench --rw randwrite --bs 4k --iodepth 8 --time 1
  clean_output
  [[ "${lines[-1]}" == *" errors=0 "* ]]
  [ "$(nbd_log_conns "$tmp/nbdkit.log" Write | wc -l)" -eq 2 ]
  run -0 bio "$sock" -c 'write 0 1M -S 8' -c 'verify 0 1M -S 8'
}

# ---------------------------------------------------------------------------------------------
# The command line

@test "the URI may be given without uri=: nbd+unix (it contains '=') and nbd://" {
  start_nbdkit srv memory 16M
  start_gateway nbd "$(nbd_uri srv)"
  run -0 bio "$sock" -c 'write 0 64k -S 1' -c 'verify 0 64k -S 1'
  stop_gateway

  requires python3
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  start_daemon tcp nbdkit -f -i 127.0.0.1 -p "$port" memory 8M
  wait_for 10 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null
  start_gateway nbd "nbd://127.0.0.1:$port"
  run -0 bio "$sock" info
  [ "$(config_field capacity)" = 16384 ]
  run -0 bio "$sock" -c 'write 0 64k -S 2' -c 'verify 0 64k -S 2'
}

@test "an unreachable server or a bad URI: blkgate does not start, and names the URI" {
  local uri
  uri=$(nbd_uri nobody)
  expect_no_start nbd uri="$uri"
  [[ "$stderr" == *"$uri"* ]]

  expect_no_start nbd uri=nbd://127.0.0.1:1/
  [[ "$stderr" == *"nbd://127.0.0.1:1/"* ]]

  expect_no_start nbd uri=bogus://example.com/disk
  [[ "$stderr" == *bogus* ]]

  # A server that is there, but has no such export.
  truncate -s 16M "$tmp/disk.img"
  start_qemu_nbd q -x disk -f raw "$tmp/disk.img"
  uri="nbd+unix:///nosuch?socket=$sockdir/q.nbd"
  expect_no_start nbd uri="$uri"
  [[ "$stderr" == *"$uri"* ]]
  start_gateway nbd uri="nbd+unix:///disk?socket=$sockdir/q.nbd"
  run -0 bio "$sock" -c 'write 0 64k -S 1' -c 'verify 0 64k -S 1'
}

@test "bad parameters: a clear error naming the parameter, nothing listens" {
  start_nbdkit srv memory 16M
  local uri
  uri=$(nbd_uri srv)

  expect_no_start nbd
  [[ "$stderr" == *uri* ]]
  expect_no_start nbd uri="$uri" connections=0
  [[ "$stderr" == *connections* ]]
  expect_no_start nbd uri="$uri" connections=many
  [[ "$stderr" == *connections* ]]
  expect_no_start nbd uri="$uri" retry-timeout=abc
  [[ "$stderr" == *retry-timeout* ]]
  expect_no_start nbd uri="$uri" retry-timeout=-5
  [[ "$stderr" == *retry-timeout* ]]
  expect_no_start nbd uri="$uri" tls-verify=maybe
  [[ "$stderr" == *tls-verify* ]]
  expect_no_start nbd uri="$uri" bogus=1
  [[ "$stderr" == *bogus* ]]
  # Argument errors exit with status 1, as for every plugin.
  run -1 --separate-stderr "$BLKGATE" -P "$pidfile" -s "$sock" nbd uri="$uri" connections=0
  # The same server with good parameters is fine.
  start_gateway nbd uri="$uri" connections=2 retry-timeout=5
  run -0 bio "$sock" -c 'write 0 64k -S 1' -c 'verify 0 64k -S 1'
}
