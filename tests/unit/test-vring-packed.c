/* Unit tests for src/daemon/vring-packed.c: ring setup, popping chains
 * (direct, indirect, across the end of the ring), every hostile chain
 * the guest can build, used descriptors and batches, event suppression
 * both ways, and the GET/SET_VRING_BASE encoding.  The guest is the
 * driver model of packed-driver.h; everything runs twice, with
 * UVA == GPA and with different numbers. */

#include <config.h>

#include "tap.h"
#include "packed-driver.h"

static int
setup_ring (struct ring *r, const char **err, unsigned num, uint64_t d,
            uint64_t drv, uint64_t dev)
{
  memset (r, 0, sizeof *r);
  r->packed = true;
  *err = NULL;
  return vring_setup (r, g.t, num, d, drv, dev, err);
}

static void
test_setup (void)
{
  static struct ring r;
  const char *err;
  static const unsigned bad_num[] = { 0, 1025, 4096, 32768, 65536,
                                      UINT32_MAX };
  size_t i;

#define SETUP(num, d, a, u) setup_ring (&r, &err, (num), (d), (a), (u))

  ok (SETUP (16, g.u1 + DESC_OFF, g.u1 + DRIVER_OFF, g.u1 + DEVICE_OFF) == 0
      && r.num == 16 && (void *) r.pdesc == g.m1 + DESC_OFF &&
      (void *) r.driver_event == g.m1 + DRIVER_OFF &&
      (void *) r.device_event == g.m1 + DEVICE_OFF &&
      r.desc_gpa == G1 + DESC_OFF,
      "[%s] setup: areas translated through their UVAs, desc GPA known",
      g.variant);
  ok (SETUP (1, g.u1, g.u1 + 16, g.u1 + 20) == 0, "[%s] setup: size 1",
      g.variant);
  ok (SETUP (100, g.u1, g.u1 + 0x1000, g.u1 + 0x1004) == 0,
      "[%s] setup: size 100 (packed rings need no power of 2)", g.variant);
  ok (SETUP (1024, g.u1, g.u1 + 0x4000, g.u1 + 0x4004) == 0,
      "[%s] setup: size 1024", g.variant);
  for (i = 0; i < sizeof bad_num / sizeof bad_num[0]; i++) {
    int rc = SETUP (bad_num[i], g.u1, g.u1 + 0x8000, g.u1 + 0x8004);
    ok (rc == -1 && err, "[%s] setup: size %u refused (%s)", g.variant,
        bad_num[i], err ? err : "no message");
  }
  ok (SETUP (16, g.u1 + 8, g.u1 + DRIVER_OFF, g.u1 + DEVICE_OFF) == -1,
      "[%s] setup: descriptor ring at 8 mod 16 refused", g.variant);
  ok (SETUP (16, g.u1, g.u1 + DRIVER_OFF + 2, g.u1 + DEVICE_OFF) == -1,
      "[%s] setup: driver area at 2 mod 4 refused", g.variant);
  ok (SETUP (16, g.u1, g.u1 + DRIVER_OFF, g.u1 + DEVICE_OFF + 1) == -1,
      "[%s] setup: device area at 1 mod 4 refused", g.variant);
  ok (SETUP (16, g.u2 + S2 - 256, g.u2 + S2 - 8, g.u2 + S2 - 4) == 0,
      "[%s] setup: all three ending at the end of memory accepted",
      g.variant);
  ok (SETUP (16, g.u2 + S2 - 240, g.u1 + DRIVER_OFF, g.u1 + DEVICE_OFF) == -1,
      "[%s] setup: descriptor ring running past memory refused", g.variant);
  ok (SETUP (16, g.u1 + S1 - 128, g.u1 + DRIVER_OFF, g.u1 + DEVICE_OFF) == -1,
      "[%s] setup: descriptor ring straddling two regions refused",
      g.variant);
  ok (SETUP (16, g.u1, g.u2 + S2, g.u1 + DEVICE_OFF) == -1,
      "[%s] setup: driver area past memory refused", g.variant);
  ok (SETUP (16, g.u1, g.u1 + DRIVER_OFF, g.u2 + S2 - 2) == -1,
      "[%s] setup: device area running past memory refused", g.variant);
  if (g.u1 != G1)
    ok (SETUP (16, G1 + DESC_OFF, g.u1 + DRIVER_OFF, g.u1 + DEVICE_OFF) == -1,
        "[%s] setup: descriptor ring given as a GPA refused", g.variant);
#undef SETUP
}

