/* A packed-ring driver for the unit tests of vring-packed.c and
 * inflight-packed.c, playing the guest as the virtio 1.1 spec (2.8)
 * and Linux's virtio_ring.c do: descriptors are written in ring order,
 * the head's flags last; used descriptors are read in ring order,
 * skipping the slots of each buffer id's chain.
 *
 * "Guest memory" is two malloc'd buffers registered with memtable_add
 * as regions adjacent in both address spaces; ring addresses are
 * front-end virtual addresses (UVAs), buffer addresses guest physical
 * ones (GPAs).  Header-only: each test program includes it once. */

#ifndef BLKGATE_PACKED_DRIVER_H
#define BLKGATE_PACKED_DRIVER_H

#include <endian.h>
#include <stdlib.h>
#include <string.h>

#include "vring.h"

#define S1 (64 * 1024)          /* region 1: rings and most buffers */
#define S2 (16 * 1024)          /* region 2: right after region 1 */
#define G1 UINT64_C (0x40000000)
#define G2 (G1 + S1)

#define DESC_OFF   0x0000       /* descriptor ring (up to 256 entries) */
#define DRIVER_OFF 0x1000       /* driver event suppression */
#define DEVICE_OFF 0x1010       /* device event suppression */
#define TABLE_OFF  0x3000       /* indirect tables */
#define BUF_OFF    0x4000       /* data buffers */

#define F_AVAIL (1 << VRING_PACKED_DESC_F_AVAIL)
#define F_USED (1 << VRING_PACKED_DESC_F_USED)
#define F_NEXT VRING_DESC_F_NEXT
#define F_WRITE VRING_DESC_F_WRITE
#define F_INDIRECT VRING_DESC_F_INDIRECT

#define MAXIOV 64

/* One buffer element the driver posts: flags are NEXT/WRITE/INDIRECT
 * only (the driver adds AVAIL/USED); NEXT is added for all but the
 * last of a chain unless raw is set. */
struct tdesc {
  uint64_t addr;
  uint32_t len;
  uint16_t id;
  uint16_t flags;
};

static struct {
  uint8_t *m1, *m2;
  uint64_t u1, u2;              /* UVAs of the regions */
  struct memtable *t;
  struct ring vr;
  unsigned num;
  struct iovec iov[MAXIOV];
  uint64_t gpa[MAXIOV];
  struct chain c;
  const char *variant;
  /* The driver. */
  uint16_t avail;               /* next slot it fills */
  bool avail_wrap;
  uint16_t used;                /* next slot it reads a used one from */
  bool used_wrap;
  uint16_t ndesc[VRING_PACKED_MAX];     /* slots of each id in flight */
} g;

static struct vring_packed_desc *
pdesc (void)
{
  return (struct vring_packed_desc *) (g.m1 + DESC_OFF);
}

static __attribute__ ((unused)) struct vring_packed_desc_event *
driver_event (void)
{
  return (struct vring_packed_desc_event *) (g.m1 + DRIVER_OFF);
}

static __attribute__ ((unused)) struct vring_packed_desc_event *
device_event (void)
{
  return (struct vring_packed_desc_event *) (g.m1 + DEVICE_OFF);
}

static struct vring_packed_desc *
ptable (void)
{
  return (struct vring_packed_desc *) (g.m1 + TABLE_OFF);
}

static uint16_t
avail_flags (bool wrap)
{
  return wrap ? F_AVAIL : F_USED;
}

static void
put_pdesc (struct vring_packed_desc *d, uint64_t addr, uint32_t len,
           uint16_t id, uint16_t flags)
{
  d->addr = htole64 (addr);
  d->len = htole32 (len);
  d->id = htole16 (id);
  d->flags = htole16 (flags);
}

static void
step (uint16_t *slot, bool *wrap, unsigned n)
{
  *slot += n;
  if (*slot >= g.num) {
    *slot -= g.num;
    *wrap = !*wrap;
  }
}

/* Makes the n elements of d[] one buffer available, as a driver does;
 * the head's flags go last.  With raw, flags are used as given (plus
 * the AVAIL/USED pair). */
