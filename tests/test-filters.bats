#!/usr/bin/env bats
# Filters (--filter=NAME, blkgate-filter(3)): the delay, error and stats filters of filters/,
# alone and stacked, over an async plugin (null, memory-less) and a sync one (memory).
# blkgate-io drives the gateway.  Timings are never asserted except that a delayed request
# took at least its delay, which a timer guarantees.

load test_helper

: "${BLKGATE_CTL:=$top_builddir/src/blkgate-ctl}"

setup() {
  blkgate_setup
  [ -x "$BLKGATE_IO" ] || { echo "$BLKGATE_IO does not exist: run make first" >&2; return 1; }
  requires_filters
}

# requires_filters: the filters are built with the daemon (no optional dependencies).
requires_filters() {
  local f
  for f in delay error stats; do
    [ -n "$(find "$top_builddir/filters/$f" -name '*.so' 2>/dev/null | head -n 1)" ] || {
      echo "the $f filter is not built (make)" >&2; return 1; }
  done
}

# stat FILE KEY: the value of KEY=VALUE in a stats filter's statsfile.
stat() {
  sed -n "s/^$2=//p" "$1"
}

# ctl_stat NAME: a named counter of blkgate-ctl stats (0 when absent).
ctl_stat() {
  "$BLKGATE_CTL" -c "$tmp/ctl.sock" stats | sed -n "s/^ *\"$1\" : \([0-9]*\).*/\1/p" |
    grep . || echo 0
}

@test "an unknown or invalid filter is refused with a clear error" {
  requires_plugin null
  run -1 "$BLKGATE" -s "$sock" --filter=nosuch null size=1M
  [[ "$output" == *"cannot load filter nosuch"* ]]
  run -1 "$BLKGATE" -s "$sock" --filter=Bad.Name null size=1M
  [[ "$output" == *"invalid filter name: Bad.Name"* ]]
  # A shared object that is no filter (a plugin).
  run -1 "$BLKGATE" -s "$sock" \
    --filter="$(find "$top_builddir/plugins/null" -name '*.so' | head -n 1)" null size=1M
  [[ "$output" == *"not a blkgate filter"* ]]
  [ ! -e "$sock" ]
}

@test "--dump-plugin lists the filters outermost first; PLUGIN --help shows their parameters" {
  requires_plugin null
  run -0 "$BLKGATE" --filter=stats --filter=delay --filter=error --dump-plugin null
  [ "$(grep '^filter=' <<< "$output" | tr '\n' ' ')" = "filter=stats filter=delay filter=error " ]
  [[ "$output" == *"name=null"* ]]
  run -0 "$BLKGATE" --filter=delay null --help
  [[ "$output" == *"delay filter"* ]]
  [[ "$output" == *"rdelay=DELAY"* ]]
  # A filter given as a path loads too.
  run -0 "$BLKGATE" --filter="$top_builddir/filters/delay/.libs/blkgate-delay-filter.so" \
    --dump-plugin null
  [[ "$output" == *"filter=delay"* ]]
}

@test "bad filter parameters are refused by the filter, unknown keys by the plugin" {
  requires_plugin null
  local bad
  for bad in rdelay=abc wdelay=-1 delay=5parsecs delay=7200s delay-jitter=; do
    run -1 "$BLKGATE" -s "$sock" --filter=delay null size=1M "$bad"
    [[ "$output" == *"${bad%%=*}=${bad#*=}: "* ]]
  done
  for bad in error-rate=2 error-rate=-0.5 error-rate=150% error-read-rate=x error=EFOO \
             error-write=13 error-seed=abc; do
    run -1 "$BLKGATE" -s "$sock" --filter=error null size=1M "$bad"
    [[ "$output" == *"${bad%%=*}=${bad#*=}: "* ]]
  done
  run -1 "$BLKGATE" -s "$sock" --filter=stats null size=1M statsfile=
  [[ "$output" == *"statsfile: the path is empty"* ]]
  # Keys no filter takes reach the plugin, which refuses them.
  run -1 "$BLKGATE" -s "$sock" --filter=delay --filter=error null size=1M rdelai=10
  [[ "$output" == *"unknown parameter 'rdelai'"* ]]
  # A filter's key without the filter loaded is the plugin's, and so unknown.
  run -1 "$BLKGATE" -s "$sock" null size=1M rdelay=10
  [[ "$output" == *"unknown parameter 'rdelay'"* ]]
  [ ! -e "$sock" ]
}

