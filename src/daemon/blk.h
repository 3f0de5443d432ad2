/* virtio-blk request handling.  Knows nothing of vhost-user or rings:
 * it sees a request as readable and writable iovecs. */

#ifndef BLKGATE_BLK_H
#define BLKGATE_BLK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>
#include <linux/virtio_blk.h>

#define BLK_SECTOR 512
#define BLK_MAX_SEGMENTS 32     /* max_discard_seg, max_write_zeroes_seg */
#define BLK_SEG_MAX 126         /* data segments per request (seg_max) */
#define BLK_ID_BYTES 20

/* What the export can do, fixed when the connection starts. */
struct blk_dev {
  uint64_t size;                /* bytes, multiple of 512 */
  uint32_t blk_size;            /* logical block size */
  bool readonly;
  bool can_flush;
  bool can_discard;
  bool can_zero;
  bool zero_may_unmap;
  bool wce;                     /* writeback cache on (guest may change) */
  uint32_t max_discard_sectors;
  uint32_t max_zero_sectors;
  uint16_t num_queues;
  char serial[BLK_ID_BYTES];    /* NUL-padded, not terminated at 20 */
};

enum blk_op {
  BLK_OP_NONE,                  /* finished during parsing: see status */
  BLK_OP_READ,
  BLK_OP_WRITE,
  BLK_OP_FLUSH,
  BLK_OP_DISCARD,
  BLK_OP_ZERO,
};

struct blk_seg {
  uint64_t offset;              /* bytes */
  uint64_t len;
  bool unmap;
};

struct blk_req {
  enum blk_op op;
  uint8_t status;               /* VIRTIO_BLK_S_* when op == NONE */
  const char *why;              /* and why it failed, or NULL */
  bool fua;                     /* write must be durable (wce off) */
  uint64_t offset;              /* READ/WRITE, bytes */
  uint64_t len;
  struct iovec *data;           /* slice of the request's iovecs */
  unsigned ndata;
  uint8_t *status_ptr;          /* the status byte in guest memory */
  uint32_t in_len;              /* bytes written into guest buffers */
  unsigned nseg;                /* DISCARD/ZERO */
  struct blk_seg seg[BLK_MAX_SEGMENTS];
};

/* Parses one request.  iov[0..nout) is readable, iov[nout..niov)
 * writable; both arrays are trimmed in place to form r->data.
 * Returns 0 (r->op says what to do, or op NONE with r->status set),
 * or -1 when the chain cannot carry a status at all (broken ring). */
int blk_parse (const struct blk_dev *d, struct blk_req *r,
               struct iovec *iov, unsigned niov, unsigned nout);

/* Writes the status byte for err (0 or an errno) and returns the used
 * length to report. */
uint32_t blk_finish (struct blk_req *r, int err);

/* Virtio feature bits and config space for the export. */
uint64_t blk_features (const struct blk_dev *d);
void blk_config (const struct blk_dev *d, struct virtio_blk_config *cfg);

#endif /* BLKGATE_BLK_H */
