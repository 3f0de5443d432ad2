#!/usr/bin/env bats
# The NBD server goes away under the nbd plugin: killed with requests in flight and
# restarted, gone for longer than retry-timeout, back with another size; nbdkit and qemu-nbd.
#
# What the plugin must do (blkgate-nbd-plugin(1)): hold the requests of a lost connection,
# reconnect (at most about 1 s between attempts) and send them again, so that the front-end
# sees every request complete with OK; fail requests with IOERR only once the server has been
# gone for retry-timeout seconds, and then at once while it stays gone; never exit.
#
# The kill tests check that they proved something: nbdkit's log filter shows writes that had
# reached the server and had not completed at each kill, and the gateway logged each
# reconnection.  A plugin that failed the requests of a lost connection fails `wait`; one
# that lost them leaves the previous round's data in the blocks, which `verify` sees.
#
# Environment: BLKGATE_NBD_ROUNDS (default 5) kills of nbdkit.

load test_helper

mib=$((1024 * 1024))

setup() {
  blkgate_setup
  [ -x "$BLKGATE_IO" ] || { echo "$BLKGATE_IO does not exist: run make first" >&2; return 1; }
  requires_plugin nbd
}

# now_ms: the wall-clock time in milliseconds.
now_ms() {
  local t=${EPOCHREALTIME/./}
  echo $((t / 1000))
}

# stamp_ms TEXT: the time, in milliseconds, of blkgate-io's 'stamp TEXT' in $output.
stamp_ms() {
  local t
  t=$(sed -n "s/^stamp $1 \([0-9]*\)\.\([0-9]\{3\}\).*/\1\2/p" <<< "$output")
  [ -n "$t" ] || { echo "no 'stamp $1' in the output" >&2; return 1; }
  echo "$t"
}

# burst_cmds ROUND BLOCKS QUEUES: blkgate-io commands for one round: BLOCKS asynchronous
# 64 KiB writes over the first BLOCKS * 64 KiB of the disk, each with its own seed
# (ROUND * 1000 + block), spread over QUEUES queues.  Three quarters are submitted at once
# (the server is killed while they are in flight: the script waits for 'kill now'), the
# rest 0.8 s later, while it is gone; then 'wait', and every block is verified.
burst_cmds() {
  local r=$1 n=$2 nq=$3 i first=$(($2 * 3 / 4))
  for ((i = 0; i < n; i++)); do
    if [ "$i" -eq "$first" ]; then
      echo 'stamp kill now'
      echo 'sleep 0.8'
    fi
    echo "queue $((i % nq))"
    echo "aio-write $((i * 64))k 64k -S $((r * 1000 + i))"
  done
  echo wait
  for ((i = 0; i < n; i++)); do
    echo "verify $((i * 64))k 64k -S $((r * 1000 + i))"
  done
}

# unfinished LOG OP: the OP requests nbdkit's log filter logged as started, never as done.
unfinished() {
  local started finished
  started=$(grep -c -E " $2 id=[0-9]+ " "$1" || true)
  finished=$(grep -c -E " \.\.\.$2 id=[0-9]+ " "$1" || true)
  echo $((started - finished))
}

# report_reconnects: prints how often the gateway logged a reconnection, and how many
# requests it said it sent again (its "resending N requests").
report_reconnects() {
  echo "# the gateway logged $(grep -c -i reconnected "$gwlog") reconnections," \
    "$(awk '{ for (i = 1; i < NF; i++) if ($i == "resending") n += $(i + 1) } END { print n + 0 }' \
       "$gwlog") requests resent" >&3
}

