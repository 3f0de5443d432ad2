#!/usr/bin/env bats
# Privileges (blkgate(8): --user, --group, --socket-owner, --socket-group, --socket-mode).  The
# socket's owner, group and mode as stat(1) shows them, and whether nobody can connect; a
# gateway started as root that becomes nobody:nogroup once its socket, pid file and image are
# open (the ids in /proc/PID/status), serves I/O through blkgate-io, and can be killed and
# restarted; what is left at exit when the directory does not let nobody remove the socket;
# unknown users and groups, bad modes and a start without the right to change ids refused
# with a clear message and no socket left.  Must run as root.

load test_helper

setup() {
  blkgate_setup
  pubdir=
  [ -x "$BLKGATE_IO" ] || { echo "$BLKGATE_IO does not exist: run make first" >&2; return 1; }
  [ "$(id -u)" = 0 ] || missing "changing users needs root"
  nobody_uid=$(id -u nobody 2>/dev/null) || missing "there is no user nobody"
  nogroup_gid=$(getent group nogroup | cut -d: -f3)
  [ -n "$nogroup_gid" ] || missing "there is no group nogroup"
  requires setpriv
}

# A --fuse-export mount left by a test must go too, stale or not.
teardown() {
  local rc=0
  blkgate_teardown || rc=$?
  [ -z "${fx:-}" ] || ! mounted "$fx" || umount -l "$fx"
  [ -z "$pubdir" ] || rm -rf "$pubdir"
  return $rc
}

# make_pubdir: $pubdir, a directory every user may enter (for a socket nobody connects to, and
# a copy of blkgate-io nobody can run wherever the build tree is).
make_pubdir() {
  pubdir=$(mktemp -d /tmp/bg-pub.XXXXXX)
  chmod 755 "$pubdir"
  install -m 755 "$BLKGATE_IO" "$pubdir/blkgate-io"
}

# as_nobody COMMAND...: runs COMMAND as nobody:nogroup, without supplementary groups.
as_nobody() {
  setpriv --reuid "$nobody_uid" --regid "$nogroup_gid" --clear-groups "$@"
}

# ids PID Uid|Gid: the real, effective, saved and file-system ids of PID.
ids() {
  awk -v f="$2:" '$1 == f { print $2, $3, $4, $5 }' "/proc/$1/status"
}

# supplementary PID: PID's supplementary groups, sorted, on one line.
supplementary() {
  awk '$1 == "Groups:" { for (i = 2; i <= NF; i++) print $i }' "/proc/$1/status" | sort -n |
    xargs
}

# runs_as PID UID GID: every uid of PID is UID and every gid GID.
runs_as() {
  local u g
  u=$(ids "$1" Uid)
  g=$(ids "$1" Gid)
  [ "$u" = "$2 $2 $2 $2" ] && [ "$g" = "$3 $3 $3 $3" ] && return 0
  echo "pid $1 has uids $u and gids $g, not $2 and $3" >&2
  return 1
}

# mounted PATH: something is mounted at PATH.
mounted() {
  awk -v p="$1" '$5 == p { found = 1 } END { exit !found }' /proc/self/mountinfo
}

# unused_id passwd|group: a numeric id the database does not know.
unused_id() {
  local id=4242
  while getent "$1" "$id" >/dev/null; do id=$((id + 1)); done
  echo "$id"
}

# adopt_gateway: a gateway that started when it should not have is teardown's to stop.
adopt_gateway() {
  [ ! -s "$pidfile" ] || touch "$tmp/.pids/gateway.$(cat "$pidfile")"
}

# expect_refused MESSAGE ARGS...: blkgate ARGS... memory size=16M exits 1 with MESSAGE in its
# error, leaving neither socket nor pid file.
expect_refused() {
  local msg=$1
  shift
  run --separate-stderr "$BLKGATE" -P "$pidfile" -s "$sock" "$@" memory size=16M
  adopt_gateway
  [ "$status" -eq 1 ] || { echo "blkgate $* exited with status $status" >&2; return 1; }
  [[ "$stderr" == *"$msg"* ]] || { echo "no '$msg' in: $stderr" >&2; return 1; }
  [ ! -e "$sock" ]
}

# ---------------------------------------------------------------------------------------------
# The socket

@test "the socket is 0600 and root's by default: nobody cannot connect" {
  requires_plugin memory
  make_pubdir
  sock=$pubdir/gw.sock
  start_gateway memory size=16M
  [ "$(stat -c '%a %u %g' "$sock")" = "600 0 0" ]
  run -1 as_nobody "$pubdir/blkgate-io" -t 10 "$sock" info
  [[ "$output" == *"cannot connect"*"Permission denied"* ]]
}

