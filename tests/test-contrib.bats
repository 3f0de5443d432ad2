#!/usr/bin/env bats
# contrib/: the systemd unit, its example configuration, the libvirt example and the
# vhost-user descriptor, as the build tree makes them.  systemd is not PID 1 here, so the
# unit is checked with systemd-analyze verify and its ExecStart is run the way systemd
# would run it (contrib-helper.bash), with the paths moved into the test's directory: the
# gateway must serve I/O with the example's disk, and, under strace, stay within what the
# unit's sandbox lets it do.  (test-install.bats does the same with the installed files.)

load test_helper
load contrib-helper

unit=$top_builddir/contrib/systemd/blkgate@.service
example=$top_srcdir/contrib/systemd/example.conf
xml=$top_srcdir/contrib/libvirt/vm1.xml
descriptor=$top_builddir/contrib/vhost-user/50-blkgate.json

setup() {
  blkgate_setup
  unit_setup
  [ -f "$unit" ] || { echo "$unit does not exist: run make first" >&2; return 1; }
  [ -x "$BLKGATE_IO" ] || { echo "$BLKGATE_IO does not exist: run make first" >&2; return 1; }
}

# example_disk: the example's configuration as the test's vm1.conf, and its image (the
# example names /var/lib/blkgate/vm1.img, the test's $statedir/vm1.img).
example_disk() {
  requires_plugin file
  mkdir -p "$tmp/etc"
  cp "$example" "$tmp/etc/vm1.conf"
  truncate -s 64M "$statedir/vm1.img"
}

# serves_example: the gateway of start_unit serves the example's disk on the unit's socket.
serves_example() {
  local s=$rundir/vm1.sock
  listens "$gateway_pid" "$s" || { echo "pid $gateway_pid does not listen on $s" >&2; return 1; }
  run -0 bio "$s" -c 'write 0 1M -S 7' -c 'write 8M 64k -P 0x3c' -c flush -c 'verify 0 1M -S 7'
  # A second connection, as after a QEMU restart.
  run -0 bio "$s" -c 'verify 8M 64k -P 0x3c'
  # What example.conf asks for: its serial and 4 queues.
  run -0 bio "$s" id
  [ "$output" = vm1-disk0 ]
  run -0 bio "$s" info
  grep -q -x -E 'queues +4' <<< "$output"
}

@test "blkgate@.service: systemd-analyze verify finds nothing to say about an instance" {
  requires systemd-analyze
  local d=$tmp/units
  mkdir -p "$d"
  # verify wants ExecStart's program to exist: the build tree's, at the installed path's place.
  sed "s|^ExecStart=[^ ]*|ExecStart=$BLKGATE|" "$unit" > "$d/blkgate@.service"
  grep -q "^ExecStart=$BLKGATE " "$d/blkgate@.service"
  run -0 --separate-stderr systemd-analyze verify --man=no "$d/blkgate@vm1.service"
  # It exits 0 even when it ignores a setting it does not know or a bad value, with a
  # message: anything it prints is a defect of the unit.
  [ -z "$output$stderr" ]
}

@test "blkgate@.service: the paths are make's, the instance's files are under /run/blkgate" {
  [ "$(exec_start "$unit" vm1 "$example" | head -n 1)" = "$(makevar sbindir)/blkgate" ]
  [ "$(unit_value "$unit" EnvironmentFile)" = "$(makevar sysconfdir)/blkgate/%i.conf" ]
  [ "$(unit_value "$unit" PIDFile)" = /run/blkgate/%i.pid ]
  [ "$(unit_value "$unit" RuntimeDirectory)" = blkgate ]
  # Stopping one instance must not remove the others' sockets.
  [ "$(unit_value "$unit" RuntimeDirectoryPreserve)" = yes ]
  run -0 exec_start "$unit" vm1 "$example"
  [[ " ${lines[*]} " == *" --socket /run/blkgate/vm1.sock "* ]]
  [[ " ${lines[*]} " == *" --pidfile /run/blkgate/vm1.pid "* ]]
  # Daemonizing is what tells systemd (Type=forking) that the socket listens.
  [[ " ${lines[*]} " != *" -f "* && " ${lines[*]} " != *" --foreground "* ]]
  [ "$(unit_value "$unit" Type)" = forking ]
  [ "${lines[-1]}" = file=/var/lib/blkgate/vm1.img ]
}

