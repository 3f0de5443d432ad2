/* Guest memory table.
 *
 * The front-end sends its RAM regions with one fd each.  We map each
 * fd from file offset 0 for mmap_offset + memory_size bytes (the same
 * rule libvhost-user and DPDK follow, so hugetlbfs offsets need not be
 * aligned), and from then on every guest address the data plane uses
 * goes through one of the lookups here. */

#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "memtable.h"
#include "utils.h"

struct memtable *
memtable_new (void)
{
  return calloc (1, sizeof (struct memtable));
}

void
memtable_free (struct memtable *t)
{
  unsigned i;

  if (t == NULL)
    return;
  for (i = 0; i < t->n; i++)
    if (t->r[i].mmap_addr)
      munmap (t->r[i].mmap_addr, t->r[i].mmap_size);
  free (t);
}

/* A copy that shares nothing it would unmap: used to build a new
 * table for ADD/REM_MEM_REG while the old one is still in use. */
struct memtable *
memtable_dup (const struct memtable *t)
{
  struct memtable *c = malloc (sizeof *c);

  if (c)
    memcpy (c, t, sizeof *c);
  return c;
}

/* A region must be non-empty, must not wrap either address space, and
 * must not overlap another region in guest-physical or user-virtual
 * space (overlaps would make translations ambiguous). */
static int
check_region (const struct memtable *t, const struct vu_mem_region *m,
              const char **err)
{
  unsigned i;

  if (t->n >= VU_MAX_MEM_SLOTS) {
    *err = "too many memory regions";
    return -1;
  }
  if (m->memory_size == 0 ||
      !range_ok (m->guest_phys_addr, m->memory_size, UINT64_MAX) ||
      !range_ok (m->userspace_addr, m->memory_size, UINT64_MAX) ||
      !range_ok (m->mmap_offset, m->memory_size, SIZE_MAX)) {
    *err = "memory region size or addresses out of range";
    return -1;
  }
  for (i = 0; i < t->n; i++) {
    const struct mem_region *r = &t->r[i];
    if (m->guest_phys_addr < r->gpa + r->size &&
        r->gpa < m->guest_phys_addr + m->memory_size) {
      *err = "memory regions overlap in guest-physical space";
      return -1;
    }
    if (m->userspace_addr < r->uva + r->size &&
        r->uva < m->userspace_addr + m->memory_size) {
      *err = "memory regions overlap in front-end address space";
      return -1;
    }
  }
  return 0;
}

int
memtable_add (struct memtable *t, const struct vu_mem_region *m,
              void *host, const char **err)
{
  struct mem_region *r;

  if (check_region (t, m, err) == -1)
    return -1;
  r = &t->r[t->n++];
  memset (r, 0, sizeof *r);
  r->gpa = m->guest_phys_addr;
  r->size = m->memory_size;
  r->uva = m->userspace_addr;
  r->mmap_offset = m->mmap_offset;
  r->host = host;
  return 0;
}

int
memtable_map (struct memtable *t, const struct vu_mem_region *m, int fd,
              const char **err)
{
  struct stat st;
  size_t len;
  void *p;

  if (check_region (t, m, err) == -1)
    return -1;
  len = m->mmap_offset + m->memory_size;
  /* mmap past the end of a file succeeds and faults (SIGBUS) on first
   * access: a region must be backed by its file when it arrives. */
  if (fstat (fd, &st) == -1 || (S_ISREG (st.st_mode) &&
                                (uint64_t) st.st_size < len)) {
    *err = "memory region is larger than the file that backs it";
    return -1;
  }
  p = mmap (NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
            fd, 0);
  if (p == MAP_FAILED) {
    *err = "cannot map a guest memory region";
    return -1;
  }
  memtable_add (t, m, (uint8_t *) p + m->mmap_offset, err);
  t->r[t->n - 1].mmap_addr = p;
  t->r[t->n - 1].mmap_size = len;
  return 0;
}

int
memtable_remove (struct memtable *t, const struct vu_mem_region *m,
                 struct mem_region *removed)
{
  unsigned i;

  for (i = 0; i < t->n; i++) {
    struct mem_region *r = &t->r[i];
    if (r->gpa == m->guest_phys_addr && r->size == m->memory_size &&
        r->uva == m->userspace_addr) {
      *removed = *r;
      t->r[i] = t->r[--t->n];
      return 0;
    }
  }
  return -1;
}

void
mem_region_unmap (struct mem_region *r)
{
  if (r->mmap_addr)
    munmap (r->mmap_addr, r->mmap_size);
  r->mmap_addr = NULL;
}

void
memtable_free_shell (struct memtable *t)
{
  free (t);
}

void *
memtable_uva (const struct memtable *t, uint64_t uva, uint64_t len)
{
  unsigned i;

  for (i = 0; i < t->n; i++) {
    const struct mem_region *r = &t->r[i];
    if (uva >= r->uva && uva - r->uva < r->size &&
        len <= r->size - (uva - r->uva))
      return r->host + (uva - r->uva);
  }
  return NULL;
}

bool
memtable_uva_to_gpa (const struct memtable *t, uint64_t uva, uint64_t len,
                     uint64_t *gpa)
{
  unsigned i;

  for (i = 0; i < t->n; i++) {
    const struct mem_region *r = &t->r[i];
    if (uva >= r->uva && uva - r->uva < r->size &&
        len <= r->size - (uva - r->uva)) {
      *gpa = r->gpa + (uva - r->uva);
      return true;
    }
  }
  return false;
}

static const struct mem_region *
find_gpa (const struct memtable *t, uint64_t gpa)
{
  unsigned i;

  for (i = 0; i < t->n; i++)
    if (gpa >= t->r[i].gpa && gpa - t->r[i].gpa < t->r[i].size)
      return &t->r[i];
  return NULL;
}

void *
memtable_gpa (const struct memtable *t, uint64_t gpa, uint64_t len)
{
  const struct mem_region *r = find_gpa (t, gpa);

  if (r == NULL || len > r->size - (gpa - r->gpa))
    return NULL;
  return r->host + (gpa - r->gpa);
}

int
memtable_gpa_iov (const struct memtable *t, uint64_t gpa, uint32_t len,
                  struct iovec *iov, uint64_t *gpas, unsigned *n,
                  unsigned max)
{
  if (!range_ok (gpa, len, UINT64_MAX))
    return -1;
  while (len > 0) {
    const struct mem_region *r = find_gpa (t, gpa);
    uint64_t off, piece;

    if (r == NULL || *n >= max)
      return -1;
    off = gpa - r->gpa;
    piece = r->size - off < len ? r->size - off : len;
    iov[*n].iov_base = r->host + off;
    iov[*n].iov_len = piece;
    if (gpas)
      gpas[*n] = gpa;
    (*n)++;
    gpa += piece;
    len -= piece;
  }
  return 0;
}
