#!/bin/bash
# make check: runs every fuzz target once on each of its seed inputs
# (corpus/TARGET) and regression inputs (regress/TARGET).  Built with
# replay.c (FUZZ_ENGINE=replay) or libFuzzer (--enable-fuzz), either
# way each file named on the command line is run once.  A target that
# crashes, hangs (FUZZ_REPLAY_TIMEOUT seconds for all its inputs,
# default 300), or is missing, fails the test.
set -u
here=$(cd "$(dirname "$0")" && pwd)
bin=${abs_top_builddir:+$abs_top_builddir/tests}/fuzz
[ -d "$bin" ] || bin=fuzz
targets=${FUZZ_TARGETS:-vu-msg device vring-split vring-packed blk inflight config control}
limit=${FUZZ_REPLAY_TIMEOUT:-300}
rc=0
for t in $targets; do
  inputs=()
  for d in "$here/corpus/$t" "$here/regress/$t"; do
    [ -d "$d" ] || continue
    for f in "$d"/*; do
      [ -f "$f" ] && inputs+=("$f")
    done
  done
  if [ ${#inputs[@]} -eq 0 ]; then
    echo "FAIL: $t: no seed or regression inputs"
    rc=1
    continue
  fi
  if [ "${FUZZ_ENGINE:-replay}" = libfuzzer ]; then
    timeout "$limit" "$bin/fuzz-$t" -runs=0 "${inputs[@]}" >"$bin/fuzz-$t.replay.log" 2>&1
  else
    timeout "$limit" "$bin/fuzz-$t" "${inputs[@]}" >"$bin/fuzz-$t.replay.log" 2>&1
  fi
  status=$?
  if [ $status -eq 0 ]; then
    echo "ok: $t: ${#inputs[@]} inputs"
  else
    echo "FAIL: $t (exit $status$([ $status -eq 124 ] && echo ": hung for ${limit}s")), last lines of $bin/fuzz-$t.replay.log:"
    tail -n 40 "$bin/fuzz-$t.replay.log"
    rc=1
  fi
done
exit $rc