@test "--socket-owner, --socket-group, --socket-mode: stat shows them, and nobody connects" {
  requires_plugin memory
  local u g
  make_pubdir
  sock=$pubdir/gw.sock

  start_gateway --socket-owner nobody --socket-group nogroup --socket-mode 0660 memory size=16M
  [ "$(stat -c '%a %U %G' "$sock")" = "660 nobody nogroup" ]
  run -0 as_nobody "$pubdir/blkgate-io" -t 20 "$sock" -c 'write 0 64k -S 7' \
    -c 'verify 0 64k -S 7'
  stop_gateway

  # The group alone, by number: nobody gets in through the group bits.
  start_gateway --socket-group "$nogroup_gid" --socket-mode 660 memory size=16M
  [ "$(stat -c '%a %u %g' "$sock")" = "660 0 $nogroup_gid" ]
  run -0 as_nobody "$pubdir/blkgate-io" -t 20 "$sock" info
  stop_gateway

  # Numeric ids need not be in the user and group databases (as with chown).
  u=$(unused_id passwd)
  g=$(unused_id group)
  start_gateway --socket-owner "$u" --socket-group "$g" --socket-mode 0 memory size=16M
  [ "$(stat -c '%a %u %g' "$sock")" = "0 $u $g" ]
  stop_gateway

  # The mode alone.
  start_gateway --socket-mode 0606 memory size=16M
  [ "$(stat -c '%a %u %g' "$sock")" = "606 0 0" ]
  run -0 as_nobody "$pubdir/blkgate-io" -t 20 "$sock" info
}

# ---------------------------------------------------------------------------------------------
# Dropping root

@test "--user nobody --group nogroup: root is dropped once the image is open; I/O, kill, restart" {
  requires_plugin file
  truncate -s 64M "$tmp/disk.img"
  chmod 600 "$tmp/disk.img"
  head -c 1M /dev/urandom > "$tmp/in.bin"
  head -c 64k /dev/urandom > "$tmp/pre.bin"
  dd if="$tmp/pre.bin" of="$tmp/disk.img" bs=64k seek=64 conv=notrunc status=none

  start_gateway --user nobody --group nogroup file file="$tmp/disk.img"
  runs_as "$gateway_pid" "$nobody_uid" "$nogroup_gid"
  [ "$(supplementary "$gateway_pid")" = "$(id -G nobody | tr ' ' '\n' | sort -n | xargs)" ]
  # Not dumpable (the kernel's rule after a change of ids, which blkgate leaves alone): its
  # /proc files stay root's, unless fs.suid_dumpable says otherwise.
  if [ "$(cat /proc/sys/fs/suid_dumpable)" != 1 ]; then
    [ "$(stat -c %u "/proc/$gateway_pid/status")" = 0 ]
  fi
  # nobody could not open the image now: it was opened before the drop.
  run ! as_nobody cat "$tmp/disk.img"

  run -0 bio -Q 2 "$sock" -c 'verify 4M 64k -i '"$tmp/pre.bin" -c 'write 1M 1M -i '"$tmp/in.bin" \
    -c 'queue 1' -c 'verify 1M 1M -i '"$tmp/in.bin" -c flush
  cmp "$tmp/in.bin" <(dd if="$tmp/disk.img" bs=1M skip=1 count=1 status=none)

  # A killed gateway is restarted (by root again) on the socket it left.
  kill_gateway KILL
  [ -S "$sock" ]
  start_gateway --user nobody --group nogroup file file="$tmp/disk.img"
  runs_as "$gateway_pid" "$nobody_uid" "$nogroup_gid"
  run -0 bio "$sock" -c 'verify 1M 1M -i '"$tmp/in.bin" -c 'write 2M 64k -S 3' \
    -c 'verify 2M 64k -S 3'
}

@test "the id check fails on a gateway that kept root; --group alone and numeric ids" {
  requires_plugin memory
  local u g

  start_gateway memory size=16M
  run ! runs_as "$gateway_pid" "$nobody_uid" "$nogroup_gid"
  runs_as "$gateway_pid" 0 0
  stop_gateway

  # --group alone: uid 0 stays, the gid changes, and root's supplementary groups go.
  start_gateway --group nogroup memory size=16M
  runs_as "$gateway_pid" 0 "$nogroup_gid"
  [ -z "$(supplementary "$gateway_pid")" ]
  run -0 bio "$sock" info
  stop_gateway

  # --user alone, by number: the user's own group and supplementary groups.
  start_gateway --user "$nobody_uid" memory size=16M
  runs_as "$gateway_pid" "$nobody_uid" "$(id -g nobody)"
  [ "$(supplementary "$gateway_pid")" = "$(id -G nobody | tr ' ' '\n' | sort -n | xargs)" ]
  stop_gateway

  # A numeric user the database does not know, with a group: no supplementary groups.
  u=$(unused_id passwd)
  g=$(unused_id group)
  start_gateway --user "$u" --group "$g" memory size=16M
  runs_as "$gateway_pid" "$u" "$g"
  [ -z "$(supplementary "$gateway_pid")" ]
  run -0 bio "$sock" -c 'write 0 64k -S 1' -c 'verify 0 64k -S 1'
}

