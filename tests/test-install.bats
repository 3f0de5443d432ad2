#!/usr/bin/env bats
# make install, from the build tree, into a staging directory (DESTDIR): every file is where
# configure's directories say, the installed daemon finds the installed plugins and serves
# I/O, a plugin builds against the installed header through pkg-config (and the example
# plugins, copied alone out of the tree, build and serve with the installed daemon), the installed
# vhost-user descriptor names the installed daemon, and the installed systemd unit, run
# the way systemd would (contrib-helper.bash) with the installed example configuration,
# serves its disk.  make uninstall removes it all again.

load test_helper
load contrib-helper

# install_into DIR: make install DESTDIR=DIR in the build tree, its output in DIR.log.
# Run as a child of bats (and of make check): the outer make's job server and flags are
# not this make's business.
install_into() {
  env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL "${MAKE:-make}" -C "$top_builddir" install \
    DESTDIR="$1" > "$1.log" 2>&1 ||
    { echo "make install DESTDIR=$1 failed:" >&2; tail -n 40 "$1.log" >&2; return 1; }
}

setup_file() {
  root=$BATS_FILE_TMPDIR/root
  export root
  install_into "$root"
}

setup() {
  blkgate_setup
  unit_setup
  [ -x "$BLKGATE_IO" ] || { echo "$BLKGATE_IO does not exist: run make first" >&2; return 1; }
  sbindir=$(makevar sbindir)
  plugindir=$(makevar plugindir)
  filterdir=$(makevar filterdir)
  unitdir=$(makevar systemdsystemunitdir)
  docdir=$(makevar docdir)
  # The installed daemon looks for plugins in $plugindir, not under the staging directory.
  export BLKGATE_PLUGIN_PATH=$root$plugindir
  export BLKGATE_FILTER_PATH=$root$filterdir
}

# built_plugins: the names of the plugins this build tree has.
built_plugins() {
  local so
  for so in "$top_builddir"/plugins/*/.libs/blkgate-*-plugin.so; do
    [ -e "$so" ] || continue
    so=${so##*/blkgate-}
    echo "${so%-plugin.so}"
  done
}

# maps_plugin PID: the plugin shared object PID has mapped.
maps_plugin() {
  awk '$6 ~ /blkgate-.*-plugin\.so$/ { print $6; exit }' "/proc/$1/maps"
}

