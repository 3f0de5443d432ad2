/* Split virtqueue walking.
 *
 * Ring memory is shared with a guest we do not trust: every index read
 * from it is checked before use, every descriptor is copied out once
 * before it is looked at, chains are bounded by the ring size (loops),
 * indirect tables are checked and never nested, and every buffer goes
 * through the memory table. */

#include <config.h>

#include <endian.h>
#include <stddef.h>
#include <string.h>

#include "vring.h"

static size_t
avail_size (unsigned num)
{
  return offsetof (struct vring_avail, ring) + 2 * (size_t) num + 2;
}

static size_t
used_size (unsigned num)
{
  return offsetof (struct vring_used, ring) +
    sizeof (struct vring_used_elem) * (size_t) num + 2;
}

int
vring_split_setup (struct ring *vr, const struct memtable *mem,
                   unsigned num, uint64_t desc_uva, uint64_t avail_uva,
                   uint64_t used_uva, const char **err)
{
  if (num == 0 || num > 32768 || (num & (num - 1)) != 0) {
    *err = "ring size is not a power of 2 in range";
    return -1;
  }
  if ((desc_uva & 15) || (avail_uva & 1) || (used_uva & 3)) {
    *err = "ring addresses are misaligned";
    return -1;
  }
  vr->desc = memtable_uva (mem, desc_uva, 16 * (uint64_t) num);
  vr->avail = memtable_uva (mem, avail_uva, avail_size (num));
  vr->used = memtable_uva (mem, used_uva, used_size (num));
  if (!vr->desc || !vr->avail || !vr->used) {
    *err = "ring addresses are outside guest memory";
    return -1;
  }
  /* A region whose address and mmap offset disagree in their low bits
   * maps an aligned ring address to a misaligned pointer, and the ring
   * is read with atomic loads. */
  if (((uintptr_t) vr->desc & 15) || ((uintptr_t) vr->avail & 1) ||
      ((uintptr_t) vr->used & 3)) {
    *err = "ring addresses are misaligned in the memory mapping";
    return -1;
  }
  vr->num = num;
  return 0;
}

uint16_t
vring_avail_idx (const struct ring *vr)
{
  return le16toh (__atomic_load_n (&vr->avail->idx, __ATOMIC_ACQUIRE));
}

uint16_t
vring_used_idx (const struct ring *vr)
{
  return le16toh (__atomic_load_n (&vr->used->idx, __ATOMIC_ACQUIRE));
}

int
vring_split_set_base (struct ring *vr, uint32_t base, const char **err)
{
  if (base > 0xffff) {
    *err = "split ring base out of range";
    return -1;
  }
  vr->last_avail_idx = base;
  vr->used_idx = vr->published_idx = vring_used_idx (vr);
  return 0;
}

/* Copies one descriptor out of guest memory. */
static void
read_desc (const struct vring_desc *table, unsigned i, struct vring_desc *d)
{
  memcpy (d, &table[i], sizeof *d);
  d->addr = le64toh (d->addr);
  d->len = le32toh (d->len);
  d->flags = le16toh (d->flags);
  d->next = le16toh (d->next);
}

/* Adds one buffer to the chain. */
static int
add_buffer (const struct memtable *mem, const struct vring_desc *d,
            struct chain *c, const char **err)
{
  return vring_chain_add (mem, d->addr, d->len, d->flags & VRING_DESC_F_WRITE,
                          c, err);
}

/* Walks an indirect table.  Its descriptors are copied out one at a
 * time; the table may not contain further indirect descriptors. */
static int
walk_indirect (struct ring *vr, const struct memtable *mem,
               const struct vring_desc *ind, struct chain *c,
               unsigned *budget, const char **err)
{
  const struct vring_desc *table;
  unsigned count, i, seen = 0;
  struct vring_desc d;

  if (!vr->indirect || (ind->flags & VRING_DESC_F_NEXT) ||
      ind->len == 0 || ind->len % sizeof d != 0) {
    *err = "bad indirect descriptor";
    return -1;
  }
  count = ind->len / sizeof d;
  if (count > vr->num) {
    *err = "indirect table longer than the ring";
    return -1;
  }
  table = memtable_gpa (mem, ind->addr, ind->len);
  if (table == NULL) {
    *err = "indirect table outside guest memory";
    return -1;
  }
  for (i = 0;; i = d.next) {
    if (seen++ >= count) {  /* the table bounds the walk, not the ring */
      *err = "looped indirect descriptor chain";
      return -1;
    }
    read_desc (table, i, &d);
    if (d.flags & VRING_DESC_F_INDIRECT) {
      *err = "nested indirect descriptor";
      return -1;
    }
    if (add_buffer (mem, &d, c, err) == -1)
      return -1;
    if (!(d.flags & VRING_DESC_F_NEXT))
      return 0;
    if (d.next >= count) {
      *err = "indirect descriptor index out of range";
      return -1;
    }
  }
}

int
vring_walk (struct ring *vr, const struct memtable *mem, uint16_t head,
            struct chain *c, const char **err)
{
  unsigned i, budget = vr->num;
  struct vring_desc d;

