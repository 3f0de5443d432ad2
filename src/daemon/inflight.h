/* Inflight tracking (INFLIGHT_SHMFD): a shared region the front-end
 * keeps across our crashes, recording which heads were fetched but not
 * yet completed, so a restarted gateway can resubmit them. */

#ifndef BLKGATE_INFLIGHT_H
#define BLKGATE_INFLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define INFLIGHT_MAGIC "BLKGINF\0"
#define INFLIGHT_VERSION 1

/* Region header, ours: QEMU treats the region as opaque bytes. */
struct inflight_header {
  char magic[8];
  uint32_t version;
  uint32_t header_size;         /* offset of queue 0 */
  uint16_t num_queues;
  uint16_t queue_size;
  uint32_t queue_stride;        /* bytes per queue */
  uint8_t reserved[40];
};

/* Split-ring layout per queue (vhost-user spec's recommendation). */
struct inflight_split_desc {
  uint8_t inflight;
  uint8_t padding[5];
  uint16_t next;
  uint64_t counter;
};

struct inflight_split_queue {
  uint64_t features;
  uint16_t version;             /* 0: never used since allocated */
  uint16_t desc_num;
  uint16_t last_batch_head;
  uint16_t used_idx;
  struct inflight_split_desc desc[];
};

/* The header fields are copied out once they are validated: the
 * front-end can change the shared header at any time. */
struct inflight_region {
  void *addr;                   /* NULL: no region */
  size_t size;
  uint32_t header_size;
  uint16_t num_queues;
  uint16_t queue_size;
  uint32_t queue_stride;
};

/* GET_INFLIGHT_FD: a sealed, zeroed memfd with our header.  Returns
 * the fd and its size, or -1 with a message in *err. */
int inflight_create (uint16_t num_queues, uint16_t queue_size, int *fd,
                     uint64_t *size, const char **err);

/* SET_INFLIGHT_FD: maps and validates a region handed back. */
int inflight_map (struct inflight_region *r, int fd, uint64_t size,
                  uint64_t offset, const char **err);
void inflight_unmap (struct inflight_region *r);

/* Per-queue state used by the queue thread. */
struct inflight_ring {
  struct inflight_split_queue *q; /* NULL: tracking off */
  unsigned num;
  uint64_t counter;             /* next submission number */
};

/* At ring start: validates queue index's area, repairs the last batch,
 * and returns the heads still in flight, oldest first, in heads[] (room
 * for num).  *n is their count.  -1 with a message in *err when the
 * area is corrupt. */
int inflight_ring_start (struct inflight_ring *ir, struct inflight_region *r,
                         unsigned index, unsigned num, uint16_t used_idx,
                         uint16_t *heads, unsigned *n, const char **err);

/* Request life: begin before submitting; link when its used element is
 * written; done for each linked head after used->idx is published, then
 * commit with the new used index. */
static inline void
inflight_begin (struct inflight_ring *ir, uint16_t head)
{
  if (ir->q == NULL)
    return;
  ir->q->desc[head].counter = ir->counter++;
  __atomic_store_n (&ir->q->desc[head].inflight, 1, __ATOMIC_RELEASE);
}

static inline void
inflight_link (struct inflight_ring *ir, uint16_t head)
{
  if (ir->q == NULL)
    return;
  ir->q->desc[head].next = ir->q->last_batch_head;
  __atomic_store_n (&ir->q->last_batch_head, head, __ATOMIC_RELEASE);
}

static inline void
inflight_done (struct inflight_ring *ir, uint16_t head)
{
  if (ir->q)
    __atomic_store_n (&ir->q->desc[head].inflight, 0, __ATOMIC_RELEASE);
}

static inline void
inflight_commit (struct inflight_ring *ir, uint16_t used_idx)
{
  if (ir->q)
    __atomic_store_n (&ir->q->used_idx, used_idx, __ATOMIC_RELEASE);
}

#endif /* BLKGATE_INFLIGHT_H */
