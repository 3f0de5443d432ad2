/* Unit tests for src/daemon/blk.c: parsing virtio-blk requests from
 * readable/writable iovecs (header anywhere, status byte popped from
 * the end), range checks, DISCARD/WRITE_ZEROES segments, GET_ID,
 * blk_finish and the feature bits / config space. */

#include <config.h>

#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "blk.h"
#include "tap.h"

#define MiB (1024 * 1024)

static uint8_t mem[64 * 1024];  /* the "guest" buffers */
static struct iovec iov[40];
static unsigned niov, nout;
static struct blk_req req;

static struct blk_dev
dev512 (void)
{
  struct blk_dev d = {
    .size = MiB, .blk_size = 512, .can_flush = true, .can_discard = true,
    .can_zero = true, .zero_may_unmap = true, .wce = true,
    .max_discard_sectors = 1024, .max_zero_sectors = 2048, .num_queues = 4,
  };
  memcpy (d.serial, "blkgate-serial", 14);
  return d;
}

static struct blk_dev
dev4k (void)
{
  struct blk_dev d = dev512 ();
  d.size = 4 * MiB;
  d.blk_size = 4096;
  return d;
}

static void
start (void)
{
  memset (mem, 0xee, sizeof mem);
  memset (iov, 0, sizeof iov);
  memset (&req, 0x5a, sizeof req);
  niov = nout = 0;
}

/* Appends a readable iovec (must come before any writable one). */
static void
rd (size_t off, size_t len)
{
  iov[niov++] = (struct iovec) { mem + off, len };
  nout = niov;
}

static void
wr (size_t off, size_t len)
{
  iov[niov++] = (struct iovec) { mem + off, len };
}

static void
hdr_at (size_t off, uint32_t type, uint64_t sector)
{
  struct virtio_blk_outhdr h = { .type = htole32 (type), .ioprio = 0,
                                 .sector = htole64 (sector) };
  memcpy (mem + off, &h, sizeof h);
}

static void
seg_at (size_t off, uint64_t sector, uint32_t num, uint32_t flags)
{
  struct virtio_blk_discard_write_zeroes s = {
    .sector = htole64 (sector), .num_sectors = htole32 (num),
    .flags = htole32 (flags),
  };
  memcpy (mem + off, &s, sizeof s);
}

static int
parse (const struct blk_dev *d)
{
  return blk_parse (d, &req, iov, niov, nout);
}

/* The request finished during parsing with this status. */
static bool
done_with (uint8_t status)
{
  return req.op == BLK_OP_NONE && req.status == status;
}

/* Common shapes: header at 0, data at 0x1000, status at 0x8000. */
static int
simple (const struct blk_dev *d, uint32_t type, uint64_t sector, size_t len)
{
  start ();
  hdr_at (0, type, sector);
  rd (0, 16);
  if (type == VIRTIO_BLK_T_OUT && len)
    rd (0x1000, len);
  else if (len)
    wr (0x1000, len);
  wr (0x8000, 1);
  return parse (d);
}