  if (head >= vr->num) {
    *err = "head outside the ring";
    return -1;
  }
  c->head = head;
  c->niov = c->nout = 0;
  for (i = head;; i = d.next) {
    if (budget-- == 0) {
      *err = "looped descriptor chain";
      return -1;
    }
    read_desc (vr->desc, i, &d);
    if (d.flags & VRING_DESC_F_INDIRECT) {
      if (c->niov > 0) {
        *err = "indirect descriptor inside a chain";
        return -1;
      }
      return walk_indirect (vr, mem, &d, c, &budget, err);
    }
    if (add_buffer (mem, &d, c, err) == -1)
      return -1;
    if (!(d.flags & VRING_DESC_F_NEXT))
      return 0;
    if (d.next >= vr->num) {
      *err = "descriptor index out of range";
      return -1;
    }
  }
}

int
vring_split_pop (struct ring *vr, const struct memtable *mem, struct chain *c,
                 const char **err)
{
  uint16_t avail_idx = vring_avail_idx (vr), head;

  if (avail_idx == vr->last_avail_idx)
    return 0;
  if ((uint16_t) (avail_idx - vr->last_avail_idx) > vr->num) {
    *err = "avail index moved further than the ring size";
    return -1;
  }
  head = le16toh (__atomic_load_n
                  (&vr->avail->ring[vr->last_avail_idx & (vr->num - 1)],
                   __ATOMIC_RELAXED));
  if (vring_walk (vr, mem, head, c, err) == -1)
    return -1;
  vr->last_avail_idx++;
  return 1;
}

/* During migration every write to the used ring is logged at its
 * guest-physical address (log_guest_addr: the ring addresses we use
 * are the front-end's virtual ones). */
static void
log_used (struct ring *vr, size_t offset, size_t len)
{
  if (vr->log && !dirty_log_mark (vr->log, vr->log_guest_addr + offset, len))
    vr->log_failed = true;
}

void
vring_split_push (struct ring *vr, uint16_t head, uint32_t len)
{
  unsigned slot = vr->used_idx & (vr->num - 1);
  struct vring_used_elem *e = &vr->used->ring[slot];

  e->id = htole32 (head);
  e->len = htole32 (len);
  vr->used_idx++;
  log_used (vr, offsetof (struct vring_used, ring) + sizeof *e * slot,
            sizeof *e);
}

/* With EVENT_IDX the guest asks for an interrupt once used->idx passes
 * used_event; without it, it can only switch interrupts off. */
bool
vring_split_publish (struct ring *vr)
{
  uint16_t old = vr->published_idx, now = vr->used_idx;
  uint16_t event;

  if (old == now)
    return false;
  __atomic_store_n (&vr->used->idx, htole16 (now), __ATOMIC_RELEASE);
  vr->published_idx = now;
  log_used (vr, offsetof (struct vring_used, idx), sizeof vr->used->idx);
  __atomic_thread_fence (__ATOMIC_SEQ_CST);
  if (!vr->event_idx)
    return !(le16toh (__atomic_load_n (&vr->avail->flags, __ATOMIC_RELAXED))
             & VRING_AVAIL_F_NO_INTERRUPT);
  event = le16toh (__atomic_load_n (&vr->avail->ring[vr->num],
                                    __ATOMIC_RELAXED));
  if (vr->signalled_used_valid &&
      !vring_need_event (event, now, vr->signalled_used)) {
    vr->signalled_used = now;
    return false;
  }
  vr->signalled_used = now;
  vr->signalled_used_valid = true;
  return true;
}

/* used->flags: only VRING_USED_F_NO_NOTIFY, written when it changes
 * (a flag a previous back-end left set is cleared too). */
static void
set_used_flags (struct ring *vr, uint16_t flags)
{
  if (le16toh (__atomic_load_n (&vr->used->flags, __ATOMIC_RELAXED)) == flags)
    return;
  __atomic_store_n (&vr->used->flags, htole16 (flags), __ATOMIC_RELAXED);
  log_used (vr, offsetof (struct vring_used, flags), sizeof vr->used->flags);
}

bool
vring_split_arm_kick (struct ring *vr)
{
  if (vr->event_idx) {
    uint16_t *avail_event = (uint16_t *) &vr->used->ring[vr->num];
    __atomic_store_n (avail_event, htole16 (vr->last_avail_idx),
                      __ATOMIC_RELAXED);
    log_used (vr, offsetof (struct vring_used, ring) +
              sizeof (struct vring_used_elem) * vr->num, sizeof *avail_event);
  }
  else
    set_used_flags (vr, 0);
  __atomic_thread_fence (__ATOMIC_SEQ_CST);
  return vring_avail_idx (vr) != vr->last_avail_idx;
}

/* With EVENT_IDX nothing is written: avail_event stays where the last
 * vring_arm_kick put it, which the guest's index has passed. */
void
vring_split_disable_kick (struct ring *vr)
{
  if (!vr->event_idx)
    set_used_flags (vr, VRING_USED_F_NO_NOTIFY);
}
