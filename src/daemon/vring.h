/* Split virtqueues: the only code that reads or writes ring memory. */

#ifndef BLKGATE_VRING_H
#define BLKGATE_VRING_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>
#include <linux/virtio_ring.h>

#include "dirty-log.h"
#include "memtable.h"

struct ring {
  unsigned num;                 /* ring size, power of 2, <= 1024 */
  struct vring_desc *desc;
  struct vring_avail *avail;
  struct vring_used *used;
  uint16_t last_avail_idx;      /* next avail entry we will consume */
  uint16_t used_idx;            /* next used entry we will write */
  uint16_t published_idx;       /* used->idx as last published */
  uint16_t signalled_used;      /* used idx at the last notification */
  bool signalled_used_valid;
  bool event_idx;               /* VIRTIO_RING_F_EVENT_IDX negotiated */
  bool indirect;                /* VIRTIO_RING_F_INDIRECT_DESC negotiated */
  const struct dirty_log *log;  /* log used-ring writes here, or NULL */
  uint64_t log_guest_addr;      /* guest-physical address of the used ring */
  bool log_failed;              /* a used-ring write fell outside the log */
};

/* One popped descriptor chain, translated into our address space.
 * iov[0 .. nout) are device-readable, iov[nout .. niov) writable. */
struct chain {
  uint16_t head;
  unsigned niov;
  unsigned nout;
  unsigned max;                 /* capacity of iov[] and gpa[] */
  struct iovec *iov;
  uint64_t *gpa;                /* guest address of each piece */
};

/* Translates and checks the three ring areas (whole size, alignment).
 * -1 with a message in *err. */
int vring_setup (struct ring *vr, const struct memtable *mem, unsigned num,
                 uint64_t desc_uva, uint64_t avail_uva, uint64_t used_uva,
                 const char **err);

/* Pops the next available chain.  Returns 1 with *c filled, 0 when
 * the ring is empty, -1 when the ring is broken (message in *err). */
int vring_pop (struct ring *vr, const struct memtable *mem, struct chain *c,
               const char **err);

/* Walks the chain starting at head (resubmission after a restart:
 * the chain is stable until head appears in the used ring). */
int vring_walk (struct ring *vr, const struct memtable *mem, uint16_t head,
                struct chain *c, const char **err);

/* The used index the guest sees (acquire). */
uint16_t vring_used_idx (const struct ring *vr);

/* Writes a used element (not yet visible to the guest). */
void vring_push (struct ring *vr, uint16_t head, uint32_t len);

/* Makes pushed elements visible (used->idx); returns true when the
 * guest wants an interrupt for them. */
bool vring_publish (struct ring *vr);

/* Before sleeping: ask the guest for a kick at the next entry.
 * Returns true if entries arrived meanwhile (so don't sleep). */
bool vring_arm_kick (struct ring *vr);

/* The avail index the guest has published (acquire). */
uint16_t vring_avail_idx (const struct ring *vr);

#endif /* BLKGATE_VRING_H */
