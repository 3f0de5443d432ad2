/* Dirty page logging.
 *
 * While QEMU migrates a VM, every guest-memory write of ours must set
 * the page's bit in the shared bitmap, after the write, or the
 * destination gets the old page.  The bitmap is shared with QEMU (and
 * possibly other back-ends), so bits are set atomically; its bounds
 * come from the front-end and are checked for every write: a bad
 * address breaks the ring, it never touches memory outside the log. */

#include <config.h>

#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "dirty-log.h"
#include "utils.h"

int
dirty_log_map (struct dirty_log *l, int fd, uint64_t size, uint64_t offset,
               const char **err)
{
  struct stat st;
  void *p;

  if (size == 0 || size > (UINT64_C (1) << 36) ||
      !range_ok (offset, size, INT64_MAX)) {
    *err = "dirty log size or offset out of range";
    return -1;
  }
  if (fstat (fd, &st) == -1 ||
      (S_ISREG (st.st_mode) && (uint64_t) st.st_size < offset + size)) {
    *err = "dirty log is larger than its file";
    return -1;
  }
  p = mmap (NULL, offset + size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    *err = "cannot map the dirty log";
    return -1;
  }
  dirty_log_unmap (l);
  l->map = p;
  l->map_size = offset + size;
  l->bitmap = (uint8_t *) p + offset;
  l->size = size;
  return 0;
}

void
dirty_log_unmap (struct dirty_log *l)
{
  if (l->map)
    munmap (l->map, l->map_size);
  memset (l, 0, sizeof *l);
}

bool
dirty_log_mark (const struct dirty_log *l, uint64_t gpa, uint64_t len)
{
  uint64_t first, last, p;

  if (len == 0)
    return true;
  if (l->bitmap == NULL || !range_ok (gpa, len - 1, UINT64_MAX))
    return false;
  first = gpa / DIRTY_LOG_PAGE;
  last = (gpa + len - 1) / DIRTY_LOG_PAGE;
  if (last / 8 >= l->size)
    return false;
  for (p = first; p <= last; p++)
    __atomic_fetch_or (&l->bitmap[p / 8], (uint8_t) (1u << (p % 8)),
                       __ATOMIC_RELAXED);
  return true;
}
