/* Inflight tracking for packed rings (the vhost-user spec's layout).
 *
 * A packed ring keeps no avail ring and overwrites the driver's
 * descriptors with used ones, so the region keeps a copy of every ring
 * descriptor of each chain in flight.  Entries not in use form a free
 * list; a fetched chain takes entries from it, a completed one gives
 * them back.  (free_head, used_idx, used_wrap_counter) move as we go,
 * their old_* copies are the commit point: after a crash, recovery
 * looks at the ring slot where the last batch's first used element
 * went.  If the driver can see it, the batch is committed, otherwise
 * rolled back, and the chains whose head is still flagged are
 * resubmitted in submission order.
 *
 * Two things the spec's recipe leaves open, which a crash at the wrong
 * moment would turn into a lost or doubled request:
 *  - Entries freed by the open batch (not yet published) stay in front
 *    of the list, before old_free_head, and a chain fetched meanwhile
 *    takes its entries after them: a rollback to old_free_head never
 *    loses a chain whose entries were handed out again.
 *  - The used index and its wrap counter are committed in one store
 *    (store_used), and after a rollback the ring slots the dead
 *    back-end had filled with unpublished used elements are wiped
 *    (vring_packed_restart).
 * tests/unit/test-inflight-packed.c crashes at every one of these steps.
 *
 * While running we only write the region: the links we follow come
 * from our own copy.  At recovery everything read from it is checked:
 * indexes, loops, chains overlapping each other or the free list. */

#include <config.h>

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "inflight.h"
#include "log.h"

_Static_assert (sizeof (struct inflight_packed_desc) == 32,
                "packed inflight entry is 32 bytes");
_Static_assert (offsetof (struct inflight_packed_queue, desc) == 32,
                "packed inflight header is 32 bytes");
_Static_assert (offsetof (struct inflight_packed_queue, used_idx) == 16 &&
                offsetof (struct inflight_packed_queue, old_used_idx) == 18 &&
                offsetof (struct inflight_packed_queue, used_wrap_counter)
                == 20 &&
                offsetof (struct inflight_packed_queue, old_used_wrap_counter)
                == 21, "the used positions share one 8-byte word");

/* used_idx, old_used_idx and both wrap counters share the aligned
 * 8-byte word at offset 16: one store writes them, so a crash never
 * leaves an index without its wrap counter (after a batch that wrapped
 * recovery would look at the wrong slot). */
static void
store_used (struct inflight_ring *ir)
{
  struct {
    uint16_t used, old_used;
    uint8_t wrap, old_wrap, pad[2];
  } w = { ir->used_idx, ir->old_used_idx, ir->used_wrap, ir->old_used_wrap,
          { 0 } };
  uint64_t v;

  memcpy (&v, &w, sizeof v);
  __atomic_store_n ((uint64_t *) ((char *) ir->pq + 16), v, __ATOMIC_RELEASE);
}

static void
advance (unsigned num, uint16_t *idx, bool *wrap, unsigned n)
{
  unsigned i = *idx + n;

  if (i >= num) {
    i -= num;
    *wrap = !*wrap;
  }
  *idx = i;
}

static void
set_next (struct inflight_ring *ir, uint16_t e, uint16_t next)
{
  ir->next[e] = next;
  __atomic_store_n (&ir->pq->desc[e].next, next, __ATOMIC_RELEASE);
}

/* Should not happen: the ring never lets more descriptors be in flight
 * than there are entries. */
static void
lose_tracking (struct inflight_ring *ir, const char *why)
{
  blkgate_error ("inflight tracking stopped for a packed ring: %s", why);
  ir->pq = NULL;
}

void
inflight_packed_begin (struct inflight_ring *ir, const struct chain *c)
{
  struct inflight_packed_queue *pq = ir->pq;
  uint16_t e = ir->old_free_head, cur = e, last = e;
  unsigned i;

  if (c->head >= ir->num || c->ndesc == 0 || c->desc == NULL) {
    lose_tracking (ir, "chain without ring descriptors");
    return;
  }
  for (i = 0; i < c->ndesc; i++, cur = ir->next[cur]) {
    struct inflight_packed_desc *d;
    if (cur >= ir->num) {
      lose_tracking (ir, "no free entry left");
      return;
    }
    d = &pq->desc[cur];
    d->inflight = 0;
    d->id = c->desc[i].id;
    d->flags = c->desc[i].flags;
    d->len = c->desc[i].len;
    d->addr = c->desc[i].addr;
    last = cur;
  }
  pq->desc[e].num = c->ndesc;
  pq->desc[e].last = last;
  pq->desc[e].counter = ir->counter++;
  __atomic_store_n (&pq->desc[e].inflight, 1, __ATOMIC_RELEASE);
  if (ir->free_head != ir->old_free_head)     /* a batch is open */
    set_next (ir, ir->batch_tail, cur);
  else {
    ir->free_head = cur;
    __atomic_store_n (&pq->free_head, cur, __ATOMIC_RELEASE);
  }
  ir->old_free_head = cur;
  __atomic_store_n (&pq->old_free_head, cur, __ATOMIC_RELEASE);
  ir->buf[c->head] = (struct inflight_buf) { e, last, c->ndesc };
}

