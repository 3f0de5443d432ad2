/* Packed virtqueue walking (virtio 1.1, 2.8).
 *
 * The descriptor ring is shared with a guest we do not trust, and both
 * sides write it: the driver makes descriptors available, we overwrite
 * them with used ones.  The same rules as for split rings hold: every
 * descriptor is copied out once before it is looked at, a chain is
 * bounded by the ring slots the driver may legitimately have filled,
 * buffer ids are checked against the ring size and against the ids in
 * flight, indirect tables are checked and never nested, and every
 * buffer goes through the memory table.
 *
 * Positions are a slot (< num) plus a ring wrap counter, as the spec
 * counts them.  A used element is written at the next used slot and
 * skips the ring slots its chain took.  The first used element of a
 * batch gets its flags last (in vring_packed_publish), so the driver,
 * which reads in ring order, sees a batch all at once. */

#include <config.h>

#include <endian.h>
#include <stddef.h>
#include <string.h>

#include "vring.h"

#define F_AVAIL (1 << VRING_PACKED_DESC_F_AVAIL)
#define F_USED (1 << VRING_PACKED_DESC_F_USED)
#define WRAP_BIT (1 << VRING_PACKED_EVENT_F_WRAP_CTR)

/* Available: AVAIL matches the driver's wrap counter, USED does not. */
static bool
is_avail (uint16_t flags, bool wrap)
{
  return !!(flags & F_AVAIL) == wrap && !!(flags & F_USED) != wrap;
}

static void
advance (const struct ring *vr, uint16_t *slot, bool *wrap, unsigned n)
{
  unsigned s = *slot + n;

  if (s >= vr->num) {
    s -= vr->num;
    *wrap = !*wrap;
  }
  *slot = s;
}

/* Ring slots from position a to position b (b not behind a: at most
 * one lap apart). */
static unsigned
distance (const struct ring *vr, uint16_t a, bool aw, uint16_t b, bool bw)
{
  return aw == bw ? (unsigned) b - a : (unsigned) b + vr->num - a;
}

/* A position as a number mod 2 * num, for event comparisons. */
static unsigned
linear (const struct ring *vr, uint16_t slot, bool wrap)
{
  return slot + (wrap ? vr->num : 0);
}

int
vring_packed_setup (struct ring *vr, const struct memtable *mem,
                    unsigned num, uint64_t desc_uva, uint64_t driver_uva,
                    uint64_t device_uva, const char **err)
{
  if (num == 0 || num > VRING_PACKED_MAX) {
    *err = "packed ring size out of range";
    return -1;
  }
  if ((desc_uva & 15) || (driver_uva & 3) || (device_uva & 3)) {
    *err = "ring addresses are misaligned";
    return -1;
  }
  vr->pdesc = memtable_uva (mem, desc_uva, 16 * (uint64_t) num);
  vr->driver_event = memtable_uva (mem, driver_uva, 4);
  vr->device_event = memtable_uva (mem, device_uva, 4);
  if (!vr->pdesc || !vr->driver_event || !vr->device_event ||
      !memtable_uva_to_gpa (mem, desc_uva, 16 * (uint64_t) num,
                            &vr->desc_gpa)) {
    *err = "ring addresses are outside guest memory";
    return -1;
  }
  if (((uintptr_t) vr->pdesc & 15) || ((uintptr_t) vr->driver_event & 3) ||
      ((uintptr_t) vr->device_event & 3)) {
    *err = "ring addresses are misaligned in the memory mapping";
    return -1;
  }
  vr->num = num;
  return 0;
}

/* During migration every descriptor and device area write is logged
 * at its guest-physical address. */
static void
log_write (struct ring *vr, uint64_t gpa, size_t len)
{
  if (vr->log && !dirty_log_mark (vr->log, gpa, len))
    vr->log_failed = true;
}

static void
log_slot (struct ring *vr, uint16_t slot)
{
  log_write (vr, vr->desc_gpa + sizeof *vr->pdesc * slot,
             sizeof *vr->pdesc);
}

/* A back-end that died with a batch pushed but not published left
 * used flags in slots past the used position (every element of the
 * batch but the first gets them when pushed).  Once the batch before
 * them is published the driver would read them, so the consumed slots
 * get the driver's available flags back.  We own those slots, and the
 * driver only ever tests the slot at its used position for "used". */
