/* Unit tests for src/daemon/vring-split.c: ring setup, popping chains
 * (direct, indirect, split across regions), every hostile chain the
 * guest can build, and used-ring publishing with and without EVENT_IDX.
 *
 * "Guest memory" is two malloc'd buffers registered with memtable_add
 * as regions adjacent in both address spaces.  Ring addresses are
 * front-end virtual addresses (UVAs), buffer addresses are guest
 * physical addresses (GPAs): everything runs twice, once with UVA ==
 * GPA and once with different numbers, so mixing them up shows. */

#include <config.h>

#include <endian.h>
#include <stdlib.h>
#include <string.h>

#include "vring.h"
#include "tap.h"

#define S1 (64 * 1024)          /* region 1: rings and most buffers */
#define S2 (16 * 1024)          /* region 2: right after region 1 */
#define G1 UINT64_C (0x40000000)
#define G2 (G1 + S1)

#define DESC_OFF  0x0000
#define AVAIL_OFF 0x1000
#define USED_OFF  0x2000
#define TABLE_OFF 0x3000        /* indirect tables */
#define BUF_OFF   0x4000        /* data buffers */

#define MAXIOV 64

static struct {
  uint8_t *m1, *m2;
  uint64_t u1, u2;              /* UVAs of the regions */
  struct memtable *t;
  struct ring vr;
  unsigned num;
  uint16_t aidx;                /* driver's avail index */
  struct iovec iov[MAXIOV];
  uint64_t gpa[MAXIOV];
  struct chain c;
  const char *variant;
} g;

static struct vring_desc *
desc (void)
{
  return (struct vring_desc *) (g.m1 + DESC_OFF);
}

static struct vring_avail *
avail (void)
{
  return (struct vring_avail *) (g.m1 + AVAIL_OFF);
}

static struct vring_used *
used (void)
{
  return (struct vring_used *) (g.m1 + USED_OFF);
}

static struct vring_desc *
table (void)
{
  return (struct vring_desc *) (g.m1 + TABLE_OFF);
}

static void
put_desc (struct vring_desc *d, unsigned i, uint64_t addr, uint32_t len,
          uint16_t flags, uint16_t next)
{
  d[i].addr = htole64 (addr);
  d[i].len = htole32 (len);
  d[i].flags = htole16 (flags);
  d[i].next = htole16 (next);
}

static void
set_desc (unsigned i, uint64_t addr, uint32_t len, uint16_t flags,
          uint16_t next)
{
  put_desc (desc (), i, addr, len, flags, next);
}

/* The driver makes head available. */
static void
post (uint16_t head)
{
  avail ()->ring[g.aidx % g.num] = htole16 (head);
  g.aidx++;
  __atomic_store_n (&avail ()->idx, htole16 (g.aidx), __ATOMIC_RELEASE);
}

