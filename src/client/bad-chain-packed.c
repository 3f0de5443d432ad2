/* blkgate-io bad-chain: the packed-* kinds, malformed chains in a
 * packed ring (virtio 1.1, 2.8).  libvuclient drives split rings only;
 * these kinds reconnect with VIRTIO_F_RING_PACKED, lay the packed
 * descriptor ring over the split ring's memory (the descriptor area has
 * the same size; the driver and device event areas sit where avail and
 * used were), write one chain at slot 0 by hand, and watch the
 * descriptor's flags for the device's answer.
 *
 * SET_VRING_BASE is 0, so both wrap counters start at 0: a descriptor
 * is available when AVAIL is clear and USED set, and used when both are
 * clear. */

#include <config.h>

#include <endian.h>
#include <poll.h>
#include <string.h>
#include <sys/eventfd.h>

#include "bad-chain.h"

#define P_AVAIL (1 << VRING_PACKED_DESC_F_USED)  /* with wrap counter 0 */
#define P_USED_MASK ((1 << VRING_PACKED_DESC_F_USED) | \
                     (1 << VRING_PACKED_DESC_F_AVAIL))

static struct vring_packed_desc *
pring (struct parts *p)
{
  return (struct vring_packed_desc *) p->r->desc;
}

/* Writes slot i; the flags go last, with a release store. */
static void
pdesc (struct vring_packed_desc *d, uint64_t addr, uint32_t len, uint16_t id,
       uint16_t flags)
{
  d->addr = htole64 (addr);
  d->len = htole32 (len);
  d->id = htole16 (id);
  __atomic_store_n (&d->flags, htole16 (flags), __ATOMIC_RELEASE);
}

/* An indirect table entry (only WRITE counts in it). */
static void
tdesc (struct vring_packed_desc *d, uint64_t addr, uint32_t len,
       uint16_t flags)
{
  d->addr = htole64 (addr);
  d->len = htole32 (len);
  d->id = 0;
  d->flags = htole16 (flags);
}

static struct vring_packed_desc *
ptable (struct parts *p, unsigned which)
{
  return (struct vring_packed_desc *) (p->scratch + which * 2048);
}

static uint64_t
ptable_gpa (struct parts *p, unsigned which)
{
  return vuc_gpa (&p->s->c.mem, ptable (p, which));
}

static void
good_ptable (struct parts *p, struct vring_packed_desc *t)
{
  tdesc (&t[0], p->hdr, 16, 0);
  tdesc (&t[1], p->data, 512, BC_W);
  tdesc (&t[2], p->status, 1, BC_W);
}

/* n descriptors at slots 0..n-1: the chain's head is written last. */
struct pd {
  uint64_t addr;
  uint32_t len;
  uint16_t flags;               /* WRITE, INDIRECT, NEXT as given */
};

static void
pchain (struct parts *p, const struct pd *d, unsigned n, uint16_t id)
{
  struct vring_packed_desc *ring = pring (p);
  unsigned i;

  for (i = n; i-- > 0;)
    pdesc (&ring[i], d[i].addr, d[i].len, i == n - 1 ? id : 0,
           d[i].flags | P_AVAIL);
}

#define PK(name) static void pk_##name (struct parts *p)

PK (good)
{
  struct pd d[3] = {
    { p->hdr, 16, BC_N }, { p->data, 512, BC_W | BC_N }, { p->status, 1, BC_W }
  };
  pchain (p, d, 3, 0);
}

/* Every slot of the ring says NEXT: a chain without an end. */
PK (endless)
{
  struct vring_packed_desc *ring = pring (p);
  unsigned i;

  for (i = p->r->num; i-- > 0;)
    pdesc (&ring[i], i ? p->data : p->hdr, i ? 512 : 16, 0,
           (i ? BC_W : 0) | BC_N | P_AVAIL);
}

PK (not_avail)
{
  struct vring_packed_desc *ring = pring (p);

  pdesc (&ring[2], p->status, 1, 0, BC_W);      /* not made available */
  pdesc (&ring[1], p->data, 512, 0, BC_W | BC_N | P_AVAIL);
  pdesc (&ring[0], p->hdr, 16, 0, BC_N | P_AVAIL);
}

