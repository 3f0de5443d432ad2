#!/usr/bin/env bats
# Gateway crashes under bursts of overlapping writes, without a guest: blkgate-io plays QEMU
# with reconnect=1 (--auto-reconnect: when the back-end goes away it connects again with the
# same memory and the same inflight region, SET_VRING_BASE = used->idx) and the image sits
# behind slowfs, which completes requests out of order (a random 0-8 ms per request on several
# threads).  Each round submits a burst of writes, kill -9s the gateway at a random moment,
# restarts it on the same socket (one round in three kills the new one too, at another
# random moment) and lets blkgate-io wait for every request; then the image is checked on
# the host (tests/tools/write-order.py).
#
# What "every write lands exactly once, overlapping writes in submission order" means here:
# before a write is submitted, the script waits for the completion of the earlier writes to
# its blocks ('wait N'), as a guest relying on ordering does, except in 20% of the cases
# where it leaves them in flight.  Then, per 4 KiB block:
#   * a write is *superseded* when a later write to the block was submitted after the guest
#     waited for its completion;
#   * the block must hold, in all its bytes, the pattern of a write to it that is not
#     superseded (with no concurrency that is exactly the last write submitted to it), and
#     blocks nothing was written to stay zero.
# Concurrent overlapping writes may land in either order (virtio allows it, with or without a
# crash), but a write the guest saw complete must never land again after a newer one: a
# gateway that replayed a completed write after a restart leaves a superseded pattern, one
# that lost a write leaves an older one or zeroes, and every request must complete with OK.
#
# The test also checks that it proved something: the gateway resubmitted requests after
# some restarts, and at some kills requests were in flight behind later ones that had
# completed (blkgate-io counts them).  The second test does the same on two queues; the
# third runs the rounds with blkgate-io not negotiating INFLIGHT_SHMFD, which must fail
# (it does within a few rounds: a completed request executed again shows up as a used
# entry for a head that is not outstanding, as Linux's "id N is not a head"; a lost one as
# a request that never completes).
#
# Environment: BLKGATE_RESTART_ROUNDS (default 50; half as many on two queues; about 0.5 s a
# round), BLKGATE_TEST_SEED (default random; the seed is printed, the kill moments stay
# random).

load test_helper

write_order=$BATS_TEST_DIRNAME/tools/write-order.py
blocks=64

setup() {
  blkgate_setup
  [ -x "$BLKGATE_IO" ] || { echo "$BLKGATE_IO does not exist: run make first" >&2; return 1; }
  requires python3
  requires_plugin file
}


