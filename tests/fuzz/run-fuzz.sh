#!/bin/bash
# make fuzz: runs each libFuzzer target for FUZZ_SECONDS (default 60)
# over a copy of its seed corpus, and prints per target the executions,
# exec/s, coverage (cov: edges reached, of the edges instrumented in
# the target; ft: features) and any crash.
# A crash input is kept as fuzz/crash-TARGET-*; fails if any target
# crashed.
#   run-fuzz.sh SRCDIR/fuzz BUILDDIR/fuzz TARGET...
# FUZZ_ARGS: more libFuzzer options (e.g. -jobs=2, -dict=...).
set -u
src=$1 bin=$2
shift 2
secs=${FUZZ_SECONDS:-60}
work=$(mktemp -d "${TMPDIR:-/tmp}/blkgate-fuzz.XXXXXX")
trap 'rm -rf "$work"' EXIT
rc=0
printf '%-14s %10s %8s %12s %7s  %s\n' target execs exec/s cov/edges ft result
for t in "$@"; do
  mkdir -p "$work/$t"
  [ -d "$src/corpus/$t" ] && cp "$src/corpus/$t"/* "$work/$t/" 2>/dev/null
  log="$bin/fuzz-$t.fuzz.log"
  # -rss_limit_mb: the device target runs queue threads with their
  # allocations; -timeout: a hang (a stuck queue) counts as a crash.
  ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1} \
    "$bin/fuzz-$t" -max_total_time="$secs" -print_final_stats=1 \
    -timeout=25 -rss_limit_mb=4096 -artifact_prefix="$bin/crash-$t-" \
    ${FUZZ_ARGS:-} "$work/$t" >"$log" 2>&1
  status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  speed=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  last=$(grep -E '^#[0-9]+' "$log" | tail -1)
  cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
  ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
  edges=$(sed -n 's/.*(\([0-9]*\) inline 8-bit counters).*/\1/p' "$log" | head -1)
  if [ $status -eq 0 ]; then
    result=ok
  else
    result="CRASH (exit $status): $(ls "$bin"/crash-"$t"-* 2>/dev/null | tr '\n' ' ')see $log"
    rc=1
  fi
  printf '%-14s %10s %8s %12s %7s  %s\n' "$t" "${execs:-?}" "${speed:-?}" \
    "${cov:-?}/${edges:-?}" "${ft:-?}" "$result"
done
exit $rc
