#!/usr/bin/env bats
# Packed virtqueues (VIRTIO_F_RING_PACKED, QEMU's packed=on): the guest negotiates them, data
# crosses the gateway intact, and a kill -9 of the gateway under fio --verify is survived
# (the inflight region's packed layout, src/daemon/inflight-packed.c).  The image of the
# restart test sits behind slowfs, so requests complete out of order (see
# test-restart-guest.bats for why that matters).

load test_helper

mib=$((1024 * 1024))

setup() {
  blkgate_setup
  guest_ready
}

# The guest's feature bits of its one virtio device, as a string of 0/1, bit 0 first.
features='cat /sys/bus/virtio/devices/*/features'

# bit STRING N: the Nth character of a Linux feature string.
bit() {
  echo "${1:$2:1}"
}

@test "packed=on: the guest negotiates packed rings with indirect descriptors and EVENT_IDX" {
  requires_plugin memory
  start_gateway -v memory size=16M

  run -0 guest_run -D ",packed=on" "$sock" "$features"
  [ "$(bit "$output" 34)" = 1 ]      # VIRTIO_F_RING_PACKED
  [ "$(bit "$output" 28)" = 1 ]      # VIRTIO_RING_F_INDIRECT_DESC
  [ "$(bit "$output" 29)" = 1 ]      # VIRTIO_RING_F_EVENT_IDX
  grep -q "queue 0: started, packed ring" "$gwlog"
}

@test "without packed=on the same guest keeps split rings" {
  requires_plugin memory
  start_gateway -v memory size=16M

  run -0 guest_run "$sock" "$features"
  [ "$(bit "$output" 34)" = 0 ]
  grep -q "queue 0: started, split ring" "$gwlog"
  ! grep -q "started, packed ring" "$gwlog"
}

@test "packed: data the guest writes lands in the file, and reads back" {
  requires_plugin file
  truncate -s 64M "$tmp/disk.img"
  random_at "$tmp/disk.img" $((40 * mib)) $mib
  want=$(sha256_range "$tmp/disk.img" $((40 * mib)) $mib)
  start_gateway file file="$tmp/disk.img"

  # 1 MiB requests make long chains (indirect tables), 4 KiB ones short ones.
  run -0 guest_run -D ",packed=on" "$sock" "
    set -e
    head -c $mib /dev/urandom > big
    dd if=big of=/dev/vda bs=$mib count=1 seek=3 oflag=direct conv=notrunc status=none
    head -c 4096 /dev/urandom > small
    dd if=small of=/dev/vda bs=4096 count=1 seek=$((7 * 512 + 3)) oflag=direct \
       conv=notrunc status=none
    echo big \$(sha256sum < big | cut -d' ' -f1)
    echo small \$(sha256sum < small | cut -d' ' -f1)
    echo read \$(dd if=/dev/vda bs=$mib count=1 skip=40 iflag=direct status=none |
                 sha256sum | cut -d' ' -f1)"
  [ "${#lines[@]}" -eq 3 ]
  [ "${lines[0]}" = "big $(sha256_range "$tmp/disk.img" $((3 * mib)) $mib)" ]
  [ "${lines[1]}" = "small $(sha256_range "$tmp/disk.img" $(((7 * 512 + 3) * 4096)) 4096)" ]
  [ "${lines[2]}" = "read $want" ]
}

# fio with crc32c in every block, at a queue depth that keeps the ring wrapping around, in
# both directions.
guest_fio='fio --name=w --filename=/dev/vda --rw=randrw --bs=4k --iodepth=64 \
  --ioengine=libaio --direct=1 --size=32M --verify=crc32c --verify_fatal=1 --do_verify=1 \
  > fio.out 2>&1; s=$?; tail -n 3 fio.out; echo "fio=$s";
  if dmesg | grep -i -E "I/O error|not a head|blk_update_request|id [0-9]+ is not"; then
    echo dmesg=bad; fi;
  [ $s -eq 0 ]'

@test "packed: fio verify at iodepth 64 (the ring wraps many times)" {
  requires_plugin file
  truncate -s 64M "$tmp/disk.img"
  start_gateway file file="$tmp/disk.img"

  run -0 guest_run -D ",packed=on" -t 300 "$sock" "$guest_fio"
  [[ "$output" == *"fio=0"* ]]
  [[ "$output" != *"dmesg=bad"* ]]
}

@test "packed: direct descriptor chains (indirect_desc=off): fio verify" {
  requires_plugin file
  truncate -s 64M "$tmp/disk.img"
  start_gateway file file="$tmp/disk.img"

  run -0 guest_run -D ",packed=on,indirect_desc=off" -t 300 "$sock" \
    "cat /sys/bus/virtio/devices/*/features; ${guest_fio/--bs=4k/--bsrange=4k-256k}"
  [ "$(bit "${lines[0]}" 34)" = 1 ]
  [ "$(bit "${lines[0]}" 28)" = 0 ]
  [[ "$output" == *"fio=0"* ]]
  [[ "$output" != *"dmesg=bad"* ]]
}

@test "packed: without EVENT_IDX (event_idx=off): fio verify" {
  requires_plugin file
  truncate -s 64M "$tmp/disk.img"
  start_gateway file file="$tmp/disk.img"

  run -0 guest_run -D ",packed=on,event_idx=off" -t 300 "$sock" \
    "cat /sys/bus/virtio/devices/*/features; $guest_fio"
  [ "$(bit "${lines[0]}" 34)" = 1 ]
  [ "$(bit "${lines[0]}" 29)" = 0 ]
  [[ "$output" == *"fio=0"* ]]
  [[ "$output" != *"dmesg=bad"* ]]
}

@test "packed: kill -9 of the gateway under guest I/O: no error, every block verifies" {
  requires_plugin file
  start_slowfs 64M 2000
  start_gateway -v file file="$mnt/disk"
  guest_start g -D ",packed=on" -C ",reconnect=1" -t 400 "$sock" \
    "echo started; $guest_fio_passes"
  wait_for_log "$tmp/g.log" started 120

  restart_rounds 5 kill -v file file="$mnt/disk"
  guest_fio_passed
  grep -q "started, packed ring" "$gwlog"
  # The restarts really found requests to resubmit (or the test proved nothing).
  grep -q "resubmitting" "$gwlog"
}

@test "packed: SIGTERM restarts under guest I/O: no error, every block verifies" {
  requires_plugin file
  start_slowfs 64M 2000
  start_gateway file file="$mnt/disk"
  guest_start g -D ",packed=on" -C ",reconnect=1" -t 400 "$sock" \
    "echo started; $guest_fio_passes"
  wait_for_log "$tmp/g.log" started 120

  restart_rounds 3 term file file="$mnt/disk"
  guest_fio_passed
}
