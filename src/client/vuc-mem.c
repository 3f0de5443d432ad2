/* Guest memory: one memfd, mapped shared, announced to the back-end as
 * one or more adjacent regions.
 *
 * Several regions make the back-end translate a buffer that crosses a
 * region boundary into two pieces, as it must for a large QEMU guest
 * (RAM below and above 4 GiB).  We map the memfd once, so for us guest
 * memory is one contiguous range. */

#include <config.h>

#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#include "vuc.h"

#define PAGE 4096

static uint64_t
align_up (uint64_t v, uint64_t a)
{
  return (v + a - 1) & ~(a - 1);
}

int
vuc_mem_init (struct vuc_mem *m, uint64_t size, uint64_t gpa,
              unsigned nregions)
{
  memset (m, 0, sizeof *m);
  m->fd = -1;
  if (nregions == 0 || nregions > VUC_MAX_REGIONS) {
    vuc_set_error ("guest memory: 1 to %d regions", VUC_MAX_REGIONS);
    return -1;
  }
  if (size == 0 || size % ((uint64_t) nregions * PAGE) != 0) {
    vuc_set_error ("guest memory size must be a multiple of %u KiB",
                   nregions * PAGE / 1024);
    return -1;
  }
  if (gpa % PAGE != 0 || gpa + size < gpa) {
    vuc_set_error ("guest-physical base must be page-aligned");
    return -1;
  }
  m->fd = memfd_create ("blkgate-io-guest-ram", MFD_CLOEXEC);
  if (m->fd == -1 || ftruncate (m->fd, size) == -1) {
    vuc_set_error ("guest memory: %s", strerror (errno));
    vuc_mem_free (m);
    return -1;
  }
  m->base = mmap (NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, m->fd, 0);
  if (m->base == MAP_FAILED) {
    m->base = NULL;
    vuc_set_error ("guest memory: mmap: %s", strerror (errno));
    vuc_mem_free (m);
    return -1;
  }
  m->size = size;
  m->gpa = gpa;
  m->nregions = nregions;
  m->low = 0;
  m->high = size;
  return 0;
}

void
vuc_mem_free (struct vuc_mem *m)
{
  if (m->base)
    munmap (m->base, m->size);
  if (m->fd >= 0)
    close (m->fd);
  m->base = NULL;
  m->fd = -1;
}

/* Permanent allocations (rings, per-request headers): zeroed. */
void *
vuc_mem_alloc (struct vuc_mem *m, uint64_t size, uint64_t align)
{
  uint64_t start = align_up (m->low, align);

  if (start > m->high || size > m->high - start) {
    vuc_set_error ("guest memory exhausted (%llu bytes wanted, use a "
                   "bigger --memory)", (unsigned long long) size);
    return NULL;
  }
  m->low = start + size;
  memset (m->base + start, 0, size);
  return m->base + start;
}

/* Data buffers: freed by vuc_mem_release in reverse order. */
void *
vuc_mem_push (struct vuc_mem *m, uint64_t size, uint64_t align)
{
  uint64_t start;

  if (size > m->high - m->low) {
    vuc_set_error ("guest memory exhausted (%llu bytes wanted, %llu free; "
                   "use a bigger --memory)", (unsigned long long) size,
                   (unsigned long long) (m->high - m->low));
    return NULL;
  }
  start = (m->high - size) & ~(align - 1);
  if (start < m->low) {
    vuc_set_error ("guest memory exhausted (use a bigger --memory)");
    return NULL;
  }
  m->high = start;
  return m->base + start;
}

uint64_t
vuc_mem_mark (const struct vuc_mem *m)
{
  return m->high;
}

void
vuc_mem_release (struct vuc_mem *m, uint64_t mark)
{
  if (mark >= m->high && mark <= m->size)
    m->high = mark;
}

uint64_t
vuc_gpa (const struct vuc_mem *m, const void *p)
{
  return m->gpa + (uint64_t) ((const uint8_t *) p - m->base);
}

/* NULL unless [gpa, gpa+len) lies inside guest memory. */
void *
vuc_ptr (const struct vuc_mem *m, uint64_t gpa, uint64_t len)
{
  if (gpa < m->gpa || gpa - m->gpa > m->size || len > m->size - (gpa - m->gpa))
    return NULL;
  return m->base + (gpa - m->gpa);
}

unsigned
vuc_mem_regions (const struct vuc_mem *m, struct vu_mem_region *r)
{
  uint64_t chunk = m->size / m->nregions;
  unsigned i;

  for (i = 0; i < m->nregions; i++) {
    r[i].guest_phys_addr = m->gpa + i * chunk;
    r[i].memory_size = chunk;
    r[i].userspace_addr = (uint64_t) (uintptr_t) m->base + i * chunk;
    r[i].mmap_offset = i * chunk;
  }
  return m->nregions;
}
