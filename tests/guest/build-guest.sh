#!/bin/bash
# Builds the tiny guest that the integration tests boot against vhost-user-blk sockets:
# the kernel of Debian's linux-image-cloud-amd64 and an initramfs holding busybox, the virtio
# modules, dash, fio and util-linux blkdiscard (with the libraries they link).
#
# The initramfs's init decodes the base64 shell command given as guest_cmd= on the kernel
# command line, runs it with dash, prints its output between two marker lines, the second
# carrying the command's exit status, and powers the guest off.  run-guest.sh parses these
# markers.  The command runs under dash rather than busybox sh because busybox sh runs its own
# applets before anything on PATH, and its blkdiscard lacks -z.
#
# usage: build-guest.sh OUTDIR
#
# Writes OUTDIR/vmlinuz, OUTDIR/initramfs.gz and OUTDIR/stamp.  The stamp names the kernel
# package and the hash of this script; when it matches, the script does nothing, so calling it
# before every test run is cheap.  Concurrent calls on the same OUTDIR wait for each other.
# Missing tools are installed with apt-get (which needs root).

set -euo pipefail

prog=${0##*/}
self=$(realpath "$0")

die() { echo "$prog: $*" >&2; exit 1; }
note() { echo "$prog: $*" >&2; }

[ $# -eq 1 ] || { echo "usage: $prog OUTDIR" >&2; exit 2; }
out=$(realpath -m "$1")

# Modules the guest loads; modprobe pulls in what they depend on.
guest_modules="virtio_pci virtio_blk"

apt_updated=
apt_update() {
  [ -n "$apt_updated" ] && return
  [ "$(id -u)" -eq 0 ] || die "the package lists are missing and updating them needs root"
  note "apt-get update"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
  apt_updated=1
}

apt_install() {
  [ "$(id -u)" -eq 0 ] || die "missing $*: install it (apt-get install $*) or run this as root"
  note "installing $*"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2 ||
    { apt_update; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2; }
}

# need COMMAND PACKAGE: installs PACKAGE when COMMAND is not on PATH.
need() {
  command -v "$1" >/dev/null 2>&1 && return
  apt_install "$2"
  command -v "$1" >/dev/null 2>&1 || die "$1 is still missing after installing $2"
}

# The versioned package that linux-image-cloud-amd64 depends on, e.g.
# "linux-image-6.1.0-56-cloud-amd64 6.1.192-2".  Prints nothing if apt cannot tell.
kernel_package() {
  apt-cache show --no-all-versions linux-image-cloud-amd64 2>/dev/null |
    sed -n 's/^Depends:.*\(linux-image-[0-9][^ ,]*\) (= \([^)]*\)).*/\1 \2/p' | head -n 1
}

script_hash=$(sha256sum "$self" | cut -d' ' -f1)

built() {  # the stamp in OUTDIR, or nothing
  [ -s "$out/vmlinuz" ] && [ -s "$out/initramfs.gz" ] && [ -f "$out/stamp" ] && cat "$out/stamp"
  return 0
}

mkdir -p "$out"
need flock util-linux
exec 9>"$out/.lock"
flock 9

# resolve_kernel: sets kpkg ("NAME VERSION"), kname, kver and the stamp of the build to make.
resolve_kernel() {
  kpkg=$(kernel_package)
  [ -n "$kpkg" ] || return 1
  kname=${kpkg%% *}
  kver=${kname#linux-image-}
  stamp=$(printf 'kernel=%s\nscript=%s\n' "$kpkg" "$script_hash")
}

if ! resolve_kernel; then
  # No package lists.  An existing build from this script is good enough; otherwise fetch them.
  if built | grep -qx "script=$script_hash"; then
    note "cannot resolve linux-image-cloud-amd64; reusing $out"
    exit 0
  fi
  apt_update
  resolve_kernel || die "apt knows no linux-image-cloud-amd64 (is this Debian amd64?)"
fi
[ "$(built)" = "$stamp" ] && exit 0

need busybox busybox-static
need dash dash
need fio fio
need blkdiscard util-linux
need cpio cpio
need gzip gzip
need ldd libc-bin

work=$(mktemp -d "${TMPDIR:-/tmp}/blkgate-guest.XXXXXX")
trap 'rm -rf "$work"' EXIT

download() {  # apt-get download prints a harmless warning when run as root
  (cd "$work" && apt-get download -qq "$kname" 2>&1 | { grep -v 'unsandboxed as root' >&2 || true; })
  compgen -G "$work/${kname}_*.deb" >/dev/null
}
if ! download; then
  # Stale package lists name a kernel the mirror no longer has.
  apt_update
  resolve_kernel || die "apt knows no linux-image-cloud-amd64"
  [ "$(built)" = "$stamp" ] && exit 0
  download || die "could not download $kname"
fi
note "building the guest in $out from $kpkg"
dpkg-deb -x "$work/${kname}"_*.deb "$work/kernel"

root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp,usr/local/bin,lib/modules/"$kver"}

# copy_binary PATH: copies an executable to /usr/local/bin with the shared libraries it links,
# each at its host path (the dynamic loader included).
copy_binary() {
  local lib
  cp -L "$1" "$root/usr/local/bin/"
  for lib in $(ldd "$1" 2>/dev/null | grep -o '/[^ ]*'); do
    [ -e "$root$lib" ] && continue
    mkdir -p "$root${lib%/*}"
    cp -L "$lib" "$root$lib"
  done
}

cp -L "$(command -v busybox)" "$root/bin/busybox"
copy_binary "$(command -v busybox)"       # a dynamic busybox brings its libraries
rm "$root/usr/local/bin/busybox"
copy_binary "$(command -v dash)"
copy_binary "$(command -v fio)"
copy_binary "$(command -v blkdiscard)"

# The virtio modules with a modules.dep so that the guest's modprobe resolves them.
kmod=$work/kernel/lib/modules/$kver
for f in $(cd "$kmod" && find kernel/drivers/virtio kernel/drivers/block -name 'virtio*.ko*'); do
  mkdir -p "$root/lib/modules/$kver/${f%/*}"
  cp "$kmod/$f" "$root/lib/modules/$kver/$f"
done
cp "$kmod"/modules.builtin "$kmod"/modules.order "$root/lib/modules/$kver/"
busybox depmod -b "$root" "$kver"
for m in $guest_modules; do
  grep -q "/$m\.ko" "$root/lib/modules/$kver/modules.dep" ||
    grep -q "/$m\.ko" "$kmod/modules.builtin" ||
    die "$kname has no module $m"
done

cat > "$root/init" <<INIT
#!/bin/busybox sh
# Runs the command given as guest_cmd=<base64> on the kernel command line, then powers off.
/bin/busybox --install -s /bin
export PATH=/usr/local/bin:/bin HOME=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
case " \$(cat /proc/cmdline) " in
  *" guest_verbose=1 "*) ;;
  *) dmesg -n 1 ;;        # keep kernel messages off the console; dmesg still has them
esac
for m in $guest_modules; do modprobe \$m; done
cmd=\$(sed -n 's/.* guest_cmd=\([^ ]*\).*/\1/p' /proc/cmdline | base64 -d)
cd /tmp
echo "<<<blkgate-guest-begin>>>"
dash -c "\$cmd" </dev/null
rc=\$?
printf '\n<<<blkgate-guest-end rc=%d>>>\n' \$rc
if [ \$rc -ne 0 ]; then
  echo "--- guest kernel log (last 30 lines) ---"
  dmesg | tail -n 30
fi
sync
poweroff -f
INIT
chmod 755 "$root/init"

(cd "$root" && find . | LC_ALL=C sort | cpio -o -H newc --quiet | gzip -1) > "$work/initramfs.gz"
cp "$work/kernel/boot/vmlinuz-$kver" "$work/vmlinuz"
rm -f "$out/stamp"
mv "$work/vmlinuz" "$work/initramfs.gz" "$out/"
printf '%s\n' "$stamp" > "$out/stamp"
note "made $out/vmlinuz and $out/initramfs.gz ($kver)"