# delayed PLUGIN ARGS...: with stats outside delay, every request completes and the stats
# filter measured at least the delay of each.
delayed() {
  start_gateway --filter=stats --filter=delay "$@" rdelay=30ms wdelay=0.04s delay-flush=20 \
    statsfile="$tmp/stats"
  run -0 bio "$sock" -c 'write 0 64k -P 0x11' -c 'read 0 64k' -c 'aio-read 0 4k' \
    -c 'aio-write 4k 4k' -c 'aio-read 8k 4k' -c wait -c flush
  clean_output
  [[ "$output" == *"aio #3 read 4096 bytes at offset 8192: OK"* ]]
  stop_gateway
  cat "$tmp/stats"
  [ "$(stat "$tmp/stats" read.ops)" = 3 ]
  [ "$(stat "$tmp/stats" write.ops)" = 2 ]
  [ "$(stat "$tmp/stats" read.latency_min_us)" -ge 30000 ]
  [ "$(stat "$tmp/stats" write.latency_min_us)" -ge 40000 ]
  [ "$(stat "$tmp/stats" flush.latency_min_us)" -ge 20000 ]
}

@test "delay (async plugin): requests complete, each after at least its delay" {
  requires_plugin null
  delayed null size=1M
}

@test "delay (sync plugin): the same on worker threads" {
  requires_plugin memory
  delayed memory size=1M
}

@test "delay with jitter: many overlapping requests all complete with the right data" {
  requires_plugin memory
  start_gateway --filter=delay memory size=4M delay=1 delay-jitter=20ms
  local i args=()
  for i in $(seq 0 31); do args+=(-c "aio-write $((i * 64))k 64k -S $i"); done
  for i in $(seq 0 31); do args+=(-c "aio-read $((i * 64))k 64k -S $i"); done
  run -0 bio -Q 2 "$sock" "${args[@]}" -c wait
  clean_output
  [ "$(grep -c ': OK$' <<< "$output")" = 64 ]
}

@test "delay over a plugin with its own fd (file, io_uring): both fds are watched" {
  requires_plugin file
  truncate -s 4M "$tmp/disk.img"
  start_gateway --filter=stats --filter=delay file file="$tmp/disk.img" delay=20 \
    delay-jitter=10 statsfile="$tmp/stats"
  local i args=()
  for i in $(seq 0 15); do args+=(-c "aio-write $((i * 64))k 64k -S $i"); done
  args+=(-c wait)
  for i in $(seq 0 15); do args+=(-c "aio-read $((i * 64))k 64k -S $i"); done
  run -0 bio -Q 2 "$sock" "${args[@]}" -c wait -c flush
  clean_output
  [ "$(grep -c ': OK$' <<< "$output")" = 32 ]
  stop_gateway
  [ "$(stat "$tmp/stats" write.ops)" = 16 ]
  [ "$(stat "$tmp/stats" read.latency_min_us)" -ge 20000 ]
}

# failing PLUGIN ARGS...
failing() {
  start_gateway --filter=error "$@" error-rate=1 error=ENOSPC
  run -1 bio "$sock" -c 'read 0 4k'
  [[ "$output" == *"status IOERR"* ]]
  run -1 bio "$sock" -c 'write 0 4k'
  [[ "$output" == *"status IOERR"* ]]
  run -1 bio "$sock" -c 'aio-write 0 4k' -c wait
  [[ "$output" == *"write at offset 0: status IOERR"* ]]
  stop_gateway
  # ENOTSUP is the one error virtio-blk reports as UNSUPP.
  start_gateway --filter=error "$@" error-flush-rate=100% error-flush=ENOTSUP
  run -0 bio "$sock" -c 'write 0 4k' -c 'read 0 4k'
  run -1 bio "$sock" -c flush
  [[ "$output" == *"status UNSUPP"* ]]
}

@test "error (async plugin): the configured errno reaches the front-end as IOERR or UNSUPP" {
  requires_plugin null
  failing null size=1M
}

@test "error (sync plugin): the same from worker threads" {
  requires_plugin memory
  failing memory size=1M
}

@test "error-file: writes fail only while the file exists, and a failed write changes nothing" {
  requires_plugin memory
  start_gateway --control "$tmp/ctl.sock" --filter=error memory size=1M error-write-rate=1 \
    error-file="$tmp/fail"
  run -0 bio "$sock" -c 'write 0 64k -P 0x11' -c 'verify 0 64k -P 0x11'
  touch "$tmp/fail"
  run -1 bio "$sock" -c 'write 0 64k -P 0x22'
  [[ "$output" == *"status IOERR"* ]]
  # Reads have no rate: they go on working.
  run -0 bio "$sock" -c 'verify 0 64k -P 0x11'
  rm "$tmp/fail"
  run -0 bio "$sock" -c 'write 0 64k -P 0x33' -c 'verify 0 64k -P 0x33'
  [ "$(ctl_stat error-filter-injected)" = 1 ]
}