static void
scrub_unpublished (struct ring *vr, unsigned in_flight)
{
  uint16_t slot = vr->used_idx;
  bool wrap = vr->used_wrap;
  unsigned i;

  for (i = 0; i < in_flight; i++, advance (vr, &slot, &wrap, 1)) {
    uint16_t *f = &vr->pdesc[slot].flags;
    uint16_t flags = le16toh (__atomic_load_n (f, __ATOMIC_RELAXED));
    if (is_avail (flags, wrap))
      continue;
    flags = (flags & ~(F_AVAIL | F_USED)) | (wrap ? F_AVAIL : F_USED);
    __atomic_store_n (f, htole16 (flags), __ATOMIC_RELAXED);
    log_slot (vr, slot);
  }
}

static void
set_position (struct ring *vr, uint16_t used_idx, bool used_wrap,
              unsigned in_flight)
{
  vr->used_idx = vr->published_idx = used_idx;
  vr->used_wrap = vr->published_wrap = used_wrap;
  vr->last_avail_idx = used_idx;
  vr->avail_wrap = used_wrap;
  advance (vr, &vr->last_avail_idx, &vr->avail_wrap, in_flight);
  vr->batch_open = false;
  vr->signalled_used_valid = false;
}

void
vring_packed_restart (struct ring *vr, uint16_t used_idx, bool used_wrap,
                      unsigned in_flight)
{
  set_position (vr, used_idx, used_wrap, in_flight);
  scrub_unpublished (vr, in_flight);
}

int
vring_packed_set_base (struct ring *vr, uint32_t base, const char **err)
{
  uint16_t avail = base & 0x7fff, used = (base >> 16) & 0x7fff;
  bool avail_wrap = base & WRAP_BIT, used_wrap = (base >> 16) & WRAP_BIT;

  if (avail >= vr->num || used >= vr->num ||
      (avail_wrap == used_wrap && avail < used) ||
      (avail_wrap != used_wrap && avail > used)) {
    *err = "packed ring base out of range";
    return -1;
  }
  set_position (vr, used, used_wrap,
                distance (vr, used, used_wrap, avail, avail_wrap));
  return 0;
}

uint32_t
vring_packed_get_base (const struct ring *vr)
{
  uint32_t avail = vr->last_avail_idx | (vr->avail_wrap ? WRAP_BIT : 0);
  uint32_t used = vr->used_idx | (vr->used_wrap ? WRAP_BIT : 0);

  return avail | used << 16;
}

bool
vring_packed_slot_used (const struct ring *vr, uint16_t slot, bool wrap)
{
  uint16_t flags = le16toh (__atomic_load_n (&vr->pdesc[slot].flags,
                                             __ATOMIC_ACQUIRE));
  return !is_avail (flags, wrap);
}

static void
read_pdesc (const struct vring_packed_desc *src, struct vring_pdesc *d)
{
  struct vring_packed_desc raw;

  memcpy (&raw, src, sizeof raw);
  d->addr = le64toh (raw.addr);
  d->len = le32toh (raw.len);
  d->id = le16toh (raw.id);
  d->flags = le16toh (raw.flags);
}

/* An indirect table is read sequentially, len / 16 entries; in it only
 * WRITE is a valid flag (NEXT is reserved and ignored, INDIRECT would
 * be nesting). */
static int
walk_indirect (struct ring *vr, const struct memtable *mem,
               const struct vring_pdesc *ind, struct chain *c,
               const char **err)
{
  const struct vring_packed_desc *table;
  struct vring_pdesc d;
  unsigned count, i;

  if (!vr->indirect || (ind->flags & VRING_DESC_F_NEXT) ||
      ind->len == 0 || ind->len % sizeof *table != 0) {
    *err = "bad indirect descriptor";
    return -1;
  }
  count = ind->len / sizeof *table;
  if (count > vr->num) {
    *err = "indirect table longer than the ring";
    return -1;
  }
  table = memtable_gpa (mem, ind->addr, ind->len);
  if (table == NULL) {
    *err = "indirect table outside guest memory";
    return -1;
  }
  for (i = 0; i < count; i++) {
    read_pdesc (&table[i], &d);
    if (d.flags & VRING_DESC_F_INDIRECT) {
      *err = "nested indirect descriptor";
      return -1;
    }
    if (vring_chain_add (mem, d.addr, d.len, d.flags & VRING_DESC_F_WRITE,
                         c, err) == -1)
      return -1;
  }
  return 0;
}