PK (id_range)
{
  struct pd d[3] = {
    { p->hdr, 16, BC_N }, { p->data, 512, BC_W | BC_N }, { p->status, 1, BC_W }
  };
  pchain (p, d, 3, p->r->num + 3);
}

/* Two good reads with the same buffer id: on storage slow enough, the
 * first is still in flight when the second comes. */
PK (id_twice)
{
  struct vring_packed_desc *ring = pring (p);

  pdesc (&ring[5], p->status + 1, 1, 0, BC_W | P_AVAIL);
  pdesc (&ring[4], p->data + 512, 512, 0, BC_W | BC_N | P_AVAIL);
  pdesc (&ring[3], p->hdr, 16, 0, BC_N | P_AVAIL);
  pk_good (p);
}

PK (outside)
{
  struct pd d[3] = {
    { p->hdr, 16, BC_N }, { p->outside - 256, 4096, BC_W | BC_N },
    { p->status, 1, BC_W }
  };
  pchain (p, d, 3, 0);
}

PK (no_status)
{
  struct pd d[1] = { { p->hdr, 16, 0 } };
  pchain (p, d, 1, 0);
}

PK (write_then_read)
{
  struct pd d[3] = {
    { p->hdr, 16, BC_N }, { p->status, 1, BC_W | BC_N }, { p->data, 512, 0 }
  };
  pchain (p, d, 3, 0);
}

PK (indirect)
{
  struct pd d[1] = { { ptable_gpa (p, 0), 48, BC_I } };
  good_ptable (p, ptable (p, 0));
  pchain (p, d, 1, 0);
}

PK (indirect_nested)
{
  struct pd d[1] = { { ptable_gpa (p, 0), 16, BC_I } };
  good_ptable (p, ptable (p, 1));
  tdesc (&ptable (p, 0)[0], ptable_gpa (p, 1), 48, BC_I);
  pchain (p, d, 1, 0);
}

PK (indirect_len)
{
  struct pd d[1] = { { ptable_gpa (p, 0), 40, BC_I } };
  good_ptable (p, ptable (p, 0));
  pchain (p, d, 1, 0);
}

PK (indirect_huge)
{
  struct pd d[1] = { { ptable_gpa (p, 0), 16 * (p->r->num + 1), BC_I } };
  good_ptable (p, ptable (p, 0));
  pchain (p, d, 1, 0);
}

PK (indirect_outside)
{
  struct pd d[1] = { { p->outside - 16, 48, BC_I } };
  pchain (p, d, 1, 0);
}

PK (indirect_in_chain)
{
  struct pd d[2] = { { p->hdr, 16, BC_N }, { ptable_gpa (p, 0), 48, BC_I } };
  good_ptable (p, ptable (p, 0));
  pchain (p, d, 2, 0);
}

/* ------------------------------------------------------------------ */

/* Waits for slot 0 to be used, the error eventfd, or a hang-up. */
static const char *
pobserve (struct parts *p, int wait_ms)
{
  struct vuc_ring *r = p->r;
  struct vring_packed_desc *d = &pring (p)[0];
  uint64_t deadline = vuc_now_ns () + (uint64_t) wait_ms * 1000000;
  struct pollfd pf[3];
  eventfd_t v;

  for (;;) {
    uint16_t flags = le16toh (__atomic_load_n (&d->flags, __ATOMIC_ACQUIRE));
    uint64_t now = vuc_now_ns ();

    if ((flags & P_USED_MASK) == 0) {
      if (le16toh (d->id) >= r->num)
        return "bogus-used";
      switch (*p->req->status) {
      case VIRTIO_BLK_S_OK: return "completed-ok";
      case VIRTIO_BLK_S_IOERR: return "completed-ioerr";
      case VIRTIO_BLK_S_UNSUPP: return "completed-unsupp";
      default: return "completed-nostatus";
      }
    }
    if (now >= deadline)
      return "no-completion";
    pf[0] = (struct pollfd) { .fd = r->call_fd, .events = POLLIN };
    pf[1] = (struct pollfd) { .fd = r->err_fd, .events = POLLIN };
    pf[2] = (struct pollfd) { .fd = r->sock, .events = POLLRDHUP };
    if (poll (pf, 3, (int) ((deadline - now + 999999) / 1000000)) == -1)
      continue;
    if (pf[0].revents & POLLIN)
      eventfd_read (r->call_fd, &v);
    if (pf[1].revents & POLLIN) {
      eventfd_read (r->err_fd, &v);
      return "ring-error";
    }
    if (pf[2].revents & (POLLRDHUP | POLLHUP | POLLERR))
      return "closed";
  }
}

