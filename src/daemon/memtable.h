/* Guest memory table: the only code that turns guest addresses into
 * pointers.  Every translation checks the whole range, overflow-safe. */

#ifndef BLKGATE_MEMTABLE_H
#define BLKGATE_MEMTABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "vhost-user-proto.h"

struct mem_region {
  uint64_t gpa;                 /* guest physical address */
  uint64_t size;
  uint64_t uva;                 /* front-end's user virtual address */
  uint64_t mmap_offset;
  void *mmap_addr;              /* NULL when not mapped by us (tests) */
  size_t mmap_size;
  uint8_t *host;                /* our pointer to gpa */
};

struct memtable {
  unsigned n;
  struct mem_region r[VU_MAX_MEM_SLOTS];
};

struct memtable *memtable_new (void);
/* Unmaps every region we mapped and frees the table. */
void memtable_free (struct memtable *t);
struct memtable *memtable_dup (const struct memtable *t);

/* Checks region against the table (size, wrap-around, overlaps) and
 * maps fd.  The fd is not closed.  -1 with a message in *err. */
int memtable_map (struct memtable *t, const struct vu_mem_region *region,
                  int fd, const char **err);
/* Same checks, but the memory is already at host (unit tests, fuzz). */
int memtable_add (struct memtable *t, const struct vu_mem_region *region,
                  void *host, const char **err);
/* Removes the region matching gpa, size and uva (ignoring
 * mmap_offset) into *removed without unmapping it.  -1 if none. */
int memtable_remove (struct memtable *t, const struct vu_mem_region *region,
                     struct mem_region *removed);
/* Unmaps one region taken out of a table. */
void mem_region_unmap (struct mem_region *r);
/* Frees a table without unmapping (its regions live on in a copy). */
void memtable_free_shell (struct memtable *t);

/* Pointer to [uva, uva+len) if it lies inside one region, else NULL. */
void *memtable_uva (const struct memtable *t, uint64_t uva, uint64_t len);
/* The guest address of [uva, uva+len) if it lies inside one region
 * (for dirty logging of rings given by their front-end address). */
bool memtable_uva_to_gpa (const struct memtable *t, uint64_t uva,
                          uint64_t len, uint64_t *gpa);
/* Pointer to [gpa, gpa+len) if it lies inside one region, else NULL. */
void *memtable_gpa (const struct memtable *t, uint64_t gpa, uint64_t len);
/* Appends iovecs covering [gpa, gpa+len), split at region boundaries,
 * to iov[*n .. max).  gpas[] gets each piece's guest address when not
 * NULL.  -1 if any byte is outside guest memory or max is exceeded. */
int memtable_gpa_iov (const struct memtable *t, uint64_t gpa, uint32_t len,
                      struct iovec *iov, uint64_t *gpas, unsigned *n,
                      unsigned max);

#endif /* BLKGATE_MEMTABLE_H */
