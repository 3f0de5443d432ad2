#!/usr/bin/env bats
# A malicious guest: blkgate-io bad-chain writes one hostile request or descriptor chain by hand
# (bad-chain list; the kinds are in blkgate-io(1)) and reports what blkgate did with it:
#   ring-error        the ring was stopped and the error eventfd written
#   completed-ioerr   the request completed with VIRTIO_BLK_S_IOERR
#   completed-unsupp  ... with VIRTIO_BLK_S_UNSUPP
#   completed-ok      ... with OK, and (for the kinds that check it) the data landed right
# Each case expects exactly one outcome, the line of blkgate's log that says why, blkgate alive
# and serving a fresh front-end afterwards (bad-chain checks that itself), and no descriptor
# leaked.  Built with --enable-sanitizers, any out-of-bounds access aborts the daemon, and the
# teardown fails on any sanitizer report in the log.

load test_helper

setup() {
  blkgate_setup
  [ -x "$BLKGATE_IO" ] || { echo "$BLKGATE_IO does not exist: run make first" >&2; return 1; }
}

# bad KIND OUTCOME LOG-REGEX [BLKGATE-IO OPTIONS...]: one hostile request against a fresh
# disk, a 64 MiB memory disk unless $disk says otherwise (a plugin and its arguments).
# LOG-REGEX is matched against blkgate's log (-v: refused requests are logged at debug level,
# broken rings always); an empty one matches nothing in particular.
bad() {
  local kind=$1 outcome=$2 why=$3 before reset=ok
  shift 3
  # After the case, bad-chain resets the device as a guest would (libvuclient cannot stop a
  # packed ring: the packed kinds skip that).
  [[ $kind != packed-* ]] || reset=skipped
  [ -n "${disk:-}" ] || disk="memory size=64M"
  requires_plugin "${disk%% *}"
  # shellcheck disable=SC2086 # $disk is a plugin and its arguments
  start_gateway -v $disk
  before=$(fd_count)

  run -0 bio "$@" "$sock" bad-chain "$kind" --wait 5000 --expect "$outcome"
  clean_output
  [[ "$output" == *"bad-chain $kind: outcome=$outcome control=ok reset=$reset alive=yes"* ]]
  if [ "$outcome" = ring-error ]; then
    grep -q -E "queue 0: $why: ring stopped until the device is reset" "$gwlog"
  elif [ -n "$why" ]; then
    grep -q -E "queue 0: request [0-9]+ refused: $why" "$gwlog"
  fi
  alive "$gateway_pid"
  fds_back "$gateway_pid" "$before"
}

# slow_disk DELAY: a 64 MiB image $tmp/backing.img behind slowfs (tests/tools/slowfs.c) at
# $mnt/disk, every read and write delayed (DELAY as slowfs takes it: up to N µs, or =N µs).
slow_disk() {
  requires_plugin file
  local slowfs=$top_builddir/tests/slowfs
  mnt=$tmp/mnt
  [ -x "$slowfs" ] || missing "tests/slowfs is not built (libfuse3 missing)"
  requires fusermount3
  [ -e /dev/fuse ] || missing "/dev/fuse is not available"
  truncate -s 64M "$tmp/backing.img"
  mkdir -p "$mnt"
  start_daemon slowfs "$slowfs" "$tmp/backing.img" "$mnt" "$1"
  wait_for 10 test -e "$mnt/disk"
}

past_end='range unaligned or past the end of the disk'
seg_past_end='segment too long, unaligned or past the end'

# --- The ring's rules -----------------------------------------------------------------------