static void
test_base (void)
{
  const char *err;

  reset (16, false, false);
  is_int (vring_get_base (&g.vr), 0x80008000,
          "[%s] base: the start is slot 0, both wrap counters 1", g.variant);
  ok (vring_set_base (&g.vr, 0x00058003, &err) == 0 &&
      g.vr.last_avail_idx == 3 && g.vr.avail_wrap &&
      g.vr.used_idx == 5 && !g.vr.used_wrap &&
      vring_get_base (&g.vr) == 0x00058003,
      "[%s] base: avail 3 wrap 1, used 5 wrap 0 round-trips", g.variant);
  ok (vring_set_base (&g.vr, 0x800a800c, &err) == 0 &&
      vring_get_base (&g.vr) == 0x800a800c,
      "[%s] base: avail 12 used 10 (2 slots in flight)", g.variant);
  ok (vring_set_base (&g.vr, 0x80038003, &err) == 0,
      "[%s] base: avail == used", g.variant);
  ok (vring_set_base (&g.vr, 0x00038003, &err) == 0,
      "[%s] base: avail a lap ahead of used (whole ring in flight)",
      g.variant);
  ok (vring_set_base (&g.vr, 0x80108000, &err) == -1 && err,
      "[%s] base: used slot 16 on a 16-entry ring refused", g.variant);
  ok (vring_set_base (&g.vr, 0x80008010, &err) == -1,
      "[%s] base: avail slot 16 refused", g.variant);
  ok (vring_set_base (&g.vr, 0x80058003, &err) == -1,
      "[%s] base: avail behind used refused", g.variant);
  ok (vring_set_base (&g.vr, 0x00038005, &err) == -1,
      "[%s] base: avail more than a lap ahead refused", g.variant);
}

/* The virtio-blk shape: header (readable), data, status (writable). */
static void
test_pop_basic (void)
{
  const char *err;
  int r;

  reset (16, false, false);
  is_int (pop (&err), 0, "[%s] empty ring: pop returns 0", g.variant);
  {
    struct tdesc d[3] = {
      { G1 + BUF_OFF, 16, 99, 0 },      /* ids before the last are ignored */
      { G1 + BUF_OFF + 0x100, 512, 98, F_WRITE },
      { G1 + BUF_OFF + 0x1000, 1, 7, F_WRITE },
    };
    post (d, 3);
  }
  r = pop (&err);
  is_int (r, 1, "[%s] 3-descriptor chain popped (%s)", g.variant,
          r == 1 ? "ok" : err);
  ok (g.c.head == 7 && g.c.niov == 3 && g.c.nout == 1,
      "[%s] buffer id 7 from the last descriptor, 3 iovecs, 1 readable "
      "(id %u niov %u nout %u)", g.variant, g.c.head, g.c.niov, g.c.nout);
  ok (iov_is (0, g.m1 + BUF_OFF, 16, G1 + BUF_OFF) &&
      iov_is (1, g.m1 + BUF_OFF + 0x100, 512, G1 + BUF_OFF + 0x100) &&
      iov_is (2, g.m1 + BUF_OFF + 0x1000, 1, G1 + BUF_OFF + 0x1000),
      "[%s] iovecs and their gpas", g.variant);
  ok (g.c.ndesc == 3 && g.c.desc == g.vr.chain_desc &&
      g.c.desc[1].len == 512 && g.c.desc[2].id == 7 &&
      g.vr.ndesc[7] == 3,
      "[%s] the chain's ring descriptors are kept for inflight tracking",
      g.variant);
  ok (g.vr.last_avail_idx == 3 && g.vr.avail_wrap,
      "[%s] avail position moved by 3 slots", g.variant);
  is_int (pop (&err), 0, "[%s] ring empty again", g.variant);

  /* Zero-length descriptors carry nothing; single descriptors. */
  {
    struct tdesc d[3] = {
      { G1 + BUF_OFF, 16, 0, 0 },
      { 0, 0, 0, F_WRITE },
      { G1 + BUF_OFF + 0x1000, 1, 3, F_WRITE },
    };
    post (d, 3);
  }
  ok (pop (&err) == 1 && g.c.niov == 2 && g.c.nout == 1 && g.c.head == 3,
      "[%s] zero-length descriptor skipped", g.variant);
  {
    struct tdesc d = { G1 + BUF_OFF, 100, 4, 0 };
    post (&d, 1);
  }
  ok (pop (&err) == 1 && g.c.niov == 1 && g.c.nout == 1 && g.c.ndesc == 1,
      "[%s] single readable descriptor", g.variant);
  post1 (5, 0, 100);
  ok (pop (&err) == 1 && g.c.niov == 1 && g.c.nout == 0 && g.c.head == 5,
      "[%s] single writable descriptor", g.variant);
}

/* Chains across the end of the ring, the wrap counters, and a driver
 * that reads the used descriptors back, lap after lap. */
