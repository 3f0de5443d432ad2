#!/bin/bash
# Boots the test guest (see build-guest.sh) under TCG with one vhost-user-blk-pci device per
# socket, runs a shell command in it and exits with that command's exit status.
#
# usage: run-guest.sh [OPTIONS] SOCKET... COMMAND
#
# The devices appear in the guest as /dev/vda, /dev/vdb, ... in the order of the sockets.
# COMMAND runs under dash in /tmp (a tmpfs), with stdin from /dev/null and the busybox
# applets, fio and util-linux blkdiscard on PATH.  Its output (stdout and stderr together) is
# printed on stdout.  Exit status: the command's; 124 if the guest ran out of time; 125 if it
# reported no status (QEMU failed to start, the guest crashed).  After a non-zero status,
# QEMU's messages and the end of the guest's console log (or its kernel log) are printed on
# stderr.
#
# Options (defaults from the environment variables in brackets):
#   -g DIR    the built guest [BLKGATE_GUEST_DIR, default ~/.cache/blkgate-guest];
#             built with build-guest.sh if it holds none
#   -c N      number of vCPUs [GUEST_CPUS, default 1]
#   -m MIB    guest memory [GUEST_MEM, default 256]
#   -q N      num-queues of each device, "auto" for QEMU's default [VUB_QUEUES, default 1]
#   -C OPTS   appended to each -chardev socket, e.g. ",reconnect=1" [VUB_CHARDEV_OPTS]
#   -D OPTS   appended to each -device vhost-user-blk-pci, e.g. ",packed=on" [VUB_DEVICE_OPTS]
#   -t SECS   time limit for the whole run [GUEST_TIMEOUT, default 120]
#   -l FILE   keep the serial console log in FILE (read it while the guest runs to see
#             the command's progress) [GUEST_LOG]
#   -Q ARG    pass ARG to QEMU (repeatable)
#   -v        show the kernel's boot messages in the console log [GUEST_VERBOSE=1]
# The QEMU binary is $QEMU, default qemu-system-x86_64.  KVM is not used: guests hang early in
# boot under KVM on our test machines.

set -uo pipefail

prog=${0##*/}
here=$(cd "$(dirname "$0")" && pwd)

usage() { sed -n '5,29p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
die() { echo "$prog: $*" >&2; exit 125; }

guest_dir=${BLKGATE_GUEST_DIR:-$HOME/.cache/blkgate-guest}
cpus=${GUEST_CPUS:-1}
mem=${GUEST_MEM:-256}
queues=${VUB_QUEUES:-1}
chardev_opts=${VUB_CHARDEV_OPTS:-}
device_opts=${VUB_DEVICE_OPTS:-}
time_limit=${GUEST_TIMEOUT:-120}
log=${GUEST_LOG:-}
verbose=${GUEST_VERBOSE:-0}
qemu=${QEMU:-qemu-system-x86_64}
extra=()

while getopts g:c:m:q:C:D:t:l:Q:vh opt; do
  case $opt in
    g) guest_dir=$OPTARG ;;
    c) cpus=$OPTARG ;;
    m) mem=$OPTARG ;;
    q) queues=$OPTARG ;;
    C) chardev_opts=$OPTARG ;;
    D) device_opts=$OPTARG ;;
    t) time_limit=$OPTARG ;;
    l) log=$OPTARG ;;
    Q) extra+=("$OPTARG") ;;
    v) verbose=1 ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 2 ] || usage
socks=("${@:1:$#-1}")
cmd=${!#}

if [ ! -s "$guest_dir/vmlinuz" ] || [ ! -s "$guest_dir/initramfs.gz" ]; then
  "$here/build-guest.sh" "$guest_dir" >&2 || die "could not build the guest in $guest_dir"
fi
# With reconnect=, QEMU waits for the server; otherwise it must already listen.
if [[ $chardev_opts != *reconnect* ]]; then
  for s in "${socks[@]}"; do
    [ -S "$s" ] || die "$s is not a socket"
  done
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/run-guest.XXXXXX") || exit 125
qpid=
# shellcheck disable=SC2317  # called by the trap
cleanup() {
  [ -n "$qpid" ] && kill -TERM "$qpid" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 143' TERM
trap 'exit 130' INT
[ -n "$log" ] || log=$work/console.log
: > "$log"

kargs="console=ttyS0 panic=-1 tsc=reliable no_timer_check i8042.noaux i8042.nokbd i8042.nopnp"
if [ "$verbose" = 1 ]; then kargs+=" guest_verbose=1"; else kargs+=" quiet"; fi
kargs+=" guest_cmd=$(printf '%s' "$cmd" | base64 -w0)"
# x86 kernels keep 2048 bytes of command line; QEMU refuses longer ones.
[ ${#kargs} -lt 2000 ] || die "the guest command is too long (${#cmd} bytes): put it in a script"

# shellcheck disable=SC2054  # commas inside QEMU arguments
args=(-accel tcg -M q35 -cpu max -smp "$cpus" -m "$mem"
      -object memory-backend-memfd,id=mem,size="$mem"M,share=on -machine memory-backend=mem
      -nodefaults -no-user-config -display none -no-reboot
      -serial file:"$log"
      -kernel "$guest_dir/vmlinuz" -initrd "$guest_dir/initramfs.gz" -append "$kargs")
i=0
for s in "${socks[@]}"; do
  dev=vhost-user-blk-pci,chardev=vub$i,id=vub${i}dev
  [ "$queues" = auto ] || dev+=",num-queues=$queues"
  args+=(-chardev "socket,id=vub$i,path=$s$chardev_opts" -device "$dev$device_opts")
  i=$((i + 1))
done

timeout -k 5 "$time_limit" "$qemu" "${args[@]}" "${extra[@]}" </dev/null >"$work/qemu.err" 2>&1 &
qpid=$!
wait "$qpid"
qemu_rc=$?
qpid=

# The serial console turns \n into \r\n.  The guest prints a newline before the end marker, so
# the output is the lines between the markers joined by newlines, without a final one.  (If
# the end marker is missing, the output is cut short: end it with a newline.)
tr -d '\r' < "$log" > "$work/console"
awk '/^<<<blkgate-guest-end rc=[0-9]+>>>$/ { done = 1; exit }
     inside { printf "%s%s", (n++ ? "\n" : ""), $0 }
     /^<<<blkgate-guest-begin>>>$/ { inside = 1 }
     END { if (!done && n) print "" }' "$work/console"
rc=$(sed -n 's/^<<<blkgate-guest-end rc=\([0-9]*\)>>>$/\1/p' "$work/console" | tail -n 1)

if [ -z "$rc" ]; then
  case $qemu_rc in
    124|137) echo "$prog: the guest did not finish within ${time_limit}s" >&2; rc=124 ;;
    *) echo "$prog: the guest reported no exit status (QEMU exit status $qemu_rc)" >&2; rc=125 ;;
  esac
fi
if [ "$rc" -ne 0 ]; then
  [ -s "$work/qemu.err" ] && sed 's/^/qemu: /' "$work/qemu.err" >&2
  if grep -q '^<<<blkgate-guest-end' "$work/console"; then
    sed '1,/^<<<blkgate-guest-end/d' "$work/console" >&2
  else
    echo "--- end of the guest console ---" >&2
    tail -n 40 "$work/console" >&2
  fi
fi
exit "$rc"
