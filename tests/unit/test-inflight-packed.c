/* Unit tests for src/daemon/inflight-packed.c: the packed layout of the
 * inflight region, crash recovery and its hostile inputs.
 *
 * A device plays queue.c's part (pop + begin, push + link, publish +
 * done + commit) against the driver model of packed-driver.h, and
 * "crashes": its memory is dropped, the guest's and the region's stay,
 * and a new device recovers from them with a stale SET_VRING_BASE (as
 * QEMU 7.2 sends).  Besides crashes between operations, the partial
 * states a crash inside begin, link or commit leaves are made by
 * rolling back the fields those steps had not stored yet.  The check
 * is the guest's: every buffer it made available comes back used
 * exactly once.  SEEDS=N runs N random scenarios (default 20). */

#include <config.h>

#include <unistd.h>

#include "tap.h"
#include "packed-driver.h"
#include "inflight.h"

#define NUM 16
#define IDS 12                  /* buffer ids the driver uses */

static struct {
  struct inflight_region region;
  struct inflight_packed_queue *pq;
  struct inflight_ring ir;
  uint16_t heads[VRING_PACKED_MAX];
  unsigned nheads;
  /* Device: ids in flight (popped, not pushed), pushed unpublished. */
  uint16_t pending[IDS];
  unsigned npending;
  uint16_t batch[IDS];
  unsigned nbatch;
  /* Driver: ids made available and not yet seen used. */
  bool out[IDS];
  unsigned outstanding;         /* ring slots */
  unsigned posts, reaps;
  bool twice;                   /* an id came back used twice */
  unsigned seed;
} d;

static unsigned
rnd (unsigned n)
{
  d.seed = d.seed * 1103515245 + 12345;
  return (d.seed >> 16) % n;
}

static void
region_init (void)
{
  const char *err = NULL;
  uint64_t size;
  int fd;

  inflight_unmap (&d.region);
  if (inflight_create (1, NUM, &fd, &size, &err) == -1 ||
      inflight_map (&d.region, fd, size, 0, &err) == -1) {
    fprintf (stderr, "inflight region: %s\n", err);
    exit (99);
  }
  close (fd);
  d.pq = (void *) ((char *) d.region.addr + d.region.header_size);
}

/* A new device: the ring with QEMU's stale base, then recovery. */
static int
device_start (const char **err)
{
  memset (&g.vr, 0, sizeof g.vr);
  g.vr.packed = true;
  if (vring_setup (&g.vr, g.t, NUM, g.u1 + DESC_OFF, g.u1 + DRIVER_OFF,
                   g.u1 + DEVICE_OFF, err) == -1 ||
      vring_set_base (&g.vr, 0x80008000, err) == -1)
    return -1;
  g.vr.indirect = true;
  g.vr.event_idx = true;
  d.npending = d.nbatch = 0;
  return inflight_ring_start (&d.ir, &d.region, 0, &g.vr, d.heads,
                              &d.nheads, err);
}

/* Resubmits what recovery found, as queue.c does (no begin). */
static bool
resubmit_all (void)
{
  const char *err;
  unsigned i;

  for (i = 0; i < d.nheads; i++) {
    if (inflight_walk (&d.ir, &g.vr, g.t, d.heads[i], &g.c, &err) == -1 ||
        g.c.head != d.heads[i]) {
      diag ("resubmitting id %u: %s", d.heads[i], err);
      return false;
    }
    d.pending[d.npending++] = g.c.head;
  }
  return true;
}

static void
fresh (unsigned seed)
{
  const char *err = NULL;

  reset (NUM, true, true);
  region_init ();
  memset (d.out, 0, sizeof d.out);
  d.outstanding = d.posts = d.reaps = 0;
  d.twice = false;
  d.seed = seed;
  if (device_start (&err) == -1) {
    fprintf (stderr, "device start: %s\n", err);
    exit (99);
  }
}

/* ---- Driver ---- */