static void
test_read_write (void)
{
  struct blk_dev d = dev512 ();
  int r;

  /* IN, header split 8 + 8 across two iovecs. */
  start ();
  hdr_at (0x100, VIRTIO_BLK_T_IN, 7);
  rd (0x100, 8);
  rd (0x108, 8);
  wr (0x1000, 4096);
  wr (0x8000, 1);
  r = parse (&d);
  ok (r == 0 && req.op == BLK_OP_READ, "IN with a split header parsed");
  ok (req.offset == 7 * 512 && req.len == 4096, "offset 3584, len 4096");
  ok (req.ndata == 1 && req.data[0].iov_base == mem + 0x1000 &&
      req.data[0].iov_len == 4096, "data is the writable buffer");
  ok (req.status_ptr == mem + 0x8000, "status is the 1-byte last iovec");
  is_int (req.in_len, 4096, "in_len 4096");
  is_int (blk_finish (&req, 0), 4097, "blk_finish: used len = data + 1");
  is_int (mem[0x8000], VIRTIO_BLK_S_OK, "status byte OK written");

  /* Header split 5 + 7 + 4, data over three iovecs, status sharing the
   * last one. */
  start ();
  hdr_at (0x100, VIRTIO_BLK_T_IN, 0);
  rd (0x100, 5);
  rd (0x105, 7);
  rd (0x10c, 4);
  wr (0x1000, 512);
  wr (0x2000, 1024);
  wr (0x3000, 512 + 1);
  r = parse (&d);
  ok (r == 0 && req.op == BLK_OP_READ && req.len == 2048,
      "IN: header in three pieces, 2048 bytes of data");
  ok (req.ndata == 3 && req.data[2].iov_base == mem + 0x3000 &&
      req.data[2].iov_len == 512, "last data iovec trimmed by one byte");
  ok (req.status_ptr == mem + 0x3000 + 512,
      "status is the last byte of the shared iovec");
  is_int (blk_finish (&req, 0), 2049, "used len 2049");
  ok (mem[0x3000 + 512] == 0 && mem[0x3000 + 511] == 0xee,
      "only the status byte written");

  /* Status alone in its own iovec after several data iovecs. */
  start ();
  hdr_at (0, VIRTIO_BLK_T_IN, 8);
  rd (0, 16);
  wr (0x1000, 512);
  wr (0x2000, 512);
  wr (0x8000, 1);
  r = parse (&d);
  ok (r == 0 && req.ndata == 2 && req.len == 1024 &&
      req.status_ptr == mem + 0x8000, "status in its own iovec: 2 data iovecs");

  /* OUT: header and data in the same iovec. */
  start ();
  hdr_at (0x10, VIRTIO_BLK_T_OUT, 100);
  rd (0x10, 16 + 1024);
  wr (0x8000, 1);
  r = parse (&d);
  ok (r == 0 && req.op == BLK_OP_WRITE && req.offset == 100 * 512 &&
      req.len == 1024, "OUT: header and data in one iovec");
  ok (req.ndata == 1 && req.data[0].iov_base == mem + 0x20 &&
      req.data[0].iov_len == 1024, "data starts right after the header");
  is_int (req.in_len, 0, "OUT: in_len 0");
  ok (!req.fua, "wce on: no FUA");
  is_int (blk_finish (&req, 0), 1, "OUT: used len 1");

  /* OUT: header split 10 + (6 + data), then more data. */
  start ();
  hdr_at (0x100, VIRTIO_BLK_T_OUT, 2);
  rd (0x100, 10);
  rd (0x10a, 6 + 512);
  rd (0x2000, 1024);
  wr (0x8000, 1);
  r = parse (&d);
  ok (r == 0 && req.op == BLK_OP_WRITE && req.len == 1536 &&
      req.ndata == 2 && req.data[0].iov_base == mem + 0x110 &&
      req.data[0].iov_len == 512 && req.data[1].iov_base == mem + 0x2000,
      "OUT: header ending inside the second iovec");

  /* Status sharing an iovec with nothing else writable: OUT, 2 bytes. */
  start ();
  hdr_at (0, VIRTIO_BLK_T_OUT, 0);
  rd (0, 16 + 512);
  wr (0x8000, 2);
  r = parse (&d);
  ok (r == 0 && req.op == BLK_OP_WRITE && req.status_ptr == mem + 0x8001,
      "OUT: status is the last byte of a 2-byte writable iovec");

  /* FUA when the guest turned the cache off. */
  d.wce = false;
  ok (simple (&d, VIRTIO_BLK_T_OUT, 0, 512) == 0 && req.fua,
      "wce off: writes are FUA");
  d.can_flush = false;
  ok (simple (&d, VIRTIO_BLK_T_OUT, 0, 512) == 0 && !req.fua,
      "no flush support: no FUA");
  d = dev512 ();

  /* Ranges. */
  ok (simple (&d, VIRTIO_BLK_T_IN, 2047, 512) == 0 && req.op == BLK_OP_READ,
      "read of the last sector");
  ok (simple (&d, VIRTIO_BLK_T_IN, 2047, 1024) == 0 &&
      done_with (VIRTIO_BLK_S_IOERR), "read running past the end: IOERR");
  ok (simple (&d, VIRTIO_BLK_T_IN, 2048, 512) == 0 &&
      done_with (VIRTIO_BLK_S_IOERR), "read at the capacity: IOERR");
  ok (simple (&d, VIRTIO_BLK_T_OUT, 2048, 512) == 0 &&
      done_with (VIRTIO_BLK_S_IOERR), "write at the capacity: IOERR");
  ok (simple (&d, VIRTIO_BLK_T_IN, UINT64_C (1) << 55, 512) == 0 &&
      done_with (VIRTIO_BLK_S_IOERR), "sector 2^55 (sector * 512 wraps): IOERR");
  ok (simple (&d, VIRTIO_BLK_T_OUT, (UINT64_C (1) << 55) + 1, 512) == 0 &&
      done_with (VIRTIO_BLK_S_IOERR), "sector 2^55 + 1: IOERR");
  ok (simple (&d, VIRTIO_BLK_T_IN, UINT64_MAX, 512) == 0 &&
      done_with (VIRTIO_BLK_S_IOERR), "sector UINT64_MAX: IOERR");
  ok (simple (&d, VIRTIO_BLK_T_IN, 0, 100) == 0 &&
      done_with (VIRTIO_BLK_S_IOERR), "length not a multiple of 512: IOERR");
  is_int (blk_finish (&req, 0), 1, "failed request: used len 1");
  is_int (mem[0x8000], VIRTIO_BLK_S_IOERR, "status byte IOERR written");
  ok (simple (&d, VIRTIO_BLK_T_IN, 0, 0) == 0 && req.op == BLK_OP_READ &&
      req.len == 0, "empty read is a no-op read");

  /* 4096-byte blocks. */
  d = dev4k ();
  ok (simple (&d, VIRTIO_BLK_T_IN, 8, 4096) == 0 && req.op == BLK_OP_READ &&
      req.offset == 4096, "4k: read of block 1 (sector 8)");
  ok (simple (&d, VIRTIO_BLK_T_IN, 1, 4096) == 0 &&
      done_with (VIRTIO_BLK_S_IOERR), "4k: sector 1 misaligned: IOERR");
  ok (simple (&d, VIRTIO_BLK_T_OUT, 4, 4096) == 0 &&
      done_with (VIRTIO_BLK_S_IOERR), "4k: write at sector 4 misaligned: IOERR");
  ok (simple (&d, VIRTIO_BLK_T_IN, 8, 512) == 0 &&
      done_with (VIRTIO_BLK_S_IOERR), "4k: 512-byte read: IOERR");
  ok (simple (&d, VIRTIO_BLK_T_OUT, 8 * 1023, 4096) == 0 &&
      req.op == BLK_OP_WRITE, "4k: write of the last block");
  ok (simple (&d, VIRTIO_BLK_T_OUT, 8 * 1024, 4096) == 0 &&
      done_with (VIRTIO_BLK_S_IOERR), "4k: write past the end: IOERR");

  /* Read-only. */
  d = dev512 ();
  d.readonly = true;
  ok (simple (&d, VIRTIO_BLK_T_OUT, 0, 512) == 0 &&
      done_with (VIRTIO_BLK_S_IOERR), "write on a read-only export: IOERR");
  ok (simple (&d, VIRTIO_BLK_T_IN, 0, 512) == 0 && req.op == BLK_OP_READ,
      "read on a read-only export works");
}

