#!/usr/bin/env bats
# A guest sees the export with the right capacity and serial, and data crosses the gateway
# intact in both directions.

load test_helper

mib=$((1024 * 1024))

setup() {
  blkgate_setup
  guest_ready
}

@test "the guest sees the file's size as the disk's capacity" {
  requires_plugin file
  truncate -s 96M "$tmp/disk.img"
  start_gateway file file="$tmp/disk.img"

  run -0 guest_run "$sock" 'echo $(( $(cat /sys/block/vda/size) * 512 ))'
  [ "$output" = $((96 * mib)) ]
}

@test "the guest sees the --serial value as the disk's serial" {
  requires_plugin memory
  start_gateway --serial blkgate-serial-42 memory size=16M

  run -0 guest_run "$sock" 'cat /sys/block/vda/serial'
  [ "$output" = blkgate-serial-42 ]
}

@test "data the guest writes lands in the file byte for byte" {
  requires_plugin file
  truncate -s 64M "$tmp/disk.img"
  start_gateway file file="$tmp/disk.img"

  # OFFSET:LENGTH pairs: an aligned MiB, 4 KiB starting at an odd sector, the disk's last
  # 64 KiB.  The guest prints "OFFSET LENGTH SHA256" for each write.
  ranges="$mib:$mib $((3 * mib + 7 * 512)):4096 $((64 * mib - 65536)):65536"
  run -0 guest_run "$sock" "
    set -e
    for r in $ranges; do
      off=\${r%:*} len=\${r#*:}
      head -c \$len /dev/urandom > pattern
      dd if=pattern of=/dev/vda bs=\$len count=1 seek=\$off oflag=seek_bytes,direct \
         conv=notrunc status=none
      echo \$off \$len \$(sha256sum < pattern | cut -d' ' -f1)
    done"
  [ "${#lines[@]}" -eq 3 ]

  local off len sum
  for line in "${lines[@]}"; do
    read -r off len sum <<< "$line"
    [ "$(sha256_range "$tmp/disk.img" "$off" "$len")" = "$sum" ]
    # Zero it again, so that the whole file must be zeros below.
    dd if=/dev/zero of="$tmp/disk.img" bs="$len" count=1 seek="$off" oflag=seek_bytes \
       conv=notrunc status=none
  done
  # Nothing else was written.
  cmp -n $((64 * mib)) "$tmp/disk.img" /dev/zero
}

@test "the guest reads the data put in the file beforehand" {
  requires_plugin file
  truncate -s 64M "$tmp/disk.img"
  ranges="0:65536 $((5 * mib + 3 * 512)):8192 $((32 * mib)):$mib $((64 * mib - 4096)):4096"
  declare -A want
  for r in $ranges; do
    random_at "$tmp/disk.img" "${r%:*}" "${r#*:}"
    want[$r]=$(sha256_range "$tmp/disk.img" "${r%:*}" "${r#*:}")
  done
  start_gateway file file="$tmp/disk.img"

  # Each range is read in one request (1 MiB makes a long descriptor chain).
  run -0 guest_run "$sock" "
    set -e
    for r in $ranges; do
      off=\${r%:*} len=\${r#*:}
      echo \$r \$(dd if=/dev/vda bs=\$len count=1 skip=\$off iflag=skip_bytes,direct \
                   status=none | sha256sum | cut -d' ' -f1)
    done"
  [ "${#lines[@]}" -eq 4 ]
  for line in "${lines[@]}"; do
    [ "${line#* }" = "${want[${line%% *}]}" ]
  done
}

@test "fio randwrite with crc32c verification passes in the guest (file plugin)" {
  requires_plugin file
  truncate -s 64M "$tmp/disk.img"
  start_gateway file file="$tmp/disk.img"

  run -0 guest_run "$sock" \
    'fio --name=verify --filename=/dev/vda --ioengine=libaio --direct=1 --rw=randwrite \
         --bs=4k --iodepth=16 --size=16M --verify=crc32c --verify_fatal=1 --do_verify=1'
  [[ $output == *"err= 0"* ]]
}

@test "fio randwrite of mixed sizes with crc32c verification passes in the guest (memory plugin)" {
  requires_plugin memory
  start_gateway memory size=64M

  run -0 guest_run "$sock" \
    'fio --name=verify --filename=/dev/vda --ioengine=libaio --direct=1 --rw=randwrite \
         --bsrange=512-128k --iodepth=16 --size=16M --verify=crc32c --verify_fatal=1 \
         --do_verify=1'
  [[ $output == *"err= 0"* ]]
}