static bool
drv_post (void)
{
  unsigned n = 1 + rnd (3), tries;
  uint16_t id = rnd (IDS);
  struct tdesc c[3] = { { G1 + BUF_OFF, 16, 0, 0 },
                        { G1 + BUF_OFF + 0x100, 512, 0, F_WRITE },
                        { G1 + BUF_OFF + 0x1000, 1, 0, F_WRITE } };

  for (tries = 0; tries < IDS && d.out[id]; tries++)
    id = (id + 1) % IDS;
  if (d.out[id] || d.outstanding + n > NUM)
    return false;
  c[2].id = id;
  if (rnd (4) == 0) {           /* an indirect one */
    put_pdesc (&ptable ()[id * 4], G1 + BUF_OFF, 16, 0, 0);
    put_pdesc (&ptable ()[id * 4 + 1], G1 + BUF_OFF + 0x100, 512, 0,
               F_WRITE);
    c[2] = (struct tdesc) { G1 + TABLE_OFF + id * 64, 32, id, F_INDIRECT };
    n = 1;
  }
  post (&c[3 - n], n);
  d.out[id] = true;
  d.outstanding += n;
  d.posts++;
  return true;
}

static void
drv_reap (void)
{
  uint16_t id, flags;
  uint32_t len;

  while (get_used (&id, &len, &flags)) {
    if (id >= IDS || !d.out[id]) {
      d.twice = true;
      return;
    }
    d.out[id] = false;
    d.outstanding -= g.ndesc[id];
    d.reaps++;
  }
}

/* ---- Device (queue.c's order) ---- */

static bool
dev_pop (void)
{
  const char *err;
  int r = pop (&err);

  if (r == 1) {
    inflight_begin (&d.ir, &g.c);
    d.pending[d.npending++] = g.c.head;
  }
  else if (r == -1)
    diag ("pop: %s", err);
  return r == 1;
}

static bool
dev_complete (void)
{
  unsigned i;
  uint16_t id;

  if (d.npending == 0)
    return false;
  i = rnd (d.npending);
  id = d.pending[i];
  d.pending[i] = d.pending[--d.npending];
  vring_push (&g.vr, id, 1);
  inflight_link (&d.ir, id);
  d.batch[d.nbatch++] = id;
  return true;
}

static void
dev_publish (void)
{
  unsigned i;

  if (d.nbatch == 0)
    return;
  vring_publish (&g.vr);
  for (i = 0; i < d.nbatch; i++)
    inflight_done (&d.ir, d.batch[i]);
  inflight_commit (&d.ir, g.vr.used_idx);
  d.nbatch = 0;
}

/* ---- Crashes inside a step: roll back what it had not stored ---- */

struct snap {
  struct inflight_packed_queue h;
  uint8_t flags[NUM];
};

static void
take (struct snap *s)
{
  unsigned i;

  memcpy (&s->h, d.pq, sizeof s->h);
  for (i = 0; i < NUM; i++)
    s->flags[i] = d.pq->desc[i].inflight;
}

/* A pop whose begin stopped after flagging the head: the free list
 * heads were not moved yet.  The chain must be fetched again. */
static void
crash_in_begin (void)
{
  struct snap s;

  take (&s);
  if (!dev_pop ())
    return;
  d.pq->old_free_head = s.h.old_free_head;
  if (rnd (2))
    d.pq->free_head = s.h.free_head;
}

/* A completion whose link moved the free list but not the used index. */
static void
crash_in_link (void)
{
  struct snap s;

  take (&s);
  if (!dev_complete ())
    return;
  d.pq->used_idx = s.h.used_idx;
  d.pq->used_wrap_counter = s.h.used_wrap_counter;
}

/* A publish whose commit stopped part way (the batch is visible): no
 * flag cleared yet, or old_free_head not stored, or the used word not
 * stored (its four fields go in one store). */
static void
crash_in_commit (void)
{
  struct snap s;
  unsigned i, stage = rnd (3);

  take (&s);
  if (d.nbatch == 0)
    return;
  dev_publish ();
  for (i = 0; i < NUM; i++)
    if (stage == 0 && s.flags[i])
      d.pq->desc[i].inflight = 1;
  if (stage <= 1)
    d.pq->old_free_head = s.h.old_free_head;
  d.pq->old_used_idx = s.h.old_used_idx;
  d.pq->old_used_wrap_counter = s.h.old_used_wrap_counter;
}

/* ---- The scenarios ---- */

/* Random work, a crash every so often, and at the end the guest has
 * every buffer back exactly once. */