static void
test_malformed (void)
{
  struct blk_dev d = dev512 ();
  int r;

  /* Header shorter than 16 bytes: IOERR, but the status is written. */
  start ();
  hdr_at (0, VIRTIO_BLK_T_IN, 0);
  rd (0, 12);
  wr (0x1000, 512);
  wr (0x8000, 1);
  r = parse (&d);
  ok (r == 0 && done_with (VIRTIO_BLK_S_IOERR) &&
      req.status_ptr == mem + 0x8000, "12-byte header: IOERR status");
  is_int (blk_finish (&req, 0), 1, "used len 1");
  is_int (mem[0x8000], VIRTIO_BLK_S_IOERR, "status IOERR written");

  start ();
  hdr_at (0, VIRTIO_BLK_T_IN, 0);
  rd (0, 8);
  rd (8, 7);
  wr (0x8000, 1);
  ok (parse (&d) == 0 && done_with (VIRTIO_BLK_S_IOERR),
      "15-byte header in two pieces: IOERR");

  start ();
  wr (0x1000, 512);
  wr (0x8000, 1);
  ok (parse (&d) == 0 && done_with (VIRTIO_BLK_S_IOERR),
      "no readable part at all: IOERR");

  /* Nowhere to put a status. */
  start ();
  hdr_at (0, VIRTIO_BLK_T_IN, 0);
  rd (0, 16);
  rd (0x1000, 512);
  is_int (parse (&d), -1, "no writable byte: -1 (broken chain)");
  start ();
  is_int (parse (&d), -1, "empty chain: -1");

  /* Unknown types. */
  {
    static const uint32_t types[] = { VIRTIO_BLK_T_SCSI_CMD, 3, 5, 10,
                                      VIRTIO_BLK_T_SECURE_ERASE, 15, 16, 24,
                                      VIRTIO_BLK_T_BARRIER,
                                      VIRTIO_BLK_T_BARRIER | VIRTIO_BLK_T_OUT,
                                      UINT32_MAX };
    size_t i;
    for (i = 0; i < sizeof types / sizeof types[0]; i++) {
      r = simple (&d, types[i], 0, 512);
      ok (r == 0 && done_with (VIRTIO_BLK_S_UNSUPP),
          "type 0x%x: UNSUPP", types[i]);
    }
    is_int (blk_finish (&req, 0), 1, "UNSUPP: used len 1");
    is_int (mem[0x8000], VIRTIO_BLK_S_UNSUPP, "status UNSUPP written");
  }
}