@test "blkgate@.service: ExecStart with example.conf serves I/O, with the unit's umask and no capabilities" {
  example_disk
  start_unit "$unit" vm1 "$tmp/etc/vm1.conf" "$BLKGATE"
  # No capability left, no new ones to gain.
  grep -q -x 'CapEff:[[:space:]]*0*' "/proc/$gateway_pid/status"
  grep -q -x 'CapBnd:[[:space:]]*0*' "/proc/$gateway_pid/status"
  grep -q -x 'NoNewPrivs:[[:space:]]*1' "/proc/$gateway_pid/status"
  [ "$(stat -c %a "$rundir/vm1.pid")" = 600 ]
  [ "$(stat -c %a "$rundir/vm1.sock")" = 600 ]
  serves_example
  stop_gateway
  [ ! -e "$rundir/vm1.sock" ] && [ ! -e "$rundir/vm1.pid" ]
  # The data is in the image the example names.
  [ "$(sha256_range "$statedir/vm1.img" 8M 64k)" = \
    "$(head -c 64k /dev/zero | tr '\0' '\074' | sha256sum | cut -d' ' -f1)" ]
}

@test "blkgate@.service: a missing image fails the start (the first process exits 1)" {
  example_disk
  rm "$statedir/vm1.img"
  run ! start_unit "$unit" vm1 "$tmp/etc/vm1.conf" "$BLKGATE"
  [ ! -e "$rundir/vm1.sock" ]
  grep -q vm1.img "$gwlog"
}

# allowed_syscalls GROUP...: the system calls of the systemd syscall-filter groups, nested
# groups expanded.
allowed_syscalls() {
  local g w members
  for g; do
    members=$(systemd-analyze syscall-filter "$g" </dev/null |
      sed -n 's/^    \([@a-z0-9_-]*\)$/\1/p') || return 1
    [ -n "$members" ] || { echo "systemd-analyze knows no group $g" >&2; return 1; }
    for w in $members; do
      case $w in @*) allowed_syscalls "$w" || return 1 ;; *) echo "$w" ;; esac
    done
  done
}