@test "error-rate with error-seed: some requests fail, as many as the filter counted" {
  requires_plugin null
  start_gateway --control "$tmp/ctl.sock" --filter=error null size=1M error-read-rate=0.5 \
    error-seed=42
  local i args=()
  for i in $(seq 1 64); do args+=(-c "read $((i * 4))k 4k"); done
  run -1 bio -k "$sock" "${args[@]}"
  local failed ok
  failed=$(grep -c 'status IOERR' <<< "$output")
  ok=$(grep -c '^read 4096 bytes' <<< "$output")
  echo "failed=$failed ok=$ok"
  [ "$failed" -gt 0 ] && [ "$ok" -gt 0 ]
  [ $((failed + ok)) = 64 ]
  [ "$(ctl_stat error-filter-injected)" = "$failed" ]
}

# counted PLUGIN ARGS...: the stats filter counts exactly what blkgate-io did.
counted() {
  start_gateway --control "$tmp/ctl.sock" --filter=stats "$@" statsfile="$tmp/stats"
  run -0 bio "$sock" -c 'write 0 64k' -c 'write 64k 8k' -c 'aio-write 128k 4k' -c wait \
    -c 'read 0 4k' -c 'read 4k 4k' -c 'read 0 1M' -c flush -c 'discard 0 64k' \
    -c 'zero 64k 64k'
  clean_output
  [ "$(ctl_stat stats-reads)" = 3 ]
  [ "$(ctl_stat stats-writes)" = 3 ]
  [ "$(ctl_stat stats-write-bytes)" = $((76 * 1024)) ]
  [ "$(ctl_stat stats-read-bytes)" = $((1032 * 1024)) ]
  stop_gateway
  cat "$tmp/stats"
  [ "$(stat "$tmp/stats" read.ops)" = 3 ]
  [ "$(stat "$tmp/stats" read.bytes)" = $((1032 * 1024)) ]
  [ "$(stat "$tmp/stats" write.ops)" = 3 ]
  [ "$(stat "$tmp/stats" write.bytes)" = $((76 * 1024)) ]
  [ "$(stat "$tmp/stats" flush.ops)" = 1 ]
  [ "$(stat "$tmp/stats" trim.ops)" = 1 ]
  [ "$(stat "$tmp/stats" trim.bytes)" = 65536 ]
  [ "$(stat "$tmp/stats" zero.ops)" = 1 ]
  [ "$(stat "$tmp/stats" read.errors)" = 0 ]
}

@test "stats (async plugin): counts and bytes match what blkgate-io did" {
  requires_plugin null
  counted null size=4M
}

@test "stats (sync plugin): the same" {
  requires_plugin memory
  counted memory size=4M
}

@test "filter order: a filter sees only what the filters outside it passed on" {
  requires_plugin memory
  # error outside stats: the failed writes never reach stats.
  start_gateway --filter=error --filter=stats memory size=1M error-write-rate=1 \
    statsfile="$tmp/outer"
  run -1 bio -k "$sock" -c 'write 0 4k' -c 'write 4k 4k' -c 'read 0 4k'
  stop_gateway
  [ "$(stat "$tmp/outer" write.ops)" = 0 ]
  [ "$(stat "$tmp/outer" read.ops)" = 1 ]
  # stats outside error: it counts them, as errors.
  start_gateway --filter=stats --filter=error memory size=1M error-write-rate=1 \
    statsfile="$tmp/inner"
  run -1 bio -k "$sock" -c 'write 0 4k' -c 'write 4k 4k' -c 'read 0 4k'
  stop_gateway
  [ "$(stat "$tmp/inner" write.ops)" = 2 ]
  [ "$(stat "$tmp/inner" write.errors)" = 2 ]
  [ "$(stat "$tmp/inner" read.ops)" = 1 ]
}

@test "the same filter twice: two layers sharing one configuration, loaded and unloaded cleanly" {
  requires_plugin null
  run -0 "$BLKGATE" --filter=delay --filter=delay --dump-plugin null
  [ "$(grep -c '^filter=delay' <<< "$output")" = 2 ]
  start_gateway --filter=stats --filter=error --filter=stats null size=1M error-file="$tmp/x" \
    statsfile="$tmp/stats"
  run -0 bio "$sock" -c 'read 0 4k'
  stop_gateway
  [ "$(stat "$tmp/stats" read.ops)" = 2 ]
  ! grep -E 'Sanitizer|runtime error|double free' "$gwlog"
}

@test "reopen (blkgate-ctl) opens every layer again; the filters go on working" {
  requires_plugin memory
  start_gateway --control "$tmp/ctl.sock" --filter=stats --filter=error memory size=1M \
    error-file="$tmp/fail" error-write-rate=1 statsfile="$tmp/stats"
  run -0 bio "$sock" -c 'write 0 4k -P 0x44'
  run -0 "$BLKGATE_CTL" -c "$tmp/ctl.sock" reopen
  touch "$tmp/fail"
  run -1 bio "$sock" -c 'write 0 4k'
  [[ "$output" == *"status IOERR"* ]]
  [ "$(ctl_stat stats-writes)" = 2 ]
  stop_gateway
  [ "$(stat "$tmp/stats" write.errors)" = 1 ]
  ! grep -E 'Sanitizer|runtime error' "$gwlog"
}