int
vring_packed_walk_descs (struct ring *vr, const struct memtable *mem,
                         const struct vring_pdesc *d, unsigned n,
                         struct chain *c, const char **err)
{
  unsigned i;
  uint16_t id;

  c->niov = c->nout = 0;
  if (n == 0 || n > vr->num) {
    *err = "descriptor chain empty or longer than the ring";
    return -1;
  }
  for (i = 0; i < n; i++) {
    if (!(d[i].flags & VRING_DESC_F_NEXT) != (i == n - 1)) {
      *err = "descriptor chain flags do not match its length";
      return -1;
    }
    if (d[i].flags & VRING_DESC_F_INDIRECT) {
      if (n > 1) {
        *err = "indirect descriptor inside a chain";
        return -1;
      }
      if (walk_indirect (vr, mem, &d[i], c, err) == -1)
        return -1;
    }
    else if (vring_chain_add (mem, d[i].addr, d[i].len,
                              d[i].flags & VRING_DESC_F_WRITE, c, err) == -1)
      return -1;
  }
  id = d[n - 1].id;             /* the id is in the chain's last one */
  if (id >= vr->num) {
    *err = "buffer id out of range";
    return -1;
  }
  if (vr->ndesc[id]) {
    *err = "buffer id already in flight";
    return -1;
  }
  vr->ndesc[id] = n;
  c->head = id;
  c->desc = d;
  c->ndesc = n;
  return 0;
}

/* Copies the chain at the next avail slot into vr->chain_desc.  The
 * driver can have filled at most the slots not in flight: a chain that
 * runs further is refused (this also bounds it by the ring size). */
static int
read_chain (struct ring *vr, uint16_t head_flags, unsigned *n,
            const char **err)
{
  uint16_t slot = vr->last_avail_idx;
  bool wrap = vr->avail_wrap;
  unsigned busy = distance (vr, vr->published_idx, vr->published_wrap,
                            vr->last_avail_idx, vr->avail_wrap);
  unsigned room = busy < vr->num ? vr->num - busy : 0;
  struct vring_pdesc *d;

  for (*n = 0;; (*n)++) {
    if (*n == room) {
      *err = room == vr->num ? "descriptor chain longer than the ring"
        : "descriptor chain runs into descriptors in flight";
      return -1;
    }
    d = &vr->chain_desc[*n];
    read_pdesc (&vr->pdesc[slot], d);
    if (*n == 0)
      d->flags = head_flags;    /* the value we checked, not a re-read */
    else if (!is_avail (d->flags, wrap)) {
      *err = "chained descriptor not marked available";
      return -1;
    }
    advance (vr, &slot, &wrap, 1);
    if (!(d->flags & VRING_DESC_F_NEXT)) {
      (*n)++;
      return 0;
    }
  }
}

int
vring_packed_pop (struct ring *vr, const struct memtable *mem,
                  struct chain *c, const char **err)
{
  uint16_t flags = le16toh (__atomic_load_n
                            (&vr->pdesc[vr->last_avail_idx].flags,
                             __ATOMIC_ACQUIRE));
  unsigned n;

  if (!is_avail (flags, vr->avail_wrap))
    return 0;
  vring_packed_disable_kick (vr);       /* until vring_arm_kick */
  if (read_chain (vr, flags, &n, err) == -1 ||
      vring_packed_walk_descs (vr, mem, vr->chain_desc, n, c, err) == -1)
    return -1;
  advance (vr, &vr->last_avail_idx, &vr->avail_wrap, n);
  return 1;
}

/* The used element goes to the next used slot; WRITE says whether we
 * wrote into the buffer (len is only meaningful with it). */
void
vring_packed_push (struct ring *vr, uint16_t id, uint32_t len)
{
  struct vring_packed_desc *e = &vr->pdesc[vr->used_idx];
  uint16_t flags = (vr->used_wrap ? F_AVAIL | F_USED : 0) |
    (len ? VRING_DESC_F_WRITE : 0);
  unsigned n = id < vr->num && vr->ndesc[id] ? vr->ndesc[id] : 1;

  __atomic_store_n (&e->id, htole16 (id), __ATOMIC_RELAXED);
  __atomic_store_n (&e->len, htole32 (len), __ATOMIC_RELAXED);
  if (!vr->batch_open) {
    vr->batch_open = true;
    vr->batch_slot = vr->used_idx;
    vr->batch_flags = flags;
  }
  else
    __atomic_store_n (&e->flags, htole16 (flags), __ATOMIC_RELEASE);
  log_slot (vr, vr->used_idx);
  if (id < vr->num)
    vr->ndesc[id] = 0;
  advance (vr, &vr->used_idx, &vr->used_wrap, n);
}

