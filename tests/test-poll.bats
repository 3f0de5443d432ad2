#!/usr/bin/env bats
# --poll-us: after activity a queue thread polls its ring, the plugin and its commands
# without sleeping (for an adaptive time, up to the value given), with guest kicks off (VRING_USED_F_NO_NOTIFY, or avail_event left
# behind with EVENT_IDX); when it stops it arms kicks again and looks once more.  With
# blkgate-io as the front-end: data comes back right, requests sent after the polling has
# stopped still complete (no lost kick), GET_VRING_BASE is answered while polling, and bad
# values are refused.  Timings are printed, never asserted.

load test_helper

setup() {
  blkgate_setup
  [ -x "$BLKGATE_IO" ] || { echo "$BLKGATE_IO does not exist: run make first" >&2; return 1; }
}

# Writes and reads back on two queues, with idle gaps longer than any polling period.
io_sequence() {
  bio -Q 2 "$@" <<EOF
write 0 1M -P 0x5a
verify 0 1M -P 0x5a
sleep 1
verify 0 1M -P 0x5a
write 1M 3M -S 1234
queue 1
sleep 1
verify 1M 3M -S 1234
write 4M 64k -S 99
flush
queue 0
sleep 1.2
verify 4M 64k -S 99
zero 5M 64k
verify 5M 64k -P 0
EOF
}

# kicks_per_request: the bench's "notify" figure from $output.
kicks_per_request() {
  sed -n 's/^ *notify *\([0-9.]*\) kicks.*/\1/p' <<< "$output"
}

@test "--poll-us: a negative, non-numeric or too large value is refused" {
  requires_plugin memory
  local v
  for v in -1 abc 2000000 1000001 ''; do
    run -1 --separate-stderr "$BLKGATE" -P "$pidfile" -s "$sock" --poll-us "$v" memory size=16M
    if [ -s "$pidfile" ]; then
      touch "$tmp/.pids/gateway.$(cat "$pidfile")"
      echo "--poll-us '$v' was accepted" >&2
      return 1
    fi
    [[ "$stderr" == *poll-us* ]]
    [ ! -e "$sock" ]
  done
  run -0 "$BLKGATE" --help
  [[ "$output" == *--poll-us* ]]
}

@test "--poll-us 0 and 1000000 are accepted" {
  requires_plugin null
  start_gateway --poll-us 0 null size=1G
  run -0 bio "$sock" -c 'write 0 64k' -c 'verify 0 64k -P 0'
  stop_gateway
  start_gateway --poll-us 1000000 null size=1G
  run -0 bio "$sock" -c 'write 0 64k' -c 'verify 0 64k -P 0'
}

@test "--poll-us 50 (memory): data is right, with and without EVENT_IDX, across idle gaps" {
  requires_plugin memory
  start_gateway --poll-us 50 memory size=64M

  run -0 io_sequence "$sock"
  clean_output
  run -0 io_sequence --no-event-idx "$sock"
  clean_output
  run -0 bio --no-event-idx --no-indirect "$sock" -c 'verify 1M 3M -S 1234' -c 'sleep 1' \
    -c 'write 8M 64k -S 5' -c 'verify 8M 64k -S 5'
  clean_output
}

@test "--poll-us 1000000 (memory): requests after the polling stopped complete, both ways" {
  requires_plugin memory
  start_gateway --poll-us 1000000 memory size=64M

  run -0 io_sequence "$sock"
  clean_output
  # A gap longer than the polling period: kicks must be back on after it.
  run -0 bio "$sock" -c 'write 0 64k -S 1' -c 'sleep 1.5' -c 'verify 0 64k -S 1' \
    -c 'sleep 2' -c 'write 64k 64k -S 2' -c 'verify 0 64k -S 1' -c 'verify 64k 64k -S 2'
  clean_output
  run -0 io_sequence --no-event-idx "$sock"
  clean_output
  run -0 bio --no-event-idx "$sock" -c 'write 0 64k -S 3' -c 'sleep 2' -c 'verify 0 64k -S 3'
  clean_output
}

@test "--poll-us (file plugin, async): the plugin is polled while spinning" {
  requires_plugin file
  truncate -s 64M "$tmp/disk.img"
  start_gateway --poll-us 50 file file="$tmp/disk.img"

  run -0 io_sequence "$sock"
  clean_output
  run -0 io_sequence --no-event-idx "$sock"
  clean_output
  stop_gateway
  start_gateway --poll-us 1000000 file file="$tmp/disk.img"
  run -0 bio -Q 2 "$sock" -c 'verify 1M 3M -S 1234' -c 'sleep 1.5' -c 'write 8M 1M -S 8' \
    -c 'queue 1' -c 'verify 8M 1M -S 8'
  clean_output
  run -0 bio -Q 2 "$sock" bench --rw randrw --iodepth 8 --queues 2 --time 0.5
  clean_output
  [[ "${lines[-1]}" == "bench rw=randrw "*" errors=0 "* ]]
}

