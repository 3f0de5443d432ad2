/* Inflight tracking (INFLIGHT_SHMFD): a shared region the front-end
 * keeps across our crashes, recording which heads were fetched but not
 * yet completed, so a restarted gateway can resubmit them. */

#ifndef BLKGATE_INFLIGHT_H
#define BLKGATE_INFLIGHT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "memtable.h"
#include "vring.h"

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

/* Packed-ring layout per queue (the spec's recommendation).  Each
 * entry is a copy of one ring descriptor we fetched (the ring's own
 * descriptors are overwritten by used ones); the entries of a chain
 * are linked through next, and the unused ones form a free list.  The
 * old_* fields are the commit point of the last used batch. */
struct inflight_packed_desc {
  uint8_t inflight;             /* head entry of a chain in flight */
  uint8_t padding;
  uint16_t next;                /* next entry of the chain / free list */
  uint16_t last;                /* head: the chain's last entry */
  uint16_t num;                 /* head: entries in the chain */
  uint64_t counter;             /* head: submission order */
  uint16_t id;                  /* the ring descriptor's fields */
  uint16_t flags;
  uint32_t len;
  uint64_t addr;
};

struct inflight_packed_queue {
  uint64_t features;            /* INFLIGHT_F_PACKED */
  uint16_t version;             /* 0: never used since allocated */
  uint16_t desc_num;
  uint16_t free_head;           /* desc_num: the list is empty */
  uint16_t old_free_head;
  uint16_t used_idx;
  uint16_t old_used_idx;
  uint8_t used_wrap_counter;
  uint8_t old_used_wrap_counter;
  uint8_t padding[7];
  struct inflight_packed_desc desc[];
};

/* A queue area's features: which layout it holds (split: 0). */
#define INFLIGHT_F_PACKED 1

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

/* A packed chain in flight, by buffer id: its head and last entries. */
struct inflight_buf {
  uint16_t head, last, num;     /* num 0: not in flight */
};

/* Per-queue state used by the queue thread. */
struct inflight_ring {
  struct inflight_split_queue *q; /* split tracking, or NULL */
  struct inflight_packed_queue *pq; /* packed tracking, or NULL */
  unsigned num;
  uint64_t counter;             /* next submission number */
  /* Packed: our own copy of what we wrote, so the hot path never
   * follows a link read back from shared memory. */
  uint16_t free_head, old_free_head;
  uint16_t batch_tail;          /* last entry freed by the open batch */
  uint16_t used_idx, old_used_idx;
  bool used_wrap, old_used_wrap;
  unsigned nbatch;
  uint16_t next[VRING_PACKED_MAX];
  uint16_t batch[VRING_PACKED_MAX]; /* heads freed since the last commit */
  struct inflight_buf buf[VRING_PACKED_MAX];
};

/* At ring start (after vring_set_base): validates queue index's area,
 * repairs the last batch, returns what is still in flight, oldest
 * first, in heads[] (room for the ring size; split: head indexes,
 * packed: buffer ids) and *n, and sets the ring's position from the
 * region.  -1 with a message in *err when the area is corrupt. */
int inflight_ring_start (struct inflight_ring *ir, struct inflight_region *r,
                         unsigned index, struct ring *vr, uint16_t *heads,
                         unsigned *n, const char **err);

static inline bool
inflight_active (const struct inflight_ring *ir)
{
  return ir->q || ir->pq;
}

/* Resubmission: rebuilds the chain of heads[i] from inflight_ring_start
 * (split: from the ring; packed: from the copies in the region). */
int inflight_walk (struct inflight_ring *ir, struct ring *vr,
                   const struct memtable *mem, uint16_t head,
                   struct chain *c, const char **err);

/* Packed tracking, inflight-packed.c. */
int inflight_packed_start (struct inflight_ring *ir,
                           struct inflight_packed_queue *pq, struct ring *vr,
                           uint16_t *ids, unsigned *n, const char **err);
void inflight_packed_begin (struct inflight_ring *ir, const struct chain *c);
void inflight_packed_link (struct inflight_ring *ir, uint16_t id);
void inflight_packed_commit (struct inflight_ring *ir);
int inflight_packed_walk (struct inflight_ring *ir, struct ring *vr,
                          const struct memtable *mem, uint16_t id,
                          struct chain *c, const char **err);

/* Request life: begin right after the pop (packed: c's ring
 * descriptors are valid until the next pop); link when its used
 * element is written; done for each linked head after the used
 * elements are published, then commit with the new used index. */
static inline void
inflight_begin (struct inflight_ring *ir, const struct chain *c)
{
  if (ir->pq)
    inflight_packed_begin (ir, c);
  if (ir->q == NULL)
    return;
  ir->q->desc[c->head].counter = ir->counter++;
  __atomic_store_n (&ir->q->desc[c->head].inflight, 1, __ATOMIC_RELEASE);
}

static inline void
inflight_link (struct inflight_ring *ir, uint16_t head)
{
  if (ir->pq)
    inflight_packed_link (ir, head);
  if (ir->q == NULL)
    return;
  ir->q->desc[head].next = ir->q->last_batch_head;
  __atomic_store_n (&ir->q->last_batch_head, head, __ATOMIC_RELEASE);
}

/* Packed: the batch's flags are cleared by the commit. */
static inline void
inflight_done (struct inflight_ring *ir, uint16_t head)
{
  if (ir->q)
    __atomic_store_n (&ir->q->desc[head].inflight, 0, __ATOMIC_RELEASE);
}

static inline void
inflight_commit (struct inflight_ring *ir, uint16_t used_idx)
{
  if (ir->pq)
    inflight_packed_commit (ir);
  if (ir->q)
    __atomic_store_n (&ir->q->used_idx, used_idx, __ATOMIC_RELEASE);
}

#endif /* BLKGATE_INFLIGHT_H */
