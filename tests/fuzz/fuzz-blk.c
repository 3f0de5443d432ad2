/* blk.c: the virtio-blk request parser.
 *
 * Input: the export (size in blocks, block size shift, capability
 * bits), how many pieces the chain has and how many are readable, each
 * piece's length, then the bytes the pieces hold (the request header,
 * data, discard/write-zeroes segments).  Pieces are separate heap
 * blocks, as buffers in different guest pages, so ASan sees a read or
 * write past any of them.  As the ring code guarantees, no piece is
 * empty and the block size is a power of 2 from 512. */

#include <config.h>

#include <stdlib.h>

#include "blk.h"
#include "fuzz.h"
#include "utils.h"

#define MAX_PIECES 16

static void
check_request (const struct blk_dev *d, const struct blk_req *r)
{
  unsigned i;

  switch (r->op) {
  case BLK_OP_READ: case BLK_OP_WRITE:
    if (!range_ok (r->offset, r->len, d->size) || r->offset % d->blk_size ||
        r->len % d->blk_size || (r->op == BLK_OP_WRITE && d->readonly))
      abort ();
    break;
  case BLK_OP_DISCARD: case BLK_OP_ZERO:
    if (r->nseg == 0 || r->nseg > BLK_MAX_SEGMENTS || d->readonly)
      abort ();
    for (i = 0; i < r->nseg; i++)
      if (!range_ok (r->seg[i].offset, r->seg[i].len, d->size))
        abort ();
    break;
  default:
    break;
  }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct input in = { data, size };
  struct blk_dev d = { 0 };
  struct iovec iov[MAX_PIECES];
  uint8_t *piece[MAX_PIECES];
  struct blk_req r;
  unsigned niov, nout, i;
  uint8_t caps;

  d.blk_size = 512u << (take_u8 (&in) % 4);
  d.size = (take_u32 (&in) % (1u << 24)) * (uint64_t) d.blk_size;
  caps = take_u8 (&in);
  d.readonly = caps & 1;
  d.can_flush = caps & 2;
  d.can_discard = caps & 4;
  d.can_zero = caps & 8;
  d.zero_may_unmap = caps & 16;
  d.wce = caps & 32;
  d.max_discard_sectors = take_u16 (&in);
  d.max_zero_sectors = take_u16 (&in);
  memcpy (d.serial, "fuzz-serial", 11);
  niov = take_u8 (&in) % (MAX_PIECES + 1);
  nout = niov ? take_u8 (&in) % (niov + 1) : 0;
  for (i = 0; i < niov; i++) {
    size_t len = take_u16 (&in) % 2048 + 1;
    piece[i] = malloc (len);
    if (piece[i] == NULL)
      abort ();
    take (&in, piece[i], len);
    iov[i] = (struct iovec) { piece[i], len };
  }
  if (blk_parse (&d, &r, iov, niov, nout) == 0) {
    check_request (&d, &r);
    blk_finish (&r, r.op == BLK_OP_NONE ? 0 : take_u8 (&in));
  }
  for (i = 0; i < niov; i++)
    free (piece[i]);
  return 0;
}