static void
test_flush (void)
{
  struct blk_dev d = dev512 ();

  ok (simple (&d, VIRTIO_BLK_T_FLUSH, 0, 0) == 0 && req.op == BLK_OP_FLUSH,
      "FLUSH");
  ok (simple (&d, VIRTIO_BLK_T_FLUSH, 12345, 0) == 0 &&
      req.op == BLK_OP_FLUSH, "FLUSH ignores the sector");
  is_int (blk_finish (&req, 0), 1, "FLUSH: used len 1");
  ok (simple (&d, VIRTIO_BLK_T_FLUSH, 0, 0) == 0, "FLUSH again");
  is_int (blk_finish (&req, EIO), 1, "failed FLUSH: used len 1");
  is_int (mem[0x8000], VIRTIO_BLK_S_IOERR, "failed FLUSH: IOERR");
  d.can_flush = false;
  ok (simple (&d, VIRTIO_BLK_T_FLUSH, 0, 0) == 0 &&
      done_with (VIRTIO_BLK_S_UNSUPP), "FLUSH without flush support: UNSUPP");
  d.readonly = true;
  ok (simple (&d, VIRTIO_BLK_T_FLUSH, 0, 0) == 0 &&
      done_with (VIRTIO_BLK_S_OK),
      "FLUSH on a read-only export without flush: OK (nothing to flush)");
}

static void
test_get_id (void)
{
  struct blk_dev d = dev512 ();
  static const uint8_t want[20] = "blkgate-serial";
  int r;

  r = simple (&d, VIRTIO_BLK_T_GET_ID, 0, 20);
  ok (r == 0 && done_with (VIRTIO_BLK_S_OK), "GET_ID: finished, OK");
  ok (memcmp (mem + 0x1000, want, 20) == 0,
      "GET_ID: serial NUL-padded to 20 bytes");
  is_int (req.in_len, 20, "GET_ID: in_len 20");
  is_int (blk_finish (&req, 0), 21, "GET_ID: used len 21");
  is_int (mem[0x8000], VIRTIO_BLK_S_OK, "GET_ID: status OK");

  r = simple (&d, VIRTIO_BLK_T_GET_ID, 0, 30);
  ok (r == 0 && memcmp (mem + 0x1000, want, 20) == 0 &&
      mem[0x1000 + 20] == 0xee && mem[0x1000 + 29] == 0xee &&
      req.in_len == 20, "GET_ID: 30-byte buffer gets 20 bytes");

  r = simple (&d, VIRTIO_BLK_T_GET_ID, 0, 10);
  ok (r == 0 && memcmp (mem + 0x1000, want, 10) == 0 &&
      mem[0x1000 + 10] == 0xee && req.in_len == 10,
      "GET_ID: 10-byte buffer gets 10 bytes");

  start ();
  hdr_at (0, VIRTIO_BLK_T_GET_ID, 0);
  rd (0, 16);
  wr (0x1000, 8);
  wr (0x2000, 12 + 1);          /* 12 bytes of id, then the status */
  r = parse (&d);
  ok (r == 0 && memcmp (mem + 0x1000, want, 8) == 0 &&
      memcmp (mem + 0x2000, want + 8, 12) == 0 && req.in_len == 20 &&
      req.status_ptr == mem + 0x2000 + 12,
      "GET_ID: split 8 + 12, status sharing the last iovec");

  memcpy (d.serial, "0123456789abcdefghij", 20);
  r = simple (&d, VIRTIO_BLK_T_GET_ID, 0, 21);
  ok (r == 0 && memcmp (mem + 0x1000, "0123456789abcdefghij", 20) == 0 &&
      mem[0x1000 + 20] == 0xee && req.in_len == 20,
      "GET_ID: a 20-character serial is not terminated");

  r = simple (&d, VIRTIO_BLK_T_GET_ID, 0, 0);
  ok (r == 0 && done_with (VIRTIO_BLK_S_OK) && req.in_len == 0,
      "GET_ID: no room at all, in_len 0");
}

