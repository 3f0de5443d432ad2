#!/bin/bash
# Runs the plugin conformance test (unit/test-plugins.c) on every plugin
# that was built.  Fails if none was, or if any run fails.  The nbd plugin
# runs against an nbdkit memory export (and against one that is read-only);
# without nbdkit it is skipped, or fails under BLKGATE_TEST_REQUIRE_ALL=1.
# The fuse plugin runs on a plain file in /tmp (with and without O_DIRECT).
set -u
top=${abs_top_builddir:-$(cd "$(dirname "$0")/.." && pwd)}
rc=0 n=0 nbdkit_pid= work=
cleanup() {
  [ -z "$nbdkit_pid" ] || { kill "$nbdkit_pid"; wait "$nbdkit_pid"; } 2>/dev/null
  [ -z "$work" ] || rm -rf "$work"
  nbdkit_pid= work=
}
trap cleanup EXIT

# start_nbdkit ARGS...: an nbdkit on a private socket; sets $uri.
start_nbdkit() {
  local i
  cleanup
  work=$(mktemp -d /tmp/blkgate-tp.XXXXXX)
  nbdkit -f -U "$work/nbd.sock" "$@" </dev/null >"$work/nbdkit.log" 2>&1 &
  nbdkit_pid=$!
  for ((i = 0; i < 100; i++)); do
    [ -S "$work/nbd.sock" ] && { uri="nbd+unix:///?socket=$work/nbd.sock"; return 0; }
    sleep 0.1
  done
  cat "$work/nbdkit.log" >&2
  return 1
}

# run SO [KEY=VALUE...]
run() {
  echo "# $*"
  "$top"/tests/test-plugins "$@" || { echo "FAILED: $*"; rc=1; }
}

for so in "$top"/plugins/*/.libs/blkgate-*-plugin.so; do
  [ -e "$so" ] || continue
  n=$((n + 1))
  case $so in
    */blkgate-nbd-plugin.so)
      if ! command -v nbdkit >/dev/null; then
        if [ "${BLKGATE_TEST_REQUIRE_ALL:-0}" = 1 ]; then
          echo "FAILED: nbdkit is not installed (and BLKGATE_TEST_REQUIRE_ALL=1)"; rc=1
        else
          echo "# SKIP nbd plugin: nbdkit is not installed"
        fi
        continue
      fi
      start_nbdkit memory 64M || { echo "FAILED: nbdkit did not start"; rc=1; continue; }
      run "$so" "$uri"
      start_nbdkit -r memory 32M || { echo "FAILED: nbdkit did not start"; rc=1; continue; }
      run "$so" "uri=$uri" retry-timeout=5
      ;;
    */blkgate-fuse-plugin.so)
      # The data path on a plain file; FUSE mounts are tests/test-fuse-plugin.bats.
      cleanup
      work=$(mktemp -d /tmp/blkgate-tp.XXXXXX)
      truncate -s 64M "$work/disk.img"
      run "$so" "file=$work/disk.img"
      run "$so" "file=$work/disk.img" direct=on
      ;;
    *) run "$so" ;;
  esac
done
[ $n -gt 0 ] || { echo "no plugin was built"; exit 1; }
exit $rc