/* Fresh zeroed memory and a ring of num entries. */
static void
reset (unsigned num, bool indirect, bool event_idx)
{
  const char *err = NULL;

  memset (g.m1, 0, S1);
  memset (g.m2, 0, S2);
  memset (&g.vr, 0, sizeof g.vr);
  g.num = num;
  g.aidx = 0;
  if (vring_setup (&g.vr, g.t, num, g.u1 + DESC_OFF, g.u1 + AVAIL_OFF,
                   g.u1 + USED_OFF, &err) == -1) {
    diag ("vring_setup failed: %s", err);
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

/* The next pop must fail without consuming the entry. */
static void
pop_fails (const char *what)
{
  uint16_t before = g.vr.last_avail_idx;
  const char *err;
  int r = pop (&err);

  ok (r == -1 && err != NULL && g.vr.last_avail_idx == before,
      "[%s] %s: refused (%s)", g.variant, what,
      r == -1 ? (err ? err : "no message") : r == 0 ? "empty" : "accepted");
}

static bool
iov_is (unsigned i, const void *base, size_t len, uint64_t gpa)
{
  return i < g.c.niov && g.iov[i].iov_base == base &&
    g.iov[i].iov_len == len && g.gpa[i] == gpa;
}

/* ------------------------------------------------------------------ */

static int
setup_ring (struct ring *r, const char **err, unsigned num, uint64_t d,
            uint64_t a, uint64_t u)
{
  memset (r, 0, sizeof *r);
  *err = NULL;
  return vring_setup (r, g.t, num, d, a, u, err);
}

static void
test_setup (void)
{
  struct ring r;
  const char *err;
  static const unsigned bad_num[] = { 0, 3, 6, 12, 100, 1000, 32769, 65536,
                                      65535, 0x80000000u, UINT32_MAX };
  size_t i;

#define SETUP(num, d, a, u) setup_ring (&r, &err, (num), (d), (a), (u))

  ok (SETUP (16, g.u1 + DESC_OFF, g.u1 + AVAIL_OFF, g.u1 + USED_OFF) == 0 &&
      r.num == 16 && (void *) r.desc == g.m1 + DESC_OFF &&
      (void *) r.avail == g.m1 + AVAIL_OFF &&
      (void *) r.used == g.m1 + USED_OFF,
      "[%s] setup: rings translated through their UVAs", g.variant);
  ok (SETUP (1, g.u1, g.u1 + 16, g.u1 + 32) == 0, "[%s] setup: size 1",
      g.variant);
  ok (SETUP (1024, g.u1, g.u1 + 0x4000, g.u1 + 0x5000) == 0,
      "[%s] setup: size 1024", g.variant);
  for (i = 0; i < sizeof bad_num / sizeof bad_num[0]; i++) {
    int rc = SETUP (bad_num[i], g.u1 + DESC_OFF, g.u1 + AVAIL_OFF,
                    g.u1 + USED_OFF);
    ok (rc == -1 && err, "[%s] setup: size %u refused (%s)", g.variant,
        bad_num[i], err ? err : "no message");
  }

  /* Alignment: desc 16, avail 2, used 4. */
  ok (SETUP (16, g.u1 + 8, g.u1 + AVAIL_OFF, g.u1 + USED_OFF) == -1,
      "[%s] setup: desc at 8 mod 16 refused", g.variant);
  ok (SETUP (16, g.u1 + 16, g.u1 + AVAIL_OFF, g.u1 + USED_OFF) == 0,
      "[%s] setup: desc at 16 mod 16 accepted", g.variant);
  ok (SETUP (16, g.u1, g.u1 + AVAIL_OFF + 1, g.u1 + USED_OFF) == -1,
      "[%s] setup: odd avail address refused", g.variant);
  ok (SETUP (16, g.u1, g.u1 + AVAIL_OFF + 2, g.u1 + USED_OFF) == 0,
      "[%s] setup: avail at 2 mod 4 accepted", g.variant);
  ok (SETUP (16, g.u1, g.u1 + AVAIL_OFF, g.u1 + USED_OFF + 2) == -1,
      "[%s] setup: used at 2 mod 4 refused", g.variant);
  ok (SETUP (16, g.u1, g.u1 + AVAIL_OFF, g.u1 + USED_OFF + 1) == -1,
      "[%s] setup: used at 1 mod 4 refused", g.variant);

  /* Outside guest memory, or running past its end. */
  ok (SETUP (16, g.u1 - 0x1000, g.u1 + AVAIL_OFF, g.u1 + USED_OFF) == -1,
      "[%s] setup: desc before memory refused", g.variant);
  ok (SETUP (16, g.u2 + S2 - 256, g.u1 + AVAIL_OFF, g.u1 + USED_OFF) == 0,
      "[%s] setup: desc table ending at the end of memory accepted",
      g.variant);
  ok (SETUP (16, g.u2 + S2 - 240, g.u1 + AVAIL_OFF, g.u1 + USED_OFF) == -1,
      "[%s] setup: desc table running 16 bytes past memory refused",
      g.variant);
  ok (SETUP (16, g.u1 + S1 - 128, g.u1 + AVAIL_OFF, g.u1 + USED_OFF) == -1,
      "[%s] setup: desc table straddling two regions refused", g.variant);
  /* avail: 4 + 2*16 + 2 (used_event) = 38 bytes. */
  ok (SETUP (16, g.u1, g.u2 + S2 - 38, g.u1 + USED_OFF) == 0,
      "[%s] setup: avail ring incl. used_event ending at the end accepted",
      g.variant);
  ok (SETUP (16, g.u1, g.u2 + S2 - 36, g.u1 + USED_OFF) == -1,
      "[%s] setup: avail ring without room for used_event refused",
      g.variant);
  /* used: 4 + 8*16 + 2 (avail_event) = 134 bytes. */
  ok (SETUP (16, g.u1, g.u1 + AVAIL_OFF, g.u2 + S2 - 136) == 0,
      "[%s] setup: used ring near the end accepted", g.variant);
  ok (SETUP (16, g.u1, g.u1 + AVAIL_OFF, g.u2 + S2 - 132) == -1,
      "[%s] setup: used ring without room for avail_event refused",
      g.variant);
  ok (SETUP (16, g.u1, g.u1 + AVAIL_OFF, g.u2 + S2) == -1,
      "[%s] setup: used ring just past memory refused", g.variant);
  ok (SETUP (16, UINT64_MAX & ~UINT64_C (15), g.u1 + AVAIL_OFF,
             g.u1 + USED_OFF) == -1,
      "[%s] setup: desc at the top of the address space refused", g.variant);
  ok (SETUP (1024, g.u2 + S2 - 4096, g.u1, g.u1 + 0x1000) == -1,
      "[%s] setup: 1024-entry table in the last 4 KiB refused", g.variant);
  if (g.u1 != G1) {
    ok (SETUP (16, G1 + DESC_OFF, g.u1 + AVAIL_OFF, g.u1 + USED_OFF) == -1,
        "[%s] setup: desc given as a GPA refused", g.variant);
    ok (SETUP (16, g.u1, g.u1 + AVAIL_OFF, G1 + USED_OFF) == -1,
        "[%s] setup: used given as a GPA refused", g.variant);
  }
#undef SETUP
}

/* The virtio-blk shape: header (readable), data, status (writable). */
static void
test_pop_basic (void)
{
  uint8_t *hdr = g.m1 + BUF_OFF, *data = g.m1 + BUF_OFF + 0x100,
    *status = g.m1 + BUF_OFF + 0x1000;
  const char *err;
  int r;

  reset (16, false, false);
  r = pop (&err);
  is_int (r, 0, "[%s] empty ring: pop returns 0", g.variant);
  is_int (vring_avail_idx (&g.vr), 0, "[%s] avail idx 0", g.variant);

  /* IN: 1 readable, 2 writable; descriptors out of order in the table. */
  set_desc (5, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 2);
  set_desc (2, G1 + BUF_OFF + 0x100, 512,
            VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 9);
  set_desc (9, G1 + BUF_OFF + 0x1000, 1, VRING_DESC_F_WRITE, 0);
  post (5);
  is_int (vring_avail_idx (&g.vr), 1, "[%s] avail idx 1", g.variant);
  r = pop (&err);
  is_int (r, 1, "[%s] 3-descriptor chain popped", g.variant);
  ok (g.c.head == 5 && g.c.niov == 3 && g.c.nout == 1,
      "[%s] head 5, 3 iovecs, 1 readable (head %u niov %u nout %u)",
      g.variant, g.c.head, g.c.niov, g.c.nout);
  ok (iov_is (0, hdr, 16, G1 + BUF_OFF) &&
      iov_is (1, data, 512, G1 + BUF_OFF + 0x100) &&
      iov_is (2, status, 1, G1 + BUF_OFF + 0x1000),
      "[%s] iovecs and their gpas", g.variant);
  is_int (g.vr.last_avail_idx, 1, "[%s] last_avail_idx advanced", g.variant);
  is_int (pop (&err), 0, "[%s] ring empty again", g.variant);

  /* OUT: 2 readable, 1 writable. */
  set_desc (0, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 1);
  set_desc (1, G1 + BUF_OFF + 0x100, 4096, VRING_DESC_F_NEXT, 3);
  set_desc (3, G1 + BUF_OFF + 0x2000, 1, VRING_DESC_F_WRITE, 0);
  post (0);
  r = pop (&err);
  ok (r == 1 && g.c.head == 0 && g.c.niov == 3 && g.c.nout == 2,
      "[%s] OUT-shaped chain: 2 readable, 1 writable", g.variant);

  /* Zero-length descriptors carry nothing. */
  set_desc (4, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 6);
  set_desc (6, 0, 0, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 7);
  set_desc (7, G1 + BUF_OFF + 0x1000, 1, VRING_DESC_F_WRITE, 0);
  post (4);
  r = pop (&err);
  ok (r == 1 && g.c.niov == 2 && g.c.nout == 1 &&
      iov_is (1, status, 1, G1 + BUF_OFF + 0x1000),
      "[%s] zero-length descriptor skipped", g.variant);

  /* Only readable, only writable, single descriptor. */
  set_desc (8, G1 + BUF_OFF, 100, 0, 0);
  post (8);
  r = pop (&err);
  ok (r == 1 && g.c.niov == 1 && g.c.nout == 1,
      "[%s] single readable descriptor", g.variant);
  set_desc (8, G1 + BUF_OFF, 100, VRING_DESC_F_WRITE, 0);
  post (8);
  r = pop (&err);
  ok (r == 1 && g.c.niov == 1 && g.c.nout == 0,
      "[%s] single writable descriptor", g.variant);

  /* Several entries in a row, and exactly num entries ahead. */
  {
    unsigned i;
    bool all = true;
    for (i = 0; i < 16; i++) {
      set_desc (i, G1 + BUF_OFF + i * 16, 16, VRING_DESC_F_WRITE, 0);
      post (i);
    }
    is_int ((uint16_t) (vring_avail_idx (&g.vr) - g.vr.last_avail_idx), 16,
            "[%s] 16 entries available (the whole ring)", g.variant);
    for (i = 0; i < 16; i++) {
      r = pop (&err);
      all = all && r == 1 && g.c.head == i &&
        iov_is (0, g.m1 + BUF_OFF + i * 16, 16, G1 + BUF_OFF + i * 16);
    }
    ok (all, "[%s] popped in avail order", g.variant);
    is_int (pop (&err), 0, "[%s] then empty", g.variant);
  }

  /* A chain using every descriptor of the ring. */
  {
    unsigned i;
    for (i = 0; i < 16; i++)
      set_desc (i, G1 + BUF_OFF + i * 16, 16,
                (i < 15 ? VRING_DESC_F_NEXT : 0) |
                (i >= 8 ? VRING_DESC_F_WRITE : 0), i + 1);
    post (0);
    r = pop (&err);
    ok (r == 1 && g.c.niov == 16 && g.c.nout == 8,
        "[%s] a chain of all 16 descriptors is not a loop", g.variant);
  }

  /* The free-running avail index wraps at 2^16. */
  reset (16, false, false);
  g.vr.last_avail_idx = 0xfffe;
  g.aidx = 0xfffe;
  set_desc (0, G1 + BUF_OFF, 1, VRING_DESC_F_WRITE, 0);
  post (0);
  post (0);
  post (0);
  ok (pop (&err) == 1 && pop (&err) == 1 && pop (&err) == 1 &&
      g.vr.last_avail_idx == 1 && pop (&err) == 0,
      "[%s] avail index wraps from 0xffff to 0", g.variant);
}

static void
test_pop_split_regions (void)
{
  const char *err;
  int r;

  reset (16, true, false);
  /* 100 bytes at the end of region 1, 156 at the start of region 2. */
  set_desc (0, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 1);
  set_desc (1, G2 - 100, 256, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 2);
  set_desc (2, G2 + 1000, 1, VRING_DESC_F_WRITE, 0);
  post (0);
  r = pop (&err);
  ok (r == 1 && g.c.niov == 4 && g.c.nout == 1,
      "[%s] buffer straddling two regions gives two iovecs", g.variant);
  ok (iov_is (1, g.m1 + S1 - 100, 100, G2 - 100) &&
      iov_is (2, g.m2, 156, G2) && iov_is (3, g.m2 + 1000, 1, G2 + 1000),
      "[%s] pieces end region 1 and start region 2, with their gpas",
      g.variant);

  /* The same through an indirect table. */
  put_desc (table (), 0, G2 - 8, 16, VRING_DESC_F_NEXT, 1);
  put_desc (table (), 1, G2 + 8, 1, VRING_DESC_F_WRITE, 0);
  set_desc (3, G1 + TABLE_OFF, 32, VRING_DESC_F_INDIRECT, 0);
  post (3);
  r = pop (&err);
  ok (r == 1 && g.c.niov == 3 && g.c.nout == 2 &&
      iov_is (0, g.m1 + S1 - 8, 8, G2 - 8) && iov_is (1, g.m2, 8, G2) &&
      iov_is (2, g.m2 + 8, 1, G2 + 8),
      "[%s] straddling buffer inside an indirect table", g.variant);

  /* Too many pieces for the chain's arrays. */
  g.c.max = 3;
  set_desc (4, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 5);
  set_desc (5, G2 - 100, 256, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT, 6);
  set_desc (6, G2 + 1000, 1, VRING_DESC_F_WRITE, 0);
  post (4);
  pop_fails ("4 pieces with chain.max 3");
  g.c.max = 2;
  pop_fails ("4 pieces with chain.max 2");
  g.c.max = 4;
  r = pop (&err);
  ok (r == 1 && g.c.niov == 4, "[%s] the same chain fits chain.max 4",
      g.variant);
  g.c.max = MAXIOV;
}

static void
test_pop_indirect (void)
{
  const char *err;
  int r;

  reset (16, true, false);
  put_desc (table (), 0, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 2);
  put_desc (table (), 2, G1 + BUF_OFF + 0x100, 512,
            VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 1);
  put_desc (table (), 1, G1 + BUF_OFF + 0x1000, 1, VRING_DESC_F_WRITE, 0);
  set_desc (7, G1 + TABLE_OFF, 3 * 16, VRING_DESC_F_INDIRECT, 0);
  post (7);
  r = pop (&err);
  is_int (r, 1, "[%s] indirect chain popped", g.variant);
  ok (g.c.head == 7 && g.c.niov == 3 && g.c.nout == 1 &&
      iov_is (0, g.m1 + BUF_OFF, 16, G1 + BUF_OFF) &&
      iov_is (1, g.m1 + BUF_OFF + 0x100, 512, G1 + BUF_OFF + 0x100) &&
      iov_is (2, g.m1 + BUF_OFF + 0x1000, 1, G1 + BUF_OFF + 0x1000),
      "[%s] indirect: head 7, iovecs in table order 0, 2, 1", g.variant);

  /* A table in region 2. */
  put_desc ((struct vring_desc *) g.m2, 0, G1 + BUF_OFF, 16, 0, 0);
  set_desc (8, G2, 16, VRING_DESC_F_INDIRECT, 0);
  post (8);
  r = pop (&err);
  ok (r == 1 && g.c.niov == 1 && iov_is (0, g.m1 + BUF_OFF, 16, G1 + BUF_OFF),
      "[%s] indirect table in the second region", g.variant);

  /* One-entry table. */
  put_desc (table (), 0, G1 + BUF_OFF, 1, VRING_DESC_F_WRITE, 0);
  set_desc (9, G1 + TABLE_OFF, 16, VRING_DESC_F_INDIRECT, 0);
  post (9);
  ok (pop (&err) == 1 && g.c.niov == 1 && g.c.nout == 0,
      "[%s] indirect table with one descriptor", g.variant);

  /* A table of num - 1 entries. */
  {
    unsigned i;
    for (i = 0; i < 15; i++)
      put_desc (table (), i, G1 + BUF_OFF + i * 32, 32,
                (i < 14 ? VRING_DESC_F_NEXT : 0) | VRING_DESC_F_WRITE, i + 1);
    set_desc (10, G1 + TABLE_OFF, 15 * 16, VRING_DESC_F_INDIRECT, 0);
    post (10);
    r = pop (&err);
    ok (r == 1 && g.c.niov == 15, "[%s] indirect table of num - 1 entries",
        g.variant);
  }

  /* A table of exactly num entries: Linux builds those for a full
   * virtio-blk request (seg_max = queue size - 2, plus header and
   * status) and QEMU accepts them. */
  {
    unsigned i;
    for (i = 0; i < 16; i++)
      put_desc (table (), i, G1 + BUF_OFF + i * 32, 32,
                (i < 15 ? VRING_DESC_F_NEXT : 0) |
                (i > 0 ? VRING_DESC_F_WRITE : 0), i + 1);
    set_desc (11, G1 + TABLE_OFF, 16 * 16, VRING_DESC_F_INDIRECT, 0);
    post (11);
    r = pop (&err);
    ok (r == 1 && g.c.niov == 16 && g.c.nout == 1,
        "[%s] indirect table of exactly num entries (%s)", g.variant,
        r == 1 ? "ok" : err);
  }
}

static void
test_pop_hostile (void)
{
  unsigned i;

  /* Loops. */
  reset (16, false, false);
  set_desc (0, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 1);
  set_desc (1, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 0);
  post (0);
  pop_fails ("descriptor loop 0 -> 1 -> 0");

  reset (16, false, false);
  set_desc (3, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 3);
  post (3);
  pop_fails ("descriptor pointing at itself");

  reset (16, false, false);
  for (i = 0; i < 16; i++)
    set_desc (i, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, (i + 1) % 16);
  post (0);
  pop_fails ("chain longer than the ring (all 16, then back to 0)");

  reset (16, false, false);
  set_desc (0, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 1);
  set_desc (1, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 2);
  set_desc (2, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 1);
  post (0);
  pop_fails ("loop entered after two descriptors (0 -> 1 -> 2 -> 1)");

  /* Indexes. */
  reset (16, false, false);
  set_desc (0, G1 + BUF_OFF, 16, 0, 0);
  post (16);
  pop_fails ("head == num");
  reset (16, false, false);
  post (0xffff);
  pop_fails ("head 0xffff");
  reset (16, false, false);
  set_desc (0, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 16);
  post (0);
  pop_fails ("next == num");
  reset (16, false, false);
  set_desc (0, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 0xffff);
  post (0);
  pop_fails ("next 0xffff");

  /* Avail index running away. */
  reset (16, false, false);
  set_desc (0, G1 + BUF_OFF, 16, 0, 0);
  avail ()->idx = htole16 (17);
  pop_fails ("avail idx 17 ahead of a 16-entry ring");
  reset (16, false, false);
  avail ()->idx = htole16 (0x8000);
  pop_fails ("avail idx 0x8000 ahead");
  reset (16, false, false);
  g.vr.last_avail_idx = 10;
  avail ()->idx = htole16 (9);
  pop_fails ("avail idx going backwards");

  /* Buffers outside guest memory. */
  reset (16, false, false);
  set_desc (0, G1 - 16, 16, 0, 0);
  post (0);
  pop_fails ("buffer before memory");
  reset (16, false, false);
  set_desc (0, G2 + S2 - 8, 16, VRING_DESC_F_WRITE, 0);
  post (0);
  pop_fails ("buffer running past the end of memory");
  reset (16, false, false);
  set_desc (0, G2 + S2, 1, VRING_DESC_F_WRITE, 0);
  post (0);
  pop_fails ("buffer just past memory");
  reset (16, false, false);
  set_desc (0, UINT64_MAX - 10, 100, VRING_DESC_F_WRITE, 0);
  post (0);
  pop_fails ("addr + len overflowing 2^64");
  reset (16, false, false);
  set_desc (0, G1 + BUF_OFF, UINT32_MAX, VRING_DESC_F_WRITE, 0);
  post (0);
  pop_fails ("len 0xffffffff");
  if (g.u1 != G1) {
    reset (16, false, false);
    set_desc (0, g.u1 + BUF_OFF, 16, 0, 0);
    post (0);
    pop_fails ("buffer given as a UVA");
  }
  reset (16, false, false);
  set_desc (0, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 1);
  set_desc (1, 0x1000, 16, VRING_DESC_F_WRITE, 0);
  post (0);
  pop_fails ("second descriptor outside memory");

  /* Ordering. */
  reset (16, false, false);
  set_desc (0, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 1);
  set_desc (1, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 2);
  set_desc (2, G1 + BUF_OFF, 16, 0, 0);
  post (0);
  pop_fails ("readable after writable");
  reset (16, false, false);
  set_desc (0, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT | VRING_DESC_F_WRITE, 1);
  set_desc (1, G1 + BUF_OFF, 0, VRING_DESC_F_NEXT, 2);
  set_desc (2, G1 + BUF_OFF, 16, VRING_DESC_F_WRITE, 0);
  post (0);
  pop_fails ("empty readable descriptor after a writable one");

  /* Too many iovecs. */
  reset (16, false, false);
  for (i = 0; i < 5; i++)
    set_desc (i, G1 + BUF_OFF + i * 16, 16, i < 4 ? VRING_DESC_F_NEXT : 0,
              i + 1);
  post (0);
  g.c.max = 4;
  pop_fails ("5 descriptors with chain.max 4");
  g.c.max = 5;
  ok (pop (&(const char *) { NULL }) == 1 && g.c.niov == 5,
      "[%s] the same chain fits chain.max 5", g.variant);
  g.c.max = MAXIOV;

  /* Indirect abuse. */
  reset (16, false, false);
  put_desc (table (), 0, G1 + BUF_OFF, 16, 0, 0);
  set_desc (0, G1 + TABLE_OFF, 16, VRING_DESC_F_INDIRECT, 0);
  post (0);
  pop_fails ("indirect without the feature");

  reset (16, true, false);
  put_desc (table (), 0, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 1);
  put_desc (table (), 1, G1 + TABLE_OFF + 0x100, 16, VRING_DESC_F_INDIRECT, 0);
  put_desc (table (), 16, G1 + BUF_OFF, 16, 0, 0);
  set_desc (0, G1 + TABLE_OFF, 2 * 16, VRING_DESC_F_INDIRECT, 0);
  post (0);
  pop_fails ("nested indirect table");

  reset (16, true, false);
  put_desc (table (), 0, G1 + BUF_OFF, 16, 0, 0);
  set_desc (0, G1 + TABLE_OFF, 40, VRING_DESC_F_INDIRECT, 0);
  post (0);
  pop_fails ("indirect len 40 (not a multiple of 16)");
  reset (16, true, false);
  set_desc (0, G1 + TABLE_OFF, 17, VRING_DESC_F_INDIRECT, 0);
  post (0);
  pop_fails ("indirect len 17");
  reset (16, true, false);
  set_desc (0, G1 + TABLE_OFF, 0, VRING_DESC_F_INDIRECT, 0);
  post (0);
  pop_fails ("indirect len 0");
  reset (16, true, false);
  for (i = 0; i < 17; i++)
    put_desc (table (), i, G1 + BUF_OFF, 16, i < 16 ? VRING_DESC_F_NEXT : 0,
              i + 1);
  set_desc (0, G1 + TABLE_OFF, 17 * 16, VRING_DESC_F_INDIRECT, 0);
  post (0);
  pop_fails ("indirect table of 17 entries on a 16-entry ring");
  reset (16, true, false);
  set_desc (0, G1 + TABLE_OFF, UINT32_MAX & ~15u, VRING_DESC_F_INDIRECT, 0);
  post (0);
  pop_fails ("indirect len 0xfffffff0");

  reset (16, true, false);
  put_desc (table (), 0, G1 + BUF_OFF, 16, 0, 0);
  set_desc (0, G1 + TABLE_OFF, 16, VRING_DESC_F_INDIRECT | VRING_DESC_F_NEXT,
            1);
  set_desc (1, G1 + BUF_OFF, 16, VRING_DESC_F_WRITE, 0);
  post (0);
  pop_fails ("indirect + NEXT");

  reset (16, true, false);
  put_desc (table (), 0, G1 + BUF_OFF, 16, 0, 0);
  set_desc (0, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 1);
  set_desc (1, G1 + TABLE_OFF, 16, VRING_DESC_F_INDIRECT, 0);
  post (0);
  pop_fails ("indirect descriptor after a direct one");

  reset (16, true, false);
  set_desc (0, G2 + S2 - 16, 32, VRING_DESC_F_INDIRECT, 0);
  post (0);
  pop_fails ("indirect table running past memory");
  reset (16, true, false);
  set_desc (0, UINT64_MAX - 15, 32, VRING_DESC_F_INDIRECT, 0);
  post (0);
  pop_fails ("indirect table address overflowing");
  /* A table must be contiguous in one region (it is read in place). */
  reset (16, true, false);
  put_desc ((struct vring_desc *) (g.m1 + S1 - 16), 0, G1 + BUF_OFF, 16,
            VRING_DESC_F_NEXT, 1);
  put_desc ((struct vring_desc *) g.m2, 0, G1 + BUF_OFF, 16,
            VRING_DESC_F_WRITE, 0);
  set_desc (0, G2 - 16, 32, VRING_DESC_F_INDIRECT, 0);
  post (0);
  pop_fails ("indirect table straddling two regions");

  reset (16, true, false);
  put_desc (table (), 0, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 1);
  put_desc (table (), 1, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 0);
  set_desc (0, G1 + TABLE_OFF, 2 * 16, VRING_DESC_F_INDIRECT, 0);
  post (0);
  pop_fails ("loop inside an indirect table");
  reset (16, true, false);
  put_desc (table (), 0, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 0);
  set_desc (0, G1 + TABLE_OFF, 16 * 16, VRING_DESC_F_INDIRECT, 0);
  post (0);
  pop_fails ("self-loop inside a 16-entry indirect table");
  reset (16, true, false);
  put_desc (table (), 0, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 2);
  put_desc (table (), 2, G1 + BUF_OFF, 16, 0, 0);
  set_desc (0, G1 + TABLE_OFF, 2 * 16, VRING_DESC_F_INDIRECT, 0);
  post (0);
  pop_fails ("indirect next beyond the table");
  reset (16, true, false);
  put_desc (table (), 0, G1 + BUF_OFF, 16, VRING_DESC_F_WRITE | VRING_DESC_F_NEXT,
            1);
  put_desc (table (), 1, G1 + BUF_OFF, 16, 0, 0);
  set_desc (0, G1 + TABLE_OFF, 2 * 16, VRING_DESC_F_INDIRECT, 0);
  post (0);
  pop_fails ("readable after writable inside an indirect table");
  reset (16, true, false);
  put_desc (table (), 0, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 1);
  put_desc (table (), 1, G2 + S2 - 4, 16, VRING_DESC_F_WRITE, 0);
  set_desc (0, G1 + TABLE_OFF, 2 * 16, VRING_DESC_F_INDIRECT, 0);
  post (0);
  pop_fails ("indirect entry outside memory");
  reset (16, true, false);
  for (i = 0; i < 8; i++)
    put_desc (table (), i, G1 + BUF_OFF, 16, i < 7 ? VRING_DESC_F_NEXT : 0,
              i + 1);
  set_desc (0, G1 + TABLE_OFF, 8 * 16, VRING_DESC_F_INDIRECT, 0);
  post (0);
  g.c.max = 7;
  pop_fails ("8-entry indirect table with chain.max 7");
  g.c.max = MAXIOV;

  /* A refused entry stays refused: the ring is broken, not skipped. */
  reset (16, false, false);
  set_desc (0, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 0);
  post (0);
  pop_fails ("loop (first try)");
  pop_fails ("loop (second try, entry not consumed)");

  /* vring_walk, used for resubmission, checks the same. */
  {
    const char *err = NULL;
    reset (16, false, false);
    ok (vring_walk (&g.vr, g.t, 16, &g.c, &err) == -1 && err,
        "[%s] vring_walk: head == num refused", g.variant);
    set_desc (2, G1 + BUF_OFF, 16, VRING_DESC_F_NEXT, 2);
    ok (vring_walk (&g.vr, g.t, 2, &g.c, &err) == -1 && err,
        "[%s] vring_walk: loop refused", g.variant);
    set_desc (2, G1 + BUF_OFF, 16, VRING_DESC_F_WRITE, 0);
    ok (vring_walk (&g.vr, g.t, 2, &g.c, &err) == 0 && g.c.head == 2 &&
        g.c.niov == 1 && g.vr.last_avail_idx == 0,
        "[%s] vring_walk: walks without consuming avail entries", g.variant);
  }
}

/* Used ring and notifications. */
static void
test_used (void)
{
  uint16_t *used_event, *avail_event;
  const char *err;

  reset (16, false, false);
  used_event = &avail ()->ring[16];
  avail_event = (uint16_t *) &used ()->ring[16];

  ok (!vring_publish (&g.vr), "[%s] nothing pushed: publish says no",
      g.variant);
  vring_push (&g.vr, 5, 513);
  ok (used ()->idx == 0, "[%s] push alone does not move used->idx",
      g.variant);
  ok (le32toh (used ()->ring[0].id) == 5 && le32toh (used ()->ring[0].len) ==
      513, "[%s] used elem 0 = { 5, 513 }", g.variant);
  ok (vring_publish (&g.vr), "[%s] no EVENT_IDX, flags 0: notify",
      g.variant);
  is_int (le16toh (used ()->idx), 1, "[%s] used->idx 1", g.variant);
  is_int (vring_used_idx (&g.vr), 1, "[%s] vring_used_idx", g.variant);
  ok (!vring_publish (&g.vr), "[%s] publishing again without a push: no",
      g.variant);

  avail ()->flags = htole16 (VRING_AVAIL_F_NO_INTERRUPT);
  vring_push (&g.vr, 7, 1);
  vring_push (&g.vr, 9, 4097);
  ok (!vring_publish (&g.vr), "[%s] VRING_AVAIL_F_NO_INTERRUPT: no notify",
      g.variant);
  ok (le16toh (used ()->idx) == 3 && le32toh (used ()->ring[1].id) == 7 &&
      le32toh (used ()->ring[2].id) == 9 &&
      le32toh (used ()->ring[2].len) == 4097,
      "[%s] but used->idx and elems are updated", g.variant);
  avail ()->flags = 0;
  vring_push (&g.vr, 1, 1);
  ok (vring_publish (&g.vr), "[%s] flag cleared: notify again", g.variant);

  /* The used ring wraps. */
  {
    unsigned i;
    for (i = 0; i < 20; i++)
      vring_push (&g.vr, i % 16, i);
    vring_publish (&g.vr);
    ok (le16toh (used ()->idx) == 24 &&
        le32toh (used ()->ring[24 % 16 - 1].id) == 19 % 16 &&
        le32toh (used ()->ring[24 % 16 - 1].len) == 19,
        "[%s] used ring wraps modulo num", g.variant);
  }

  /* vring_arm_kick without EVENT_IDX: avail_event untouched. */
  *avail_event = htole16 (0xabcd);
  ok (!vring_arm_kick (&g.vr), "[%s] arm_kick on an empty ring: sleep",
      g.variant);
  ok (le16toh (*avail_event) == 0xabcd,
      "[%s] no EVENT_IDX: avail_event not written", g.variant);
  set_desc (0, G1 + BUF_OFF, 1, VRING_DESC_F_WRITE, 0);
  post (0);
  ok (vring_arm_kick (&g.vr), "[%s] arm_kick sees a new entry", g.variant);
  ok (pop (&err) == 1 && !vring_arm_kick (&g.vr),
      "[%s] after popping it: sleep", g.variant);

  /* EVENT_IDX. */
  reset (16, false, true);
  used_event = &avail ()->ring[16];
  avail_event = (uint16_t *) &used ()->ring[16];
  *used_event = htole16 (0);
  avail ()->flags = htole16 (VRING_AVAIL_F_NO_INTERRUPT);
  vring_push (&g.vr, 0, 1);
  ok (vring_publish (&g.vr), "[%s] EVENT_IDX: first publish notifies "
      "(NO_INTERRUPT flag ignored)", g.variant);
  *used_event = htole16 (1);    /* interrupt when entry 1 is used */
  vring_push (&g.vr, 1, 1);
  ok (vring_publish (&g.vr), "[%s] used_event 1, used idx 1 -> 2: notify",
      g.variant);
  *used_event = htole16 (5);
  vring_push (&g.vr, 2, 1);
  ok (!vring_publish (&g.vr), "[%s] used_event 5, idx 2 -> 3: no", g.variant);
  vring_push (&g.vr, 3, 1);
  vring_push (&g.vr, 4, 1);
  ok (!vring_publish (&g.vr), "[%s] used_event 5, idx 3 -> 5: no", g.variant);
  vring_push (&g.vr, 5, 1);
  ok (vring_publish (&g.vr), "[%s] used_event 5, idx 5 -> 6: notify",
      g.variant);
  *used_event = htole16 (7);
  vring_push (&g.vr, 6, 1);
  vring_push (&g.vr, 7, 1);
  vring_push (&g.vr, 8, 1);
  ok (vring_publish (&g.vr), "[%s] used_event 7 crossed in one batch 6 -> 9: "
      "notify", g.variant);
  *used_event = htole16 (3);    /* stale: already passed */
  vring_push (&g.vr, 9, 1);
  ok (!vring_publish (&g.vr), "[%s] used_event behind: no", g.variant);
  is_int (le16toh (used ()->idx), 10, "[%s] used->idx 10", g.variant);

  /* Index wrap with EVENT_IDX. */
  reset (16, false, true);
  used_event = &avail ()->ring[16];
  g.vr.used_idx = g.vr.published_idx = 0xfffe;
  g.vr.signalled_used = 0xfffe;
  g.vr.signalled_used_valid = true;
  *used_event = htole16 (0xffff);
  vring_push (&g.vr, 0, 1);
  ok (!vring_publish (&g.vr), "[%s] wrap: used_event 0xffff, 0xfffe -> 0xffff:"
      " no", g.variant);
  vring_push (&g.vr, 1, 1);
  ok (vring_publish (&g.vr) && le16toh (used ()->idx) == 0,
      "[%s] wrap: 0xffff -> 0: notify", g.variant);

  /* arm_kick with EVENT_IDX writes avail_event = last_avail_idx. */
  reset (16, false, true);
  avail_event = (uint16_t *) &used ()->ring[16];
  *avail_event = htole16 (0xabcd);
  ok (!vring_arm_kick (&g.vr) && le16toh (*avail_event) == 0,
      "[%s] EVENT_IDX: arm_kick writes avail_event 0 and sleeps", g.variant);
  set_desc (0, G1 + BUF_OFF, 1, VRING_DESC_F_WRITE, 0);
  post (0);
  post (0);
  ok (vring_arm_kick (&g.vr), "[%s] entries arrived: don't sleep", g.variant);
  ok (pop (&err) == 1 && pop (&err) == 1 && !vring_arm_kick (&g.vr) &&
      le16toh (*avail_event) == 2,
      "[%s] after popping two: avail_event 2, sleep", g.variant);
}

/* Polling (--poll-us): kicks off, then armed again. */
static void
test_disable_kick (void)
{
  uint16_t *avail_event;
  const char *err;

  reset (16, false, false);
  vring_disable_kick (&g.vr);
  ok (le16toh (used ()->flags) == VRING_USED_F_NO_NOTIFY,
      "[%s] disable_kick: VRING_USED_F_NO_NOTIFY set", g.variant);
  set_desc (0, G1 + BUF_OFF, 1, VRING_DESC_F_WRITE, 0);
  post (0);
  ok (vring_arm_kick (&g.vr) && used ()->flags == 0,
      "[%s] arm_kick clears it and sees the entry added meanwhile", g.variant);
  ok (pop (&err) == 1 && !vring_arm_kick (&g.vr) && used ()->flags == 0,
      "[%s] popped: sleep, flag still clear", g.variant);
  used ()->flags = htole16 (VRING_USED_F_NO_NOTIFY);  /* left by a crash */
  ok (!vring_arm_kick (&g.vr) && used ()->flags == 0,
      "[%s] arm_kick clears a flag it did not set", g.variant);

  reset (16, false, true);
  avail_event = (uint16_t *) &used ()->ring[16];
  ok (!vring_arm_kick (&g.vr) && le16toh (*avail_event) == 0,
      "[%s] EVENT_IDX: armed at 0", g.variant);
  vring_disable_kick (&g.vr);
  set_desc (0, G1 + BUF_OFF, 1, VRING_DESC_F_WRITE, 0);
  post (0);
  post (0);
  ok (pop (&err) == 1 && pop (&err) == 1 && le16toh (*avail_event) == 0 &&
      used ()->flags == 0,
      "[%s] EVENT_IDX: disable_kick writes nothing, avail_event stays behind",
      g.variant);
  ok (!vring_arm_kick (&g.vr) && le16toh (*avail_event) == 2,
      "[%s] EVENT_IDX: armed again at 2", g.variant);
}

static void
run (const char *variant, uint64_t u1)
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
    diag ("memtable_add: %s", err);
    exit (99);
  }
  test_setup ();
  test_pop_basic ();
  test_pop_split_regions ();
  test_pop_indirect ();
  test_pop_hostile ();
  test_used ();
  test_disable_kick ();
  memtable_free (g.t);
}

