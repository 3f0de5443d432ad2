#!/usr/bin/env bats
# A read-only export (-r/--readonly) is read-only for the guest, and the file stays unchanged.

load test_helper

setup() {
  blkgate_setup
  requires_plugin file
  guest_ready
  head -c 16M /dev/urandom > "$tmp/disk.img"
  before=$(sha256sum < "$tmp/disk.img")
}

@test "-r: the guest sees a read-only disk it can read" {
  start_gateway -r file file="$tmp/disk.img"

  run -0 guest_run "$sock" '
    cat /sys/block/vda/ro
    dd if=/dev/vda bs=64k count=16 iflag=direct status=none | sha256sum | cut -d" " -f1'
  [ "${lines[0]}" = 1 ]
  [ "${lines[1]}" = "$(sha256_range "$tmp/disk.img" 0 $((1024 * 1024)))" ]
}

@test "--readonly: writes and discards from the guest fail and the file is unchanged" {
  start_gateway --readonly file file="$tmp/disk.img"

  run -0 guest_run "$sock" '
    if dd if=/dev/zero of=/dev/vda bs=4k count=1 oflag=direct conv=notrunc; then
      echo "the write succeeded"; exit 1
    fi
    if blkdiscard -o 0 -l 1048576 /dev/vda; then
      echo "the discard succeeded"; exit 1
    fi
    if blkdiscard -z -o 0 -l 1048576 /dev/vda; then
      echo "the zeroing succeeded"; exit 1
    fi
    echo refused'
  [ "${lines[-1]}" = refused ]
  [ "$(sha256sum < "$tmp/disk.img")" = "$before" ]
}