static void
test_random (unsigned seed, unsigned crashes)
{
  const char *err = NULL;
  unsigned step, crash = 0, resubmitted = 0;
  bool good = true;

  fresh (seed);
  for (step = 0; good && step < 3000; step++) {
    switch (rnd (9)) {
    case 0: case 1: drv_post (); break;
    case 2: case 3: dev_pop (); break;
    case 4: case 5: dev_complete (); break;
    case 6: dev_publish (); break;
    case 7: drv_reap (); break;
    case 8:
      if (crash >= crashes || rnd (10))
        break;
      switch (rnd (4)) {         /* 0: between two steps */
      case 1: crash_in_begin (); break;
      case 2: crash_in_link (); break;
      case 3: crash_in_commit (); break;
      }
      crash++;
      if (device_start (&err) == -1) {
        diag ("recovery after crash %u: %s", crash, err);
        good = false;
      }
      resubmitted += d.nheads;
      good = good && resubmit_all ();
      break;
    }
  }
  /* Drain: no new buffers; complete and reap everything. */
  for (step = 0; good && step < 200 && d.reaps < d.posts; step++) {
    while (dev_pop ())
      ;
    while (dev_complete ())
      ;
    dev_publish ();
    drv_reap ();
  }
  ok (good && !d.twice && d.reaps == d.posts && d.outstanding == 0,
      "[%s] seed %u: %u buffers, %u crashes, %u resubmitted: each came back "
      "once (%u back%s)", g.variant, seed, d.posts, crash, resubmitted,
      d.reaps, d.twice ? ", one twice" : "");
}

/* Crash with known requests in flight, out of order: the survivors
 * come back in submission order, with the same buffers. */
static void
test_order (void)
{
  const char *err = NULL;
  struct tdesc c[2] = { { G1 + BUF_OFF, 16, 0, 0 },
                        { G1 + BUF_OFF + 0x200, 1, 0, F_WRITE } };
  unsigned i;

  fresh (1);
  for (i = 0; i < 5; i++) {
    c[1].id = 10 - i;
    c[0].addr = G1 + BUF_OFF + i * 0x100;
    post (c, 2);
    dev_pop ();
  }
  /* Complete ids 9 and 7 and publish; complete 8 unpublished. */
  vring_push (&g.vr, 9, 1);
  inflight_link (&d.ir, 9);
  vring_push (&g.vr, 7, 1);
  inflight_link (&d.ir, 7);
  d.batch[0] = 9;
  d.batch[1] = 7;
  d.nbatch = 2;
  dev_publish ();
  vring_push (&g.vr, 8, 1);
  inflight_link (&d.ir, 8);
  ok (device_start (&err) == 0 && d.nheads == 3 && d.heads[0] == 10 &&
      d.heads[1] == 8 && d.heads[2] == 6,
      "[%s] order: 10, 8 (its used descriptor never became visible), 6",
      g.variant);
  ok (g.vr.used_idx == 4 && g.vr.used_wrap && g.vr.last_avail_idx == 10 &&
      g.vr.avail_wrap,
      "[%s] order: used at slot 4, avail at 10 (used %u avail %u)",
      g.variant, g.vr.used_idx, g.vr.last_avail_idx);
  ok (inflight_walk (&d.ir, &g.vr, g.t, 8, &g.c, &err) == 0 &&
      g.c.head == 8 && g.c.niov == 2 && g.c.nout == 1 &&
      g.gpa[0] == G1 + BUF_OFF + 2 * 0x100,
      "[%s] order: id 8 rebuilt from the region's copies (%s)", g.variant,
      err ? err : "ok");
  ok (inflight_walk (&d.ir, &g.vr, g.t, 9, &g.c, &err) == -1,
      "[%s] order: id 9 (completed) is not recoverable", g.variant);
}

/* Regions a crash cannot produce are refused.  Each starts from entry
 * 0 holding buffer id 3 in flight, the free list from entry 1. */
#define SPOIL(name, code) static void name (void) { code; }
SPOIL (sp_version, d.pq->version = 2)
SPOIL (sp_num, d.pq->desc_num = NUM / 2)
SPOIL (sp_features, d.pq->features = 0)
SPOIL (sp_used, d.pq->used_idx = d.pq->old_used_idx = NUM)
SPOIL (sp_wrap, d.pq->used_wrap_counter = 2)
SPOIL (sp_free, d.pq->free_head = d.pq->old_free_head = NUM + 1)
SPOIL (sp_loop, d.pq->desc[d.pq->old_free_head].next = d.pq->old_free_head)
SPOIL (sp_flag, d.pq->desc[0].inflight = 2)
SPOIL (sp_chain_num, d.pq->desc[0].num = NUM + 1)
SPOIL (sp_chain_next, d.pq->desc[0].num = 2; d.pq->desc[0].next = NUM)
SPOIL (sp_chain_last, d.pq->desc[0].last = 5)
SPOIL (sp_chain_free, d.pq->desc[0].num = 2;
       d.pq->desc[0].next = d.pq->old_free_head)