static void
test_wrap (void)
{
  const char *err;
  unsigned lap, i;
  bool all = true;

  reset (4, false, false);
  post1 (0, 0, 16);
  post1 (1, 16, 16);
  post1 (2, 32, 16);
  ok (pop (&err) == 1 && pop (&err) == 1 && pop (&err) == 1,
      "[%s] wrap: 3 popped on a 4-entry ring", g.variant);
  vring_push (&g.vr, 0, 1);
  vring_push (&g.vr, 1, 1);
  vring_push (&g.vr, 2, 1);
  vring_publish (&g.vr);
  {
    uint16_t id;
    uint32_t len;
    ok (get_used (&id, &len, NULL) && id == 0 && get_used (&id, &len, NULL)
        && id == 1 && get_used (&id, &len, NULL) && id == 2 &&
        !get_used (&id, &len, NULL), "[%s] wrap: all three used", g.variant);
  }
  {
    struct tdesc d[2] = { { G1 + BUF_OFF, 16, 0, 0 },
                          { G1 + BUF_OFF + 16, 1, 3, F_WRITE } };
    post (d, 2);                /* slots 3 and 0: across the end */
  }
  ok (pop (&err) == 1 && g.c.head == 3 && g.c.niov == 2 &&
      g.vr.last_avail_idx == 1 && !g.vr.avail_wrap,
      "[%s] a chain across the end of the ring, wrap counter flipped (%s)",
      g.variant, err ? err : "ok");
  vring_push (&g.vr, 3, 1);
  ok (vring_publish (&g.vr) && g.vr.used_idx == 1 && !g.vr.used_wrap,
      "[%s] its used descriptor moves the used position to 1, wrap 0",
      g.variant);
  {
    uint16_t id, flags;
    uint32_t len;
    ok (get_used (&id, &len, &flags) && id == 3 && len == 1 &&
        (flags & (F_AVAIL | F_USED)) == (F_AVAIL | F_USED) &&
        (flags & F_WRITE),
        "[%s] used at slot 3 with wrap 1 flags and WRITE", g.variant);
  }

  /* 50 laps of 1-3 descriptor chains, completed out of order. */
  reset (8, false, false);
  for (lap = 0; lap < 200; lap++) {
    uint16_t ids[3], id;
    uint32_t len;
    for (i = 0; i < 3; i++) {
      /* 3, 2 or 1 of: header, data, status (id i on the last). */
      struct tdesc d[3] = { { G1 + BUF_OFF, 16, 0, 0 },
                            { G1 + BUF_OFF + 0x100, 4, 0, F_WRITE },
                            { G1 + BUF_OFF + 0x200, 1, i, F_WRITE } };
      unsigned n = 1 + (lap + i) % 3;
      post (&d[3 - n], n);
      all = all && pop (&err) == 1 && g.c.head == i && g.c.niov == n;
      ids[i] = i;
    }
    vring_push (&g.vr, ids[(lap + 2) % 3], 100 + lap);
    vring_push (&g.vr, ids[(lap + 1) % 3], 200 + lap);
    vring_publish (&g.vr);
    vring_push (&g.vr, ids[lap % 3], 300 + lap);
    vring_publish (&g.vr);
    all = all && get_used (&id, &len, NULL) && id == ids[(lap + 2) % 3] &&
      len == 100 + lap;
    all = all && get_used (&id, &len, NULL) && id == ids[(lap + 1) % 3] &&
      len == 200 + lap;
    all = all && get_used (&id, &len, NULL) && id == ids[lap % 3] &&
      len == 300 + lap && !get_used (&id, &len, NULL);
    all = all && g.vr.used_idx == g.avail && g.vr.used_wrap == g.avail_wrap;
  }
  ok (all, "[%s] 200 rounds of chains of 1-3 slots on an 8-entry ring, "
      "completed out of order, all read back by the driver", g.variant);
}

static void
test_indirect (void)
{
  struct tdesc ind = { G1 + TABLE_OFF, 3 * 16, 9, F_INDIRECT };
  const char *err;
  int r;

  reset (16, true, false);
  put_pdesc (&ptable ()[0], G1 + BUF_OFF, 16, 0, 0);
  put_pdesc (&ptable ()[1], G1 + BUF_OFF + 0x100, 512, 0, F_WRITE | F_NEXT);
  put_pdesc (&ptable ()[2], G1 + BUF_OFF + 0x1000, 1, 0, F_WRITE);
  post (&ind, 1);
  r = pop (&err);
  ok (r == 1 && g.c.head == 9 && g.c.niov == 3 && g.c.nout == 1 &&
      g.c.ndesc == 1 && g.vr.ndesc[9] == 1 &&
      iov_is (1, g.m1 + BUF_OFF + 0x100, 512, G1 + BUF_OFF + 0x100),
      "[%s] indirect: table read in order, NEXT in it ignored, 1 ring slot "
      "(%s)", g.variant, r == 1 ? "ok" : err);

  put_pdesc ((struct vring_packed_desc *) g.m2, G1 + BUF_OFF, 16, 0, 0);
  ind = (struct tdesc) { G2, 16, 10, F_INDIRECT | F_WRITE };
  post (&ind, 1);
  ok (pop (&err) == 1 && g.c.niov == 1 && g.c.nout == 1,
      "[%s] indirect table in the second region (WRITE on it ignored)",
      g.variant);

  {
    unsigned i;
    for (i = 0; i < 16; i++)
      put_pdesc (&ptable ()[i], G1 + BUF_OFF + i * 32, 32, 0,
                 i > 0 ? F_WRITE : 0);
    ind = (struct tdesc) { G1 + TABLE_OFF, 16 * 16, 11, F_INDIRECT };
    post (&ind, 1);
    r = pop (&err);
    ok (r == 1 && g.c.niov == 16 && g.c.nout == 1,
        "[%s] indirect table of exactly num entries", g.variant);
  }
}

