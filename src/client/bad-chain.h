/* blkgate-io bad-chain: what the kinds of bad-chain.c and
 * bad-chain-req.c share. */

#ifndef BLKGATE_IO_BAD_CHAIN_H
#define BLKGATE_IO_BAD_CHAIN_H

#include <stdbool.h>
#include <stdint.h>

#include "cli.h"

/* What the chain is built from. */
struct parts {
  struct session *s;
  struct vuc_ring *r;
  struct vuc_req *req;          /* header (a 4 KiB read) and status */
  uint64_t hdr, status, data;   /* guest addresses */
  uint64_t outside;             /* just past the end of guest memory */
  uint8_t *scratch;             /* 8 KiB of guest memory for tables */
  int head;                     /* published head, or -1 */
  uint64_t capacity;            /* of the disk, in bytes */
  uint8_t *buf;                 /* a kind's own data buffer, or NULL */
  uint64_t buf_len;
};

struct kind {
  const char *name;
  /* Builds the chain (or moves avail->idx) before the kick. */
  int (*build) (struct parts *p);
  const char *what;
  /* After observing: checks what the back-end did with the data and
   * returns the outcome to report instead (or the same one). */
  const char *(*check) (struct parts *p, const char *outcome);
  /* Instead of build and observe: runs the whole case, returns the
   * outcome (NULL on a local failure, message printed). */
  const char *(*run) (struct parts *p);
};

/* A kind that is built, kicked and observed, without a check. */
#define BC_KIND(name, fn, what) { name, fn, what, NULL, NULL }

extern const struct kind req_kinds[];   /* bad-chain-req.c */
extern const struct kind packed_kinds[];        /* bad-chain-packed.c */

void bc_desc (struct vring_desc *d, uint64_t addr, uint32_t len,
              uint16_t flags, uint16_t next);
/* n descriptors from the ring's free list; the first is the head. */
int bc_take (struct parts *p, int *d, unsigned n);
/* A plain request through libvuclient (for setting up and checking):
 * 0 with the status in *status, or -1 (message printed). */
int bc_plain_rw (struct parts *p, bool write, uint64_t offset,
                 uint8_t *buf, uint32_t len, uint8_t *status);

#define BC_D(i) (&p->r->desc[d[i]])
#define BC_W VRING_DESC_F_WRITE
#define BC_N VRING_DESC_F_NEXT
#define BC_I VRING_DESC_F_INDIRECT

#endif /* BLKGATE_IO_BAD_CHAIN_H */
