#!/bin/bash
# Runs the plugin conformance test (unit/test-plugins.c) on every plugin
# that was built.  Fails if none was, or if any run fails.
set -u
top=${abs_top_builddir:-$(cd "$(dirname "$0")/.." && pwd)}
rc=0 n=0
for so in "$top"/plugins/*/.libs/blkgate-*-plugin.so; do
  [ -e "$so" ] || continue
  n=$((n + 1))
  echo "# $so"
  "$top"/tests/test-plugins "$so" || { echo "FAILED: $so"; rc=1; }
done
[ $n -gt 0 ] || { echo "no plugin was built"; exit 1; }
exit $rc