@test "loop: two descriptors, the second readable after a writable one" {
  bad loop ring-error 'readable descriptor after a writable one'
}
@test "loop-writable: a loop of writable descriptors is stopped by the length bound" {
  bad loop-writable ring-error 'looped descriptor chain'
}
@test "self-loop" { bad self-loop ring-error 'looped descriptor chain'; }
@test "head-range: an avail entry beyond the ring" {
  bad head-range ring-error 'head outside the ring'
}
@test "next-range: a next index beyond the ring" {
  bad next-range ring-error 'descriptor index out of range'
}
@test "outside: a buffer beyond guest memory" {
  bad outside ring-error 'descriptor points outside guest memory'
}
@test "straddle: a buffer across the end of guest memory" {
  bad straddle ring-error 'descriptor points outside guest memory'
}
@test "overflow: addr + len wraps 2^64" {
  bad overflow ring-error 'descriptor points outside guest memory'
}
@test "no-status: no writable descriptor" {
  bad no-status ring-error 'request has no writable status byte'
}
@test "write-then-read" {
  bad write-then-read ring-error 'readable descriptor after a writable one'
}
@test "indirect-nested" { bad indirect-nested ring-error 'nested indirect descriptor'; }
@test "indirect-next: INDIRECT with NEXT" {
  bad indirect-next ring-error 'bad indirect descriptor'
}
@test "indirect-len: a table length not a multiple of 16" {
  bad indirect-len ring-error 'bad indirect descriptor'
}
@test "indirect-huge: a table longer than the ring" {
  bad indirect-huge ring-error 'indirect table longer than the ring'
}
@test "indirect-outside: a table beyond guest memory" {
  bad indirect-outside ring-error 'indirect table outside guest memory'
}
@test "indirect-loop" { bad indirect-loop ring-error 'looped indirect descriptor chain'; }
@test "indirect-in-chain: an indirect descriptor after a direct one" {
  bad indirect-in-chain ring-error 'indirect descriptor inside a chain'
}
@test "avail-jump: avail->idx jumps beyond the ring size" {
  bad avail-jump ring-error 'avail index moved further than the ring size'
}

# --- The status byte and the header ----------------------------------------------------------

@test "short-header: 8 header bytes" {
  bad short-header completed-ioerr 'header shorter than 16 bytes'
}
@test "zero-header: a header descriptor of length 0" {
  bad zero-header completed-ioerr 'header shorter than 16 bytes'
}
@test "status-readable: the status descriptor is device-readable" {
  bad status-readable ring-error 'readable descriptor after a writable one'
}
@test "status-readable-only: a flush without a writable descriptor" {
  bad status-readable-only ring-error 'request has no writable status byte'
}
@test "zero-status-only: the only writable descriptor has length 0" {
  bad zero-status-only ring-error 'request has no writable status byte'
}

# A status descriptor of length 0 after 512 bytes of data: framing is by bytes (virtio 2.6.4),
# so the status goes into the last writable byte, the data's 512th, and the 511 bytes before it
# are not a whole sector: IOERR, written there.
@test "zero-status: the status lands in the data's last byte, as IOERR" {
  bad zero-status status-in-data-ioerr "$past_end"
}

# A read with no data bytes reads nothing, successfully.
@test "zero-data: a data descriptor of length 0 is an empty read" { bad zero-data completed-ok ''; }

# --- Good requests in unusual shapes: a correct device serves them ---------------------------

@test "split-header-2: a write whose header is in two descriptors is served, data verified" {
  bad split-header-2 completed-ok ''
}
@test "split-header-3: a read whose header is in three descriptors is served, data verified" {
  bad split-header-3 completed-ok ''
}
@test "merged-header: header and data in one descriptor is served, data verified" {
  bad merged-header completed-ok ''
}
# Guest memory is contiguous in guest-physical addresses whatever the regions: a buffer across
# two of them is a good buffer, and blkgate splits it into two iovecs.
@test "region-span: a data buffer across two memory regions is served, data verified" {
  bad region-span completed-ok '' --regions 2
}
@test "long-chain: a read chaining every descriptor of the ring is served, data verified" {
  bad long-chain completed-ok ''
}
@test "long-chain with 8 memory regions and a 64-entry ring" {
  bad long-chain completed-ok '' --regions 8 --queue-size 64
}

# --- Requests that turn on the ring ---------------------------------------------------------

# The same head made available twice while its first request is still in flight (every
# request takes 200 ms): the second is a reuse of a head in flight.  (On a disk that completes
# at once, both may be served: that is why this one runs on slow storage.)
@test "head-twice: a head made available again while in flight" {
  slow_disk =200000
  disk="file file=$mnt/disk" bad head-twice ring-error 'guest reused a head that is still in flight'
}

