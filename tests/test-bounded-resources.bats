#!/usr/bin/env bats
# Bounded resources: floods of connections on the vhost-user and the control socket, and
# of requests on every queue, leave the gateway's fds and memory bounded, and back where
# they were once the flood is over; excess connections are refused and the real front-end
# is not disturbed.  The measured numbers are printed (bats --show-output-of-passing-tests
# or a failure shows them); only counts and bytes are asserted, never timings.

load test_helper

: "${BLKGATE_CTL:=$top_builddir/src/blkgate-ctl}"
vu_flood=$BATS_TEST_DIRNAME/vu-flood.py

setup() {
  blkgate_setup
  [ -x "$BLKGATE_IO" ] || { echo "$BLKGATE_IO does not exist: run make first" >&2; return 1; }
  requires python3
}

# status_kb FIELD: FIELD (VmRSS, RssAnon...) of the gateway's /proc status, in KiB.
status_kb() {
  awk -v f="$1:" '$1 == f { print $2 }' "/proc/$gateway_pid/status"
}

# value KEY: KEY=N from vu-flood's $output.
value() {
  sed -n "s/^$1=//p" <<< "$output"
}

# back_to_baseline [SECONDS]: the gateway holds the fds it held before the flood
# (waiting up to SECONDS, 10 by default, for it to finish what was in flight).
back_to_baseline() {
  fds_back "$gateway_pid" "$fds" "${1:-10}"
}

@test "3000 connection attempts, many held, some stalled mid-header: refused, the session goes on" {
  requires_plugin memory
  start_gateway memory size=64M
  wait_for_socket "$sock"
  fds=$(fd_count)
  # The real front-end writes and verifies until the flood is over.
  (i=0
   while [ ! -e "$tmp/flood.done" ]; do
     i=$((i + 1))
     echo "write $((i % 1000 * 4))k 4k -S $i"
     echo "verify $((i % 1000 * 4))k 4k -S $i"
   done) | "$BLKGATE_IO" -t 30 "$sock" > "$tmp/bio.out" 2>&1 &
  local bio=$!
  wait_for 10 grep -q "front-end connected" "$gwlog"
  wait_for 10 grep -q "verified" "$tmp/bio.out"
  local session_fds
  session_fds=$(fd_count)
  rss=$(status_kb VmRSS)

  run -0 python3 "$vu_flood" --pid "$gateway_pid" --total 3000 --hold 300 "$sock"
  touch "$tmp/flood.done"
  echo "$output"
  local ios
  ios=$(grep -c verified "$tmp/bio.out")
  echo "baseline: $fds fds, $session_fds with the front-end, VmRSS $rss KiB;" \
    "$ios writes verified meanwhile"
  wait "$bio" || { cat "$tmp/bio.out" >&2; return 1; }

  # Never more than the listening socket's one accepted connection at a time.
  [ "$(value max_fds)" -le $((session_fds + 2)) ]
  # 16 MiB is far more than accepting and closing connections needs (the real
  # front-end's writes touch the memory plugin's pages too: 4 MiB at most).
  [ "$(value max_rss_kb)" -le $((rss + 16384)) ]
  # Every connection made was refused; the real front-end connected once.
  [ "$(grep -c "refusing a second front-end" "$gwlog")" -eq "$(value connections)" ]
  [ "$(grep -c "front-end connected" "$gwlog")" -eq 1 ]
  wait_for 10 grep -q "front-end disconnected" "$gwlog"
  back_to_baseline
  echo "after: $(fd_count) fds, VmRSS $(status_kb VmRSS) KiB"
}

# anon_under KIB: the gateway's RssAnon, read now, is at most KIB.
anon_under() {
  [ "$(status_kb RssAnon)" -le "$1" ]
}

# under NAME VALUE BOUND: VALUE <= BOUND, or say which bound broke.
under() {
  [ "$2" -le "$3" ] || { echo "$1: $2, above its bound of $3" >&2; return 1; }
}

