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

@test "kill -9 of the gateway under guest I/O: no error, every block verifies" {
  requires_plugin file
  start_slowfs 64M 2000
  start_gateway file file="$mnt/disk"
  guest_start g -C ",reconnect=1" -t 400 "$sock" "echo started; $guest_fio_passes"
  wait_for_log "$tmp/g.log" started 120

  restart_rounds 5 kill file file="$mnt/disk"
  guest_fio_passed
  # The restarts really found requests to resubmit (or the test proved nothing).
  grep -q "resubmitting" "$gwlog"
}

@test "SIGTERM restarts under guest I/O (planned upgrade): no error, every block verifies" {
  requires_plugin file
  start_slowfs 64M 2000
  start_gateway file file="$mnt/disk"
  guest_start g -C ",reconnect=1" -t 400 "$sock" "echo started; $guest_fio_passes"
  wait_for_log "$tmp/g.log" started 120

  restart_rounds 3 term file file="$mnt/disk"
  guest_fio_passed
}