# restart_rounds N [BLKGATE-IO OPTIONS...]: N rounds, each on its own 256 KiB of the disk;
# stops at the first round that fails.  Leaves $rounds_done, $reconnects, $overtaken,
# $resubmitted (rounds after which the gateway logged a resubmission), $double (rounds
# with two kills) and $twice (rounds in which blkgate-io had to reconnect twice).  $gen_opts: more
# options for write-order.py gen.
# $gw_args: the gateway's arguments (default: the file plugin on slowfs), $image: the file to
# check (default: slowfs's backing file).
gen_opts=()
gw_args=()
image=
restart_rounds() {
  local n=$1 r seed status before after
  shift
  [ ${#gw_args[@]} -gt 0 ] || gw_args=(file file="$mnt/disk")
  [ -n "$image" ] || image=$tmp/backing.img
  rounds_done=0 reconnects=0 overtaken=0 resubmitted=0 double=0 twice=0
  for ((r = 0; r < n; r++)); do
    seed=$((base_seed + r))
    python3 "$write_order" gen --seed "$seed" --base $((r * blocks * 4096)) \
      --blocks $blocks --writes 48 "${gen_opts[@]}" --plan "$tmp/plan.$r" > "$tmp/cmds.$r"
    before=$(grep -c 'resubmitting' "$gwlog" || true)
    "$BLKGATE_IO" -t 10 --auto-reconnect 20 "$@" "$sock" \
      < "$tmp/cmds.$r" > "$tmp/bio.$r" 2>&1 3>&- &
    local bio_pid=$!
    sleep "0.0$((RANDOM % 6))$((RANDOM % 10))"
    kill_gateway KILL
    start_gateway "${gw_args[@]}"
    # One round in three, the new gateway is killed too: before, during or after the
    # reconnection and the resubmission of what the first one left in flight.
    if [ $((RANDOM % 3)) -eq 0 ]; then
      sleep "0.0$((RANDOM % 10))"
      kill_gateway KILL
      start_gateway "${gw_args[@]}"
      double=$((double + 1))
    fi
    status=0
    wait $bio_pid || status=$?
    after=$(grep -c 'resubmitting' "$gwlog" || true)
    [ "$after" -eq "$before" ] || resubmitted=$((resubmitted + 1))
    if grep -q '^auto-reconnect: reconnected' "$tmp/bio.$r"; then
      reconnects=$((reconnects + 1))
      [ "$(grep -c '^auto-reconnect: reconnected' "$tmp/bio.$r")" -lt 2 ] || twice=$((twice + 1))
      overtaken=$((overtaken + $(sed -n 's/.*outstanding, \([0-9]*\) of them overtaken.*/\1/p' \
        "$tmp/bio.$r" | head -n 1)))
    fi
    if [ $status -ne 0 ]; then
      echo "round $r (seed $seed): blkgate-io failed (status $status):"
      grep -v -E '^aio #[0-9]+ (submitted|write .*: OK)' "$tmp/bio.$r" | tail -n 20
      return 1
    fi
    if ! python3 "$write_order" check --plan "$tmp/plan.$r" --image "$image" \
         > "$tmp/check.$r"; then
      echo "round $r (seed $seed): the image is wrong:"
      head -n 20 "$tmp/check.$r"
      grep -E '^auto-reconnect' "$tmp/bio.$r" || true
      return 1
    fi
    rounds_done=$((rounds_done + 1))
  done
}

@test "kill -9 amid overlapping write bursts, restart, reconnect: each write lands once, in order" {
  local n=${BLKGATE_RESTART_ROUNDS:-50}
  base_seed=${BLKGATE_TEST_SEED:-$RANDOM}
  echo "# seed $base_seed, $n rounds" >&3
  start_slowfs 64M 8000
  start_gateway file file="$mnt/disk"

  restart_rounds "$n"
  echo "# $rounds_done rounds ($double with two kills): $reconnects reconnected mid-burst ($twice twice), $resubmitted resubmitted requests, $overtaken requests were overtaken at the kills" >&3
  # The test proved something: restarts found requests to resubmit, and some of them had
  # been overtaken by later requests (completion out of order).  Most rounds resubmit, and
  # 50 rounds typically see 50-80 overtaken requests; a short run might see none.
  if [ "$n" -ge 10 ]; then
    [ "$resubmitted" -gt 0 ]
    [ "$overtaken" -gt 0 ]
  fi
}

@test "the same over two queues, writes and the waits between them crossing queues" {
  local n=$(( (${BLKGATE_RESTART_ROUNDS:-50} + 1) / 2 ))
  base_seed=${BLKGATE_TEST_SEED:-$RANDOM}
  echo "# seed $base_seed, $n rounds" >&3
  start_slowfs 64M 8000
  start_gateway file file="$mnt/disk"

  gen_opts=(--queues 2)
  restart_rounds "$n" -Q 2
  echo "# $rounds_done rounds ($double with two kills): $reconnects reconnected mid-burst ($twice twice), $resubmitted resubmitted requests, $overtaken requests were overtaken at the kills" >&3
  # Both queues had requests to resubmit at some restart.
  if [ "$n" -ge 10 ]; then
    grep -q 'queue 0: resubmitting' "$gwlog"
    grep -q 'queue 1: resubmitting' "$gwlog"
  fi
}

@test "the same rounds without inflight tracking fail (the test can tell)" {
  local n=${BLKGATE_RESTART_ROUNDS:-50}
  base_seed=${BLKGATE_TEST_SEED:-$RANDOM}
  echo "# seed $base_seed, at most $n rounds" >&3
  start_slowfs 64M 8000
  start_gateway file file="$mnt/disk"

  local status=0
  restart_rounds "$n" --no-inflight -t 3 > "$tmp/rounds.out" || status=$?
  cat "$tmp/rounds.out"
  sed "s/^/# /" "$tmp/rounds.out" >&3
  [ "$status" -ne 0 ]
}

# The slow, out-of-order backend made by the delay filter instead of slowfs (no FUSE): each
# write waits a random 0-8 ms in the filter before it reaches the file, so requests complete
# out of order and the kills find some of them held, never started.
@test "the same rounds over --filter=delay delay-jitter=8ms: each write lands once, in order" {
  local n=$(( (${BLKGATE_RESTART_ROUNDS:-50} + 1) / 2 ))
  base_seed=${BLKGATE_TEST_SEED:-$RANDOM}
  echo "# seed $base_seed, $n rounds" >&3
  truncate -s 64M "$tmp/disk.img"
  image=$tmp/disk.img
  gw_args=(--filter=delay file file="$tmp/disk.img" delay=0 delay-jitter=8ms)
  start_gateway "${gw_args[@]}"

  restart_rounds "$n"
  echo "# $rounds_done rounds ($double with two kills): $reconnects reconnected mid-burst ($twice twice), $resubmitted resubmitted requests, $overtaken requests were overtaken at the kills" >&3
  if [ "$n" -ge 10 ]; then
    [ "$resubmitted" -gt 0 ]
    [ "$overtaken" -gt 0 ]
  fi
}