/* Header at 0, segments at 0x100 (readable), status at 0x8000. */
static int
segments (const struct blk_dev *d, uint32_t type, size_t bytes)
{
  start ();
  hdr_at (0, type, 0);
  rd (0, 16);
  if (bytes)
    rd (0x100, bytes);
  wr (0x8000, 1);
  return parse (d);
}

static void
test_discard_zero (void)
{
  struct blk_dev d = dev512 ();
  int r;

  /* DISCARD, 3 segments, header and first segment in one iovec. */
  start ();
  hdr_at (0, VIRTIO_BLK_T_DISCARD, 999);
  seg_at (16, 0, 8, 0);
  seg_at (0x100, 100, 1024, 0);
  seg_at (0x110, 2047, 1, 0);
  rd (0, 32);
  rd (0x100, 32);
  wr (0x8000, 1);
  r = parse (&d);
  ok (r == 0 && req.op == BLK_OP_DISCARD && req.nseg == 3,
      "DISCARD with 3 segments over two iovecs");
  ok (req.seg[0].offset == 0 && req.seg[0].len == 8 * 512 &&
      req.seg[1].offset == 100 * 512 && req.seg[1].len == 1024 * 512 &&
      req.seg[2].offset == 2047 * 512 && req.seg[2].len == 512,
      "segment offsets and lengths in bytes");
  ok (!req.seg[0].unmap && !req.seg[1].unmap && !req.seg[2].unmap,
      "DISCARD segments have no unmap");
  is_int (blk_finish (&req, 0), 1, "DISCARD: used len 1");

  /* A segment split across iovecs. */
  start ();
  hdr_at (0, VIRTIO_BLK_T_DISCARD, 0);
  seg_at (0x100, 64, 64, 0);
  rd (0, 16);
  rd (0x100, 5);
  rd (0x105, 11);
  wr (0x8000, 1);
  ok (parse (&d) == 0 && req.op == BLK_OP_DISCARD && req.nseg == 1 &&
      req.seg[0].offset == 64 * 512 && req.seg[0].len == 64 * 512,
      "DISCARD segment split 5 + 11");

  /* WRITE_ZEROES with UNMAP on some segments. */
  start ();
  hdr_at (0, VIRTIO_BLK_T_WRITE_ZEROES, 0);
  seg_at (0x100, 10, 1024, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
  seg_at (0x110, 0, 1, 0);
  seg_at (0x120, 2040, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
  rd (0, 16);
  rd (0x100, 48);
  wr (0x8000, 1);
  r = parse (&d);
  ok (r == 0 && req.op == BLK_OP_ZERO && req.nseg == 3,
      "WRITE_ZEROES with 3 segments");
  ok (req.seg[0].offset == 10 * 512 && req.seg[0].len == 1024 * 512 &&
      req.seg[0].unmap && req.seg[1].len == 512 && !req.seg[1].unmap &&
      req.seg[2].offset == 2040 * 512 && req.seg[2].unmap,
      "offsets, lengths and unmap flags");
  d.zero_may_unmap = false;
  start ();
  hdr_at (0, VIRTIO_BLK_T_WRITE_ZEROES, 0);
  seg_at (0x100, 10, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
  rd (0, 16);
  rd (0x100, 16);
  wr (0x8000, 1);
  r = parse (&d);
  ok (r == 0 && req.op == BLK_OP_ZERO && !req.seg[0].unmap,
      "zero_may_unmap off: UNMAP flag not passed on");
  d = dev512 ();

  /* Flags. */
  start ();
  hdr_at (0, VIRTIO_BLK_T_DISCARD, 0);
  seg_at (0x100, 0, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
  rd (0, 16);
  rd (0x100, 16);
  wr (0x8000, 1);
  ok (parse (&d) == 0 && done_with (VIRTIO_BLK_S_UNSUPP),
      "DISCARD with the UNMAP flag: UNSUPP");
  start ();
  hdr_at (0, VIRTIO_BLK_T_WRITE_ZEROES, 0);
  seg_at (0x100, 0, 8, 0);
  seg_at (0x110, 8, 8, 2);
  rd (0, 16);
  rd (0x100, 32);
  wr (0x8000, 1);
  ok (parse (&d) == 0 && done_with (VIRTIO_BLK_S_UNSUPP),
      "WRITE_ZEROES with unknown flag 2 on the second segment: UNSUPP");
  start ();
  hdr_at (0, VIRTIO_BLK_T_WRITE_ZEROES, 0);
  seg_at (0x100, 0, 8, 0x80000001);
  rd (0, 16);
  rd (0x100, 16);
  wr (0x8000, 1);
  ok (parse (&d) == 0 && done_with (VIRTIO_BLK_S_UNSUPP),
      "WRITE_ZEROES with flags 0x80000001: UNSUPP");

  /* Segment counts and sizes. */
  ok (segments (&d, VIRTIO_BLK_T_DISCARD, 0) == 0 &&
      done_with (VIRTIO_BLK_S_IOERR), "DISCARD with no segment: IOERR");
  ok (segments (&d, VIRTIO_BLK_T_WRITE_ZEROES, 0) == 0 &&
      done_with (VIRTIO_BLK_S_IOERR), "WRITE_ZEROES with no segment: IOERR");
  ok (segments (&d, VIRTIO_BLK_T_DISCARD, 24) == 0 &&
      done_with (VIRTIO_BLK_S_IOERR), "24 bytes of segments: IOERR");
  ok (segments (&d, VIRTIO_BLK_T_DISCARD, 15) == 0 &&
      done_with (VIRTIO_BLK_S_IOERR), "15 bytes of segments: IOERR");
  {
    unsigned i;
    start ();
    for (i = 0; i <= BLK_MAX_SEGMENTS; i++)
      seg_at (0x100 + 16 * i, i * 8, 8, 0);
    hdr_at (0, VIRTIO_BLK_T_DISCARD, 0);
    rd (0, 16);
    rd (0x100, 16 * BLK_MAX_SEGMENTS);
    wr (0x8000, 1);
    ok (parse (&d) == 0 && req.op == BLK_OP_DISCARD &&
        req.nseg == BLK_MAX_SEGMENTS && req.seg[31].offset == 31 * 8 * 512,
        "DISCARD with %u segments", BLK_MAX_SEGMENTS);
    start ();
    for (i = 0; i <= BLK_MAX_SEGMENTS; i++)
      seg_at (0x100 + 16 * i, i * 8, 8, 0);
    hdr_at (0, VIRTIO_BLK_T_DISCARD, 0);
    rd (0, 16);
    rd (0x100, 16 * (BLK_MAX_SEGMENTS + 1));
    wr (0x8000, 1);
    ok (parse (&d) == 0 && done_with (VIRTIO_BLK_S_IOERR),
        "DISCARD with %u segments: IOERR", BLK_MAX_SEGMENTS + 1);
    start ();
    hdr_at (0, VIRTIO_BLK_T_WRITE_ZEROES, 0);
    rd (0, 16);
    rd (0x100, 16 * 1000);
    wr (0x8000, 1);
    ok (parse (&d) == 0 && done_with (VIRTIO_BLK_S_IOERR),
        "WRITE_ZEROES with 1000 segments: IOERR");
  }

  /* Ranges and limits. */
#define ONE(type, sector, num, what, cond) do {            \
    start ();                                               \
    hdr_at (0, (type), 0);                                  \
    seg_at (0x100, (sector), (num), 0);                     \
    rd (0, 16);                                             \
    rd (0x100, 16);                                         \
    wr (0x8000, 1);                                         \
    ok (parse (&d) == 0 && (cond), "%s", (what));           \
  } while (0)
  ONE (VIRTIO_BLK_T_DISCARD, 2047, 1, "DISCARD of the last sector",
       req.op == BLK_OP_DISCARD);
  ONE (VIRTIO_BLK_T_DISCARD, 2048, 1, "DISCARD past capacity: IOERR",
       done_with (VIRTIO_BLK_S_IOERR));
  ONE (VIRTIO_BLK_T_DISCARD, 2040, 9, "DISCARD running past the end: IOERR",
       done_with (VIRTIO_BLK_S_IOERR));
  ONE (VIRTIO_BLK_T_WRITE_ZEROES, UINT64_C (1) << 55, 1,
       "WRITE_ZEROES at sector 2^55 (* 512 wraps): IOERR",
       done_with (VIRTIO_BLK_S_IOERR));
  ONE (VIRTIO_BLK_T_WRITE_ZEROES, UINT64_MAX, 1,
       "WRITE_ZEROES at sector UINT64_MAX: IOERR",
       done_with (VIRTIO_BLK_S_IOERR));
  ONE (VIRTIO_BLK_T_DISCARD, 0, 1024, "DISCARD of max_discard_sectors",
       req.op == BLK_OP_DISCARD);
  ONE (VIRTIO_BLK_T_DISCARD, 0, 1025,
       "DISCARD of max_discard_sectors + 1: IOERR",
       done_with (VIRTIO_BLK_S_IOERR));
  ONE (VIRTIO_BLK_T_WRITE_ZEROES, 0, 2048,
       "WRITE_ZEROES of max_write_zeroes_sectors", req.op == BLK_OP_ZERO);
  ONE (VIRTIO_BLK_T_WRITE_ZEROES, 0, 2049,
       "WRITE_ZEROES of max_write_zeroes_sectors + 1: IOERR",
       done_with (VIRTIO_BLK_S_IOERR));
  ONE (VIRTIO_BLK_T_WRITE_ZEROES, 0, UINT32_MAX,
       "WRITE_ZEROES of 0xffffffff sectors: IOERR",
       done_with (VIRTIO_BLK_S_IOERR));
  ONE (VIRTIO_BLK_T_DISCARD, 8, 0, "DISCARD of 0 sectors: OK, no plugin call",
       done_with (VIRTIO_BLK_S_OK));
  ONE (VIRTIO_BLK_T_WRITE_ZEROES, 8, 0,
       "WRITE_ZEROES of 0 sectors: OK, no plugin call",
       done_with (VIRTIO_BLK_S_OK));

  d = dev4k ();
  ONE (VIRTIO_BLK_T_DISCARD, 8, 8, "4k: DISCARD of block 1",
       req.op == BLK_OP_DISCARD && req.seg[0].offset == 4096);
  ONE (VIRTIO_BLK_T_DISCARD, 1, 8, "4k: DISCARD at sector 1: IOERR",
       done_with (VIRTIO_BLK_S_IOERR));
  ONE (VIRTIO_BLK_T_WRITE_ZEROES, 8, 1, "4k: WRITE_ZEROES of 1 sector: IOERR",
       done_with (VIRTIO_BLK_S_IOERR));

  d = dev512 ();
  d.readonly = true;
  ONE (VIRTIO_BLK_T_DISCARD, 0, 8, "read-only: DISCARD IOERR",
       done_with (VIRTIO_BLK_S_IOERR));
  ONE (VIRTIO_BLK_T_WRITE_ZEROES, 0, 8, "read-only: WRITE_ZEROES IOERR",
       done_with (VIRTIO_BLK_S_IOERR));
  d = dev512 ();
  d.can_discard = false;
  ONE (VIRTIO_BLK_T_DISCARD, 0, 8, "no discard support: UNSUPP",
       done_with (VIRTIO_BLK_S_UNSUPP));
  ONE (VIRTIO_BLK_T_WRITE_ZEROES, 0, 8, "still zeroes",
       req.op == BLK_OP_ZERO);
  d.can_zero = false;
  ONE (VIRTIO_BLK_T_WRITE_ZEROES, 0, 8, "no zero support: UNSUPP",
       done_with (VIRTIO_BLK_S_UNSUPP));
#undef ONE
}

static void
test_finish (void)
{
  struct blk_dev d = dev512 ();

  simple (&d, VIRTIO_BLK_T_IN, 0, 4096);
  is_int (blk_finish (&req, EIO), 1, "failed read: used len 1");
  is_int (mem[0x8000], VIRTIO_BLK_S_IOERR, "failed read: IOERR");
  simple (&d, VIRTIO_BLK_T_IN, 0, 4096);
  is_int (blk_finish (&req, ENOTSUP), 1, "ENOTSUP: used len 1");
  is_int (mem[0x8000], VIRTIO_BLK_S_UNSUPP, "ENOTSUP: UNSUPP");
  simple (&d, VIRTIO_BLK_T_OUT, 0, 4096);
  is_int (blk_finish (&req, EOPNOTSUPP), 1, "EOPNOTSUPP: used len 1");
  is_int (mem[0x8000], VIRTIO_BLK_S_UNSUPP, "EOPNOTSUPP: UNSUPP");
  simple (&d, VIRTIO_BLK_T_OUT, 0, 4096);
  is_int (blk_finish (&req, ENOSPC), 1, "ENOSPC: used len 1");
  is_int (mem[0x8000], VIRTIO_BLK_S_IOERR, "ENOSPC: IOERR");
  simple (&d, VIRTIO_BLK_T_IN, 8, 1024);
  is_int (blk_finish (&req, 0), 1025, "read of 1024: used len 1025");
  is_int (mem[0x8000], VIRTIO_BLK_S_OK, "status OK");
  /* A request that finished during parsing ignores err. */
  simple (&d, VIRTIO_BLK_T_IN, 4096, 512);
  is_int (blk_finish (&req, 0), 1, "parse-time IOERR: used len 1 even if err 0");
  is_int (mem[0x8000], VIRTIO_BLK_S_IOERR, "status stays IOERR");
}

static void
test_features_config (void)
{
  struct blk_dev d = dev512 ();
  struct virtio_blk_config c;
  uint64_t f;
  const uint64_t base = (1ULL << VIRTIO_BLK_F_SEG_MAX) |
    (1ULL << VIRTIO_BLK_F_BLK_SIZE) | (1ULL << VIRTIO_BLK_F_TOPOLOGY) |
    (1ULL << VIRTIO_BLK_F_MQ);

  f = blk_features (&d);
  is_int (f, base | (1ULL << VIRTIO_BLK_F_FLUSH) |
          (1ULL << VIRTIO_BLK_F_CONFIG_WCE) | (1ULL << VIRTIO_BLK_F_DISCARD) |
          (1ULL << VIRTIO_BLK_F_WRITE_ZEROES), "features of a full export");
  ok (!(f & (1ULL << VIRTIO_BLK_F_SIZE_MAX)), "SIZE_MAX not offered");
  ok (!(f & (1ULL << VIRTIO_BLK_F_RO)), "RO not set");
  d.readonly = true;
  f = blk_features (&d);
  ok ((f & (1ULL << VIRTIO_BLK_F_RO)) &&
      !(f & (1ULL << VIRTIO_BLK_F_DISCARD)) &&
      !(f & (1ULL << VIRTIO_BLK_F_WRITE_ZEROES)),
      "read-only: RO, no DISCARD or WRITE_ZEROES");
  d = dev512 ();
  d.can_flush = false;
  d.can_discard = false;
  d.can_zero = false;
  f = blk_features (&d);
  is_int (f, base, "no flush/discard/zero: only the base features");
  ok (!(f & (1ULL << VIRTIO_BLK_F_FLUSH)) &&
      !(f & (1ULL << VIRTIO_BLK_F_CONFIG_WCE)),
      "FLUSH and CONFIG_WCE only when can_flush");

  d = dev512 ();
  memset (&c, 0xff, sizeof c);
  blk_config (&d, &c);
  is_int (le64toh (c.capacity), 2048, "capacity 2048 sectors (1 MiB)");
  is_int (le32toh (c.size_max), 0, "size_max 0");
  is_int (le32toh (c.seg_max), BLK_SEG_MAX, "seg_max %d", BLK_SEG_MAX);
  is_int (le32toh (c.blk_size), 512, "blk_size 512");
  is_int (c.physical_block_exp, 0, "physical_block_exp 0");
  is_int (c.alignment_offset, 0, "alignment_offset 0");
  is_int (c.wce, 1, "wce 1");
  is_int (le16toh (c.num_queues), 4, "num_queues 4");
  is_int (le32toh (c.max_discard_sectors), 1024, "max_discard_sectors");
  is_int (le32toh (c.max_discard_seg), BLK_MAX_SEGMENTS, "max_discard_seg");
  is_int (le32toh (c.discard_sector_alignment), 1,
          "discard_sector_alignment 1 (512-byte blocks)");
  is_int (le32toh (c.max_write_zeroes_sectors), 2048,
          "max_write_zeroes_sectors");
  is_int (le32toh (c.max_write_zeroes_seg), BLK_MAX_SEGMENTS,
          "max_write_zeroes_seg");
  is_int (c.write_zeroes_may_unmap, 1, "write_zeroes_may_unmap");
  is_int (c.geometry.cylinders | c.geometry.heads | c.geometry.sectors, 0,
          "geometry zeroed");

  d = dev4k ();
  d.wce = false;
  d.zero_may_unmap = false;
  d.num_queues = 1;
  blk_config (&d, &c);
  is_int (le64toh (c.capacity), 8192, "4k: capacity 8192 sectors (4 MiB)");
  is_int (le32toh (c.blk_size), 4096, "4k: blk_size 4096");
  is_int (le32toh (c.discard_sector_alignment), 8,
          "4k: discard_sector_alignment 8");
  is_int (c.wce, 0, "wce 0");
  is_int (c.write_zeroes_may_unmap, 0, "write_zeroes_may_unmap 0");
  is_int (le16toh (c.num_queues), 1, "num_queues 1");
}

int
main (void)
{
  test_read_write ();
  test_malformed ();
  test_flush ();
  test_get_id ();
  test_discard_zero ();
  test_finish ();
  test_features_config ();
  return done_testing ();
}