/* The next pop must fail without consuming anything. */
static void
pop_fails (const char *what)
{
  uint16_t before = g.vr.last_avail_idx;
  bool wrap = g.vr.avail_wrap;
  const char *err;
  int r = pop (&err);

  ok (r == -1 && err != NULL && g.vr.last_avail_idx == before &&
      g.vr.avail_wrap == wrap,
      "[%s] %s: refused (%s)", g.variant, what,
      r == -1 ? (err ? err : "no message") : r == 0 ? "empty" : "accepted");
}

static void
test_hostile_chains (void)
{
  struct tdesc d[20];
  unsigned i;

  /* Over-long chains: every slot says NEXT. */
  reset (16, false, false);
  for (i = 0; i < 16; i++)
    d[i] = (struct tdesc) { G1 + BUF_OFF, 16, 0, F_NEXT };
  post_raw (d, 16, true);
  pop_fails ("chain of 16 slots, all with NEXT (longer than the ring)");
  pop_fails ("the same, again (not consumed)");

  /* A chain running into slots still in flight. */
  reset (8, false, false);
  for (i = 0; i < 5; i++)
    post1 (i, 0, 16);
  for (i = 0; i < 5; i++)
    pop (&(const char *) { NULL });
  for (i = 0; i < 4; i++)
    d[i] = (struct tdesc) { G1 + BUF_OFF, 16, 5, F_WRITE };
  post (d, 4);                  /* slots 5, 6, 7, 0: 0 is in flight */
  pop_fails ("chain of 4 with 3 free slots");
  vring_push (&g.vr, 0, 1);
  pop_fails ("still refused while the used descriptor is unpublished");
  vring_publish (&g.vr);
  /* The driver may now reuse slot 0 (lap 2: wrap counter 0). */
  put_pdesc (&pdesc ()[0], G1 + BUF_OFF, 16, 5, F_WRITE | avail_flags (false));
  ok (pop (&(const char *) { NULL }) == 1 && g.c.head == 5 && g.c.ndesc == 4,
      "[%s] accepted once slot 0 is used and made available again",
      g.variant);

  /* Descriptors of a chain not marked available for their lap. */
  reset (16, false, false);
  d[0] = (struct tdesc) { G1 + BUF_OFF, 16, 0, 0 };
  d[1] = (struct tdesc) { G1 + BUF_OFF, 1, 1, F_WRITE };
  post (d, 2);
  pdesc ()[1].flags = htole16 (F_WRITE | F_AVAIL | F_USED);
  pop_fails ("second descriptor marked used");
  pdesc ()[1].flags = htole16 (F_WRITE);
  pop_fails ("second descriptor marked neither");
  pdesc ()[1].flags = htole16 (F_WRITE | F_AVAIL);
  ok (pop (&(const char *) { NULL }) == 1, "[%s] fixed: accepted",
      g.variant);

  /* Buffer ids. */
  reset (16, false, false);
  post1 (16, 0, 16);
  pop_fails ("buffer id == num");
  reset (16, false, false);
  post1 (0xffff, 0, 16);
  pop_fails ("buffer id 0xffff");
  reset (16, false, false);
  post1 (3, 0, 16);
  post1 (3, 16, 16);
  ok (pop (&(const char *) { NULL }) == 1, "[%s] id 3 popped", g.variant);
  pop_fails ("id 3 again while in flight");
  vring_push (&g.vr, 3, 1);
  ok (pop (&(const char *) { NULL }) == 1 && g.c.head == 3,
      "[%s] id 3 accepted again once used", g.variant);
}

