/* Unit tests for src/daemon/memtable.c: region checks, translations at
 * the edges, splitting across regions, removal, and real mappings of a
 * memfd. */

#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include "memtable.h"
#include "tap.h"

#define A_GPA  UINT64_C (0x10000)
#define A_SIZE UINT64_C (0x4000)
#define A_UVA  UINT64_C (0x7f0000100000)
#define B_GPA  (A_GPA + A_SIZE)         /* adjacent to A in gpa */
#define B_SIZE UINT64_C (0x2000)
#define B_UVA  UINT64_C (0x7f0000200000)

static struct vu_mem_region
reg (uint64_t gpa, uint64_t size, uint64_t uva, uint64_t off)
{
  return (struct vu_mem_region) { gpa, size, uva, off };
}

static bool
add_ok (struct memtable *t, struct vu_mem_region r, void *host)
{
  const char *err = NULL;
  return memtable_add (t, &r, host, &err) == 0;
}

static bool
add_refused (struct memtable *t, struct vu_mem_region r)
{
  const char *err = NULL;
  unsigned n = t->n;
  char dummy;

  return memtable_add (t, &r, &dummy, &err) == -1 && err != NULL &&
    t->n == n;
}

static void
test_translate (void)
{
  struct memtable *t = memtable_new ();
  uint8_t *a = malloc (A_SIZE), *b = malloc (B_SIZE);
  struct iovec iov[4];
  uint64_t gpas[4];
  unsigned n;

  ok (t != NULL && t->n == 0, "memtable_new gives an empty table");
  ok (memtable_gpa (t, 0, 1) == NULL, "empty table translates nothing");
  ok (add_ok (t, reg (A_GPA, A_SIZE, A_UVA, 0), a), "region A added");
  ok (add_ok (t, reg (B_GPA, B_SIZE, B_UVA, 0x1000), b),
      "region B (adjacent to A in gpa) added");
  is_int (t->n, 2, "two regions");

  /* GPA inside and at the edges. */
  ok (memtable_gpa (t, A_GPA, 1) == a, "gpa: first byte of A");
  ok (memtable_gpa (t, A_GPA + 0x123, 16) == a + 0x123, "gpa: inside A");
  ok (memtable_gpa (t, A_GPA, A_SIZE) == a, "gpa: all of A");
  ok (memtable_gpa (t, A_GPA + A_SIZE - 1, 1) == a + A_SIZE - 1,
      "gpa: last byte of A");
  ok (memtable_gpa (t, A_GPA + A_SIZE - 8, 8) == a + A_SIZE - 8,
      "gpa: last 8 bytes of A");
  ok (memtable_gpa (t, A_GPA, A_SIZE + 1) == NULL,
      "gpa: A plus one byte refused (would spill into B)");
  ok (memtable_gpa (t, A_GPA + A_SIZE - 1, 2) == NULL,
      "gpa: straddling A and B refused");
  ok (memtable_gpa (t, A_GPA - 1, 1) == NULL, "gpa: byte before A refused");
  ok (memtable_gpa (t, A_GPA - 1, 2) == NULL,
      "gpa: range starting before A refused");
  ok (memtable_gpa (t, B_GPA, 1) == b, "gpa: first byte of B");
  ok (memtable_gpa (t, B_GPA + B_SIZE - 1, 1) == b + B_SIZE - 1,
      "gpa: last byte of B");
  ok (memtable_gpa (t, B_GPA + B_SIZE, 1) == NULL,
      "gpa: one byte past B refused");
  ok (memtable_gpa (t, B_GPA + B_SIZE - 1, 2) == NULL,
      "gpa: last byte of B plus one refused");
  ok (memtable_gpa (t, A_GPA, 0) == a, "gpa: empty range inside A");
  ok (memtable_gpa (t, B_GPA + B_SIZE, 0) == NULL,
      "gpa: empty range just past the end refused");
  ok (memtable_gpa (t, A_GPA + 16, UINT64_MAX) == NULL,
      "gpa: length UINT64_MAX refused");
  ok (memtable_gpa (t, A_GPA + 16, UINT64_MAX - 15) == NULL,
      "gpa: length that wraps to the start refused");
  ok (memtable_gpa (t, UINT64_MAX, 1) == NULL, "gpa: UINT64_MAX refused");

  /* UVA: ring addresses. */
  ok (memtable_uva (t, A_UVA, 1) == a, "uva: first byte of A");
  ok (memtable_uva (t, A_UVA + A_SIZE - 4, 4) == a + A_SIZE - 4,
      "uva: last 4 bytes of A");
  ok (memtable_uva (t, A_UVA + A_SIZE - 4, 5) == NULL,
      "uva: one byte past A refused");
  ok (memtable_uva (t, A_UVA + A_SIZE, 1) == NULL,
      "uva: just past A refused (B is elsewhere)");
  ok (memtable_uva (t, A_UVA - 1, 1) == NULL, "uva: byte before A refused");
  ok (memtable_uva (t, B_UVA + 8, 8) == b + 8, "uva: inside B");
  ok (memtable_uva (t, A_GPA, 1) == NULL,
      "uva: a gpa is not a uva (different numbers)");
  ok (memtable_gpa (t, A_UVA, 1) == NULL,
      "gpa: a uva is not a gpa (different numbers)");
  ok (memtable_uva (t, A_UVA + 8, UINT64_MAX - 7) == NULL,
      "uva: wrapping length refused");

  /* memtable_gpa_iov: splits at region boundaries. */
  n = 0;
  ok (memtable_gpa_iov (t, A_GPA + A_SIZE - 0x10, 0x20, iov, gpas, &n, 4) == 0,
      "gpa_iov: range straddling A and B accepted");
  is_int (n, 2, "gpa_iov: two pieces");
  ok (iov[0].iov_base == a + A_SIZE - 0x10 && iov[0].iov_len == 0x10,
      "gpa_iov: first piece is the end of A");
  ok (iov[1].iov_base == b && iov[1].iov_len == 0x10,
      "gpa_iov: second piece is the start of B");
  ok (gpas[0] == A_GPA + A_SIZE - 0x10 && gpas[1] == B_GPA,
      "gpa_iov: guest addresses of the pieces");

  n = 0;
  ok (memtable_gpa_iov (t, A_GPA, A_SIZE + B_SIZE, iov, NULL, &n, 4) == 0 &&
      n == 2 && iov[0].iov_len == A_SIZE && iov[1].iov_len == B_SIZE,
      "gpa_iov: all of A and B, gpas NULL");
  n = 0;
  ok (memtable_gpa_iov (t, A_GPA + 1, 100, iov, gpas, &n, 4) == 0 && n == 1 &&
      iov[0].iov_base == a + 1 && iov[0].iov_len == 100 &&
      gpas[0] == A_GPA + 1, "gpa_iov: inside one region gives one piece");
  /* Appends after what is there. */
  n = 1;
  ok (memtable_gpa_iov (t, B_GPA, 8, iov, gpas, &n, 4) == 0 && n == 2 &&
      iov[1].iov_base == b && iov[0].iov_base == a + 1,
      "gpa_iov: appends at *n and keeps earlier pieces");
  n = 0;
  ok (memtable_gpa_iov (t, A_GPA + A_SIZE - 0x10, 0x20, iov, gpas, &n, 1) ==
      -1, "gpa_iov: refused when the pieces exceed max");
  n = 3;
  ok (memtable_gpa_iov (t, A_GPA, 8, iov, gpas, &n, 3) == -1,
      "gpa_iov: refused when the array is already full");
  n = 0;
  ok (memtable_gpa_iov (t, B_GPA + B_SIZE - 4, 8, iov, gpas, &n, 4) == -1,
      "gpa_iov: range running past the last region refused");
  n = 0;
  ok (memtable_gpa_iov (t, A_GPA - 4, 8, iov, gpas, &n, 4) == -1,
      "gpa_iov: range starting before A refused");
  n = 0;
  ok (memtable_gpa_iov (t, UINT64_MAX - 3, 8, iov, gpas, &n, 4) == -1,
      "gpa_iov: gpa + len overflowing refused");
  n = 0;
  ok (memtable_gpa_iov (t, A_GPA, 0, iov, gpas, &n, 4) == 0 && n == 0,
      "gpa_iov: empty range gives no piece");

  /* A hole between regions. */
  {
    uint8_t *c = malloc (0x1000);
    n = 0;
    ok (add_ok (t, reg (B_GPA + B_SIZE + 0x1000, 0x1000, 0x9000000, 0), c),
        "region C after a one-page hole added");
    ok (memtable_gpa_iov (t, B_GPA + B_SIZE - 8, 0x1010, iov, gpas, &n, 4) ==
        -1, "gpa_iov: range across a hole refused");
    n = 0;
    ok (memtable_gpa_iov (t, B_GPA + B_SIZE + 0x1000, 0x1000, iov, gpas, &n,
                          4) == 0 && n == 1 && iov[0].iov_base == c,
        "gpa_iov: all of C");
    memtable_free (t);
    free (c);
  }
  free (a);
  free (b);
}