@test "make install: daemon, client, plugins, header, pkg-config file, man pages, unit, descriptor, examples" {
  local f p missing=() mandir plugins
  mandir=$(makevar mandir)
  mapfile -t plugins < <(built_plugins)
  [ ${#plugins[@]} -ge 3 ]   # fuse, memory and null have no optional dependency
  local expected=(
    "$sbindir/blkgate"
    "$(makevar bindir)/blkgate-io"
    "$(makevar bindir)/blkgate-ctl"
    "$(makevar includedir)/blkgate-plugin.h"
    "$(makevar includedir)/blkgate-filter.h"
    "$(makevar libdir)/pkgconfig/blkgate-plugin.pc"
    "$mandir/man8/blkgate.8"
    "$mandir/man3/blkgate-plugin.3"
    "$mandir/man3/blkgate-filter.3"
    "$mandir/man1/blkgate-io.1"
    "$mandir/man1/blkgate-ctl.1"
    "$unitdir/blkgate@.service"
    "$(makevar datadir)/qemu/vhost-user/50-blkgate.json"
    "$docdir/systemd/example.conf"
    "$docdir/systemd/README"
    "$docdir/libvirt/vm1.xml"
    "$docdir/libvirt/README"
    "$docdir/qemu/README"
    "$docdir/vhost-user/README"
    "$docdir/examples/example-sync.c"
    "$docdir/examples/example-async.c"
  )
  for p in "${plugins[@]}"; do
    expected+=("$plugindir/blkgate-$p-plugin.so" "$mandir/man1/blkgate-$p-plugin.1")
  done
  for p in delay error stats; do
    expected+=("$filterdir/blkgate-$p-filter.so" "$mandir/man1/blkgate-$p-filter.1")
  done
  [ -n "$unitdir" ] || { echo "configure was told not to install the unit" >&2; return 1; }
  for f in "${expected[@]}"; do
    [[ $f == /* ]] || { echo "not an absolute path: $f" >&2; return 1; }
    [ -f "$root$f" ] || missing+=("$f")
  done
  [ ${#missing[@]} -eq 0 ] || { printf 'not installed: %s\n' "${missing[@]}" >&2; return 1; }
  [ -x "$root$sbindir/blkgate" ] && [ -x "$root$(makevar bindir)/blkgate-io" ]
  (cd "$root" && find . -type f | sort | sed 's/^\./# /') >&3
}

@test "the installed daemon serves I/O with the installed plugins" {
  requires_plugin memory
  BLKGATE=$root$sbindir/blkgate start_gateway --control "$tmp/ctl.sock" memory size=64M
  [ "$(maps_plugin "$gateway_pid")" = "$root$plugindir/blkgate-memory-plugin.so" ]
  run -0 bio "$sock" -c 'write 0 1M -S 3' -c 'verify 0 1M -S 3'
  # The installed blkgate-ctl talks to it.
  run -0 "$root$(makevar bindir)/blkgate-ctl" -c "$tmp/ctl.sock" stats
  [[ "$output" == *'"bytes_written" : 1048576'* ]]
}

@test "pkg-config on the installed blkgate-plugin.pc: the header's directory; a plugin builds against it" {
  requires pkg-config cc
  local pc cflags
  pc=$root$(makevar libdir)/pkgconfig
  # PKG_CONFIG_SYSROOT_DIR: the staging directory in front of the -I paths, as for a sysroot.
  cflags=$(PKG_CONFIG_PATH=$pc PKG_CONFIG_SYSROOT_DIR=$root pkg-config --cflags blkgate-plugin)
  [[ " $cflags " == *" -I$root$(makevar includedir) "* ]]
  [ "$(PKG_CONFIG_PATH=$pc pkg-config --variable=plugindir blkgate-plugin)" = "$plugindir" ]
  [ "$(PKG_CONFIG_PATH=$pc pkg-config --modversion blkgate-plugin)" = "$(makevar PACKAGE_VERSION)" ]
  # The null plugin's source, with the installed header only (none of the source tree's).
  # shellcheck disable=SC2086  # cflags is a list of options
  cc -std=gnu11 -Wall -Werror -shared -fPIC $cflags -o "$tmp/my-null.so" \
    "$top_srcdir/plugins/null/null.c"
  run -0 --separate-stderr "$root$sbindir/blkgate" --dump-plugin "$tmp/my-null.so"
  [[ "$output" == *null* ]]
  BLKGATE=$root$sbindir/blkgate start_gateway "$tmp/my-null.so" size=1G
  run -0 bio "$sock" -c 'write 0 64k' -c 'verify 0 64k -P 0'
}

@test "the installed example plugin sources, copied alone, build against the installed .pc and serve" {
  requires pkg-config cc
  local pc cflags src name dir=$tmp/oot
  pc=$root$(makevar libdir)/pkgconfig
  cflags=$(PKG_CONFIG_PATH=$pc PKG_CONFIG_SYSROOT_DIR=$root pkg-config --cflags blkgate-plugin)
  for src in example-sync example-async; do
    # The installed copy of the source file alone, in a directory of its own: no
    # config.h, no source tree.
    cmp "$root$docdir/examples/$src.c" "$top_srcdir/plugins/example/$src.c"
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$root$docdir/examples/$src.c" "$dir/"
    name=blkgate-$src-plugin.so
    # shellcheck disable=SC2086  # cflags is a list of options
    (cd "$dir" && cc $cflags -Wall -Werror -shared -fPIC -pthread -o "$name" "$src.c")
    [ "$(ls "$dir")" = "$name"$'\n'"$src.c" ]
    # Found by name, before the installed copy, through $BLKGATE_PLUGIN_PATH.
    BLKGATE_PLUGIN_PATH=$dir:$BLKGATE_PLUGIN_PATH \
      BLKGATE=$root$sbindir/blkgate start_gateway --num-queues 2 "$src" 32M
    [ "$(maps_plugin "$gateway_pid")" = "$dir/$name" ]
    run -0 bio -Q 2 "$sock" -c 'write 0 1M -S 21' -c 'queue 1' -c 'verify 0 1M -S 21' \
      -c 'write 31M 1M -P 0x77' -c 'queue 0' -c 'verify 31M 1M -P 0x77' \
      -c 'zero 0 64k' -c 'verify 0 64k -P 0' -c 'verify 64k 64k -S 21'
    stop_gateway
  done
}

@test "the installed daemon loads the installed filters; a filter builds against the installed header" {
  requires_plugin memory
  requires pkg-config cc
  local pc cflags
  pc=$root$(makevar libdir)/pkgconfig
  [ "$(PKG_CONFIG_PATH=$pc pkg-config --variable=filterdir blkgate-plugin)" = "$filterdir" ]
  run -0 "$root$sbindir/blkgate" --filter=stats --dump-plugin memory
  [[ "$output" == *"filter_path=$root$filterdir/blkgate-stats-filter.so"* ]]
  cflags=$(PKG_CONFIG_PATH=$pc PKG_CONFIG_SYSROOT_DIR=$root pkg-config --cflags blkgate-plugin)
  # shellcheck disable=SC2086  # cflags is a list of options
  cc -std=gnu11 -Wall -Werror -shared -fPIC $cflags -o "$tmp/my-error.so" \
    "$top_srcdir/filters/error/error.c"
  BLKGATE=$root$sbindir/blkgate start_gateway --filter="$tmp/my-error.so" memory size=1M \
    error-write-rate=1
  run -0 bio "$sock" -c 'read 0 64k'
  run -1 bio "$sock" -c 'write 0 64k'
  [[ "$output" == *"status IOERR"* ]]
}

@test "the installed vhost-user descriptor names the installed daemon, which follows the back-end conventions" {
  requires_plugin file
  local binary py
  py='
import json, subprocess, sys
d = json.load(open(sys.argv[1]))
assert set(d) <= {"description", "type", "binary", "tags"} and d["type"] == "block", d
caps = json.loads(subprocess.check_output([sys.argv[2] + d["binary"], "--print-capabilities"]))
assert caps["type"] == "block" and "read-only" in caps["features"] and "blk-file" in caps["features"], caps
print(d["binary"])'
  run -0 python3 -c "$py" "$root$(makevar datadir)/qemu/vhost-user/50-blkgate.json" "$root"
  binary=$output
  [ "$binary" = "$sbindir/blkgate" ]
  # --socket-path, --blk-file and --read-only (its "features"), in the foreground (-f: a
  # management layer starting it must add it, the conventions want no daemonizing).
  truncate -s 16M "$tmp/disk.img"
  random_at "$tmp/disk.img" 0 64k
  start_daemon backend "$root$binary" -f --socket-path="$sock" --read-only --blk-file="$tmp/disk.img"
  wait_for_socket "$sock"
  [ "$(maps_plugin "$(cat "$tmp/.pids/daemon.backend")")" = "$root$plugindir/blkgate-file-plugin.so" ]
  run -0 bio "$sock" info
  [[ "$output" == *" RO"* ]]
  run -0 bio "$sock" -c "verify 0 64k -i $tmp/disk.img"
  run ! bio "$sock" -c 'write 0 4k'
}

@test "the installed unit passes systemd-analyze verify" {
  requires systemd-analyze
  local d=$tmp/units
  mkdir -p "$d"
  # Its program is the installed one, under the staging directory here.
  grep -q "^ExecStart=$sbindir/blkgate " "$root$unitdir/blkgate@.service"
  sed "s|^ExecStart=$sbindir/|ExecStart=$root$sbindir/|" "$root$unitdir/blkgate@.service" \
    > "$d/blkgate@.service"
  run -0 --separate-stderr systemd-analyze verify --man=no "$d/blkgate@vm1.service"
  [ -z "$output$stderr" ]
}

@test "the installed unit's ExecStart with the installed example.conf serves I/O" {
  requires_plugin file
  local unit=$root$unitdir/blkgate@.service
  mkdir -p "$tmp/etc"
  cp "$root$docdir/systemd/example.conf" "$tmp/etc/vm1.conf"
  truncate -s 64M "$statedir/vm1.img"
  [ "$(exec_start "$unit" vm1 "$tmp/etc/vm1.conf" | head -n 1)" = "$sbindir/blkgate" ]
  start_unit "$unit" vm1 "$tmp/etc/vm1.conf" "$root$sbindir/blkgate"
  [ "$(maps_plugin "$gateway_pid")" = "$root$plugindir/blkgate-file-plugin.so" ]
  run -0 bio "$rundir/vm1.sock" -c 'write 0 1M -S 9' -c flush -c 'verify 0 1M -S 9'
  run -0 bio "$rundir/vm1.sock" id
  [ "$output" = vm1-disk0 ]
  stop_gateway
}

@test "make uninstall removes every file make install put there" {
  local d=$tmp/again left
  install_into "$d"
  [ -x "$d$sbindir/blkgate" ]
  env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL "${MAKE:-make}" -C "$top_builddir" uninstall \
    DESTDIR="$d" > "$d.uninstall.log" 2>&1
  left=$(find "$d" -type f -o -type l)
  [ -z "$left" ] || { echo "left after make uninstall: $left" >&2; return 1; }
}
