#!/usr/bin/env bats
# A guest on a disk served through the nbd plugin: data crosses the gateway and the NBD
# server intact in both directions (nbdkit, qemu-nbd); the NBD server can be killed and
# restarted under a guest writing with fio at iodepth 32 without the guest seeing an error;
# and a server gone longer than retry-timeout gives the guest I/O errors, after which the
# same guest works again once the server is back (the gateway does not exit).

load test_helper
load guest-integrity

mib=$((1024 * 1024))

setup() {
  blkgate_setup
  guest_ready
}

# ---------------------------------------------------------------------------------------------
# The host talks to a running guest through a control disk: /dev/vdb, served by a file gateway
# from $tmp/ctl.img.  The guest says what it has done on its console (the host follows
# $tmp/g.log with wait_for_log); the host answers with a word in sector 0 of the control disk,
# which the guest polls with O_DIRECT reads.

# start_control: the control gateway; its socket is $ctl_sock.
start_control() {
  requires_plugin file
  truncate -s 1M "$tmp/ctl.img"
  ctl_sock=$sockdir/ctl.sock
  sock=$ctl_sock pidfile=$tmp/ctl.pid gwlog=$tmp/ctl-gateway.log \
    start_gateway file file="$tmp/ctl.img"
}

# tell_guest WORD: puts WORD in sector 0 of the guest's /dev/vdb.
tell_guest() {
  printf '%s\n' "$1" | dd of="$tmp/ctl.img" bs=512 conv=notrunc,sync status=none
}

# In the guest: "$control_says WORD" is true once the host has put WORD on the control disk.
control_says='dd if=/dev/vdb bs=512 count=1 iflag=direct status=none | grep -q'

# A guest script too long for the kernel command line is put on the control disk at 4 KiB
# (put_guest_script SCRIPT), and the guest command runs it from there ($run_from_vdb).
put_guest_script() {
  printf '%s\n' "$1" | dd of="$tmp/ctl.img" bs=4096 seek=1 conv=notrunc status=none
}
run_from_vdb='dd if=/dev/vdb bs=4096 skip=1 count=2 status=none | tr -d "\\000" > s.sh; . ./s.sh'

# ---------------------------------------------------------------------------------------------
# Data integrity

# pre_ranges, write_ranges, fio_off, fio_len and integrity_guest: guest-integrity.bash.

# check_integrity: checks the output of integrity_guest (in $output and $lines) against
# $tmp/disk.img and the data the host put there ($want).
check_integrity() {
  local line off len sum r nr=0 nw=0
  [ "${lines[0]}" = "size=$((64 * mib))" ]
  [[ $output == *"fio=0"* ]]
  [[ $output != *"dmesg=bad"* ]]
  for line in "${lines[@]}"; do
    case $line in
      "R "*)
        read -r _ r sum <<< "$line"
        [ "$sum" = "${want[$r]}" ] || { echo "the guest read $r wrong" >&2; return 1; }
        nr=$((nr + 1)) ;;
      "W "*)
        read -r _ off len sum <<< "$line"
        [ "$(sha256_range "$tmp/disk.img" "$off" "$len")" = "$sum" ] ||
          { echo "the guest's write at $off+$len is not in the image" >&2; return 1; }
        nw=$((nw + 1)) ;;
    esac
  done
  [ $nr -eq 4 ]
  [ $nw -eq 3 ]
  # The guest's view of the whole disk is the image, byte for byte.
  [ "$(sed -n 's/^disk=//p' <<< "$output")" = "$(sha256_range "$tmp/disk.img" 0 $((64 * mib)))" ]
  # And nothing was written outside the ranges: zero them, and the image is all zeros.
  for r in $pre_ranges $write_ranges $fio_off:$fio_len; do
    dd if=/dev/zero of="$tmp/disk.img" bs="${r#*:}" count=1 seek="${r%:*}" oflag=seek_bytes \
       conv=notrunc status=none
  done
  cmp -n $((64 * mib)) "$tmp/disk.img" /dev/zero
  [ "$(stat -c %s "$tmp/disk.img")" -eq $((64 * mib)) ]
}

# prepare_image: a sparse 64 MiB image holding random data at $pre_ranges (sums in $want).
prepare_image() {
  truncate -s 64M "$tmp/disk.img"
  local r
  for r in $pre_ranges; do
    random_at "$tmp/disk.img" "${r%:*}" "${r#*:}"
    want[$r]=$(sha256_range "$tmp/disk.img" "${r%:*}" "${r#*:}")
  done
}

@test "nbd (nbdkit file): the guest reads the image's data and its writes land in the image" {
  requires_plugin nbd
  requires nbdkit
  declare -A want
  prepare_image
  start_nbdkit nbd file "$tmp/disk.img"
  start_gateway nbd "$(nbd_uri nbd)"

  run -0 integrity_guest
  check_integrity
}

@test "nbd (nbdkit file, connections=4): the same with four connections" {
  requires_plugin nbd
  requires nbdkit
  declare -A want
  prepare_image
  start_nbdkit nbd file "$tmp/disk.img"
  start_gateway nbd uri="$(nbd_uri nbd)" connections=4

  run -0 integrity_guest
  check_integrity
}

