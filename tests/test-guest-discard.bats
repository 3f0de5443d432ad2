#!/usr/bin/env bats
# Discard and write-zeroes from the guest reach the file: blkdiscard punches holes,
# blkdiscard -z zeroes.

load test_helper

mib=$((1024 * 1024))

setup() {
  blkgate_setup
  requires_plugin file
  guest_ready
  requires_punch_hole "$tmp"
  # A fully allocated file of random data.
  head -c 32M /dev/urandom > "$tmp/disk.img"
  sync "$tmp/disk.img"
}

@test "the guest sees discard support (discard_max_bytes > 0)" {
  start_gateway file file="$tmp/disk.img"

  run -0 guest_run "$sock" 'cat /sys/block/vda/queue/discard_max_bytes'
  [ "$output" -gt 0 ]
}

@test "blkdiscard in the guest punches a hole in the file and the range reads back zero" {
  local head_sum tail_sum allocated
  head_sum=$(sha256_range "$tmp/disk.img" 0 $((8 * mib)))
  tail_sum=$(sha256_range "$tmp/disk.img" $((16 * mib)) $((16 * mib)))
  allocated=$(allocated_bytes "$tmp/disk.img")
  start_gateway file file="$tmp/disk.img"

  run -0 guest_run "$sock" "
    blkdiscard -o $((8 * mib)) -l $((8 * mib)) /dev/vda || exit
    dd if=/dev/vda bs=1M skip=8 count=8 iflag=direct status=none | sha256sum | cut -d' ' -f1"
  # The guest reads zeros; so does the host, from a hole of (about) 8 MiB.
  [ "$output" = "$(sha256_zeros $((8 * mib)))" ]
  [ "$(sha256_range "$tmp/disk.img" $((8 * mib)) $((8 * mib)))" = "$output" ]
  echo "allocated: $allocated before, $(allocated_bytes "$tmp/disk.img") after"
  [ $(( allocated - $(allocated_bytes "$tmp/disk.img") )) -ge $((7 * mib)) ]
  # The rest is untouched and the size is the same.
  [ "$(sha256_range "$tmp/disk.img" 0 $((8 * mib)))" = "$head_sum" ]
  [ "$(sha256_range "$tmp/disk.img" $((16 * mib)) $((16 * mib)))" = "$tail_sum" ]
  [ "$(stat -c %s "$tmp/disk.img")" -eq $((32 * mib)) ]
}

@test "blkdiscard -z in the guest zeroes a range of the file with WRITE_ZEROES" {
  local head_sum tail_sum
  head_sum=$(sha256_range "$tmp/disk.img" 0 $((20 * mib)))
  tail_sum=$(sha256_range "$tmp/disk.img" $((24 * mib)) $((8 * mib)))
  start_gateway file file="$tmp/disk.img"

  run -0 guest_run "$sock" "
    cat /sys/block/vda/queue/write_zeroes_max_bytes
    blkdiscard -z -o $((20 * mib)) -l $((4 * mib)) /dev/vda"
  # The guest's kernel sends WRITE_ZEROES (rather than writing zero pages) only if offered.
  [ "$output" -gt 0 ]
  [ "$(sha256_range "$tmp/disk.img" $((20 * mib)) $((4 * mib)))" = "$(sha256_zeros $((4 * mib)))" ]
  [ "$(sha256_range "$tmp/disk.img" 0 $((20 * mib)))" = "$head_sum" ]
  [ "$(sha256_range "$tmp/disk.img" $((24 * mib)) $((8 * mib)))" = "$tail_sum" ]
}