# under_any PATH DIR...: PATH is DIR or below one of the DIRs.
under_any() {
  local p=$1 d
  shift
  for d; do
    [[ $p == "$d" || $p == "$d"/* ]] && return 0
  done
  return 1
}

@test "blkgate@.service: under strace, the gateway stays within the unit's sandbox" {
  requires strace systemd-analyze
  example_disk
  local trace=$tmp/strace.log filter families f bad=() calls path p

  # LeakSanitizer cannot work under ptrace (in a sanitizer build it would make the traced
  # daemon exit 1 at the end): off for this traced run only.
  local -x ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0"
  # strace -D: the first process is the shell's child, so its exit (the daemon is ready) is
  # seen as systemd would see it; strace goes on tracing the daemon from the side.
  start_unit "$unit" vm1 "$tmp/etc/vm1.conf" "$BLKGATE" strace -D -f -q -s 4096 -o "$trace"
  serves_example
  stop_gateway
  # strace pads the pid to five columns: "6188  +++ exited ..." has two spaces.
  wait_for 30 grep -q -E "^$gateway_pid +[+]{3} exited with 0 [+]{3}" "$trace" ||
    { echo "the daemon's exit is not in the trace" >&2; tail "$trace" >&2; return 1; }
  # From blkgate's execve on: what came before is setpriv, systemd's part.
  sed -n "\|execve(\"$BLKGATE\".* = 0\$|,\$p" "$trace" > "$tmp/blkgate.trace"
  [ -s "$tmp/blkgate.trace" ]
  echo "# $(wc -l < "$tmp/blkgate.trace") system calls traced" >&3

  # SystemCallFilter=: every system call made is in the groups it allows.
  read -r -a filter <<< "$(unit_value "$unit" SystemCallFilter)"
  allowed_syscalls "${filter[@]}" | sort -u > "$tmp/allowed"
  [ "$(wc -l < "$tmp/allowed")" -gt 100 ]
  sed -n -E 's/^[0-9]+ +([a-z0-9_]+)\(.*/\1/p' "$tmp/blkgate.trace" | sort -u > "$tmp/made"
  calls=$(comm -23 "$tmp/made" "$tmp/allowed")
  [ -z "$calls" ] || bad+=("system calls outside SystemCallFilter=${filter[*]}: $calls")

  # RestrictAddressFamilies=
  families=" $(unit_value "$unit" RestrictAddressFamilies) "
  for f in $(sed -n -E 's/^[0-9]+ +socket\(([A-Z0-9_]+),.*/\1/p' "$tmp/blkgate.trace" | sort -u); do
    [[ $families == *" $f "* ]] || bad+=("a socket of family $f")
  done

  # MemoryDenyWriteExecute=yes: no mapping both writable and executable.
  [ "$(unit_value "$unit" MemoryDenyWriteExecute)" = yes ]
  if grep -E '^[0-9]+ +(mmap|mprotect|pkey_mprotect)\(.*PROT_WRITE\|PROT_EXEC' "$tmp/blkgate.trace"; then
    bad+=("a writable and executable mapping")
  fi

  # RestrictNamespaces=yes
  if grep -E '^[0-9]+ +(unshare|setns|clone3?)\(.*CLONE_NEW' "$tmp/blkgate.trace"; then
    bad+=("a new namespace")
  fi

  # ProtectSystem=strict, PrivateTmp=: files are created, written, bound or removed only in
  # the unit's directories (here $rundir and $statedir) and /tmp; ProtectHome=yes: nothing
  # under /home or /root; PrivateDevices=yes: only the pseudo devices; ProcSubset=pid: only
  # the process directories of /proc.
  while IFS= read -r path; do
    if [[ $path == /dev/* ]]; then
      under_any "$path" /dev/null /dev/zero /dev/full /dev/random /dev/urandom /dev/tty \
        /dev/ptmx /dev/pts /dev/shm /dev/mqueue /dev/hugepages /dev/log ||
        bad+=("a device hidden by PrivateDevices=: $path")
    elif [[ $path == /proc/filesystems ]]; then
      # libselinux (loaded with GIO, which json-glib needs) reads it when it is loaded to
      # see whether selinuxfs exists; under ProcSubset=pid it is absent, which libselinux
      # takes as SELinux off.  Nothing else of /proc outside the process is allowed.
      continue
    elif [[ $path == /proc/* ]]; then
      [[ $path =~ ^/proc/(self|thread-self|[0-9]+)(/|$) ]] || bad+=("$path, outside ProcSubset=pid")
    elif under_any "$path" "$top_builddir" "$top_srcdir"; then
      continue    # the build tree's program and plugins stand for the installed ones
    elif under_any "$path" /home /root /run/user; then
      bad+=("$path, hidden by ProtectHome=")
    fi
  done < <(sed -n -E 's/^[0-9]+ +(open|openat|openat2|creat|stat|lstat|newfstatat|statx|access|faccessat2?|readlink|readlinkat|statfs|execve|chdir|mkdir|mkdirat|unlink|unlinkat|rmdir|rename|renameat2?|truncate|chmod|fchmodat|symlink|link|linkat|mknod|mknodat|mount|umount2|inotify_add_watch)\(([A-Z_]+, |-?[0-9]+, )?"(\/[^"]*)".*/\3/p' "$tmp/blkgate.trace" | sort -u)
  while IFS= read -r path; do
    under_any "$path" "$rundir" "$statedir" /tmp /var/tmp /dev /proc/self /proc/thread-self ||
      bad+=("$path written, read-only under ProtectSystem=strict")
  done < <(
    sed -n -E -e 's/^[0-9]+ +(openat|open)\((AT_FDCWD, )?"([^"]*)", [^)]*(O_WRONLY|O_RDWR|O_CREAT|O_TRUNC).*/\3/p' \
      -e 's/^[0-9]+ +(mkdir|mkdirat|unlink|unlinkat|rmdir|rename|renameat2?|truncate|chmod|fchmodat|symlink|link|linkat|mknod|mknodat)\((AT_FDCWD, )?"([^"]*)".*/\3/p' \
      -e 's/^[0-9]+ +bind\(.*sun_path="([^"]*)".*/\1/p' "$tmp/blkgate.trace" | sort -u)
  # The checks above look at these calls: they must be in the trace at all.
  grep -q -E "^[0-9]+ +bind\(.*sun_path=\"$rundir/vm1.sock\"" "$tmp/blkgate.trace"
  grep -q -E "^[0-9]+ +openat\(AT_FDCWD, \"$statedir/vm1.img\", O_RDWR" "$tmp/blkgate.trace"

  if [ ${#bad[@]} -gt 0 ]; then
    printf 'outside the sandbox: %s\n' "${bad[@]}" >&2
    return 1
  fi
}

@test "libvirt example: well-formed; a vhostuser disk on the unit's socket, reconnecting; shared memfd memory" {
  requires xmllint
  local x queues nq
  run -0 xmllint --noout "$xml"
  x() { xmllint --xpath "$1" "$xml"; }
  [ "$(x "string(/domain/devices/disk[@type='vhostuser']/@device)")" = disk ]
  # The socket of blkgate@vm1.service, as ExecStart has it.
  [[ " $(exec_start "$unit" vm1 "$example" | tr '\n' ' ') " == \
     *" --socket $(x "string(/domain/devices/disk[@type='vhostuser']/source/@path)") "* ]]
  [ "$(x "string(/domain/devices/disk[@type='vhostuser']/source/@type)")" = unix ]
  [ "$(x "string(/domain/devices/disk[@type='vhostuser']/source/reconnect/@enabled)")" = yes ]
  [ "$(x "string(/domain/devices/disk[@type='vhostuser']/source/reconnect/@timeout)")" -ge 1 ]
  [ "$(x "string(/domain/devices/disk[@type='vhostuser']/driver/@type)")" = raw ]
  [ "$(x "string(/domain/devices/disk[@type='vhostuser']/target/@bus)")" = virtio ]
  [ "$(x "string(/domain/memoryBacking/source/@type)")" = memfd ]
  [ "$(x "string(/domain/memoryBacking/access/@mode)")" = shared ]
  # No more queues than the example's gateway offers (QEMU would refuse the device).
  queues=$(x "string(/domain/devices/disk[@type='vhostuser']/driver/@queues)")
  nq=$(exec_start "$unit" vm1 "$example" | sed -n '/^--num-queues$/{n;p;}')
  [ -n "$queues" ] && [ -n "$nq" ] && [ "$queues" -le "$nq" ]
  # libvirt's own schema, where libvirt's tools are installed.
  if command -v virt-xml-validate >/dev/null; then
    run -0 virt-xml-validate "$xml" domain
  fi
}

@test "vhost-user descriptor: QEMU's schema, a block back-end at \$(sbindir)/blkgate" {
  local py
  # docs/interop/vhost-user.json: VHostUserBackend has description, type, binary and an
  # optional tags; the features are the binary's --print-capabilities, with
  # VHostUserBackendBlockFeature values only.
  py='
import json, subprocess, sys
d = json.load(open(sys.argv[1]))
assert set(d) <= {"description", "type", "binary", "tags"}, d
assert isinstance(d["description"], str) and d["description"], d
assert d["type"] == "block", d
assert d["binary"] == sys.argv[2], (d["binary"], sys.argv[2])
caps = json.loads(subprocess.check_output([sys.argv[3], "--print-capabilities"]))
assert caps["type"] == d["type"], caps
assert set(caps["features"]) <= {"read-only", "blk-file"}, caps
print(" ".join(caps["features"]))'
  run -0 python3 -c "$py" "$descriptor" "$(makevar sbindir)/blkgate" "$BLKGATE"
  [ "$output" = "read-only blk-file" ]
}
