/* Virtqueues, split (vring-split.c) and packed (vring-packed.c): the
 * only code that reads or writes ring memory.  The vring_* calls at the
 * end dispatch on ring->packed, so the queue thread serves both. */

#ifndef BLKGATE_VRING_H
#define BLKGATE_VRING_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>
#include <linux/virtio_ring.h>

#include "dirty-log.h"
#include "memtable.h"

/* Largest packed ring (QEMU's VIRTQUEUE_MAX_SIZE, our VU_MAX_QUEUE_SIZE). */
#define VRING_PACKED_MAX 1024

/* A packed ring descriptor copied out of guest memory, host order. */
struct vring_pdesc {
  uint64_t addr;
  uint32_t len;
  uint16_t id;
  uint16_t flags;
};

struct ring {
  bool packed;                  /* VIRTIO_F_RING_PACKED; set before setup */
  unsigned num;                 /* ring size (split: power of 2) */
  /* Split layout. */
  struct vring_desc *desc;
  struct vring_avail *avail;
  struct vring_used *used;
  /* Packed layout: descriptor ring, driver and device areas. */
  struct vring_packed_desc *pdesc;
  struct vring_packed_desc_event *driver_event; /* read: used notifications */
  struct vring_packed_desc_event *device_event; /* written: kicks */
  uint64_t desc_gpa;            /* packed: where used descriptors are logged */
  /* Positions.  Split: free-running indexes.  Packed: slots < num, each
   * with its ring wrap counter. */
  uint16_t last_avail_idx;      /* next avail entry we will consume */
  uint16_t used_idx;            /* next used entry we will write */
  uint16_t published_idx;       /* used entries the guest can see end here */
  uint16_t signalled_used;      /* used idx at the last notification */
  bool signalled_used_valid;
  bool avail_wrap, used_wrap, published_wrap, signalled_wrap; /* packed */
  bool batch_open;              /* packed: a batch's first used element */
  uint16_t batch_slot;          /*   waits for its flags (the publish) */
  uint16_t batch_flags;
  bool kicks_off;               /* packed: device area says DISABLE */
  bool event_idx;               /* VIRTIO_RING_F_EVENT_IDX negotiated */
  bool indirect;                /* VIRTIO_RING_F_INDIRECT_DESC negotiated */
  const struct dirty_log *log;  /* log used-ring writes here, or NULL */
  uint64_t log_guest_addr;      /* guest address of the used ring (split)
                                 * or of the device area (packed) */
  bool log_failed;              /* a used-ring write fell outside the log */
  /* Packed: ring slots taken by each buffer id in flight, and the ring
   * descriptors of the chain popped last. */
  uint16_t ndesc[VRING_PACKED_MAX];
  struct vring_pdesc chain_desc[VRING_PACKED_MAX];
};

/* One popped descriptor chain, translated into our address space.
 * iov[0 .. nout) are device-readable, iov[nout .. niov) writable. */
struct chain {
  uint16_t head;                /* split: head index; packed: buffer id */
  unsigned niov;
  unsigned nout;
  unsigned max;                 /* capacity of iov[] and gpa[] */
  struct iovec *iov;
  uint64_t *gpa;                /* guest address of each piece */
  /* Packed: the ring descriptors it was read from (ring->chain_desc,
   * valid until the next pop) and their count. */
  const struct vring_pdesc *desc;
  unsigned ndesc;
};

/* Shared by both layouts (vring-chain.c): appends the buffer
 * [addr, addr+len) to c, readable ones before writable ones. */
int vring_chain_add (const struct memtable *mem, uint64_t addr, uint32_t len,
                     bool writable, struct chain *c, const char **err);

/* ---- Split rings (vring-split.c) ---- */

int vring_split_setup (struct ring *vr, const struct memtable *mem,
                       unsigned num, uint64_t desc_uva, uint64_t avail_uva,
                       uint64_t used_uva, const char **err);
int vring_split_pop (struct ring *vr, const struct memtable *mem,
                     struct chain *c, const char **err);
void vring_split_push (struct ring *vr, uint16_t head, uint32_t len);
bool vring_split_publish (struct ring *vr);
bool vring_split_arm_kick (struct ring *vr);
void vring_split_disable_kick (struct ring *vr);
int vring_split_set_base (struct ring *vr, uint32_t base, const char **err);

/* Walks the chain starting at head (resubmission after a restart:
 * the chain is stable until head appears in the used ring). */
int vring_walk (struct ring *vr, const struct memtable *mem, uint16_t head,
                struct chain *c, const char **err);

/* The used index the guest sees (acquire). */
uint16_t vring_used_idx (const struct ring *vr);

/* The avail index the guest has published (acquire). */
uint16_t vring_avail_idx (const struct ring *vr);

/* ---- Packed rings (vring-packed.c) ---- */

int vring_packed_setup (struct ring *vr, const struct memtable *mem,
                        unsigned num, uint64_t desc_uva, uint64_t driver_uva,
                        uint64_t device_uva, const char **err);
