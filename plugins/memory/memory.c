/* blkgate memory plugin: a sparse RAM disk.
 *
 * The disk is one anonymous private mapping made in config_complete,
 * so its contents outlive front-end connections and last as long as
 * the daemon.  MAP_NORESERVE plus the kernel's zero page make it
 * sparse: only pages the guest has written use memory, and trim (or
 * zero with MAY_TRIM) gives whole pages back with MADV_DONTNEED.
 *
 * Thread model: PARALLEL.  Requests on different ranges touch
 * different bytes, so memcpy/memset/madvise need no lock.  Overlapping
 * requests in flight at the same time have no defined result on a
 * real disk either, and the guest does not issue them.
 */

#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>

#define BLKGATE_API_VERSION 1
#define BLKGATE_THREAD_MODEL BLKGATE_THREAD_MODEL_PARALLEL
#include <blkgate-plugin.h>

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

/* Configuration: written only in config/config_complete. */
static int64_t memory_size = -1;   /* size= */
static char *memory_base;          /* the mapping, or NULL if size=0 */
static uint64_t memory_page_size;

/* The handle carries no state: every open sees the same disk. */
static char memory_handle;

/* Give the RAM back at exit. */
static void
memory_unload (void)
{
  if (memory_base)
    munmap (memory_base, memory_size);
  memory_base = NULL;
}

/* size= is the only parameter. */
static int
memory_config (const char *key, const char *value)
{
  if (strcmp (key, "size") != 0) {
    blkgate_error ("unknown parameter '%s'", key);
    return -1;
  }
  memory_size = blkgate_parse_size (value);
  return memory_size == -1 ? -1 : 0;
}

/* Map the disk once, here rather than per connection, so that data
 * written by one front-end connection is there for the next. */
static int
memory_config_complete (void)
{
  if (memory_size == -1) {
    blkgate_error ("you must supply the size=SIZE parameter");
    return -1;
  }
  memory_page_size = sysconf (_SC_PAGESIZE);
  if (memory_size == 0)
    return 0;
  memory_base = mmap (NULL, memory_size, PROT_READ | PROT_WRITE,
                      MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (memory_base == MAP_FAILED) {
    memory_base = NULL;
    blkgate_error ("mmap: %" PRIi64 " bytes: %m", memory_size);
    return -1;
  }
  return 0;
}

/* The disk is the process's, not the connection's: one shared handle
 * (the core refuses writes on a read-only disk). */
static void *
memory_open (int readonly)
{
  return &memory_handle;
}

/* The configured size. */
static int64_t
memory_get_size (void *handle)
{
  return memory_size;
}

/* RAM is as durable as this disk gets: FUA needs no extra work. */
static int
memory_can_fua (void *handle)
{
  return BLKGATE_FUA_NATIVE;
}

/* Copy out of the mapping; never-written pages read as zeroes. */
static int
memory_preadv (void *handle, const struct iovec *iov, int iovcnt,
               uint64_t offset, uint32_t flags)
{
  int i;

  for (i = 0; i < iovcnt; i++) {
    memcpy (iov[i].iov_base, memory_base + offset, iov[i].iov_len);
    offset += iov[i].iov_len;
  }
  return 0;
}

/* Copy into the mapping; the kernel allocates pages on first write. */
static int
memory_pwritev (void *handle, const struct iovec *iov, int iovcnt,
                uint64_t offset, uint32_t flags)
{
  int i;

  for (i = 0; i < iovcnt; i++) {
    memcpy (memory_base + offset, iov[i].iov_base, iov[i].iov_len);
    offset += iov[i].iov_len;
  }
  return 0;
}

/* Nothing is cached anywhere, so there is nothing to flush. */
static int
memory_flush (void *handle, uint32_t flags)
{
  return 0;
}

/* Zero [offset, offset+count): whole pages are dropped with
 * MADV_DONTNEED (they read back as zeroes and free their memory), the
 * partial pages at either edge are cleared with memset. */
static int
memory_drop (uint64_t offset, uint64_t count)
{
  uint64_t start = (offset + memory_page_size - 1) & ~(memory_page_size - 1);
  uint64_t end = (offset + count) & ~(memory_page_size - 1);

  if (start >= end) {
    memset (memory_base + offset, 0, count);
    return 0;
  }
  memset (memory_base + offset, 0, start - offset);
  memset (memory_base + end, 0, offset + count - end);
  if (madvise (memory_base + start, end - start, MADV_DONTNEED) == -1) {
    blkgate_error ("madvise: %m");
    return -1;
  }
  return 0;
}

/* Trim frees the pages; the range then reads as zeroes. */
static int
memory_trim (void *handle, uint64_t offset, uint64_t count, uint32_t flags)
{
  return memory_drop (offset, count);
}

/* Without MAY_TRIM the guest wants the range kept allocated. */
static int
memory_zero (void *handle, uint64_t offset, uint64_t count, uint32_t flags)
{
  if (flags & BLKGATE_FLAG_MAY_TRIM)
    return memory_drop (offset, count);
  memset (memory_base + offset, 0, count);
  return 0;
}

static struct blkgate_plugin plugin = {
  .name              = "memory",
  .longname          = "blkgate memory plugin",
  .version           = PACKAGE_VERSION,
  .description       = "a sparse RAM disk",
  .unload            = memory_unload,
  .config            = memory_config,
  .config_complete   = memory_config_complete,
  .config_help       = "size=<SIZE>  (required) Size of the RAM disk.",
  .magic_config_key  = "size",
  .open              = memory_open,
  .get_size          = memory_get_size,
  .can_fua           = memory_can_fua,
  .preadv            = memory_preadv,
  .pwritev           = memory_pwritev,
  .flush             = memory_flush,
  .trim              = memory_trim,
  .zero              = memory_zero,
};

BLKGATE_REGISTER_PLUGIN (plugin)
