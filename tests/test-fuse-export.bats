#!/usr/bin/env bats
# --fuse-export: the disk the gateway serves, also a regular file (a FUSE mount) on the host.
# blkgate-io plays the guest through the vhost-user socket; the file must show what the guest
# wrote (and the guest what was written to the file, with --fuse-export-writable); it is
# unmounted at exit, and a stale mount left by a crash is cleaned by the next gateway.

load test_helper

mib=$((1024 * 1024))

setup() {
  blkgate_setup
  [ -x "$BLKGATE_IO" ] || { echo "$BLKGATE_IO does not exist: run make first" >&2; return 1; }
  # The gateway resolves the directory: compare with what /proc/self/mountinfo shows.
  fx=$(cd "$tmp" && pwd -P)/disk
}

# A test that fails must not leave a mount behind, stale or not.
teardown() {
  local rc=0 i
  blkgate_teardown || rc=$?
  for ((i = 0; i < 5; i++)); do
    mounted "$fx" || break
    fusermount3 -u -z "$fx" 2>/dev/null || umount -l "$fx"
  done
  return $rc
}

# requires_fuse: /dev/fuse, fusermount3 and a blkgate built with FUSE support.
requires_fuse() {
  requires_blkgate
  requires fusermount3
  [ -e /dev/fuse ] || missing "/dev/fuse is not available" || return 1
  "$BLKGATE" --fuse-export "$tmp/probe" --version >/dev/null 2>&1 ||
    missing "blkgate was built without FUSE support"
}

