#!/usr/bin/env bats
# Multiqueue: --num-queues sets how many request queues the gateway offers, and a guest with
# a vCPU per queue sends I/O down each of them.

load test_helper

setup() {
  blkgate_setup
  requires_plugin memory
  guest_ready
}

# The guest command printing, for each request queue of vda, the interrupts it has taken
# (the completions the gateway signalled on it).
count_irqs='
  for q in 0 1; do
    awk -v q=virtio0-req.$q '"'"'$NF == q { s = 0; for (i = 2; $i ~ /^[0-9]+$/; i++) s += $i; print s }'"'"' /proc/interrupts
  done'

@test "without --num-queues the gateway offers at least one queue, and a guest gets them" {
  requires python3
  start_gateway memory size=64M

  run -0 python3 "$vu_probe" "$sock"
  queues=$(sed -n 's/^queues=//p' <<< "$output")
  [ "$queues" -ge 1 ]

  # A 2-vCPU guest asking for all of them uses one per vCPU.
  run -0 guest_run -c 2 -q "$queues" "$sock" '
    ls /sys/block/vda/mq | wc -l
    dd if=/dev/vda of=/dev/null bs=64k count=64 iflag=direct status=none && echo read-ok'
  [ "${lines[0]}" -eq $(( queues < 2 ? queues : 2 )) ]
  [ "${lines[1]}" = read-ok ]
}

@test "--num-queues 2: a 2-vCPU guest gets two request queues and both carry I/O" {
  start_gateway --num-queues 2 memory size=64M

  # One fio job pinned to each vCPU; blk-mq maps vCPU N to queue N.
  run -0 guest_run -c 2 -q 2 "$sock" "
    ls /sys/block/vda/mq | wc -l
    $count_irqs
    fio --ioengine=libaio --direct=1 --filename=/dev/vda --rw=randwrite --bs=4k \
        --iodepth=8 --size=8M --verify=crc32c --verify_fatal=1 \
        --name=cpu0 --cpus_allowed=0 --offset=0 \
        --name=cpu1 --cpus_allowed=1 --offset=32M >fio.log 2>&1 || { cat fio.log; exit 1; }
    $count_irqs"
  [ "${lines[0]}" -eq 2 ]
  [ "${#lines[@]}" -eq 5 ]
  # Both queues had completions during the fio run.
  [ $(( lines[3] - lines[1] )) -gt 10 ]
  [ $(( lines[4] - lines[2] )) -gt 10 ]
}

@test "--num-queues 1: QEMU refuses a device that asks for two queues" {
  start_gateway --num-queues 1 memory size=64M

  run -125 guest_run -c 2 -q 2 "$sock" true
  [[ $output == *"maximum number of queues supported by the backend is 1"* ]]
  # The gateway is still there for the next front-end.
  run -0 guest_run -c 2 -q 1 "$sock" 'ls /sys/block/vda/mq | wc -l'
  [ "$output" -eq 1 ]
}