/* A region whose front-end address and mapping disagree in their low
 * bits (what a front-end gets with an odd mmap_offset): aligned ring
 * addresses become misaligned pointers, which the atomic ring accesses
 * must never see.  Found by tests/fuzz/fuzz-device. */
static void
test_misaligned_mapping (void)
{
  struct vu_mem_region m = { G1, S1 - 16, UINT64_C (0x7f5500000000), 0 };
  struct memtable *t = memtable_new ();
  struct ring r;
  const char *err = NULL;
  unsigned shift;

  for (shift = 1; shift < 16; shift <<= 1) {
    int rc;
    t->n = 0;
    memtable_add (t, &m, g.m1 + shift, &err);
    memset (&r, 0, sizeof r);
    err = NULL;
    rc = vring_split_setup (&r, t, 16, m.userspace_addr,
                            m.userspace_addr + AVAIL_OFF,
                            m.userspace_addr + USED_OFF, &err);
    ok (rc == -1 && err, "split ring in a mapping misaligned by %u "
        "refused (%s)", shift, err ? err : "accepted");
    memset (&r, 0, sizeof r);
    err = NULL;
    rc = vring_packed_setup (&r, t, 16, m.userspace_addr,
                             m.userspace_addr + AVAIL_OFF,
                             m.userspace_addr + USED_OFF, &err);
    ok (rc == -1 && err, "packed ring in a mapping misaligned by %u "
        "refused (%s)", shift, err ? err : "accepted");
  }
  memtable_free (t);
}

int
main (void)
{
  g.m1 = aligned_alloc (4096, S1);
  g.m2 = aligned_alloc (4096, S2);
  g.c.iov = g.iov;
  g.c.gpa = g.gpa;
  g.c.max = MAXIOV;

  run ("uva == gpa", G1);
  run ("uva != gpa", UINT64_C (0x7f3400000000));
  test_misaligned_mapping ();
  free (g.m1);
  free (g.m2);
  return done_testing ();
}