# mounted PATH: something is mounted at PATH.
mounted() {
  awk -v p="$1" '$5 == p { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# unmounted PATH: nothing is (a bare `! mounted` would not fail a test under set -e).
unmounted() {
  ! mounted "$1"
}

# hexbytes FILE OFFSET COUNT: COUNT bytes of FILE at OFFSET, in hex.
hexbytes() {
  dd if="$1" bs=1 skip="$2" count="$3" status=none | od -An -tx1 | tr -d ' \n'
}

@test "fuse export: the file reads what the guest wrote, at once, and is read-only" {
  requires_fuse
  requires_plugin file
  truncate -s 16M "$tmp/img"
  start_gateway --fuse-export "$fx" file file="$tmp/img"
  mounted "$fx"
  grep -q " $fx .* - fuse.blkgate blkgate " /proc/self/mountinfo
  [ "$(stat -c '%s %a %u %g %F' "$fx")" = "$((16 * mib)) 400 $(id -u) $(id -g) regular file" ]

  bio "$sock" -c 'write 0 1M -S 7' -c 'write 3M 64k -P 0x5a' -c 'verify 0 1M -S 7' \
    -c "read 0 1M -o $tmp/written.bin"
  cmp "$fx" "$tmp/img"
  cmp -n "$mib" "$fx" "$tmp/written.bin"
  # Unaligned reads get their slice of the covering blocks.
  [ "$(hexbytes "$fx" $((3 * mib - 2)) 4)" = 00005a5a ]
  [ "$(hexbytes "$fx" 1000 7)" = "$(hexbytes "$tmp/written.bin" 1000 7)" ]
  # A read past the end is short; at the end, empty.
  [ "$(tail -c +$((16 * mib - 99)) "$fx" | wc -c)" = 100 ]

  # No page cache: an open file sees a write the guest has had acknowledged.
  python3 - "$fx" "$BLKGATE_IO" "$sock" <<'EOF'
import os, subprocess, sys
path, bio, sock = sys.argv[1:]
fd = os.open(path, os.O_RDONLY)
before = os.pread(fd, 4096, 8 * 1024 * 1024)
assert before == bytes(4096), "not zeroes at 8M"
subprocess.run([bio, "-t", "20", sock, "-c", "write 8M 4k -P 0x33"], check=True,
               stdout=subprocess.DEVNULL)
after = os.pread(fd, 4096, 8 * 1024 * 1024)
assert after == b"\x33" * 4096, "the open file still shows the old data"
os.close(fd)
EOF

  # Writes are refused, root's too.
  run ! dd if=/dev/zero of="$fx" bs=512 count=1 conv=notrunc status=none
  [[ "$output" == *"Read-only file system"* || "$output" == *"Permission denied"* ]]
  run ! truncate -s 1M "$fx"
  run ! fallocate -p -o 0 -l 4096 "$fx"
  cmp "$fx" "$tmp/img"
  stop_gateway
  unmounted "$fx"
  [ ! -e "$fx" ]
}

@test "fuse export: --fuse-export-writable, aligned and unaligned writes reach the guest and the image" {
  requires_fuse
  requires_plugin file
  truncate -s 16M "$tmp/img"
  start_gateway --fuse-export "$fx" --fuse-export-writable file file="$tmp/img"
  [ "$(stat -c %a "$fx")" = 600 ]
  head -c 65536 /dev/urandom > "$tmp/a.bin"
  head -c 100 /dev/urandom > "$tmp/b.bin"

  # Aligned: 64 KiB at 1 MiB, 4 KiB at a time, made durable.
  dd if="$tmp/a.bin" of="$fx" bs=4096 seek=256 conv=notrunc,fsync status=none
  # Unaligned: 100 bytes at 1000 (two partial sectors), then 5 bytes into the aligned data.
  dd if="$tmp/b.bin" of="$fx" bs=100 seek=1000 oflag=seek_bytes conv=notrunc status=none
  printf hello | dd of="$fx" bs=5 seek=$((mib + 10)) oflag=seek_bytes conv=notrunc status=none

  # The guest sees them...
  bio "$sock" -c "read 0 4k -o $tmp/head.bin" -c "read 1M 64k -o $tmp/mid.bin"
  cmp -n 1000 "$tmp/head.bin" /dev/zero
  cmp -n 100 -i 1000:0 "$tmp/head.bin" "$tmp/b.bin"
  cmp -n 2996 -i 1100:0 "$tmp/head.bin" /dev/zero
  [ "$(hexbytes "$tmp/mid.bin" 10 5)" = "$(printf hello | od -An -tx1 | tr -d ' \n')" ]
  cmp -n 10 "$tmp/mid.bin" "$tmp/a.bin"
  cmp -n $((65536 - 15)) -i 15:15 "$tmp/mid.bin" "$tmp/a.bin"
  # ...and so does the image, and the file itself.
  cmp -n 4096 "$tmp/img" "$tmp/head.bin"
  cmp -n 65536 -i "$mib:0" "$tmp/img" "$tmp/mid.bin"
  cmp "$fx" "$tmp/img"

  # The guest's write is read back through the file at once.
  bio "$sock" -c 'write 2M 1M -S 42' -c "read 2M 1M -o $tmp/g.bin"
  cmp -n "$mib" -i "$((2 * mib)):0" "$fx" "$tmp/g.bin"

  # The size is fixed: writing at the end fails, across it is short, truncating fails.
  run ! dd if=/dev/zero of="$fx" bs=512 seek=$((32 * 1024)) count=1 conv=notrunc status=none
  [[ "$output" == *"No space left on device"* ]]
  run dd if="$tmp/a.bin" of="$fx" bs=4096 seek=$((4096 - 1)) count=2 conv=notrunc status=none
  [ "$(stat -c %s "$tmp/img")" = $((16 * mib)) ]
  cmp -n 4096 -i $((16 * mib - 4096)):0 "$tmp/img" "$tmp/a.bin"
  run ! truncate -s 8M "$fx"
  [ "$(stat -c %s "$fx")" = $((16 * mib)) ]
  # O_TRUNC is ignored, as on a block device.
  printf abc > "$fx"
  [ "$(stat -c %s "$fx")" = $((16 * mib)) ]
  [ "$(hexbytes "$tmp/img" 0 4)" = 61626300 ]
  cmp -n 100 -i 1000:0 "$tmp/img" "$tmp/b.bin"
  sync "$fx"
}

@test "fuse export: fallocate punches holes and zeroes ranges through the file" {
  requires_fuse
  requires_plugin file
  requires_punch_hole "$tmp"
  truncate -s 16M "$tmp/img"
  start_gateway --fuse-export "$fx" --fuse-export-writable file file="$tmp/img"
  bio "$sock" -c 'write 0 4M -P 0xab'

  # Punch 1 MiB (aligned): zeroes, and the image gets a hole.
  before=$(allocated_bytes "$tmp/img")
  fallocate -p -o 1M -l 1M "$fx"
  bio "$sock" -c 'verify 1M 1M -P 0' -c 'verify 0 1M -P 0xab' -c 'verify 2M 2M -P 0xab'
  [ "$(allocated_bytes "$tmp/img")" -lt "$before" ]
  # Zero an unaligned range: partial sectors at both ends.
  fallocate -z -o 3000 -l 5000 "$fx"
  cmp -n 3000 "$fx" <(head -c 3000 /dev/zero | tr '\0' '\253')
  cmp -n 5000 -i 3000:0 "$fx" /dev/zero
  [ "$(hexbytes "$fx" 7999 2)" = 00ab ]
  cmp "$fx" "$tmp/img"
  # Nothing else is offered: plain allocation, collapse, ...
  run ! fallocate -o 0 -l 4096 "$fx"
  run ! fallocate -c -o 0 -l 4096 "$fx"
}

@test "fuse export: memory and null plugins" {
  requires_fuse
  requires_plugin memory
  requires_plugin null
  start_gateway --fuse-export "$fx" --fuse-export-writable memory size=8M
  head -c 65536 /dev/urandom > "$tmp/a.bin"
  dd if="$tmp/a.bin" of="$fx" bs=64k seek=3 conv=notrunc status=none
  bio "$sock" -c "verify 192k 64k -i $tmp/a.bin" -c 'write 1M 1M -S 9' -c "read 1M 1M -o $tmp/m.bin"
  cmp -n "$mib" -i "$mib:0" "$fx" "$tmp/m.bin"
  fallocate -p -o 1M -l 1M "$fx"
  cmp -n "$mib" -i "$mib:0" "$fx" /dev/zero
  [ "$(stat -c %s "$fx")" = $((8 * mib)) ]
  stop_gateway
  unmounted "$fx"

  start_gateway --fuse-export "$fx" null size=1G
  [ "$(stat -c '%s %a' "$fx")" = "$((1024 * mib)) 400" ]
  bio "$sock" -c 'write 0 1M -P 0x11'
  cmp -n "$mib" "$fx" /dev/zero
  [ "$(tail -c 4096 "$fx" | tr -d '\0' | wc -c)" = 0 ]
  stop_gateway
  unmounted "$fx"

  # null with a writable export: writes are dropped, reads stay zeroes.
  start_gateway --fuse-export "$fx" --fuse-export-writable null size=1M
  head -c 4096 /dev/urandom | dd of="$fx" bs=4096 conv=notrunc status=none
  cmp "$fx" <(head -c "$mib" /dev/zero)
}

@test "fuse export: SIGTERM and a normal exit unmount; a created file is removed, an existing one kept" {
  requires_fuse
  requires_plugin memory
  # Created by the gateway: removed at exit (here daemonized, stopped by SIGTERM).
  start_gateway --fuse-export "$fx" memory size=1M
  mounted "$fx"
  stop_gateway
  unmounted "$fx"
  [ ! -e "$fx" ]

  # An existing file is mounted over, and kept as it was.
  echo "keep me" > "$fx"
  start_gateway -f --fuse-export "$fx" memory size=1M
  [ "$(stat -c %s "$fx")" = "$mib" ]
  stop_gateway
  unmounted "$fx"
  [ "$(cat "$fx")" = "keep me" ]
  rm "$fx"

  # --run: the gateway exits with the command, and unmounts.
  run -0 "$BLKGATE" -s "$sock" --fuse-export "$fx" \
    --run "cmp -n 4096 '$fx' /dev/zero && grep -q ' $fx ' /proc/self/mountinfo" memory size=1M
  unmounted "$fx"
  [ ! -e "$fx" ]
}

@test "fuse export: a mount left stale by kill -9 is cleaned by the next gateway" {
  requires_fuse
  requires_plugin file
  truncate -s 16M "$tmp/img"
  start_gateway --fuse-export "$fx" --fuse-export-writable file file="$tmp/img"
  bio "$sock" -c 'write 0 1M -S 3'
  kill_gateway KILL
  mounted "$fx"
  run ! head -c 1 "$fx"
  [[ "$output" == *"not connected"* ]]

  start_gateway --fuse-export "$fx" file file="$tmp/img"
  grep -q "$fx is a stale mount" "$gwlog"
  [ "$(awk -v p="$fx" '$5 == p' /proc/self/mountinfo | wc -l)" = 1 ]
  stat "$fx"
  cmp "$fx" "$tmp/img"
  bio "$sock" -c 'verify 0 1M -S 3'
  # Killed twice over: still one clean mount.
  kill_gateway KILL
  start_gateway --fuse-export "$fx" file file="$tmp/img"
  [ "$(awk -v p="$fx" '$5 == p' /proc/self/mountinfo | wc -l)" = 1 ]
  cmp -n "$mib" "$fx" "$tmp/img"
  stop_gateway
  unmounted "$fx"
}

@test "fuse export: bad usage is refused with a clear error" {
  requires_fuse
  requires_plugin memory
  run -1 "$BLKGATE" -f -s "$sock" --fuse-export-writable memory size=1M
  [[ "$output" == *"--fuse-export-writable needs --fuse-export"* ]]

  # A directory: refused by the daemon before it is ready, so the command fails.
  mkdir "$tmp/dir"
  run -1 "$BLKGATE" -s "$sock" --fuse-export "$tmp/dir" memory size=1M
  [[ "$output" == *"not a regular file"*directory* ]]
  [ ! -e "$sock" ]
  unmounted "$(cd "$tmp/dir" && pwd -P)"

  run -1 "$BLKGATE" -f -r -s "$sock" --fuse-export "$fx" --fuse-export-writable memory size=1M
  [[ "$output" == *"the disk is read-only (-r)"* ]]
  [ ! -e "$fx" ]

  run -1 "$BLKGATE" -f -s "$sock" --fuse-export "$tmp/no/such/dir/disk" memory size=1M
  [[ "$output" == *"No such file or directory"* ]]

  # A path another gateway exports.
  start_gateway --fuse-export "$fx" memory size=1M
  run -1 "$BLKGATE" -f -s "$sockdir/b.sock" --fuse-export "$fx" memory size=1M
  [[ "$output" == *"already mounted"* ]]
  [ "$(awk -v p="$fx" '$5 == p' /proc/self/mountinfo | wc -l)" = 1 ]
  stat "$fx"
}