static void
test_hostile_buffers (void)
{
  struct tdesc d[3];

#define ONE(addr, len, flags, what) do {                        \
    reset (16, true, false);                                    \
    d[0] = (struct tdesc) { (addr), (len), 0, (flags) };        \
    post (d, 1);                                                \
    pop_fails (what);                                           \
  } while (0)

  ONE (G1 - 16, 16, F_WRITE, "buffer before memory");
  ONE (G2 + S2 - 8, 16, F_WRITE, "buffer running past the end of memory");
  ONE (G2 + S2, 1, F_WRITE, "buffer just past memory");
  ONE (UINT64_MAX - 10, 100, F_WRITE, "addr + len overflowing 2^64");
  ONE (G1 + BUF_OFF, UINT32_MAX, F_WRITE, "len 0xffffffff");
  if (g.u1 != G1)
    ONE (g.u1 + BUF_OFF, 16, 0, "buffer given as a UVA");
  ONE (G1 + TABLE_OFF, 40, F_INDIRECT, "indirect len 40");
  ONE (G1 + TABLE_OFF, 0, F_INDIRECT, "indirect len 0");
  ONE (G1 + TABLE_OFF, 17 * 16, F_INDIRECT,
       "indirect table of 17 entries on a 16-entry ring");
  ONE (G2 + S2 - 16, 32, F_INDIRECT, "indirect table running past memory");
  ONE (UINT64_MAX - 15, 32, F_INDIRECT, "indirect table address overflowing");
  ONE (G2 - 16, 32, F_INDIRECT, "indirect table straddling two regions");

  reset (16, false, false);
  d[0] = (struct tdesc) { G1 + TABLE_OFF, 16, 0, F_INDIRECT };
  post (d, 1);
  pop_fails ("indirect without the feature");

  reset (16, true, false);
  put_pdesc (&ptable ()[0], G1 + BUF_OFF, 16, 0, 0);
  put_pdesc (&ptable ()[1], G1 + TABLE_OFF + 0x100, 16, 0, F_INDIRECT);
  d[0] = (struct tdesc) { G1 + TABLE_OFF, 32, 0, F_INDIRECT };
  post (d, 1);
  pop_fails ("nested indirect table");

  reset (16, true, false);
  put_pdesc (&ptable ()[0], G1 + BUF_OFF, 16, 0, 0);
  d[0] = (struct tdesc) { G1 + TABLE_OFF, 16, 0, F_INDIRECT };
  d[1] = (struct tdesc) { G1 + BUF_OFF, 1, 0, F_WRITE };
  post (d, 2);
  pop_fails ("indirect + NEXT");

  reset (16, true, false);
  d[0] = (struct tdesc) { G1 + BUF_OFF, 16, 0, 0 };
  d[1] = (struct tdesc) { G1 + TABLE_OFF, 16, 0, F_INDIRECT };
  post (d, 2);
  pop_fails ("indirect descriptor after a direct one");

  reset (16, true, false);
  put_pdesc (&ptable ()[0], G1 + BUF_OFF, 16, 0, F_WRITE);
  put_pdesc (&ptable ()[1], G1 + BUF_OFF, 16, 0, 0);
  d[0] = (struct tdesc) { G1 + TABLE_OFF, 32, 0, F_INDIRECT };
  post (d, 1);
  pop_fails ("readable after writable inside an indirect table");

  reset (16, true, false);
  put_pdesc (&ptable ()[0], G1 + BUF_OFF, 16, 0, 0);
  put_pdesc (&ptable ()[1], G2 + S2 - 4, 16, 0, F_WRITE);
  post (d, 1);
  pop_fails ("indirect entry outside memory");

  reset (16, false, false);
  d[0] = (struct tdesc) { G1 + BUF_OFF, 16, 0, F_WRITE };
  d[1] = (struct tdesc) { G1 + BUF_OFF, 16, 0, 0 };
  post (d, 2);
  pop_fails ("readable after writable");
  reset (16, false, false);
  d[0] = (struct tdesc) { G1 + BUF_OFF, 16, 0, 0 };
  d[1] = (struct tdesc) { 0x1000, 16, 0, F_WRITE };
  post (d, 2);
  pop_fails ("second descriptor outside memory");

  reset (16, false, false);
  d[0] = (struct tdesc) { G1 + BUF_OFF, 16, 0, 0 };
  d[1] = (struct tdesc) { G2 - 100, 256, 0, F_WRITE };
  d[2] = (struct tdesc) { G2 + 1000, 1, 0, F_WRITE };
  post (d, 3);
  g.c.max = 3;
  pop_fails ("4 pieces with chain.max 3");
  g.c.max = 4;
  ok (pop (&(const char *) { NULL }) == 1 && g.c.niov == 4 &&
      iov_is (1, g.m1 + S1 - 100, 100, G2 - 100) &&
      iov_is (2, g.m2, 156, G2),
      "[%s] a buffer straddling two regions gives two iovecs", g.variant);
  g.c.max = MAXIOV;
#undef ONE
}

