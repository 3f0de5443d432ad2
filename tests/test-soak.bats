#!/usr/bin/env bats
# The soak (contrib/soak/soak, README there), shortened: about a minute of random faults (kill
# -9 of the gateway, nbdkit killed and restarted, migrations with and without skip-drain,
# the gateway killed while nbdkit is down)
# under blkgate-io's write-and-verify load on four queues.  The run must lose no acknowledged
# write and see no unexpected error, and prove something: every kind of fault happened, the
# kills found requests in flight, some of them overtaken by later ones (completion out of
# order), and a restarted gateway resubmitted requests from the inflight region.  The second
# test shows that the soak can tell: without inflight tracking (blkgate-io --no-inflight) it
# fails.
#
# Environment: BLKGATE_SOAK_SECONDS (default 60), BLKGATE_TEST_SEED (default random; printed).

load test_helper

soak=$BATS_TEST_DIRNAME/../contrib/soak/soak

setup() {
  blkgate_setup
  requires nbdkit
  requires_plugin nbd
  [ -x "$top_builddir/src/blkgate-io" ] || { echo "blkgate-io is not built" >&2; return 1; }
}

# fig NAME: the first number of the figure line NAME in $output.
fig() {
  sed -n "s/^  $1   *\([0-9][0-9.]*\).*/\1/p" <<< "$output" | head -n 1
}

run_soak() {
  run env BLKGATE_BUILDDIR="$top_builddir" TMPDIR=/tmp "$@" "$soak"
  sed -n 's/^/# /p' <<< "$output" | grep -v -E '^# soak: [0-9:]+ ' >&3 || true
}

@test "a minute of crashes, NBD server restarts and migrations: no lost write, no error" {
  local seed=${BLKGATE_TEST_SEED:-$((RANDOM * 32768 + RANDOM))}
  run_soak SOAK_SECONDS="${BLKGATE_SOAK_SECONDS:-60}" SOAK_SEED="$seed" SOAK_INTERVAL=1-3
  [ "$status" -eq 0 ]
  [[ "$output" == *"soak: PASS"* ]]
  [ "$(fig 'lost writes')" = 0 ]
  [ "$(fig 'unexpected errors')" = 0 ]
  # Every kind of fault happened, with requests in flight.
  [ "$(fig 'gateway kills')" -ge 1 ]
  [ "$(fig 'NBD server restarts')" -ge 1 ]
  [ "$(fig migrations)" -ge 1 ]
  # The second migration, if any, skips the drain: the inflight region travels.
  [ "$(fig migrations)" -lt 2 ] || [[ "$output" =~ migrations\ +[0-9]+\ \(([1-9][0-9]*)\ skip-drain ]]
  [[ "$output" =~ ,\ ([0-9]+)\ while\ nbdkit\ was\ down ]]
  [ "${BASH_REMATCH[1]}" -ge 1 ]
  [ "$(fig 'reconnects (front-end)')" -ge 1 ]
  [ "$(fig 'in flight at the kills')" -ge 1 ]
  [ "$(fig 'resubmitted from inflight')" -ge 1 ]
  [ "$(fig 'writes acknowledged')" -ge 1000 ]
  [ "$(fig 'verify reads')" -ge 100 ]
}

@test "the soak fails without inflight tracking (it can tell)" {
  local seed=${BLKGATE_TEST_SEED:-$((RANDOM * 32768 + RANDOM))}
  run_soak SOAK_SECONDS=30 SOAK_SEED="$seed" SOAK_INTERVAL=1-2 SOAK_FAULTS=gateway \
    SOAK_IO_OPTS=--no-inflight SOAK_KEEP=0
  [ "$status" -eq 1 ]
  [[ "$output" == *"soak: FAIL"* ]]
  [ "$(fig 'gateway kills')" -ge 1 ]
  [ "$(( $(fig 'lost writes') + $(fig 'unexpected errors') ))" -ge 1 ]
}
