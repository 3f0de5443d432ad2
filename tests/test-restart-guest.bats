#!/usr/bin/env bats
# Gateway restarts under a running guest: kill -9 (crash) and SIGTERM (planned restart, upgrade)
# while the guest writes and verifies.  The image sits behind slowfs, a FUSE file whose every
# read and write sleeps a random 0-2 ms on one of several threads, so requests complete out of
# order: a gateway without inflight tracking fails this test (qemu-storage-daemon 7.2 does: the
# guest logs "not a head" and hangs), because after a restart QEMU rewinds to used->idx and the
# requests that were in flight behind a completed one are lost.

load test_helper

setup() {
  blkgate_setup
  guest_ready
}

# The guest writes with fio at iodepth 32 and verifies everything it wrote (crc32c in every
# block), in passes with a new seed each, so that it is still writing when the last restart
# comes however fast the machine is (one pass takes a couple of seconds here; a restart
# needs QEMU's reconnect, 1 s); dmesg must show no I/O error.
guest_fio='s=0; for pass in 1 2 3 4 5 6 7 8 9 10 11 12; do
  fio --name=w --filename=/dev/vda --rw=randwrite --bs=4k --iodepth=32 --randseed=$pass \
    --ioengine=libaio --direct=1 --size=16M --verify=crc32c --verify_fatal=1 --do_verify=1 \
    > fio.out 2>&1 || { s=$?; break; }; done;
  tail -n 3 fio.out; echo "passes=$pass fio=$s";
  if dmesg | grep -i -E "I/O error|not a head|blk_update_request"; then echo dmesg=bad; fi;
  [ $s -eq 0 ]'

# restart_rounds N HOW: N times, once the guest has connected to the current gateway and had
# a moment to fill its queue, stop the gateway HOW (kill: SIGKILL; term: SIGTERM) and start
# a new one.  The restarts come while the guest writes, not by the clock: a guest that is
# done before a round fails it.
restart_rounds() {
  local round
  for ((round = 1; round <= $1; round++)); do
    wait_for 60 connected_at_least "$round" ||
      { echo "round $round: the guest did not connect to gateway $round" >&2; return 1; }
    kill -0 "$(cat "$tmp/g.pid")" ||
      { echo "round $round: the guest has finished already" >&2; return 1; }
    sleep "0.$((RANDOM % 9 + 1))"
    if [ "$2" = kill ]; then
      kill_gateway KILL
    else
      stop_gateway
    fi
    start_gateway file file="$mnt/disk"
  done
}

connected_at_least() {
  [ "$(grep -c "front-end connected" "$gwlog")" -ge "$1" ]
}

# guest_fio_passed: the guest g finished $guest_fio without an error.  Not under run: the guest
# is a child of this shell.
guest_fio_passed() {
  local status=0
  guest_wait g || status=$?
  output=$(cat "$tmp/g.out")
  echo "$output"
  [ "$status" -eq 0 ]
  [[ "$output" == *"fio=0"* ]]
  [[ "$output" != *"dmesg=bad"* ]]
}

@test "kill -9 of the gateway under guest I/O: no error, every block verifies" {
  requires_plugin file
  start_slowfs 64M 2000
  start_gateway file file="$mnt/disk"
  guest_start g -C ",reconnect=1" -t 400 "$sock" "echo started; $guest_fio"
  wait_for_log "$tmp/g.log" started 120

  restart_rounds 5 kill
  guest_fio_passed
  # The restarts really found requests to resubmit (or the test proved nothing).
  grep -q "resubmitting" "$gwlog"
}

@test "SIGTERM restarts under guest I/O (planned upgrade): no error, every block verifies" {
  requires_plugin file
  start_slowfs 64M 2000
  start_gateway file file="$mnt/disk"
  guest_start g -C ",reconnect=1" -t 400 "$sock" "echo started; $guest_fio"
  wait_for_log "$tmp/g.log" started 120

  restart_rounds 3 term
  guest_fio_passed
}
