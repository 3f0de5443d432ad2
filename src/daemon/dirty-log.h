/* Dirty page logging for live migration: a bitmap shared with the
 * front-end, one bit per 4 KiB guest-physical page. */

#ifndef BLKGATE_DIRTY_LOG_H
#define BLKGATE_DIRTY_LOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define DIRTY_LOG_PAGE 4096

struct dirty_log {
  uint8_t *bitmap;              /* NULL: no log */
  uint64_t size;                /* bytes of bitmap */
  void *map;
  size_t map_size;
};

/* SET_LOG_BASE: maps size bytes of fd at offset.  -1 with *err. */
int dirty_log_map (struct dirty_log *l, int fd, uint64_t size,
                   uint64_t offset, const char **err);
void dirty_log_unmap (struct dirty_log *l);

/* Marks the pages of [gpa, gpa+len) dirty.  False when the range is
 * outside the log (the caller treats the ring as broken). */
bool dirty_log_mark (const struct dirty_log *l, uint64_t gpa, uint64_t len);

#endif /* BLKGATE_DIRTY_LOG_H */