@test "after the drop: what SIGTERM leaves depends on the directories, and a restart copes" {
  requires_plugin memory

  # Directories only root may enter: nobody cannot remove the socket or the pid file there.
  chmod 700 "$tmp" "$sockdir"
  start_gateway --user nobody memory size=16M
  runs_as "$gateway_pid" "$nobody_uid" "$(id -g nobody)"
  stop_gateway
  [ -S "$sock" ]
  grep -q "cannot remove $sock: Permission denied" "$gwlog"
  grep -q "cannot remove $pidfile: Permission denied" "$gwlog"
  # The next gateway (root at first) replaces the stale socket.
  start_gateway --user nobody memory size=16M
  run -0 bio "$sock" info
  stop_gateway

  # In a directory nobody owns, both go.
  make_pubdir
  chown nobody "$pubdir"
  sock=$pubdir/gw.sock pidfile=$pubdir/gw.pid start_gateway --user nobody memory size=16M
  run -0 bio "$pubdir/gw.sock" info
  stop_gateway
  [ ! -e "$pubdir/gw.sock" ]
  [ ! -e "$pubdir/gw.pid" ]
}

@test "--fuse-export with --user: served after the drop; left stale at exit, detached at restart" {
  requires_plugin memory
  requires fusermount3
  [ -e /dev/fuse ] || missing "/dev/fuse is not available"
  "$BLKGATE" --fuse-export "$tmp/probe" --version >/dev/null 2>&1 ||
    missing "blkgate was built without FUSE support"
  fx=$(cd "$tmp" && pwd -P)/disk

  start_gateway --user nobody --fuse-export "$fx" memory size=16M
  runs_as "$gateway_pid" "$nobody_uid" "$(id -g nobody)"
  run -0 bio "$sock" -c 'write 0 64k -S 5' -c 'verify 0 64k -S 5' -c 'read 0 64k -o '"$tmp/r.bin"
  cmp "$tmp/r.bin" <(head -c 64k "$fx")
  # Unmounting needs root: the mount stays, dead.
  stop_gateway
  mounted "$fx"
  run ! stat "$fx"
  [[ "$output" == *"Transport endpoint is not connected"* ]]
  # The next gateway, root at first, detaches it and mounts again.
  start_gateway --fuse-export "$fx" memory size=16M
  grep -q "$fx is a stale mount" "$gwlog"
  [ "$(head -c 4k "$fx" | tr -d '\0' | wc -c)" = 0 ]
  stop_gateway
  run ! mounted "$fx"
}

# ---------------------------------------------------------------------------------------------
# Refusals

@test "unknown users and groups, and bad modes, are refused before the socket exists" {
  requires_plugin memory
  local m u

  expect_refused "--user no-such-user-bg: no such user" --user no-such-user-bg
  expect_refused "--group no-such-group-bg: no such group" --user nobody --group no-such-group-bg
  expect_refused "--group no-such-group-bg: no such group" --group no-such-group-bg
  expect_refused "--socket-owner no-such-user-bg: no such user" --socket-owner no-such-user-bg
  expect_refused "--socket-group no-such-group-bg: no such group" \
    --socket-group no-such-group-bg
  u=$(unused_id passwd)
  expect_refused "--user $u: no such user in the user database, so no group to take: give --group" \
    --user "$u"
  for m in 0888 8 1777 01777 4755 1000 0x1ff rw u=rw 99999 -1 '' ' 660' '660 ' 0660x; do
    expect_refused "--socket-mode $m: expected an octal mode from 0 to 0777" --socket-mode="$m"
  done
  expect_refused "not --fd" --fd 0 --socket-mode 0660
}

@test "without the right to change ids (no CAP_SETGID), --user fails the start, nothing is left" {
  requires_plugin memory
  # Root, but with setuid and setgid out of the bounding set, as in a confined service.
  run --separate-stderr setpriv --bounding-set -setuid,-setgid --inh-caps -setuid,-setgid \
    "$BLKGATE" -P "$pidfile" -s "$sock" --user nobody memory size=16M
  adopt_gateway
  [ "$status" -eq 1 ]
  [[ "$stderr" == *"cannot drop privileges: setgroups: Operation not permitted"* ]]
  [[ "$stderr" == *"need blkgate to start as root, with CAP_SETUID and CAP_SETGID"* ]]
  [ ! -e "$sock" ]
  [ ! -e "$pidfile" ]
  # The same, in the foreground (where a gateway that started would serve until the timeout).
  run --separate-stderr timeout 20 setpriv --bounding-set -setuid,-setgid \
    --inh-caps -setuid,-setgid "$BLKGATE" -f -P "$pidfile" -s "$sock" --user nobody memory size=16M
  [ "$status" -eq 1 ]
  [[ "$stderr" == *"cannot drop privileges: setgroups"* ]]
  [ ! -e "$sock" ]
  [ ! -e "$pidfile" ]
}