/* Chains rebuilt from saved copies (resubmission) are checked too. */
static void
test_walk_descs (void)
{
  struct vring_pdesc d[2] = {
    { G1 + BUF_OFF, 16, 0, F_NEXT }, { G1 + BUF_OFF, 1, 4, F_WRITE },
  };
  const char *err = NULL;

  reset (16, false, false);
  ok (vring_packed_walk_descs (&g.vr, g.t, d, 2, &g.c, &err) == 0 &&
      g.c.head == 4 && g.c.niov == 2 && g.vr.ndesc[4] == 2,
      "[%s] walk_descs: saved chain rebuilt", g.variant);
  ok (vring_packed_walk_descs (&g.vr, g.t, d, 2, &g.c, &err) == -1 && err,
      "[%s] walk_descs: its id is now in flight", g.variant);
  d[1].id = 5;
  ok (vring_packed_walk_descs (&g.vr, g.t, d, 1, &g.c, &err) == -1,
      "[%s] walk_descs: NEXT on the last one refused", g.variant);
  d[0].flags = 0;
  ok (vring_packed_walk_descs (&g.vr, g.t, d, 2, &g.c, &err) == -1,
      "[%s] walk_descs: no NEXT before the last one refused", g.variant);
  ok (vring_packed_walk_descs (&g.vr, g.t, d, 0, &g.c, &err) == -1 &&
      vring_packed_walk_descs (&g.vr, g.t, d, 17, &g.c, &err) == -1,
      "[%s] walk_descs: 0 or more than num descriptors refused", g.variant);
}

/* Used descriptors: ids, lengths, flags, and batches that appear at
 * once. */
static void
test_used (void)
{
  uint16_t id, flags;
  uint32_t len;
  unsigned i;

  reset (16, false, false);
  ok (!vring_publish (&g.vr), "[%s] nothing pushed: publish says no",
      g.variant);
  for (i = 0; i < 3; i++)
    post1 (i, i * 16, 16);
  for (i = 0; i < 3; i++)
    pop (&(const char *) { NULL });
  vring_push (&g.vr, 2, 513);
  vring_push (&g.vr, 0, 0);
  ok (!get_used (&id, &len, NULL),
      "[%s] pushed but unpublished: the driver sees nothing", g.variant);
  ok (le16toh (pdesc ()[0].id) == 2 && le32toh (pdesc ()[0].len) == 513 &&
      (le16toh (pdesc ()[1].flags) & (F_AVAIL | F_USED)) ==
      (F_AVAIL | F_USED),
      "[%s] the first element waits for its flags, the second has them",
      g.variant);
  ok (vring_publish (&g.vr), "[%s] publish (ENABLE): notify", g.variant);
  ok (get_used (&id, &len, &flags) && id == 2 && len == 513 &&
      (flags & F_WRITE) && get_used (&id, &len, &flags) && id == 0 &&
      !(flags & F_WRITE) && !get_used (&id, &len, NULL),
      "[%s] both visible in order; WRITE only with a length", g.variant);
  ok (vring_packed_slot_used (&g.vr, 0, true) &&
      vring_packed_slot_used (&g.vr, 1, true) &&
      !vring_packed_slot_used (&g.vr, 2, true),
      "[%s] slot_used: the used slots, not the one still available",
      g.variant);
}