/* Driver event suppression: ENABLE, DISABLE, or (EVENT_IDX) DESC: an
 * interrupt once the used position passes off_wrap.  old and new are
 * the published positions before and after this batch; without an old
 * one (first batch since the start) DESC means an interrupt. */
static bool
need_notify (struct ring *vr, bool valid, unsigned old, unsigned new)
{
  const struct vring_packed_desc_event *ev = vr->driver_event;
  uint16_t flags = le16toh (__atomic_load_n (&ev->flags, __ATOMIC_ACQUIRE));
  uint16_t off_wrap, off;
  unsigned lap = 2 * vr->num, event;

  flags &= 3;
  if (flags == VRING_PACKED_EVENT_FLAG_DISABLE)
    return false;
  if (flags != VRING_PACKED_EVENT_FLAG_DESC || !vr->event_idx || !valid)
    return true;
  off_wrap = le16toh (__atomic_load_n (&ev->off_wrap, __ATOMIC_RELAXED));
  off = off_wrap & ~WRAP_BIT;
  if (off >= vr->num)
    return true;                /* nonsense: an extra interrupt is safe */
  event = linear (vr, off, off_wrap & WRAP_BIT);
  return (event + lap - old) % lap < (new + lap - old) % lap;
}

bool
vring_packed_publish (struct ring *vr)
{
  unsigned old = linear (vr, vr->published_idx, vr->published_wrap);
  bool valid = vr->signalled_used_valid;

  if (!vr->batch_open)
    return false;
  __atomic_store_n (&vr->pdesc[vr->batch_slot].flags,
                    htole16 (vr->batch_flags), __ATOMIC_RELEASE);
  log_slot (vr, vr->batch_slot);
  vr->batch_open = false;
  vr->published_idx = vr->signalled_used = vr->used_idx;
  vr->published_wrap = vr->signalled_wrap = vr->used_wrap;
  vr->signalled_used_valid = true;
  __atomic_thread_fence (__ATOMIC_SEQ_CST);
  return need_notify (vr, valid, old,
                      linear (vr, vr->used_idx, vr->used_wrap));
}

/* Device event suppression, in the device area (log_guest_addr). */
static void
set_kick_flags (struct ring *vr, uint16_t flags)
{
  struct vring_packed_desc_event *ev = vr->device_event;

  if (flags == VRING_PACKED_EVENT_FLAG_DESC) {
    uint16_t off_wrap = vr->last_avail_idx | (vr->avail_wrap ? WRAP_BIT : 0);
    __atomic_store_n (&ev->off_wrap, htole16 (off_wrap), __ATOMIC_RELAXED);
  }
  __atomic_store_n (&ev->flags, htole16 (flags), __ATOMIC_RELEASE);
  log_write (vr, vr->log_guest_addr, sizeof *ev);
  vr->kicks_off = flags == VRING_PACKED_EVENT_FLAG_DISABLE;
}

/* With EVENT_IDX, ask for a kick when the next slot we will read is
 * made available; without it, for every new buffer. */
bool
vring_packed_arm_kick (struct ring *vr)
{
  uint16_t flags;

  set_kick_flags (vr, vr->event_idx ? VRING_PACKED_EVENT_FLAG_DESC
                  : VRING_PACKED_EVENT_FLAG_ENABLE);
  __atomic_thread_fence (__ATOMIC_SEQ_CST);
  flags = le16toh (__atomic_load_n (&vr->pdesc[vr->last_avail_idx].flags,
                                    __ATOMIC_ACQUIRE));
  return is_avail (flags, vr->avail_wrap);
}

/* Kicks off while we are busy anyway (a pop found work, or polling);
 * written once per round. */
void
vring_packed_disable_kick (struct ring *vr)
{
  if (!vr->kicks_off)
    set_kick_flags (vr, VRING_PACKED_EVENT_FLAG_DISABLE);
}
