/* virtio-blk request handling.
 *
 * The guest can change its buffers at any moment, so the header and
 * the discard/write-zeroes segments are copied out before they are
 * checked, and all range checks are overflow-safe.  Only data buffers
 * are used in place (no copy of guest data). */

#include <config.h>

#include <endian.h>
#include <errno.h>
#include <stddef.h>
#include <string.h>

#include "blk.h"
#include "utils.h"

/* Copies len bytes starting at the beginning of iov[0..n) into buf.
 * Returns the number of bytes copied. */
static size_t
iov_copy_out (const struct iovec *iov, unsigned n, void *buf, size_t len)
{
  size_t done = 0;
  unsigned i;

  for (i = 0; i < n && done < len; i++) {
    size_t piece = iov[i].iov_len < len - done ? iov[i].iov_len : len - done;
    memcpy ((char *) buf + done, iov[i].iov_base, piece);
    done += piece;
  }
  return done;
}

static size_t
iov_size (const struct iovec *iov, unsigned n)
{
  size_t s = 0;
  unsigned i;

  for (i = 0; i < n; i++)
    s += iov[i].iov_len;
  return s;
}

/* Drops the first skip bytes of iov[0..*n); returns the new start. */
static struct iovec *
iov_skip (struct iovec *iov, unsigned *n, size_t skip)
{
  while (*n > 0 && skip >= iov->iov_len) {
    skip -= iov->iov_len;
    iov++;
    (*n)--;
  }
  if (*n > 0) {
    iov->iov_base = (char *) iov->iov_base + skip;
    iov->iov_len -= skip;
  }
  return iov;
}

/* Removes the last byte of iov[0..*n) and returns a pointer to it. */
static uint8_t *
iov_pop_last_byte (struct iovec *iov, unsigned *n)
{
  struct iovec *last = &iov[*n - 1];
  uint8_t *p = (uint8_t *) last->iov_base + last->iov_len - 1;

  if (--last->iov_len == 0)
    (*n)--;
  return p;
}

static int
finish_now (struct blk_req *r, uint8_t status, const char *why)
{
  r->op = BLK_OP_NONE;
  r->status = status;
  r->why = why;
  return 0;
}

/* A range is valid when it is block-aligned and inside the disk. */
static bool
range_valid (const struct blk_dev *d, uint64_t sector, uint64_t len)
{
  uint64_t off;

  if (sector > d->size / BLK_SECTOR)
    return false;
  off = sector * BLK_SECTOR;
  return off % d->blk_size == 0 && len % d->blk_size == 0 &&
    range_ok (off, len, d->size);
}

static int
parse_rw (const struct blk_dev *d, struct blk_req *r, uint64_t sector,
          bool write)
{
  r->len = iov_size (r->data, r->ndata);
  if (write && d->readonly)
    return finish_now (r, VIRTIO_BLK_S_IOERR, "write to a read-only disk");
  if (!range_valid (d, sector, r->len))
    return finish_now (r, VIRTIO_BLK_S_IOERR,
                       "range unaligned or past the end of the disk");
  r->op = write ? BLK_OP_WRITE : BLK_OP_READ;
  r->offset = sector * BLK_SECTOR;
  r->fua = write && d->can_flush && !d->wce;
  if (!write)
    r->in_len = r->len;
  return 0;
}

/* DISCARD and WRITE_ZEROES carry an array of 16-byte segments. */
static int
parse_segments (const struct blk_dev *d, struct blk_req *r, bool zero)
{
  struct virtio_blk_discard_write_zeroes seg[BLK_MAX_SEGMENTS];
  uint32_t max_sectors = zero ? d->max_zero_sectors : d->max_discard_sectors;
  size_t len = iov_size (r->data, r->ndata);
  unsigned i, n;

  if (d->readonly)
    return finish_now (r, VIRTIO_BLK_S_IOERR, "write to a read-only disk");
  if (!(zero ? d->can_zero : d->can_discard))
    return finish_now (r, VIRTIO_BLK_S_UNSUPP, "not supported by the plugin");
  if (len == 0 || len % sizeof seg[0] || len / sizeof seg[0] > BLK_MAX_SEGMENTS)
    return finish_now (r, VIRTIO_BLK_S_IOERR, "bad number of segments");
  n = len / sizeof seg[0];
  iov_copy_out (r->data, r->ndata, seg, len);
  r->nseg = 0;
  for (i = 0; i < n; i++) {
    uint64_t sector = le64toh (seg[i].sector);
    uint32_t num = le32toh (seg[i].num_sectors);
    uint32_t flags = le32toh (seg[i].flags);

    if (flags & ~(zero ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0u))
      return finish_now (r, VIRTIO_BLK_S_UNSUPP, "unknown segment flags");
    if (num > max_sectors ||
        !range_valid (d, sector, (uint64_t) num * BLK_SECTOR))
      return finish_now (r, VIRTIO_BLK_S_IOERR,
                         "segment too long, unaligned or past the end");
    if (num == 0)
      continue;                 /* nothing to do: plugins may refuse it */
    r->seg[r->nseg].offset = sector * BLK_SECTOR;
    r->seg[r->nseg].len = (uint64_t) num * BLK_SECTOR;
    r->seg[r->nseg].unmap = (flags & VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP) &&
      d->zero_may_unmap;
    r->nseg++;
  }
  if (r->nseg == 0)
    return finish_now (r, VIRTIO_BLK_S_OK, NULL);
  r->op = zero ? BLK_OP_ZERO : BLK_OP_DISCARD;
  return 0;
}