/* Driver event suppression: when to interrupt. */
static void
test_notify (void)
{
  struct vring_packed_desc_event *ev = driver_event ();
  unsigned i;

#define COMPLETE(n) do {                                \
    for (i = 0; i < (n); i++) {                         \
      post1 (i, 0, 1);                                  \
      pop (&(const char *) { NULL });                   \
      vring_push (&g.vr, i, 1);                         \
    }                                                   \
  } while (0)

  reset (8, false, false);
  ev->flags = htole16 (VRING_PACKED_EVENT_FLAG_DISABLE);
  COMPLETE (1);
  ok (!vring_publish (&g.vr), "[%s] DISABLE: no interrupt", g.variant);
  ev->flags = htole16 (VRING_PACKED_EVENT_FLAG_ENABLE);
  COMPLETE (1);
  ok (vring_publish (&g.vr), "[%s] ENABLE: interrupt", g.variant);
  ev->flags = htole16 (VRING_PACKED_EVENT_FLAG_DESC);
  ev->off_wrap = htole16 (0x8000 | 6);
  COMPLETE (1);
  ok (vring_publish (&g.vr),
      "[%s] DESC without EVENT_IDX: treated as ENABLE", g.variant);

  reset (8, false, true);
  ev->flags = htole16 (VRING_PACKED_EVENT_FLAG_DESC);
  ev->off_wrap = htole16 (0x8000 | 5);
  COMPLETE (1);
  ok (vring_publish (&g.vr), "[%s] EVENT_IDX: the first batch notifies",
      g.variant);
  COMPLETE (2);                 /* used 1 -> 3 */
  ok (!vring_publish (&g.vr), "[%s] event at 5, used 1 -> 3: no",
      g.variant);
  COMPLETE (3);                 /* used 3 -> 6 */
  ok (vring_publish (&g.vr), "[%s] event at 5, used 3 -> 6: interrupt",
      g.variant);
  ev->off_wrap = htole16 (1);   /* slot 1 of the next lap (wrap 0) */
  COMPLETE (2);                 /* 6 -> 0 wrap 0 */
  ok (!vring_publish (&g.vr), "[%s] event at slot 1 wrap 0, used 6 -> 8: no",
      g.variant);
  COMPLETE (2);                 /* 0 -> 2, wrap 0 */
  ok (vring_publish (&g.vr),
      "[%s] event at slot 1 wrap 0, used crosses it after the wrap",
      g.variant);
  ev->off_wrap = htole16 (0x8000 | 1);  /* a lap behind: stale */
  COMPLETE (1);
  ok (!vring_publish (&g.vr), "[%s] stale event a lap behind: no",
      g.variant);
  ok (g.vr.used_idx == 3 && !g.vr.used_wrap,
      "[%s] (used position is slot 3, wrap 0)", g.variant);
  ev->off_wrap = htole16 (3);
  COMPLETE (1);
  ok (vring_publish (&g.vr),
      "[%s] event at the slot the batch starts at: interrupt", g.variant);
  ev->off_wrap = htole16 (100);
  COMPLETE (1);
  ok (vring_publish (&g.vr), "[%s] event offset beyond the ring: interrupt",
      g.variant);
  ev->flags = htole16 (VRING_PACKED_EVENT_FLAG_DISABLE);
  COMPLETE (1);
  ok (!vring_publish (&g.vr), "[%s] EVENT_IDX with DISABLE: no",
      g.variant);
#undef COMPLETE
}

/* Device event suppression: asking for kicks. */
static void
test_kicks (void)
{
  struct vring_packed_desc_event *ev = device_event ();
  const char *err;

  reset (8, false, false);
  ev->flags = htole16 (VRING_PACKED_EVENT_FLAG_DISABLE);   /* left by a crash */
  ok (!vring_arm_kick (&g.vr) &&
      le16toh (ev->flags) == VRING_PACKED_EVENT_FLAG_ENABLE,
      "[%s] arm_kick without EVENT_IDX: ENABLE, nothing available: sleep",
      g.variant);
  post1 (0, 0, 1);
  ok (vring_arm_kick (&g.vr), "[%s] arm_kick sees a new buffer", g.variant);
  ok (pop (&err) == 1 &&
      le16toh (ev->flags) == VRING_PACKED_EVENT_FLAG_DISABLE,
      "[%s] a pop that finds work turns kicks off", g.variant);
  ok (!vring_arm_kick (&g.vr) &&
      le16toh (ev->flags) == VRING_PACKED_EVENT_FLAG_ENABLE,
      "[%s] armed again: ENABLE", g.variant);

  reset (8, false, true);
  post1 (0, 0, 1);
  post1 (1, 0, 1);
  pop (&err);
  pop (&err);
  ok (!vring_arm_kick (&g.vr) &&
      le16toh (ev->flags) == VRING_PACKED_EVENT_FLAG_DESC &&
      le16toh (ev->off_wrap) == (0x8000 | 2),
      "[%s] EVENT_IDX: DESC at the next slot to read (2, wrap 1)", g.variant);
  vring_disable_kick (&g.vr);
  ok (le16toh (ev->flags) == VRING_PACKED_EVENT_FLAG_DISABLE,
      "[%s] disable_kick: DISABLE", g.variant);
  vring_push (&g.vr, 0, 1);
  vring_push (&g.vr, 1, 1);
  vring_publish (&g.vr);
  {
    unsigned i;
    for (i = 0; i < 7; i++) {
      post1 (i, 0, 1);
      pop (&err);
      vring_push (&g.vr, i, 1);
      vring_publish (&g.vr);
    }
  }
  ok (!vring_arm_kick (&g.vr) && le16toh (ev->off_wrap) == 1,
      "[%s] EVENT_IDX after the wrap: DESC at slot 1, wrap 0", g.variant);
}