# kill_rounds N SERVER-NAME START-COMMAND...: N rounds of burst_cmds (32 blocks on 2 queues);
# in each, once the first writes are submitted the server is killed with SIGKILL and
# restarted 1 s later with START-COMMAND (which may use $r, the round).  Every write must
# complete with OK and every block verify.  Leaves $inflight_total, the writes nbdkit's log
# showed as unfinished at the kills (when START-COMMAND logs to $tmp/nbdkit.$r.log).
kill_rounds() {
  local n=$1 name=$2 r status
  shift 2
  inflight_total=0
  for ((r = 0; r < n; r++)); do
    burst_cmds "$r" 32 2 > "$tmp/cmds.$r"
    "$BLKGATE_IO" -t 30 -Q 2 "$sock" < "$tmp/cmds.$r" > "$tmp/bio.$r" 2>&1 3>&- &
    local bio_pid=$!
    wait_for_log "$tmp/bio.$r" '^stamp kill now' 20
    sleep 0.1
    kill_daemon "$name" KILL
    [ ! -e "$tmp/nbdkit.$r.log" ] ||
      inflight_total=$((inflight_total + $(unfinished "$tmp/nbdkit.$r.log" Write)))
    sleep 1
    "$@"
    status=0
    wait $bio_pid || status=$?
    output=$(cat "$tmp/bio.$r")
    if [ $status -ne 0 ]; then
      echo "round $r: blkgate-io failed (status $status):"
      grep -v -E '^aio #[0-9]+ (submitted|write .*: OK)|^verified' "$tmp/bio.$r" | tail -n 20
      return 1
    fi
    clean_output
    [ "$(grep -c -E '^aio #[0-9]+ write 65536 bytes at offset [0-9]+: OK' "$tmp/bio.$r")" -eq 32 ]
    [ "$(grep -c '^verified 65536 bytes' "$tmp/bio.$r")" -eq 32 ]
  done
}

@test "nbdkit killed (SIGKILL) with writes in flight, restarted: every write completes and lands" {
  local n=${BLKGATE_NBD_ROUNDS:-5}
  truncate -s 64M "$tmp/disk.img"
  # Writes take 300 ms at the server: the kill finds them there.  Reads are not delayed.
  local r=0
  start_nbdkit srv --filter=log --filter=delay file "$tmp/disk.img" delay-write=300ms \
    logfile="$tmp/nbdkit.$r.log"
  start_gateway nbd uri="$(nbd_uri srv)"

  restart() {
    start_nbdkit srv --filter=log --filter=delay file "$tmp/disk.img" delay-write=300ms \
      logfile="$tmp/nbdkit.$((r + 1)).log"
  }
  kill_rounds "$n" srv restart
  echo "# $n kills, $inflight_total writes were at nbdkit, unfinished, at the kills" >&3
  report_reconnects
  # The kills found writes at the server, every round.
  for ((r = 0; r < n; r++)); do
    [ "$(unfinished "$tmp/nbdkit.$r.log" Write)" -gt 0 ]
  done
  # The last round's data is in the file.
  "$BLKGATE_IO" -t 20 "$sock" read 0 2M -o "$tmp/last.bin"
  cmp "$tmp/last.bin" <(head -c $((2 * mib)) "$tmp/disk.img")
  grep -q -i lost "$gwlog"
  [ "$(grep -c -i reconnected "$gwlog")" -ge "$n" ]
  alive "$gateway_pid"
}

@test "qemu-nbd killed (SIGKILL) mid-I/O and restarted: every write completes and lands" {
  local n=$(( (${BLKGATE_NBD_ROUNDS:-5} + 1) / 2 ))
  requires qemu-nbd
  truncate -s 64M "$tmp/disk.img"
  # A throttle node (20 requests/s) keeps requests in flight inside qemu-nbd.
  local opts=driver=raw,file.driver=throttle,file.throttle-group=tg
  opts+=,file.file.driver=file,file.file.filename=$tmp/disk.img
  start_qemu_nbd q --object throttle-group,id=tg,x-iops-total=20 --image-opts "$opts"
  start_gateway nbd uri="$(nbd_uri q)"

  restart() {
    start_qemu_nbd q --object throttle-group,id=tg,x-iops-total=20 --image-opts "$opts"
  }
  kill_rounds "$n" q restart
  report_reconnects
  "$BLKGATE_IO" -t 20 "$sock" read 0 2M -o "$tmp/last.bin"
  cmp "$tmp/last.bin" <(head -c $((2 * mib)) "$tmp/disk.img")
  [ "$(grep -c -i reconnected "$gwlog")" -ge "$n" ]
  alive "$gateway_pid"
}