@test "nbd (qemu-nbd): the guest reads the image's data and its writes land in the image" {
  requires_plugin nbd
  requires qemu-nbd
  declare -A want
  prepare_image
  start_qemu_nbd nbd -f raw "$tmp/disk.img"
  start_gateway nbd "$(nbd_uri nbd)"

  run -0 integrity_guest
  check_integrity
}

# ---------------------------------------------------------------------------------------------
# The NBD server restarts under a writing guest

# The guest writes with fio at iodepth 32 and verifies everything it wrote (crc32c in every
# block), pass after pass until the host puts STOP on its control disk (see start_control),
# then prints the checksum of the disk; dmesg must show no I/O error.  Each pass writes 16 MiB
# (JOBS jobs, each on its own part) in the next quarter of the disk, with new random offsets
# and data (randrepeat=0), so that a write lost in one pass cannot pass for the previous one's.
guest_fio() {
  echo "echo started; s=0 p=0;
  while [ \$s -eq 0 ] && [ \$p -lt 100 ] && ! $control_says STOP; do
    fio --name=w --filename=/dev/vda --rw=randwrite --bs=4k --iodepth=32 --ioengine=libaio \
      --direct=1 --randrepeat=0 --numjobs=$1 --offset=\$(( p % 4 * 16 ))M \
      --size=$((16 / $1))M --offset_increment=$((16 / $1))M \
      --verify=crc32c --verify_fatal=1 --do_verify=1 > fio.out 2>&1; s=\$?; p=\$((p + 1));
  done;
  tail -n 3 fio.out; echo passes=\$p; echo fio=\$s;
  if dmesg | grep -i -E 'I/O error|blk_update_request|not a head'; then echo dmesg=bad; fi;
  echo disk=\$(dd if=/dev/vda bs=1M count=64 iflag=direct status=none | sha256sum | cut -c1-64);
  [ \$s -eq 0 ]"
}

# restart_under_fio JOBS ROUNDS SERVER-START... -- GUEST-OPTIONS... -- GATEWAY-ARGS...: starts
# the NBD server "nbd" with SERVER-START (start_nbdkit nbd ARGS...), the gateway, and a guest
# running guest_fio JOBS; kills the server with SIGKILL at random moments ROUNDS times, each
# time restarting it a second later on the same socket, then tells the guest to stop.  The
# guest must see no error, every block must verify, and its view of the disk must be the
# image's.
restart_under_fio() {
  local jobs=$1 rounds=$2
  shift 2
  local server=() guest_opts=()
  while [ "$1" != -- ]; do server+=("$1"); shift; done
  shift
  while [ "$1" != -- ]; do guest_opts+=("$1"); shift; done
  shift

  start_control
  truncate -s 64M "$tmp/disk.img"
  "${server[@]}"
  start_gateway nbd "$@"
  guest_start g -t 300 "${guest_opts[@]}" "$sock" "$ctl_sock" "$(guest_fio "$jobs")"
  wait_for_log "$tmp/g.log" started 120

  local round
  for ((round = 1; round <= rounds; round++)); do
    sleep "$((1 + RANDOM % 2)).$((RANDOM % 10))"
    kill_daemon nbd KILL
    sleep 1
    "${server[@]}"
  done
  tell_guest STOP

  local status=0
  guest_wait g || status=$?
  output=$(cat "$tmp/g.out")
  echo "$output"
  [ "$status" -eq 0 ]
  [[ $output == *"fio=0"* ]]
  [[ $output != *"dmesg=bad"* ]]
  # The gateway saw the server go and come back each time, and had requests to resend.
  grep -E 'lost|reconnected|resend' "$gwlog"
  [ "$(grep -c 'reconnected' "$gwlog")" -ge "$rounds" ]
  grep -q -E 'resending [1-9]' "$gwlog"
  # The guest's view of the disk is the image's.
  [ "$(sed -n 's/^disk=//p' <<< "$output")" = "$(sha256_range "$tmp/disk.img" 0 $((64 * mib)))" ]
}

# Every request waits on the server, so that dozens are in flight when it dies.
slow_nbdkit() {
  start_nbdkit nbd --filter=delay file "$tmp/disk.img" delay-write=20ms delay-read=10ms
}

@test "nbd: nbdkit killed (SIGKILL) and restarted 4 times under guest I/O: no error, every block verifies" {
  requires_plugin nbd
  requires nbdkit
  restart_under_fio 1 4 slow_nbdkit -- -- "$(nbd_uri nbd)"
}

@test "nbd: the same with 2 queues, 2 fio jobs and connections=4" {
  requires_plugin nbd
  requires nbdkit
  restart_under_fio 2 4 slow_nbdkit -- -c 2 -q 2 -- uri="$(nbd_uri nbd)" connections=4
}