/* The used element of id was written (not yet published): its entries
 * go to the front of the free list, the used position moves on. */
void
inflight_packed_link (struct inflight_ring *ir, uint16_t id)
{
  struct inflight_packed_queue *pq = ir->pq;
  struct inflight_buf *b = id < ir->num ? &ir->buf[id] : NULL;

  if (b == NULL || b->num == 0) {
    lose_tracking (ir, "a completed buffer id was not in flight");
    return;
  }
  if (ir->free_head == ir->old_free_head)
    ir->batch_tail = b->last;
  set_next (ir, b->last, ir->free_head);
  ir->free_head = b->head;
  __atomic_store_n (&pq->free_head, b->head, __ATOMIC_RELEASE);
  ir->batch[ir->nbatch++] = b->head;
  advance (ir->num, &ir->used_idx, &ir->used_wrap, b->num);
  store_used (ir);
  b->num = 0;
}

/* The batch is published: clear its heads, then move the commit
 * point. */
void
inflight_packed_commit (struct inflight_ring *ir)
{
  struct inflight_packed_queue *pq = ir->pq;
  unsigned i;

  for (i = 0; i < ir->nbatch; i++)
    __atomic_store_n (&pq->desc[ir->batch[i]].inflight, 0, __ATOMIC_RELEASE);
  ir->nbatch = 0;
  ir->old_free_head = ir->free_head;
  __atomic_store_n (&pq->old_free_head, ir->free_head, __ATOMIC_RELEASE);
  ir->old_used_idx = ir->used_idx;
  ir->old_used_wrap = ir->used_wrap;
  store_used (ir);
}

/* Writes a canonical region: entries not in a chain (mark 2) form the
 * free list in index order, and the used position is committed. */
static void
rebuild (struct inflight_ring *ir, const uint8_t *mark, uint16_t used_idx,
         bool used_wrap)
{
  struct inflight_packed_queue *pq = ir->pq;
  uint16_t head = ir->num, i = ir->num;

  while (i-- > 0)
    if (mark[i] != 2) {
      pq->desc[i].inflight = 0;
      set_next (ir, i, head);
      head = i;
    }
  ir->free_head = ir->old_free_head = head;
  pq->free_head = pq->old_free_head = head;
  ir->used_idx = ir->old_used_idx = used_idx;
  ir->used_wrap = ir->old_used_wrap = used_wrap;
  store_used (ir);
}

static void
fresh (struct inflight_ring *ir, struct ring *vr)
{
  struct inflight_packed_queue *pq = ir->pq;
  uint8_t mark[VRING_PACKED_MAX] = { 0 };

  memset (pq->desc, 0, sizeof pq->desc[0] * ir->num);
  pq->features = INFLIGHT_F_PACKED;
  pq->desc_num = ir->num;
  rebuild (ir, mark, vr->used_idx, vr->used_wrap);
  vring_packed_restart (vr, vr->used_idx, vr->used_wrap, 0);
  __atomic_store_n (&pq->version, 1, __ATOMIC_RELEASE);
}

/* The header, copied once and checked. */
struct hdr {
  uint16_t free_head, old_free_head, used, old_used;
  bool used_wrap, old_used_wrap;
};

static int
read_header (const struct inflight_packed_queue *pq, unsigned num,
             struct hdr *h, const char **err)
{
  struct inflight_packed_queue c;

  memcpy (&c, pq, sizeof c);
  if (c.free_head > num || c.old_free_head > num || c.used_idx >= num ||
      c.old_used_idx >= num || c.used_wrap_counter > 1 ||
      c.old_used_wrap_counter > 1) {
    *err = "inflight region's packed header is out of range";
    return -1;
  }
  *h = (struct hdr) { c.free_head, c.old_free_head, c.used_idx,
                      c.old_used_idx, c.used_wrap_counter,
                      c.old_used_wrap_counter };
  return 0;
}

/* Clears the flags of the free list's entries (a half-fetched chain, or
 * a committed batch whose flags were not all cleared) and marks them. */
static int
clear_free_list (struct inflight_ring *ir, uint16_t head, uint8_t *mark,
                 const char **err)
{
  unsigned steps = 0;

  while (head != ir->num) {
    if (head > ir->num || mark[head] || steps++ == ir->num) {
      *err = "inflight region's free list loops or leaves the ring";
      return -1;
    }
    mark[head] = 1;
    ir->pq->desc[head].inflight = 0;
    head = ir->pq->desc[head].next;
  }
  return 0;
}

struct pending {
  uint64_t counter;
  uint16_t id;
};

/* Submission order, tolerant of counter wrap-around. */
static int
by_counter (const void *a, const void *b)
{
  int64_t d = (int64_t) (((const struct pending *) a)->counter -
                         ((const struct pending *) b)->counter);
  return d < 0 ? -1 : d > 0;
}

/* Follows the chain of head entry e through the region, checking that
 * it stays in the ring and meets no other chain nor the free list. */