int vring_packed_pop (struct ring *vr, const struct memtable *mem,
                      struct chain *c, const char **err);
void vring_packed_push (struct ring *vr, uint16_t id, uint32_t len);
bool vring_packed_publish (struct ring *vr);
bool vring_packed_arm_kick (struct ring *vr);
void vring_packed_disable_kick (struct ring *vr);
int vring_packed_set_base (struct ring *vr, uint32_t base, const char **err);
uint32_t vring_packed_get_base (const struct ring *vr);

/* Builds a chain from n ring descriptors already copied out (a pop, or
 * the copies an inflight region kept for a resubmission), checking
 * them as a pop does.  c->head is the buffer id of the last one. */
int vring_packed_walk_descs (struct ring *vr, const struct memtable *mem,
                             const struct vring_pdesc *d, unsigned n,
                             struct chain *c, const char **err);

/* Whether the descriptor at slot was used by us since the driver made
 * it available with wrap counter wrap (inflight recovery). */
bool vring_packed_slot_used (const struct ring *vr, uint16_t slot, bool wrap);

/* After inflight recovery: everything before (used_idx, used_wrap) is
 * published, and in_flight ring slots after it were consumed.  Used
 * flags a dead back-end left unpublished in those slots are wiped. */
void vring_packed_restart (struct ring *vr, uint16_t used_idx, bool used_wrap,
                           unsigned in_flight);

/* ---- Either layout ---- */

/* Translates and checks the three ring areas (whole size, alignment).
 * -1 with a message in *err. */
static inline int
vring_setup (struct ring *vr, const struct memtable *mem, unsigned num,
             uint64_t desc_uva, uint64_t avail_uva, uint64_t used_uva,
             const char **err)
{
  return vr->packed
    ? vring_packed_setup (vr, mem, num, desc_uva, avail_uva, used_uva, err)
    : vring_split_setup (vr, mem, num, desc_uva, avail_uva, used_uva, err);
}

/* Pops the next available chain.  Returns 1 with *c filled, 0 when
 * the ring is empty, -1 when the ring is broken (message in *err). */
static inline int
vring_pop (struct ring *vr, const struct memtable *mem, struct chain *c,
           const char **err)
{
  return vr->packed ? vring_packed_pop (vr, mem, c, err)
    : vring_split_pop (vr, mem, c, err);
}

/* Writes a used element (not yet visible to the guest). */
static inline void
vring_push (struct ring *vr, uint16_t head, uint32_t len)
{
  if (vr->packed)
    vring_packed_push (vr, head, len);
  else
    vring_split_push (vr, head, len);
}

/* Makes pushed elements visible; returns true when the guest wants an
 * interrupt for them. */
static inline bool
vring_publish (struct ring *vr)
{
  return vr->packed ? vring_packed_publish (vr) : vring_split_publish (vr);
}

/* How many entries the guest has made available and this side has
 * not popped yet: a hint only (the guest writes the index), 0 when it
 * is out of range.  Packed rings cannot tell without walking them and
 * say 0. */
static inline unsigned
vring_backlog (const struct ring *vr)
{
  uint16_t n;

  if (vr->packed)
    return 0;
  n = vring_avail_idx (vr) - vr->last_avail_idx;
  return n <= vr->num ? n : 0;
}

/* Before sleeping: ask the guest for a kick at the next entry.
 * Returns true if entries arrived meanwhile (so don't sleep). */
static inline bool
vring_arm_kick (struct ring *vr)
{
  return vr->packed ? vring_packed_arm_kick (vr) : vring_split_arm_kick (vr);
}

/* --poll-us: asks the guest not to kick until vring_arm_kick.  Split
 * without EVENT_IDX sets VRING_USED_F_NO_NOTIFY; with EVENT_IDX nothing
 * is written (avail_event stays behind the guest's index).  Packed: the
 * device area's flags say DISABLE. */
static inline void
vring_disable_kick (struct ring *vr)
{
  if (vr->packed)
    vring_packed_disable_kick (vr);
  else
    vring_split_disable_kick (vr);
}

/* SET_VRING_BASE's value, at ring start (after setup).  Split: the
 * next avail index.  Packed: bits 0-14 the next avail slot, 15 its wrap
 * counter, 16-30 the next used slot, 31 its wrap counter (QEMU's
 * encoding).  -1 with a message in *err if out of range. */
static inline int
vring_set_base (struct ring *vr, uint32_t base, const char **err)
{
  return vr->packed ? vring_packed_set_base (vr, base, err)
    : vring_split_set_base (vr, base, err);
}

/* GET_VRING_BASE's value, in the same encoding. */
static inline uint32_t
vring_get_base (const struct ring *vr)
{
  return vr->packed ? vring_packed_get_base (vr) : vr->last_avail_idx;
}

#endif /* BLKGATE_VRING_H */