SPOIL (sp_id, d.pq->desc[d.pq->desc[0].last].id = NUM)
SPOIL (sp_dup, d.pq->free_head = d.pq->old_free_head = 2;
       d.pq->desc[1].inflight = 1; d.pq->desc[1].num = 1;
       d.pq->desc[1].last = 1; d.pq->desc[1].id = 3)
#undef SPOIL

static void
test_corrupt (void)
{
  static const struct {
    const char *what;
    void (*spoil) (void);
  } tests[] = {
    { "unknown version", sp_version },
    { "ring size differs", sp_num },
    { "a split ring's area", sp_features },
    { "used index out of range", sp_used },
    { "wrap counter 2", sp_wrap },
    { "free list head out of range", sp_free },
    { "free list looping", sp_loop },
    { "inflight flag 2", sp_flag },
    { "chain longer than the ring", sp_chain_num },
    { "chain leaving the ring", sp_chain_next },
    { "chain ending elsewhere than its last", sp_chain_last },
    { "chain running into the free list", sp_chain_free },
    { "buffer id out of range", sp_id },
    { "two chains with one buffer id", sp_dup },
  };
  unsigned i;

  for (i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    const char *err = NULL;
    struct tdesc c = { G1 + BUF_OFF, 1, 3, F_WRITE };
    int r;

    fresh (1);
    post (&c, 1);
    dev_pop ();
    tests[i].spoil ();
    r = device_start (&err);
    ok (r == -1 && err && !inflight_active (&d.ir),
        "[%s] corrupt: %s refused (%s)", g.variant, tests[i].what,
        r == -1 ? (err ? err : "no message") : "accepted");
  }
  fresh (1);
  post (&(struct tdesc) { G1 + BUF_OFF, 1, 3, F_WRITE }, 1);
  dev_pop ();
  ok (device_start (&(const char *) { NULL }) == 0 && d.nheads == 1 &&
      d.heads[0] == 3, "[%s] corrupt: (control) unspoilt region recovers",
      g.variant);
}

/* A fresh region takes the ring's position; a region whose queue area
 * was a split ring's is refused by the packed code and vice versa. */
static void
test_fresh (void)
{
  const char *err = NULL;

  fresh (1);
  ok (d.pq->version == 1 && d.pq->features == INFLIGHT_F_PACKED &&
      d.pq->desc_num == NUM && d.pq->free_head == 0 &&
      d.pq->desc[NUM - 1].next == NUM && d.pq->used_wrap_counter == 1 &&
      d.nheads == 0,
      "[%s] fresh: initialised, free list 0..15, nothing to recover",
      g.variant);
  memset (&g.vr, 0, sizeof g.vr);        /* a split ring */
  vring_setup (&g.vr, g.t, NUM, g.u1 + DESC_OFF, g.u1 + 0x1000,
               g.u1 + 0x2000, &err);
  ok (inflight_ring_start (&d.ir, &d.region, 0, &g.vr, d.heads, &d.nheads,
                           &err) == -1 && err,
      "[%s] fresh: the packed area refused for a split ring (%s)", g.variant,
      err);
}

int
main (void)
{
  static const uint64_t uvas[] = { G1, UINT64_C (0x7f3400000000) };
  static const char *const names[] = { "uva == gpa", "uva != gpa" };
  unsigned i, seed, seeds = getenv ("SEEDS") ? atoi (getenv ("SEEDS")) : 20;

  memory_alloc ();
  for (i = 0; i < 2; i++) {
    memory_init (names[i], uvas[i]);
    test_fresh ();
    test_order ();
    test_corrupt ();
    for (seed = 1; seed <= seeds; seed++)
      test_random (seed * 7919 + i, seed % 5 == 0 ? 0 : 12);
    memtable_free (g.t);
  }
  inflight_unmap (&d.region);
  free (g.m1);
  free (g.m2);
  return done_testing ();
}