@test "--poll-us: short benches on 1 and 2 queues (memory and null) complete without errors" {
  local plugin us q ei
  for plugin in memory null; do
    requires_plugin $plugin
  done
  for plugin in memory null; do
    for us in 50 1000000; do
      start_gateway --poll-us $us $plugin size=64M
      for q in 1 2; do
        for ei in '' --no-event-idx; do
          run -0 bio -Q $q $ei "$sock" bench --rw randrw --bs 4k --iodepth 4 --queues $q \
            --time 0.3
          clean_output
          [[ "${lines[-1]}" == "bench rw=randrw bs=4096 iodepth=4 queues=$q "*" errors=0 "* ]]
          echo "# $plugin --poll-us $us, $q queues${ei:+, $ei}: ${lines[-1]#* iops=}" >&3
        done
      done
      stop_gateway
    done
  done
}

@test "--poll-us 1000000: the guest hardly kicks while the queue polls (both ways)" {
  requires_plugin null
  start_gateway --poll-us 1000000 null size=1G
  local ei k

  for ei in '' --no-event-idx; do
    run -0 bio $ei "$sock" bench --rw randread --iodepth 1 --time 0.5
    clean_output
    k=$(kicks_per_request)
    echo "# --poll-us 1000000${ei:+ $ei}: $k kicks per request" >&3
    # Without polling it is about 1 per request at depth 1.
    awk -v k="$k" 'BEGIN { exit !(k < 0.1) }'
  done
}

@test "--poll-us 1000000: stop-queue (GET_VRING_BASE) is answered while the queue polls" {
  requires_plugin memory
  start_gateway --poll-us 1000000 memory size=64M
  local ei

  for ei in '' --no-event-idx; do
    run -0 bio -Q 2 $ei "$sock" -c 'write 0 64k' -c 'write 64k 64k' -c 'queue 1' -c 'write 1M 4k' \
      -c 'stop-queue all' -c 'start-queue all' -c 'verify 0 128k -P 0xcd' -c 'sleep 1.5' \
      -c 'queue 0' -c 'write 2M 4k -S 4' -c 'verify 2M 4k -S 4' -c 'stop-queue 0' \
      -c 'start-queue 0' -c 'sleep 1.5' -c 'verify 0 128k -P 0xcd'
    clean_output
    [[ "$output" == *"stop-queue queue=0 msg=GET_VRING_BASE index=2 "*"drained=yes"* ]]
    [[ "$output" == *"stop-queue queue=1 msg=GET_VRING_BASE index=1 "*"drained=yes"* ]]
    [[ "$output" == *"start-queue queue=0 base=2"* ]]
    grep 'stop-queue' <<< "$output" | sed 's/^/# /' >&3
  done
  # And a reconnect (the connection dropped while polling) and a guest reset.
  run -0 bio "$sock" -c 'write 0 64k -S 6' -c reconnect -c 'verify 0 64k -S 6' -c reset \
    -c 'verify 0 64k -S 6' -c 'sleep 1.5' -c 'verify 0 64k -S 6'
  clean_output
}

@test "--poll-us: commands sent while polling (dirty logging) are run; only used-ring pages are logged" {
  requires_plugin memory
  start_gateway --poll-us 1000000 memory size=64M
  local ei

  for ei in '' --no-event-idx; do
    run -0 bio $ei "$sock" -c 'write 0 1M -S 3' -c log-start -c log-clear -c 'read 0 64k' \
      -c 'log-check --exactly data status used' -c log-clear -c 'write 64k 64k -S 4' \
      -c 'log-check --exactly status used !data' -c log-stop -c 'verify 64k 64k -S 4'
    clean_output
    [ "$(grep -c '^log-check: as expected' <<< "$output")" -eq 2 ]
  done
}

@test "kill -9 while polling: a gateway started after it takes kicks again (both ways)" {
  requires_plugin file
  truncate -s 64M "$tmp/disk.img"
  local ei status

  for ei in '' --no-event-idx; do
    start_gateway --poll-us 1000000 file file="$tmp/disk.img"
    # The bench grows the adaptive spin to its full second (kicks off), the write keeps
    # it going, and the gateway dies within that second.
    printf '%s\n' 'bench --rw randread --iodepth 1 --time 0.3' 'write 0 64k -S 1' 'sleep 1.5' \
      'reconnect --retry 20' 'write 64k 64k -S 2' 'verify 0 64k -S 1' 'verify 64k 64k -S 2' |
      bio $ei "$sock" > "$tmp/bio.out" 2>&1 3>&- &
    local bio_pid=$!
    sleep 0.6
    kill_gateway KILL
    # Without polling: only a kick tells it about the second write.
    start_gateway file file="$tmp/disk.img"
    status=0
    wait "$bio_pid" || status=$?
    output=$(cat "$tmp/bio.out")
    [ "$status" -eq 0 ]
    clean_output
    [[ "$output" == *"verified 65536 bytes at offset 65536"* ]]
    stop_gateway
  done
}