static void
test_refusals (void)
{
  struct memtable *t = memtable_new ();
  uint8_t *a = malloc (A_SIZE);
  char dummy;
  unsigned i;

  ok (add_ok (t, reg (A_GPA, A_SIZE, A_UVA, 0), a), "region A added");

  /* Overlaps in guest-physical space. */
  ok (add_refused (t, reg (A_GPA, A_SIZE, 0x1000000, 0)),
      "same gpa range refused");
  ok (add_refused (t, reg (A_GPA - 0x1000, 0x1001, 0x1000000, 0)),
      "gpa overlap on A's first byte refused");
  ok (add_refused (t, reg (A_GPA + A_SIZE - 1, 0x1000, 0x1000000, 0)),
      "gpa overlap on A's last byte refused");
  ok (add_refused (t, reg (A_GPA + 0x100, 0x100, 0x1000000, 0)),
      "gpa range inside A refused");
  ok (add_refused (t, reg (0, UINT64_C (1) << 40, 0x1000000, 0)),
      "gpa range containing A refused");
  ok (add_ok (t, reg (A_GPA - 0x1000, 0x1000, 0x1000000, 0), &dummy),
      "gpa range ending exactly where A starts accepted");

  /* Overlaps in front-end address space. */
  ok (add_refused (t, reg (0x100000000, 0x1000, A_UVA, 0)),
      "same uva refused");
  ok (add_refused (t, reg (0x100000000, 0x1000, A_UVA + A_SIZE - 1, 0)),
      "uva overlap on A's last byte refused");
  ok (add_refused (t, reg (0x100000000, 0x2000, A_UVA - 0x1000, 0)),
      "uva overlap on A's first byte refused");
  ok (add_refused (t, reg (0x100000000, UINT64_C (1) << 47, 0, 0)),
      "uva range containing A refused");
  ok (add_ok (t, reg (0x100000000, 0x1000, A_UVA + A_SIZE, 0), &dummy),
      "uva range starting exactly where A ends accepted");

  /* Sizes and wrap-around. */
  ok (add_refused (t, reg (0x200000000, 0, 0x300000000, 0)),
      "size 0 refused");
  ok (add_refused (t, reg (UINT64_MAX - 0xfff, 0x1000, 0x300000000, 0)),
      "gpa + size = 2^64 refused");
  ok (add_refused (t, reg (UINT64_MAX, 2, 0x300000000, 0)),
      "gpa + size wrapping past 0 refused");
  ok (add_refused (t, reg (0x200000000, 0x1000, UINT64_MAX - 0xfff, 0)),
      "uva + size = 2^64 refused");
  ok (add_refused (t, reg (0x200000000, UINT64_MAX, 0x300000000, 0)),
      "size UINT64_MAX refused");
  ok (add_refused (t, reg (0x200000000, 0x1000, 0x300000000, SIZE_MAX)),
      "mmap_offset + size beyond SIZE_MAX refused");
  ok (add_refused (t, reg (0x200000000, 0x1000, 0x300000000,
                           SIZE_MAX - 0xfff)),
      "mmap_offset + size = SIZE_MAX + 1 refused");
  {
    uint8_t *top = malloc (0x1000);
    ok (add_ok (t, reg (UINT64_MAX - 0x1000, 0x1000, 0x400000000, 0), top),
        "region ending at gpa UINT64_MAX (exclusive) accepted");
    ok (memtable_gpa (t, UINT64_MAX - 1, 1) == top + 0xfff,
        "its last byte translates");
    ok (memtable_gpa (t, UINT64_MAX - 1, 2) == NULL,
        "one past its last byte does not");
    ok (memtable_gpa (t, UINT64_MAX, 1) == NULL, "gpa UINT64_MAX refused");
    memtable_free (t);
    free (top);
  }

  /* Slot limit. */
  t = memtable_new ();
  for (i = 0; i < VU_MAX_MEM_SLOTS; i++)
    if (!add_ok (t, reg ((uint64_t) i << 20, 0x1000, (uint64_t) (i + 1) << 32,
                         0), a))
      break;
  is_int (i, VU_MAX_MEM_SLOTS, "%u regions accepted", VU_MAX_MEM_SLOTS);
  ok (add_refused (t, reg (UINT64_C (1) << 40, 0x1000, UINT64_C (1) << 50, 0)),
      "region %u refused", VU_MAX_MEM_SLOTS + 1);
  ok (memtable_gpa (t, (uint64_t) (VU_MAX_MEM_SLOTS - 1) << 20, 1) == a,
      "the last region still translates");
  memtable_free (t);
  free (a);
}