static void
post_raw (const struct tdesc *d, unsigned n, bool raw)
{
  uint16_t slot = g.avail, head_flags = 0;
  bool wrap = g.avail_wrap;
  unsigned i;

  for (i = 0; i < n; i++) {
    uint16_t f = d[i].flags | avail_flags (wrap);
    if (!raw && i < n - 1)
      f |= F_NEXT;
    if (i == 0) {
      head_flags = f;
      put_pdesc (&pdesc ()[slot], d[i].addr, d[i].len, d[i].id,
                 le16toh (pdesc ()[slot].flags));
    }
    else
      put_pdesc (&pdesc ()[slot], d[i].addr, d[i].len, d[i].id, f);
    step (&slot, &wrap, 1);
  }
  __atomic_store_n (&pdesc ()[g.avail].flags, htole16 (head_flags),
                    __ATOMIC_RELEASE);
  if (d[n - 1].id < VRING_PACKED_MAX)
    g.ndesc[d[n - 1].id] = n;
  g.avail = slot;
  g.avail_wrap = wrap;
}

static void
post (const struct tdesc *d, unsigned n)
{
  post_raw (d, n, false);
}

/* A one-descriptor writable buffer of len bytes at BUF_OFF + off. */
static __attribute__ ((unused)) void
post1 (uint16_t id, uint32_t off, uint32_t len)
{
  struct tdesc d = { G1 + BUF_OFF + off, len, id, F_WRITE };
  post (&d, 1);
}

/* Reads the next used descriptor the driver would see: 1 with id and
 * len, 0 if none. */
static int
get_used (uint16_t *id, uint32_t *len, uint16_t *flags)
{
  uint16_t f = le16toh (__atomic_load_n (&pdesc ()[g.used].flags,
                                         __ATOMIC_ACQUIRE));
  bool avail = f & F_AVAIL, used = f & F_USED;

  if (avail != used || used != g.used_wrap)
    return 0;
  *id = le16toh (pdesc ()[g.used].id);
  *len = le32toh (pdesc ()[g.used].len);
  if (flags)
    *flags = f;
  step (&g.used, &g.used_wrap, *id < VRING_PACKED_MAX && g.ndesc[*id]
        ? g.ndesc[*id] : 1);
  return 1;
}

/* Fresh zeroed memory, a packed ring of num entries, and a driver at
 * the start (wrap counters 1). */
static void
reset (unsigned num, bool indirect, bool event_idx)
{
  const char *err = NULL;

  memset (g.m1, 0, S1);
  memset (g.m2, 0, S2);
  memset (&g.vr, 0, sizeof g.vr);
  memset (g.ndesc, 0, sizeof g.ndesc);
  g.num = num;
  g.avail = g.used = 0;
  g.avail_wrap = g.used_wrap = true;
  g.vr.packed = true;
  if (vring_setup (&g.vr, g.t, num, g.u1 + DESC_OFF, g.u1 + DRIVER_OFF,
                   g.u1 + DEVICE_OFF, &err) == -1 ||
      vring_set_base (&g.vr, 0x80008000, &err) == -1) {
    fprintf (stderr, "ring setup failed: %s\n", err);
    exit (99);
  }
  g.vr.indirect = indirect;
  g.vr.event_idx = event_idx;
  g.c.max = MAXIOV;
}

static int
pop (const char **err)
{
  *err = NULL;
  memset (g.iov, 0, sizeof g.iov);
  return vring_pop (&g.vr, g.t, &g.c, err);
}

static __attribute__ ((unused)) bool
iov_is (unsigned i, const void *base, size_t len, uint64_t gpa)
{
  return i < g.c.niov && g.iov[i].iov_base == base &&
    g.iov[i].iov_len == len && g.gpa[i] == gpa;
}

/* Registers the two regions; the ring is set up by reset. */
static void
memory_init (const char *variant, uint64_t u1)
{
  struct vu_mem_region r1, r2;
  const char *err = NULL;

  g.variant = variant;
  g.u1 = u1;
  g.u2 = u1 + S1;
  g.t = memtable_new ();
  r1 = (struct vu_mem_region) { G1, S1, g.u1, 0 };
  r2 = (struct vu_mem_region) { G2, S2, g.u2, 0 };
  if (memtable_add (g.t, &r1, g.m1, &err) == -1 ||
      memtable_add (g.t, &r2, g.m2, &err) == -1) {
    fprintf (stderr, "memtable_add: %s\n", err);
    exit (99);
  }
}

static void
memory_alloc (void)
{
  g.m1 = aligned_alloc (4096, S1);
  g.m2 = aligned_alloc (4096, S2);
  g.c.iov = g.iov;
  g.c.gpa = g.gpa;
  g.c.max = MAXIOV;
}

#endif /* BLKGATE_PACKED_DRIVER_H */