/* GET_ID fills at most 20 bytes: the serial, NUL-padded. */
static int
parse_get_id (const struct blk_dev *d, struct blk_req *r)
{
  size_t done = 0;
  unsigned i;

  for (i = 0; i < r->ndata && done < BLK_ID_BYTES; i++) {
    size_t piece = r->data[i].iov_len;
    if (piece > BLK_ID_BYTES - done)
      piece = BLK_ID_BYTES - done;
    memcpy (r->data[i].iov_base, d->serial + done, piece);
    done += piece;
  }
  r->in_len = done;
  return finish_now (r, VIRTIO_BLK_S_OK, NULL);
}

int
blk_parse (const struct blk_dev *d, struct blk_req *r,
           struct iovec *iov, unsigned niov, unsigned nout)
{
  struct virtio_blk_outhdr hdr;
  unsigned nin = niov - nout;
  struct iovec *in = iov + nout;
  uint32_t type;
  uint64_t sector;

  memset (r, 0, offsetof (struct blk_req, seg));
  if (nin == 0)
    return -1;                  /* nowhere to put a status */
  r->status_ptr = iov_pop_last_byte (in, &nin);
  if (iov_copy_out (iov, nout, &hdr, sizeof hdr) < sizeof hdr)
    return finish_now (r, VIRTIO_BLK_S_IOERR, "header shorter than 16 bytes");
  type = le32toh (hdr.type);
  sector = le64toh (hdr.sector);

  switch (type) {
  case VIRTIO_BLK_T_IN:
  case VIRTIO_BLK_T_GET_ID:
    r->data = in;
    r->ndata = nin;
    return type == VIRTIO_BLK_T_IN ? parse_rw (d, r, sector, false)
      : parse_get_id (d, r);
  case VIRTIO_BLK_T_OUT:
  case VIRTIO_BLK_T_DISCARD:
  case VIRTIO_BLK_T_WRITE_ZEROES:
    r->ndata = nout;
    r->data = iov_skip (iov, &r->ndata, sizeof hdr);
    if (type == VIRTIO_BLK_T_OUT)
      return parse_rw (d, r, sector, true);
    return parse_segments (d, r, type == VIRTIO_BLK_T_WRITE_ZEROES);
  case VIRTIO_BLK_T_FLUSH:
    if (!d->can_flush)
      return finish_now (r, d->readonly ? VIRTIO_BLK_S_OK
                         : VIRTIO_BLK_S_UNSUPP,
                         d->readonly ? NULL : "flush not supported");
    r->op = BLK_OP_FLUSH;
    return 0;
  default:
    return finish_now (r, VIRTIO_BLK_S_UNSUPP, "unknown request type");
  }
}

uint32_t
blk_finish (struct blk_req *r, int err)
{
  uint8_t status = r->status;

  if (r->op != BLK_OP_NONE)
    status = err == 0 ? VIRTIO_BLK_S_OK
      : (err == ENOTSUP || err == EOPNOTSUPP) ? VIRTIO_BLK_S_UNSUPP
      : VIRTIO_BLK_S_IOERR;
  __atomic_store_n (r->status_ptr, status, __ATOMIC_RELAXED);
  return (status == VIRTIO_BLK_S_OK ? r->in_len : 0) + 1;
}

uint64_t
blk_features (const struct blk_dev *d)
{
  uint64_t f = (1ULL << VIRTIO_BLK_F_SEG_MAX) | (1ULL << VIRTIO_BLK_F_BLK_SIZE) |
    (1ULL << VIRTIO_BLK_F_TOPOLOGY) | (1ULL << VIRTIO_BLK_F_MQ);

  if (d->readonly)
    f |= 1ULL << VIRTIO_BLK_F_RO;
  if (d->can_flush)
    f |= (1ULL << VIRTIO_BLK_F_FLUSH) | (1ULL << VIRTIO_BLK_F_CONFIG_WCE);
  if (d->can_discard && !d->readonly)
    f |= 1ULL << VIRTIO_BLK_F_DISCARD;
  if (d->can_zero && !d->readonly)
    f |= 1ULL << VIRTIO_BLK_F_WRITE_ZEROES;
  return f;
}

void
blk_config (const struct blk_dev *d, struct virtio_blk_config *c)
{
  uint32_t align = d->blk_size / BLK_SECTOR;

  memset (c, 0, sizeof *c);
  c->capacity = htole64 (d->size / BLK_SECTOR);
  c->seg_max = htole32 (BLK_SEG_MAX);
  c->blk_size = htole32 (d->blk_size);
  c->physical_block_exp = 0;
  c->min_io_size = htole16 (1);
  c->wce = d->wce;
  c->num_queues = htole16 (d->num_queues);
  c->max_discard_sectors = htole32 (d->max_discard_sectors);
  c->max_discard_seg = htole32 (BLK_MAX_SEGMENTS);
  c->discard_sector_alignment = htole32 (align);
  c->max_write_zeroes_sectors = htole32 (d->max_zero_sectors);
  c->max_write_zeroes_seg = htole32 (BLK_MAX_SEGMENTS);
  c->write_zeroes_may_unmap = d->zero_may_unmap;
}