# A read into the avail ring itself is a good request; kicked again, blkgate finds avail->idx
# garbage (the disk's pattern) and stops the ring.
@test "read-into-avail: a read over the avail ring, then a kick" {
  bad read-into-avail completed-ok-then-ring-error ''
  grep -q -E 'queue 0: avail index moved further than the ring size: ring stopped' "$gwlog"
}

# --- Sectors and lengths ---------------------------------------------------------------------

@test "read-past-end" { bad read-past-end completed-ioerr "$past_end"; }
@test "read-straddle-end" { bad read-straddle-end completed-ioerr "$past_end"; }
@test "read-wrap: sector * 512 + len wraps 2^64" { bad read-wrap completed-ioerr "$past_end"; }
@test "read-sector-wrap: sector * 512 wraps 2^64" {
  bad read-sector-wrap completed-ioerr "$past_end"
}
@test "write-past-end" { bad write-past-end completed-ioerr "$past_end"; }
@test "write-straddle-end" { bad write-straddle-end completed-ioerr "$past_end"; }
@test "write-wrap" { bad write-wrap completed-ioerr "$past_end"; }
@test "write-sector-wrap" { bad write-sector-wrap completed-ioerr "$past_end"; }
@test "odd-read: 511 bytes" { bad odd-read completed-ioerr "$past_end"; }
@test "odd-write: 513 bytes" { bad odd-write completed-ioerr "$past_end"; }
@test "bad-type: request type 99" { bad bad-type completed-unsupp 'unknown request type'; }

# --- Discard and write-zeroes segments -------------------------------------------------------

@test "discard-past-end" { bad discard-past-end completed-ioerr "$seg_past_end"; }
@test "discard-straddle-end" { bad discard-straddle-end completed-ioerr "$seg_past_end"; }
@test "discard-wrap" { bad discard-wrap completed-ioerr "$seg_past_end"; }
@test "discard-sector-wrap" { bad discard-sector-wrap completed-ioerr "$seg_past_end"; }
@test "discard-too-many: 33 segments, max_discard_seg is 32" {
  bad discard-too-many completed-ioerr 'bad number of segments'
}
@test "discard-too-long: longer than max_discard_sectors" {
  bad discard-too-long completed-ioerr "$seg_past_end"
}
@test "discard-flags: UNMAP is not a discard flag" {
  bad discard-flags completed-unsupp 'unknown segment flags'
}
@test "discard-empty: no segment" { bad discard-empty completed-ioerr 'bad number of segments'; }
@test "discard-partial: 20 bytes of segments" {
  bad discard-partial completed-ioerr 'bad number of segments'
}
@test "zero-past-end" { bad zero-past-end completed-ioerr "$seg_past_end"; }
@test "zero-straddle-end" { bad zero-straddle-end completed-ioerr "$seg_past_end"; }
@test "zero-wrap" { bad zero-wrap completed-ioerr "$seg_past_end"; }
@test "zero-sector-wrap" { bad zero-sector-wrap completed-ioerr "$seg_past_end"; }
@test "zero-too-many: 33 segments" { bad zero-too-many completed-ioerr 'bad number of segments'; }
@test "zero-too-long: longer than max_write_zeroes_sectors" {
  bad zero-too-long completed-ioerr "$seg_past_end"
}
@test "zero-flags: an undefined flag" { bad zero-flags completed-unsupp 'unknown segment flags'; }
@test "zero-empty: no segment" { bad zero-empty completed-ioerr 'bad number of segments'; }
@test "zero-partial: 20 bytes of segments" {
  bad zero-partial completed-ioerr 'bad number of segments'
}