@test "nbd: qemu-nbd killed (SIGKILL) and restarted 3 times under guest I/O: no error" {
  requires_plugin nbd
  requires qemu-nbd
  restart_under_fio 1 3 start_qemu_nbd nbd -f raw "$tmp/disk.img" -- -- "$(nbd_uri nbd)"
}

# ---------------------------------------------------------------------------------------------
# The NBD server gone longer than retry-timeout

# The guest and the host take turns through the control disk.
guest_gone="says() { $control_says \"\$1\"; }"'
  wait_host() {
    end=$(( $(date +%s) + 300 ))
    until says "$1"; do
      [ $(date +%s) -lt $end ] || { echo "no $1 from the host"; exit 2; }
      sleep 1
    done
  }
  sum() { sha256sum < "$1" | cut -c1-64; }
  head -c 65536 /dev/urandom > p0
  head -c 65536 /dev/urandom > p1
  head -c 65536 /dev/urandom > p2
  dd if=p0 of=/dev/vda bs=64k seek=1 oflag=direct conv=notrunc status=none; echo dd0=$?
  echo sum0=$(sum p0)
  echo READY
  wait_host DOWN
  t0=$(date +%s)
  dd if=p1 of=/dev/vda bs=64k seek=2 oflag=direct conv=notrunc status=none; echo dd1=$?
  t1=$(date +%s)
  dd if=/dev/vda of=/dev/null bs=4k count=1 skip=100 iflag=direct status=none; echo rd1=$?
  t2=$(date +%s)
  echo "the write took $((t1 - t0)) s, the read $((t2 - t1)) s"
  dmesg | grep -q -i "I/O error" && echo dmesg=ioerror
  echo FAILED
  wait_host UP
  # The same range as the write that failed: that write must not land after this one.  The
  # gateway may need a moment to notice that the server is back.
  n=0
  while :; do
    n=$((n + 1))
    if dd if=p2 of=/dev/vda bs=64k seek=2 oflag=direct conv=notrunc status=none; then
      echo dd2=0 tries=$n; break
    fi
    [ $n -lt 30 ] || { echo dd2=failed tries=$n; break; }
    sleep 1
  done
  dd if=/dev/vda of=r2 bs=64k skip=2 count=1 iflag=direct status=none && cmp p2 r2 &&
    echo readback=ok
  echo sum2=$(sum p2)
  echo sum0back=$(dd if=/dev/vda bs=64k skip=1 count=1 iflag=direct status=none | sha256sum |
                  cut -c1-64)'

@test "nbd: server gone longer than retry-timeout: the guest gets I/O errors, then works again" {
  requires_plugin nbd
  requires nbdkit
  start_control
  put_guest_script "$guest_gone"
  truncate -s 16M "$tmp/disk.img"
  start_nbdkit nbd file "$tmp/disk.img"
  start_gateway nbd "$(nbd_uri nbd)" retry-timeout=3
  guest_start g -t 400 "$sock" "$ctl_sock" "$run_from_vdb"
  wait_for_log "$tmp/g.log" '^READY' 120

  # The server goes away for good (as far as the retry-timeout is concerned): a clean exit
  # this time (the tests above kill it).
  stop_daemon nbd
  tell_guest DOWN
  wait_for_log "$tmp/g.log" '^FAILED' 300
  # The gateway is still there, and the server comes back.
  alive "$gateway_pid"
  start_nbdkit nbd file "$tmp/disk.img"
  tell_guest UP

  local status=0
  guest_wait g || status=$?
  output=$(cat "$tmp/g.out")
  echo "$output"
  [ "$status" -eq 0 ]
  # Before: a write went through.
  grep -q -x 'dd0=0' <<< "$output"
  # While the server was gone: the write and the read failed with an I/O error...
  grep -q -E '^dd1=[1-9]' <<< "$output"
  grep -q -E '^rd1=[1-9]' <<< "$output"
  grep -q 'Input/output error' <<< "$output"
  grep -q -x 'dmesg=ioerror' <<< "$output"
  # ...and once it was back, writes and reads worked again, in the same guest.
  grep -q -E '^dd2=0 ' <<< "$output"
  grep -q -x 'readback=ok' <<< "$output"
  local sum0 sum2
  sum0=$(sed -n 's/^sum0=//p' <<< "$output")
  sum2=$(sed -n 's/^sum2=//p' <<< "$output")
  [ "$(sed -n 's/^sum0back=//p' <<< "$output")" = "$sum0" ]
  [ "$(sha256_range "$tmp/disk.img" 65536 65536)" = "$sum0" ]
  [ "$(sha256_range "$tmp/disk.img" $((2 * 65536)) 65536)" = "$sum2" ]
  grep -q 'lost' "$gwlog"
  grep -q 'reconnected' "$gwlog"
  # The gateway is still there; once it has stopped, the image holds what the guest wrote
  # last (the write that failed did not land late over it).
  alive "$gateway_pid"
  stop_gateway
  [ "$(sha256_range "$tmp/disk.img" 65536 65536)" = "$sum0" ]
  [ "$(sha256_range "$tmp/disk.img" $((2 * 65536)) 65536)" = "$sum2" ]
}