@test "server gone longer than retry-timeout: IOERR after it, at once while gone, then back" {
  start_nbdkit srv memory 16M
  start_gateway nbd uri="$(nbd_uri srv)" retry-timeout=2

  # One front-end session, as a guest's, across the outage.  Once blkgate-io prints 'stamp
  # up', the server is killed: a write is then held, and fails no sooner than 2 s after the
  # server went; the next one fails at once.  Once it prints 'stamp failed', the server
  # comes back (empty: a new memory disk) and 4 s later requests must work again, the
  # failed writes not having landed.
  local t0 held failed
  "$BLKGATE_IO" -k -t 30 "$sock" -c 'write 0 64k -S 1' -c 'verify 0 64k -S 1' -c 'stamp up' \
    -c 'sleep 1' -c 'write 0 64k -S 2' -c 'stamp held' -c 'write 64k 64k -S 2' \
    -c 'stamp failed' -c 'sleep 4' -c 'verify 0 128k -P 0' -c 'write 0 1M -S 3' \
    -c 'verify 0 1M -S 3' > "$tmp/bio.out" 2>&1 3>&- &
  local bio_pid=$!
  wait_for_log "$tmp/bio.out" '^stamp up' 20
  t0=$(now_ms)
  kill_daemon srv KILL
  wait_for_log "$tmp/bio.out" '^stamp failed' 30
  start_nbdkit srv memory 16M
  wait $bio_pid || true
  output=$(cat "$tmp/bio.out")
  held=$(stamp_ms held)
  failed=$(stamp_ms failed)
  echo "# the first write failed $((held - t0)) ms after the kill, the next $((failed - held)) ms later" >&3
  [[ "$output" == *"verified 65536 bytes at offset 0"* ]]
  [[ "$output" == *"write at offset 0: status IOERR"* ]]
  [[ "$output" == *"write at offset 65536: status IOERR"* ]]
  # (less 100 ms for the rounding of timers and clocks)
  [ $((held - t0)) -ge 1900 ]
  [ $((held - t0)) -lt 25000 ]
  [ $((failed - held)) -lt 1500 ]
  [[ "$output" == *"verified 131072 bytes at offset 0"* ]]
  [[ "$output" == *"verified 1048576 bytes at offset 0"* ]]
  clean_output
  grep -q -i lost "$gwlog"
  grep -q -i reconnected "$gwlog"
  alive "$gateway_pid"
  # A new front-end session works too.
  run -0 "$BLKGATE_IO" -t 20 "$sock" -c 'verify 0 1M -S 3'
}

@test "the server comes back with another size: the gateway logs it and serves on" {
  start_nbdkit srv memory 16M
  start_gateway nbd uri="$(nbd_uri srv)"
  run -0 "$BLKGATE_IO" -t 20 "$sock" -c 'write 0 64k -S 1' -c 'verify 0 64k -S 1'

  kill_daemon srv KILL
  start_nbdkit srv memory 32M
  run -0 "$BLKGATE_IO" -t 20 "$sock" -c 'write 0 64k -S 2' -c 'verify 0 64k -S 2'
  wait_for_log "$gwlog" 'size changed' 10
  grep -i 'size changed' "$gwlog" | sed 's/^/# /' >&3 || true
  run -0 "$BLKGATE_IO" -t 20 "$sock" info
  grep capacity <<< "$output" | sed 's/^ */# /' >&3
  alive "$gateway_pid"
}

# blkgate's own delay filter over the nbd plugin: at each kill some writes are still held in
# the filter (they reach the plugin while the server is gone), some are at nbdkit.  The
# filter's timerfd and the plugin's fd are watched together.
@test "nbdkit killed under a gateway with --filter=delay: held and in-flight writes all complete and land" {
  local n=$(( (${BLKGATE_NBD_ROUNDS:-5} + 1) / 2 ))
  truncate -s 64M "$tmp/disk.img"
  local r=0
  start_nbdkit srv --filter=log --filter=delay file "$tmp/disk.img" delay-write=100ms \
    logfile="$tmp/nbdkit.$r.log"
  start_gateway --filter=stats --filter=delay nbd uri="$(nbd_uri srv)" wdelay=50ms \
    delay-jitter=400ms statsfile="$tmp/stats"

  restart() {
    start_nbdkit srv --filter=log --filter=delay file "$tmp/disk.img" delay-write=100ms \
      logfile="$tmp/nbdkit.$((r + 1)).log"
  }
  kill_rounds "$n" srv restart
  report_reconnects
  [ "$(grep -c -i reconnected "$gwlog")" -ge "$n" ]
  "$BLKGATE_IO" -t 20 "$sock" read 0 2M -o "$tmp/last.bin"
  cmp "$tmp/last.bin" <(head -c $((2 * mib)) "$tmp/disk.img")
  stop_gateway
  cat "$tmp/stats"
  [ "$(sed -n 's/^write.ops=//p' "$tmp/stats")" = $((32 * n)) ]
  [ "$(sed -n 's/^write.errors=//p' "$tmp/stats")" = 0 ]
}
