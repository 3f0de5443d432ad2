#!/usr/bin/env bats
# Live migration of a running guest between two QEMU 7.2 processes, each attached to its own
# blkgate serving the same image: dirty logging must carry every page the gateway wrote (data
# read into guest buffers, status bytes, the used ring) to the destination, and GET_VRING_BASE
# must drain the source's requests before QEMU copies the rings.

load test_helper

setup() {
  blkgate_setup
  guest_ready
  qmp=$BATS_TEST_DIRNAME/tools/qmp.py
  requires python3
}

# migrate DEPTH SIZE [READS]: the guest writes SIZE with fio at iodepth DEPTH while it
# migrates and verifies everything afterwards (crc32c in every block), then prints a checksum
# of the disk, which must match the file on the host.  With READS=1 it writes first and
# migrates while fio reads and verifies in a loop: the read buffers are written only by the
# gateway, so only dirty logging carries them to the destination.
migrate() {
  local depth=$1 size=$2 reads=${3:-0}
  truncate -s 64M "$tmp/disk.img"
  start_gateway --serial src file file="$tmp/disk.img"
  local src_sock=$sock
  sock=$sockdir/dst.sock pidfile=$tmp/dst.pid start_gateway --serial dst \
    file file="$tmp/disk.img"
  local dst_sock=$sockdir/dst.sock

  local job="fio --name=w --filename=/dev/vda --rw=randwrite --bs=4k --iodepth=$depth \
    --ioengine=libaio --direct=1 --size=$size --verify=crc32c --verify_fatal=1"
  # Three passes with new seeds, so that the guest still writes when the migration ends
  # however fast the machine is (one pass of 48M takes about 8 s here).
  local cmd="echo started; s=0; for pass in 1 2 3; do
      $job --do_verify=1 --randseed=\$pass > fio.out 2>&1 || { s=\$?; break; }; done;"
  if [ "$reads" = 1 ]; then
    cmd="$job --do_verify=0 > fio.out 2>&1 || echo write=bad; echo started;
      for i in 1 2 3 4 5 6 7 8; do $job --verify_only > fio.out 2>&1 || break; done; s=\$?;"
  fi
  cmd="$cmd tail -n 3 fio.out; echo fio=\$s;
    if dmesg | grep -i -E 'I/O error|not a head'; then echo dmesg=bad; fi;
    echo sum=\$(dd if=/dev/vda bs=1M count=48 iflag=direct 2>/dev/null | sha256sum | cut -c1-64)"
  guest_start src -t 300 -Q -qmp -Q "unix:$tmp/src.qmp,server=on,wait=off" "$src_sock" "$cmd"
  guest_start dst -t 300 -Q -incoming -Q "unix:$tmp/mig.sock" "$dst_sock" "$cmd"
  wait_for_log "$tmp/src.log" started 120
  sleep $((2 + RANDOM % 3))
  kill -0 "$(cat "$tmp/src.pid")" || { echo "the source guest has finished already" >&2; return 1; }

  "$qmp" "$tmp/src.qmp" migrate "{\"uri\": \"unix:$tmp/mig.sock\"}"
  run "$qmp" "$tmp/src.qmp" wait-migration 120
  [ "$output" = completed ]
  grep -q "dirty logging on" "$gwlog"
  "$qmp" "$tmp/src.qmp" quit
  guest_wait src || true        # the source stops without finishing the command

  local status=0
  guest_wait dst || status=$?
  local out
  out=$(tr -d '\r' < "$tmp/dst.log")
  echo "$out" | tail -n 12
  [ "$status" -eq 0 ]
  [[ "$out" == *"fio=0"* ]]
  [[ "$out" != *"dmesg=bad"* ]]
  # The guest's view of the disk on the destination is the file's.
  local sum
  sum=$(echo "$out" | sed -n 's/^sum=//p')
  [ "$sum" = "$(sha256_range "$tmp/disk.img" 0 $((48 * 1024 * 1024)))" ]
}

@test "live migration with a writing guest: every block verifies on the destination" {
  requires_plugin file
  migrate 4 48M
}

@test "live migration under heavy write load at switch-over (iodepth 32)" {
  requires_plugin file
  migrate 32 48M
}

@test "live migration while the guest reads and verifies: read buffers reach the destination" {
  requires_plugin file
  migrate 32 16M 1
}
