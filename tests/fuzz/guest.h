/* Guest memory for the ring fuzz targets: two heap blocks registered
 * with memtable_add as regions adjacent in guest-physical and in
 * front-end address space (at different numbers, so mixing the two
 * up shows), filled from the input.  Separate heap blocks, so ASan
 * sees an access that runs off a region.
 *
 *   region 1, GPA G1, UVA U1: GUEST_S1 bytes, rings at its start
 *   region 2, GPA G2 = G1 + GUEST_S1, UVA U1 + GUEST_S1: GUEST_S2 bytes */

#ifndef BLKGATE_FUZZ_GUEST_H
#define BLKGATE_FUZZ_GUEST_H

#include <stdlib.h>

#include "fuzz.h"
#include "memtable.h"
#include "vring.h"

#define GUEST_S1 0x3000
#define GUEST_S2 0x1000
#define G1 UINT64_C (0x40000000)
#define U1 UINT64_C (0x7f0000000000)
#define G2 (G1 + GUEST_S1)

struct guest {
  uint8_t *m1, *m2;
  struct memtable *t;
};

/* The rest of the input up to the regions' size becomes their bytes. */
static inline void
guest_init (struct guest *g, struct input *in)
{
  struct vu_mem_region r1 = { G1, GUEST_S1, U1, 0 };
  struct vu_mem_region r2 = { G2, GUEST_S2, U1 + GUEST_S1, 0 };
  const char *err;

  g->m1 = malloc (GUEST_S1);
  g->m2 = malloc (GUEST_S2);
  g->t = memtable_new ();
  if (!g->m1 || !g->m2 || !g->t ||
      memtable_add (g->t, &r1, g->m1, &err) == -1 ||
      memtable_add (g->t, &r2, g->m2, &err) == -1)
    abort ();
  take (in, g->m1, GUEST_S1);
  take (in, g->m2, GUEST_S2);
}

/* Aborts unless every piece of chain C is non-empty and inside guest
 * memory: what the walkers promise the queue thread. */
static inline void
guest_check_iov (const struct guest *g, const struct chain *c)
{
  unsigned i;

  for (i = 0; i < c->niov; i++) {
    const uint8_t *p = c->iov[i].iov_base;
    size_t len = c->iov[i].iov_len;
    if (len == 0 ||
        !((p >= g->m1 && p + len <= g->m1 + GUEST_S1) ||
          (p >= g->m2 && p + len <= g->m2 + GUEST_S2)))
      abort ();
  }
}

static inline void
guest_free (struct guest *g)
{
  memtable_free (g->t);         /* nothing mapped: frees the table only */
  free (g->m1);
  free (g->m2);
}

#endif /* BLKGATE_FUZZ_GUEST_H */