/* Reconnects with a packed ring, runs one kind, and puts the feature
 * mask back so that the alive check uses a split ring again. */
static const char *
run_packed (struct parts *p, void (*build) (struct parts *p))
{
  struct session *s = p->s;
  uint64_t mask = s->c.feature_mask;
  const char *outcome = NULL;

  vuc_reset_guest (&s->c);
  s->c.feature_mask |= VU_BIT (VU_F_RING_PACKED);
  if (session_start (s) == -1)
    goto out;
  if (!vuc_has_f (&s->c, VU_F_RING_PACKED)) {
    fail ("packed kinds: the back-end does not offer VIRTIO_F_RING_PACKED");
    goto out;
  }
  p->r = session_ring (s, s->queue);
  memset (p->scratch, 0, 8192);
  *p->req->status = VUC_STATUS_NONE;
  p->req->hdr->type = htole32 (VIRTIO_BLK_T_IN);
  p->req->hdr->sector = 0;
  build (p);
  eventfd_write (p->r->kick_fd, 1);
  outcome = pobserve (p, 2000);
  /* libvuclient cannot stop a packed ring (which would drain it): a
   * request still in flight must complete before the alive check
   * clears the rings. */
  if (strcmp (outcome, "ring-error") == 0)
    pobserve (p, 5000);
 out:
  s->c.feature_mask = mask;
  return outcome;
}

#define RUN(name) \
  static const char *pr_##name (struct parts *p) \
  { return run_packed (p, pk_##name); }

RUN (good)
RUN (endless)
RUN (not_avail)
RUN (id_range)
RUN (id_twice)
RUN (outside)
RUN (no_status)
RUN (write_then_read)
RUN (indirect)
RUN (indirect_nested)
RUN (indirect_len)
RUN (indirect_huge)
RUN (indirect_outside)
RUN (indirect_in_chain)

#define ENTRY(name, fn, what) { name, NULL, what, NULL, pr_##fn }

const struct kind packed_kinds[] = {
  ENTRY ("packed-good", good, "packed ring: a good 512-byte read"),
  ENTRY ("packed-endless", endless, "packed ring: NEXT in every slot"),
  ENTRY ("packed-not-avail", not_avail,
         "packed ring: a chained descriptor not made available"),
  ENTRY ("packed-id-range", id_range, "packed ring: a buffer id past the ring"),
  ENTRY ("packed-id-twice", id_twice,
         "packed ring: two chains with the same buffer id"),
  ENTRY ("packed-outside", outside,
         "packed ring: a buffer across the end of guest memory"),
  ENTRY ("packed-no-status", no_status,
         "packed ring: only a readable header"),
  ENTRY ("packed-write-then-read", write_then_read,
         "packed ring: a readable descriptor after a writable one"),
  ENTRY ("packed-indirect", indirect,
         "packed ring: a good read through an indirect table"),
  ENTRY ("packed-indirect-nested", indirect_nested,
         "packed ring: an indirect table in a table"),
  ENTRY ("packed-indirect-len", indirect_len,
         "packed ring: a table length not a multiple of 16"),
  ENTRY ("packed-indirect-huge", indirect_huge,
         "packed ring: a table longer than the ring"),
  ENTRY ("packed-indirect-outside", indirect_outside,
         "packed ring: a table across the end of guest memory"),
  ENTRY ("packed-indirect-in-chain", indirect_in_chain,
         "packed ring: an indirect descriptor after a direct one"),
  { 0 }
};