@test "a request flood: 4 queues of 1024, all full, slow backend: memory bounded, then freed" {
  requires nbdkit
  requires_plugin nbd
  nbdkit --dump-plugin memory >/dev/null 2>&1 || missing "nbdkit's memory plugin"
  nbdkit --filter=delay null --dump-plugin >/dev/null 2>&1 || missing "nbdkit's delay filter"
  start_nbdkit slow --filter=delay memory 256M rdelay=20ms wdelay=20ms
  # glibc raises its mmap threshold (up to 32 MiB) after the first large free,
  # after which large blocks come from a heap that calloc clears in full and
  # free does not shrink.  Start there, so that what is asserted does not hang
  # on what the process freed before.
  GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432 \
    start_gateway --num-queues 4 nbd "$(nbd_uri slow)"
  wait_for_socket "$sock"
  fds=$(fd_count)
  local anon rss
  anon=$(status_kb RssAnon)
  rss=$(status_kb VmRSS)

  "$BLKGATE_IO" -t 60 -m 512M -Q 4 --queue-size 1024 "$sock" \
    bench --iodepth 1024 --queues 4 --time 3 --bs 64k --rw randwrite > "$tmp/bench.out" 2>&1 &
  local bench=$! max_anon=0 max_rss=0 max_fds=0 a r f
  while alive "$bench"; do
    a=$(status_kb RssAnon) r=$(status_kb VmRSS) f=$(fd_count)
    [ "$a" -le "$max_anon" ] || max_anon=$a
    [ "$r" -le "$max_rss" ] || max_rss=$r
    [ "$f" -le "$max_fds" ] || max_fds=$f
    sleep 0.2
  done
  wait "$bench" || { cat "$tmp/bench.out" >&2; return 1; }
  tail -n 1 "$tmp/bench.out"
  echo "baseline: $fds fds, VmRSS $rss KiB, RssAnon $anon KiB"
  echo "peak: $max_fds fds, VmRSS $max_rss KiB, RssAnon $max_anon KiB"
  echo "(VmRSS counts the guest buffers in flight: 4096 x 64 KiB of the front-end's memory)"

  # The gateway's own memory: the pages the 4096 requests touch in their rings'
  # arrays (46 MiB measured), below one copy of the data the rings can hold
  # (64 KiB per request): bounded by the rings, never by the guest's appetite.
  under "peak RssAnon (KiB)" "$max_anon" $((anon + 4 * 1024 * 64))
  # Guest memory it maps (512 MiB) plus its own.
  under "peak VmRSS (KiB)" "$max_rss" $((rss + 512 * 1024 + 4 * 1024 * 64))
  under "peak fds" "$max_fds" $((fds + 64))
  # The bench drains its queues before it goes; the gateway then closes the
  # session's fds (up to 60 s, for a slow machine).
  back_to_baseline 60
  echo "after: $(fd_count) fds, VmRSS $(status_kb VmRSS) KiB, RssAnon $(status_kb RssAnon) KiB"
  # Given back once the front-end is gone (not in an ASan build: its quarantine keeps
  # freed memory).
  if ldd "$BLKGATE" 2>/dev/null | grep -q libasan; then
    echo "ASan build: not checking that the memory was given back"
  else
    wait_for 10 anon_under $((anon + 8192)) ||
      under "RssAnon 10 s after the session (KiB)" "$(status_kb RssAnon)" $((anon + 8192))
  fi
}

@test "control socket flood: 3000 connects, idle, half lines and 4 KiB lines: bounded" {
  [ -x "$BLKGATE_CTL" ] || { echo "$BLKGATE_CTL does not exist: run make first" >&2; return 1; }
  requires_plugin memory
  local ctl=$tmp/ctl.sock
  start_gateway --control "$ctl" memory size=16M
  wait_for_socket "$ctl"
  fds=$(fd_count)
  rss=$(status_kb VmRSS)

  run -0 python3 "$vu_flood" --control --pid "$gateway_pid" --total 3000 --hold 300 "$ctl"
  echo "$output"
  echo "baseline: $fds fds, VmRSS $rss KiB"

  # 8 clients at most, each with one 4 KiB line buffer.
  [ "$(value max_fds)" -le $((fds + 8 + 1)) ]
  [ "$(value max_rss_kb)" -le $((rss + 8192)) ]
  grep -q "control: refusing a client: 8 already connected" "$gwlog"
  back_to_baseline
  echo "after: $(fd_count) fds, VmRSS $(status_kb VmRSS) KiB"
  run -0 "$BLKGATE_CTL" -c "$ctl" stats
  [[ "$output" == *'"ok" : true'* ]]
}