static void
test_remove_dup (void)
{
  struct memtable *t = memtable_new (), *c;
  uint8_t bufs[4][0x1000];
  struct mem_region gone;
  struct vu_mem_region r;
  unsigned i;

  for (i = 0; i < 4; i++)
    add_ok (t, reg ((uint64_t) i << 20, 0x1000, (uint64_t) (i + 1) << 32, i),
            bufs[i]);
  c = memtable_dup (t);
  ok (c != NULL && c != t && memcmp (c, t, sizeof *t) == 0,
      "memtable_dup copies the table");

  r = reg (1 << 20, 0x1000, UINT64_C (2) << 32, 12345);
  memset (&gone, 0, sizeof gone);
  ok (memtable_remove (t, &r, &gone) == 0,
      "remove region 1 (mmap_offset ignored)");
  is_int (t->n, 3, "three regions left");
  ok (gone.gpa == 1 << 20 && gone.size == 0x1000 && gone.host == bufs[1] &&
      gone.mmap_offset == 1, "the removed region is returned");
  ok (memtable_gpa (t, 1 << 20, 1) == NULL, "removed region: gpa gone");
  ok (memtable_uva (t, UINT64_C (2) << 32, 1) == NULL,
      "removed region: uva gone");
  ok (memtable_gpa (t, 0, 1) == bufs[0] && memtable_gpa (t, 2 << 20, 1) ==
      bufs[2] && memtable_gpa (t, 3 << 20, 1) == bufs[3],
      "the other regions still translate");
  ok (memtable_gpa (c, 1 << 20, 1) == bufs[1],
      "the copy still has the removed region");
  ok (memtable_remove (t, &r, &gone) == -1, "removing it again fails");
  r = reg (0, 0x2000, UINT64_C (1) << 32, 0);
  ok (memtable_remove (t, &r, &gone) == -1, "wrong size: not removed");
  r = reg (0, 0x1000, UINT64_C (9) << 32, 0);
  ok (memtable_remove (t, &r, &gone) == -1, "wrong uva: not removed");
  r = reg (0x800, 0x1000, UINT64_C (1) << 32, 0);
  ok (memtable_remove (t, &r, &gone) == -1, "wrong gpa: not removed");
  is_int (t->n, 3, "still three regions");
  ok (add_ok (t, reg (1 << 20, 0x1000, UINT64_C (2) << 32, 0), bufs[1]),
      "the removed range can be added again");
  r = reg (3 << 20, 0x1000, UINT64_C (4) << 32, 0);
  ok (memtable_remove (t, &r, &gone) == 0 && t->n == 3 &&
      memtable_gpa (t, 1 << 20, 1) == bufs[1], "remove the last slot");
  memtable_free_shell (c);
  memtable_free (t);
  memtable_free (NULL);
  ok (1, "memtable_free (NULL) is harmless");
}