static int
check_chain (struct inflight_ring *ir, uint16_t e, uint8_t *mark,
             struct inflight_buf *b, uint16_t *id, const char **err)
{
  const struct inflight_packed_desc *d = ir->pq->desc;
  uint16_t n = d[e].num, last = d[e].last, cur = e;
  unsigned i;

  if (n == 0 || n > ir->num || mark[e]) {
    *err = "inflight region holds an invalid chain";
    return -1;
  }
  mark[e] = 2;
  for (i = 1; i < n; i++) {
    uint16_t next = d[cur].next;
    if (next >= ir->num || mark[next]) {
      *err = "inflight region's chains overlap or leave the ring";
      return -1;
    }
    ir->next[cur] = next;
    cur = next;
    mark[cur] = 2;
  }
  if (cur != last) {
    *err = "inflight region's chain ends elsewhere than recorded";
    return -1;
  }
  *b = (struct inflight_buf) { e, last, n };
  *id = d[last].id;
  return 0;
}

/* Finds the chains still flagged, in submission order. */
static int
collect (struct inflight_ring *ir, uint8_t *mark, uint16_t *ids,
         unsigned *n, unsigned *slots, const char **err)
{
  struct pending p[VRING_PACKED_MAX];
  uint8_t seen_id[VRING_PACKED_MAX] = { 0 };
  unsigned i, k = 0;

  *slots = 0;
  for (i = 0; i < ir->num; i++) {
    uint8_t flag = ir->pq->desc[i].inflight;
    struct inflight_buf b;
    uint16_t id;

    if (mark[i] == 1 || flag == 0)      /* free, or not a head */
      continue;
    if (flag > 1) {
      *err = "inflight region holds an invalid flag";
      return -1;
    }
    if (check_chain (ir, i, mark, &b, &id, err) == -1)
      return -1;
    if (id >= ir->num || seen_id[id]) {
      *err = "inflight region holds a bad or repeated buffer id";
      return -1;
    }
    seen_id[id] = 1;
    ir->buf[id] = b;
    *slots += b.num;
    p[k++] = (struct pending) { ir->pq->desc[i].counter, id };
  }
  if (*slots > ir->num) {
    *err = "inflight region holds more descriptors than the ring";
    return -1;
  }
  qsort (p, k, sizeof *p, by_counter);
  for (i = 0; i < k; i++)
    ids[i] = p[i].id;
  ir->counter = k ? p[k - 1].counter + 1 : 0;
  *n = k;
  return 0;
}

int
inflight_packed_start (struct inflight_ring *ir,
                       struct inflight_packed_queue *pq, struct ring *vr,
                       uint16_t *ids, unsigned *n, const char **err)
{
  uint8_t mark[VRING_PACKED_MAX] = { 0 };
  unsigned slots;
  struct hdr h;

  ir->pq = pq;
  ir->num = vr->num;
  if (pq->version == 0) {
    fresh (ir, vr);
    return 0;
  }
  if (pq->version != 1 || pq->desc_num != vr->num ||
      pq->features != INFLIGHT_F_PACKED) {
    *err = "inflight region's queue area does not match this ring";
    goto fail;
  }
  if (read_header (pq, ir->num, &h, err) == -1)
    goto fail;
  /* A batch in progress: committed if the guest can see it. */
  if ((h.used != h.old_used || h.used_wrap != h.old_used_wrap) &&
      vring_packed_slot_used (vr, h.old_used, h.old_used_wrap))
    h = (struct hdr) { h.free_head, h.free_head, h.used, h.used,
                       h.used_wrap, h.used_wrap };
  if (clear_free_list (ir, h.old_free_head, mark, err) == -1 ||
      collect (ir, mark, ids, n, &slots, err) == -1)
    goto fail;
  rebuild (ir, mark, h.old_used, h.old_used_wrap);
  vring_packed_restart (vr, h.old_used, h.old_used_wrap, slots);
  return 0;

 fail:
  ir->pq = NULL;
  *n = 0;
  return -1;
}

/* Rebuilds the chain of id from the copies kept in the region; the
 * links come from what recovery checked. */
int
inflight_packed_walk (struct inflight_ring *ir, struct ring *vr,
                      const struct memtable *mem, uint16_t id,
                      struct chain *c, const char **err)
{
  struct vring_pdesc d[VRING_PACKED_MAX];
  const struct inflight_buf *b = id < ir->num ? &ir->buf[id] : NULL;
  uint16_t cur;
  unsigned i;

  if (b == NULL || b->num == 0) {
    *err = "no recovered chain for this buffer id";
    return -1;
  }
  for (i = 0, cur = b->head; i < b->num; i++, cur = ir->next[cur]) {
    const struct inflight_packed_desc *e = &ir->pq->desc[cur];
    d[i] = (struct vring_pdesc) { e->addr, e->len, e->id, e->flags };
  }
  if (vring_packed_walk_descs (vr, mem, d, b->num, c, err) == -1)
    return -1;
  c->desc = NULL;               /* d[] goes out of scope */
  if (c->head != id) {
    *err = "inflight region changed during recovery";
    return -1;
  }
  return 0;
}