/* Dirty logging of every ring write during migration. */
static void
test_log (void)
{
  uint8_t bitmap[(G2 + S2) / 4096 / 8 + 1];
  struct dirty_log log = { .bitmap = bitmap, .size = sizeof bitmap };
  uint64_t desc_page = (G1 + DESC_OFF) / 4096;
  uint64_t dev_page = (G1 + 0x7000) / 4096;

  reset (8, false, false);
  memset (bitmap, 0, sizeof bitmap);
  g.vr.log = &log;
  g.vr.log_guest_addr = G1 + 0x7000;    /* the device area's GPA */
  post1 (0, 0, 1);
  pop (&(const char *) { NULL });
  vring_push (&g.vr, 0, 1);
  vring_publish (&g.vr);
  ok (bitmap[desc_page / 8] & (1 << desc_page % 8),
      "[%s] log: the used descriptor's page", g.variant);
  ok (bitmap[dev_page / 8] & (1 << dev_page % 8),
      "[%s] log: the device area's page (kicks turned off)", g.variant);
  log.size = 1;
  vring_push (&g.vr, 0, 1);
  ok (g.vr.log_failed, "[%s] log: a write outside the log is noticed",
      g.variant);
  g.vr.log = NULL;
}

static unsigned fuzz_seed;

static uint32_t
fuzz_rnd (void)
{
  fuzz_seed = fuzz_seed * 1103515245 + 12345;
  return fuzz_seed >> 8;
}

static bool
inside (const void *p, size_t len)
{
  const uint8_t *b = p;
  return (b >= g.m1 && b + len <= g.m1 + S1) ||
    (b >= g.m2 && b + len <= g.m2 + S2);
}

/* Random descriptors (mostly marked available, addresses near guest
 * memory, random tables): the walker never hands out a piece outside
 * guest memory, never more than chain.max, and the ring state stays
 * consistent, whatever it is fed. */
static void
test_fuzz (void)
{
  static const uint64_t addrs[] = { G1 + BUF_OFF, G1 + TABLE_OFF, G2 - 64,
                                    G2 + S2 - 32, G1 - 16, 0 };
  unsigned round, popped = 0, refused = 0, bad = 0;

  fuzz_seed = 42;
  for (round = 0; round < 3000; round++) {
    unsigned num = 1 + fuzz_rnd () % 32, i, j;
    const char *err;
    int r;

    reset (num, fuzz_rnd () % 4 != 0, fuzz_rnd () % 2);
    for (i = 0; i < 16 * 64 / 4; i++)
      ((uint32_t *) ptable ())[i] = fuzz_rnd ();
    for (i = 0; i < 64; i++)
      ptable ()[i].addr = htole64 (addrs[fuzz_rnd () % 6] +
                                   fuzz_rnd () % 64);
    for (i = 0; i < num; i++) {
      uint16_t f = fuzz_rnd () & (F_NEXT | F_WRITE | F_INDIRECT | F_AVAIL |
                                  F_USED);
      if (fuzz_rnd () % 4)
        f = (f & ~(F_AVAIL | F_USED)) | F_AVAIL;
      if (fuzz_rnd () % 3 == 0)
        f &= ~F_INDIRECT;
      put_pdesc (&pdesc ()[i],
                 fuzz_rnd () % 3 ? addrs[fuzz_rnd () % 6] + fuzz_rnd () % 64
                 : G1 + TABLE_OFF + 16 * (fuzz_rnd () % 8),
                 fuzz_rnd () % 4 ? fuzz_rnd () % 128 : fuzz_rnd (),
                 fuzz_rnd () % (num + 2), f);
    }
    g.c.max = 1 + fuzz_rnd () % MAXIOV;
    for (j = 0; j < 2 * num; j++) {
      r = pop (&err);
      if (r != 1) {
        refused += r == -1;
        break;
      }
      popped++;
      for (i = 0; i < g.c.niov; i++)
        if (!inside (g.iov[i].iov_base, g.iov[i].iov_len))
          bad++;
      if (g.c.niov > g.c.max || g.c.nout > g.c.niov || g.c.head >= num)
        bad++;
      vring_push (&g.vr, g.c.head, fuzz_rnd () % 100);
      if (fuzz_rnd () % 2)
        vring_publish (&g.vr);
    }
    vring_publish (&g.vr);
    if (g.vr.last_avail_idx >= num || g.vr.used_idx >= num)
      bad++;
  }
  g.c.max = MAXIOV;
  ok (bad == 0, "[%s] fuzz: 3000 random rings, %u chains popped, %u refused, "
      "nothing outside guest memory (%u problems)", g.variant, popped,
      refused, bad);
}

int
main (void)
{
  static const uint64_t uvas[] = { G1, UINT64_C (0x7f3400000000) };
  static const char *const names[] = { "uva == gpa", "uva != gpa" };
  unsigned i;

  memory_alloc ();
  for (i = 0; i < 2; i++) {
    memory_init (names[i], uvas[i]);
    test_setup ();
    test_base ();
    test_pop_basic ();
    test_wrap ();
    test_indirect ();
    test_hostile_chains ();
    test_hostile_buffers ();
    test_walk_descs ();
    test_used ();
    test_notify ();
    test_kicks ();
    test_log ();
    test_fuzz ();
    memtable_free (g.t);
  }
  free (g.m1);
  free (g.m2);
  return done_testing ();
}