static bool
mapped (const void *p, size_t len)
{
  unsigned char vec[64];
  uintptr_t page = (uintptr_t) p & ~(uintptr_t) 4095;

  return mincore ((void *) page, len, vec) == 0 || errno != ENOMEM;
}

static void
test_map (void)
{
  const long pg = sysconf (_SC_PAGESIZE);
  struct memtable *t = memtable_new ();
  struct vu_mem_region r;
  const char *err = NULL;
  char pattern[] = "region at mmap_offset";
  char back[sizeof pattern];
  void *base;
  uint8_t *p;
  int fd = memfd_create ("test-memtable", MFD_CLOEXEC);

  ok (fd >= 0 && ftruncate (fd, 4 * pg) == 0, "memfd of 4 pages");
  ok (pwrite (fd, pattern, sizeof pattern, 2 * pg + 16) == sizeof pattern,
      "pattern written at 2 pages + 16");

  r = reg (0x100000, 2 * pg, 0x7f5500000000, 2 * pg);
  ok (memtable_map (t, &r, fd, &err) == 0, "memtable_map with mmap_offset %ld",
      2 * pg);
  is_int (t->n, 1, "one region");
  ok (t->r[0].mmap_addr != NULL && t->r[0].mmap_size == (size_t) 4 * pg,
      "mapped from file offset 0 for mmap_offset + size");
  ok (t->r[0].host == (uint8_t *) t->r[0].mmap_addr + 2 * pg,
      "host pointer is mmap_offset into the mapping");
  p = memtable_gpa (t, 0x100000 + 16, sizeof pattern);
  ok (p != NULL && memcmp (p, pattern, sizeof pattern) == 0,
      "gpa translation sees the file's data at mmap_offset");
  p = memtable_uva (t, 0x7f5500000000 + 16, sizeof pattern);
  ok (p != NULL && memcmp (p, pattern, sizeof pattern) == 0,
      "uva translation too");
  if (p) {
    memcpy (p, "WRITTEN", 7);
    ok (pread (fd, back, 7, 2 * pg + 16) == 7 && memcmp (back, "WRITTEN", 7)
        == 0, "writes go to the shared file");
  }
  ok (memtable_gpa (t, 0x100000 + 2 * pg - 1, 1) != NULL &&
      memtable_gpa (t, 0x100000 + 2 * pg, 1) == NULL,
      "the region ends at its size");

  /* Refusals happen before mapping anything. */
  r = reg (0x100000 + pg, pg, 0x7f6600000000, 0);
  ok (memtable_map (t, &r, fd, &err) == -1 && t->n == 1,
      "overlapping region refused by memtable_map");
  r = reg (0x900000, pg, 0x7f6600000000, 0);
  ok (memtable_map (t, &r, -1, &err) == -1 && t->n == 1, "bad fd refused");
  r = reg (0x900000, 0, 0x7f6600000000, 0);
  ok (memtable_map (t, &r, fd, &err) == -1 && t->n == 1, "size 0 refused");

  /* A second region of the same fd, offset 0. */
  r = reg (0x200000, pg, 0x7f7700000000, 0);
  ok (memtable_map (t, &r, fd, &err) == 0 && t->n == 2,
      "second region, offset 0");
  {
    struct mem_region gone;
    base = t->r[1].mmap_addr;
    ok (memtable_remove (t, &r, &gone) == 0 && gone.mmap_addr == base,
        "removed with its mapping");
    ok (mapped (base, pg), "memtable_remove does not unmap");
    mem_region_unmap (&gone);
    ok (!mapped (base, pg) && gone.mmap_addr == NULL,
        "mem_region_unmap unmaps it");
  }

  /* The guest controls the fd's size: a region running past the end
   * of the file would map fine and fault (SIGBUS) on first access, so
   * memtable_map must refuse it. */
  r = reg (0x400000, 16 * pg, 0x7f8800000000, 0);
  if (memtable_map (t, &r, fd, &err) == 0) {
    ok (false, "region larger than its memfd refused");
    /* Don't touch it. */
    {
      struct mem_region gone;
      memtable_remove (t, &r, &gone);
      mem_region_unmap (&gone);
    }
  }
  else
    ok (true, "region larger than its memfd refused (%s)", err);

  base = t->r[0].mmap_addr;
  memtable_free (t);
  ok (!mapped (base, 4 * pg), "memtable_free unmaps every region");
  close (fd);
}

int
main (void)
{
  test_translate ();
  test_refusals ();
  test_remove_dup ();
  test_map ();
  return done_testing ();
}