# A segment of 0 sectors does nothing, successfully, whatever the plugin (the file plugin's
# fallocate refuses a length of 0: blkgate does not ask it).
@test "discard-no-sectors: a segment of 0 sectors is a no-op" {
  bad discard-no-sectors completed-ok ''
}
@test "zero-no-sectors: a segment of 0 sectors is a no-op" { bad zero-no-sectors completed-ok ''; }
@test "discard-no-sectors on a file disk" {
  truncate -s 64M "$tmp/disk.img"
  disk="file file=$tmp/disk.img" bad discard-no-sectors completed-ok ''
}
@test "zero-no-sectors on a file disk" {
  truncate -s 64M "$tmp/disk.img"
  disk="file file=$tmp/disk.img" bad zero-no-sectors completed-ok ''
}

@test "every kind bad-chain knows has a test here" {
  local k
  for k in $(bio "$BATS_TEST_DIRNAME/none.sock" bad-chain list | cut -d' ' -f1); do
    grep -q -E "^@test \"$k[:\" ]" "$BATS_TEST_FILENAME" || { echo "no test for $k" >&2; return 1; }
  done
}

# --- A guest that rewrites headers while blkgate works ---------------------------------------
#
# header-race submits rounds of 32 writes of the disk's last 4 KiB while another thread keeps
# flipping each header between that write and a read or write at the disk's end.  blkgate copies
# the header once; had it read the sector again after checking it, some write would land past
# the end.  What the test sees: every request completes with OK or IOERR (never another status,
# never a broken ring), blkgate lives, and the disk does not grow (a file image would grow under
# a write past its end; the memory disk would fault).  Whether a given request saw the old or
# the new header is not observable and not asserted.

race_ok() {
  [[ "$output" == *"bad-chain header-race: "*" ok, "*" ioerr, 0 other, "* ]]
  [[ "$output" == *"outcome=completed-ok-or-ioerr control=ok reset=ok alive=yes"* ]]
}

@test "header-race on a memory disk: OK or IOERR only, blkgate lives" {
  requires_plugin memory
  start_gateway memory size=64M
  run -0 bio "$sock" bad-chain header-race
  clean_output
  race_ok
  alive "$gateway_pid"
}

@test "header-race on slow storage: no write lands past the end of the image" {
  slow_disk 2000
  start_gateway file file="$mnt/disk"

  run -0 bio "$sock" bad-chain header-race
  clean_output
  race_ok
  alive "$gateway_pid"
  [ "$(stat -c %s "$tmp/backing.img")" -eq $((64 * 1024 * 1024)) ]
}

# --- The packed ring -------------------------------------------------------------------------
# The packed-* kinds reconnect with VIRTIO_F_RING_PACKED and write one chain at slot 0 by hand.

@test "packed-good: a good read in a packed ring (the harness works)" {
  bad packed-good completed-ok ''
}
@test "packed-indirect: a good read through an indirect table" {
  bad packed-indirect completed-ok ''
}
@test "packed-endless: NEXT in every slot" {
  bad packed-endless ring-error 'descriptor chain longer than the ring'
}
@test "packed-not-avail: a chained descriptor not made available" {
  bad packed-not-avail ring-error 'chained descriptor not marked available'
}
@test "packed-id-range: a buffer id past the ring" {
  bad packed-id-range ring-error 'buffer id out of range'
}
@test "packed-id-twice: a buffer id reused while in flight (slow storage)" {
  slow_disk =200000
  disk="file file=$mnt/disk" bad packed-id-twice ring-error 'buffer id already in flight'
}
@test "packed-outside: a buffer across the end of guest memory" {
  bad packed-outside ring-error 'descriptor points outside guest memory'
}
@test "packed-no-status" { bad packed-no-status ring-error 'request has no writable status byte'; }
@test "packed-write-then-read" {
  bad packed-write-then-read ring-error 'readable descriptor after a writable one'
}
@test "packed-indirect-nested" {
  bad packed-indirect-nested ring-error 'nested indirect descriptor'
}
@test "packed-indirect-len" { bad packed-indirect-len ring-error 'bad indirect descriptor'; }
@test "packed-indirect-huge" {
  bad packed-indirect-huge ring-error 'indirect table longer than the ring'
}
@test "packed-indirect-outside" {
  bad packed-indirect-outside ring-error 'indirect table outside guest memory'
}
@test "packed-indirect-in-chain" {
  bad packed-indirect-in-chain ring-error 'indirect descriptor inside a chain'
}