# mkfilter NAME SIZE API: a filter built here that counts reads, whose filter_init claims a
# struct of SIZE bytes (an older, smaller struct) and API version API.
mkfilter() {
  cat > "$tmp/$1.c" <<C
#define BLKGATE_FILTER_API_VERSION 1
#include <stddef.h>
#include <blkgate-filter.h>
static int
t_preadv (const struct blkgate_next_ops *next, void *nxdata, void *h,
          const struct iovec *iov, int iovcnt, uint64_t offset, uint32_t flags)
{
  blkgate_stat_add ("t-reads", 1);
  return next->preadv (nxdata, iov, iovcnt, offset, flags);
}
static int
t_aio_preadv (const struct blkgate_next_ops *next, void *nxdata, void *q,
              const struct iovec *iov, int iovcnt, uint64_t offset, uint32_t flags,
              struct blkgate_request *req)
{
  blkgate_stat_add ("t-reads", 1);
  return next->aio_preadv (nxdata, iov, iovcnt, offset, flags, req);
}
static struct blkgate_filter filter = {
  .name = "$1", .preadv = t_preadv, .aio_preadv = t_aio_preadv,
};
__attribute__ ((visibility ("default"))) struct blkgate_filter *filter_init (void);
struct blkgate_filter *
filter_init (void)
{
  filter._struct_size = $2;
  filter._api_version = $3;
  return &filter;
}
C
  cc -std=gnu11 -Wall -Werror -shared -fPIC -I"$top_srcdir/src" -o "$tmp/$1.so" "$tmp/$1.c"
}

@test "filter ABI: a smaller struct loads with its missing fields NULL; another API version is refused" {
  requires cc
  requires_plugin memory
  mkfilter full 'sizeof filter' 1
  mkfilter old 'offsetof (struct blkgate_filter, aio_preadv)' 1
  mkfilter tiny 8 1
  mkfilter future 'sizeof filter' 2
  run -1 "$BLKGATE" --filter="$tmp/tiny.so" --dump-plugin memory
  [[ "$output" == *"filter struct is too small (8 bytes)"* ]]
  run -1 "$BLKGATE" --filter="$tmp/future.so" --dump-plugin memory
  [[ "$output" == *"filter uses API version 2; this blkgate supports version 1"* ]]
  # The old struct ends before aio_preadv, so over an async plugin (null) reads pass
  # straight through it, while the full one counts them.
  requires_plugin null
  start_gateway --control "$tmp/ctl.sock" --filter="$tmp/old.so" --filter="$tmp/full.so" \
    null size=1M
  run -0 bio "$sock" -c 'read 0 4k' -c 'read 4k 4k'
  [ "$(ctl_stat t-reads)" = 2 ]
  stop_gateway
  # Over a sync plugin both see them (preadv is in the old struct).
  start_gateway --control "$tmp/ctl.sock" --filter="$tmp/old.so" --filter="$tmp/full.so" \
    memory size=1M
  run -0 bio "$sock" -c 'read 0 4k' -c 'read 4k 4k'
  [ "$(ctl_stat t-reads)" = 4 ]
}

@test "a filter masks capabilities: no discard and a read-only disk, as the guest sees it" {
  requires cc
  requires_plugin null
  cat > "$tmp/mask.c" <<'C'
#define BLKGATE_FILTER_API_VERSION 1
#include <blkgate-filter.h>
static int
no (const struct blkgate_next_ops *next, void *nxdata, void *h)
{
  return 0;
}
static int
half_queues (const struct blkgate_next_ops *next, void *nxdata, void *h)
{
  return 2;
}
static struct blkgate_filter filter = {
  .name = "mask", .can_trim = no, .can_write = no, .max_queues = half_queues,
};
BLKGATE_REGISTER_FILTER (filter)
C
  cc -std=gnu11 -Wall -Werror -shared -fPIC -I"$top_srcdir/src" -o "$tmp/mask.so" "$tmp/mask.c"
  start_gateway --filter="$tmp/mask.so" null size=1M
  run -0 bio "$sock" info
  [[ "$output" != *DISCARD* ]]
  [[ "$output" =~ [[:space:]]RO[[:space:]] ]]
  [[ "$output" =~ queues\ +2$'\n' ]]
  run -1 bio "$sock" -c 'write 0 4k'
  run -0 bio "$sock" -c 'read 0 4k'
}
