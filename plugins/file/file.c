/* blkgate file plugin: serve a regular file or a block device.
 *
 * This file holds the configuration, the handle (struct handle) and
 * the capabilities; queue.c holds the asynchronous data path (one
 * io_uring per virtqueue).
 *
 * O_DIRECT (direct=on|auto) needs aligned offsets, lengths and buffers.
 * The guest aligns offsets and lengths to the block size we advertise,
 * but not necessarily its buffers, so each handle keeps a second,
 * buffered fd.  It serves the requests whose iovecs do not fit the
 * alignment, and any O_DIRECT read or write that fails with EINVAL
 * all the same (where statx could not tell the alignment).  The kernel
 * keeps the page cache coherent between the two fds.
 */

#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/vfs.h>    /* fstatfs */
#include <linux/fs.h>   /* BLK* ioctls */
#include <liburing.h>   /* IO_URING_VERSION_* */

#define BLKGATE_API_VERSION 1
#define BLKGATE_THREAD_MODEL BLKGATE_THREAD_MODEL_PARALLEL
#include <blkgate-plugin.h>

#include "file.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

#define FILE_PROBE_LEN 4096

enum file_mode { FILE_OFF, FILE_ON, FILE_AUTO };  /* direct=, inline= */

/* Configuration: written only in config/config_complete. */
static char *file_path;                        /* file=, made absolute */
static enum file_mode file_direct = FILE_AUTO; /* direct= */
static enum file_mode file_inline = FILE_AUTO; /* inline= */

/* Free the configuration at exit. */
static void
file_unload (void)
{
  free (file_path);
  file_path = NULL;
}

/* on|off|auto, for direct= and inline=. */
static int
file_parse_tristate (const char *value, enum file_mode *out)
{
  int r;

  if (strcmp (value, "auto") == 0) {
    *out = FILE_AUTO;
    return 0;
  }
  r = blkgate_parse_bool (value);   /* reports its own error */
  if (r == -1)
    return -1;
  *out = r ? FILE_ON : FILE_OFF;
  return 0;
}

/* Parse file= (made absolute, since the daemon may chdir), direct= and
 * inline=. */
static int
file_config (const char *key, const char *value)
{
  if (strcmp (key, "file") == 0) {
    free (file_path);
    file_path = realpath (value, NULL);
    if (file_path == NULL) {
      blkgate_error ("file: %s: %m", value);
      return -1;
    }
  }
  else if (strcmp (key, "direct") == 0)
    return file_parse_tristate (value, &file_direct);
  else if (strcmp (key, "inline") == 0)
    return file_parse_tristate (value, &file_inline);
  else {
    blkgate_error ("unknown parameter '%s'", key);
    return -1;
  }
  return 0;
}

/* file= is the one required parameter. */
static int
file_config_complete (void)
{
  if (file_path == NULL) {
    blkgate_error ("you must supply the file=PATH parameter");
    return -1;
  }
  return 0;
}

/* Report what this build can do, for --dump-plugin. */
static void
file_dump_plugin (void)
{
#ifdef IO_URING_VERSION_MAJOR
  printf ("file_liburing_version=%d.%d\n",
          IO_URING_VERSION_MAJOR, IO_URING_VERSION_MINOR);
#endif
#ifdef STATX_DIOALIGN
  printf ("file_statx_dioalign=yes\n");
#else
  printf ("file_statx_dioalign=no\n");
#endif
}

/* Learn the size and block size.  Only regular files and block
 * devices have a meaningful size. */
static int
file_stat (struct handle *h)
{
  struct stat st;
  uint64_t size;

  if (fstat (h->fd, &st) == -1) {
    blkgate_error ("fstat: %s: %m", file_path);
    return -1;
  }
  h->block_size = 512;
  if (S_ISREG (st.st_mode)) {
    h->size = st.st_size;
    return 0;
  }
  if (!S_ISBLK (st.st_mode)) {
    blkgate_error ("%s: not a regular file or block device", file_path);
    return -1;
  }
  h->is_bdev = true;
  if (ioctl (h->fd, BLKGETSIZE64, &size) == -1 ||
      ioctl (h->fd, BLKSSZGET, &h->block_size) == -1) {
    blkgate_error ("ioctl: %s: %m", file_path);
    return -1;
  }
  h->size = size;
  return 0;
}

/* Ask the kernel for the O_DIRECT alignment (Linux 6.1 statx); without
 * an answer assume the logical block size. */
static void
file_dio_align (struct handle *h)
{
  h->mem_align = h->off_align = h->block_size;
#ifdef STATX_DIOALIGN
  struct statx stx;

  if (statx (h->dfd, "", AT_EMPTY_PATH, STATX_DIOALIGN, &stx) == 0 &&
      (stx.stx_mask & STATX_DIOALIGN) && stx.stx_dio_offset_align > 0) {
    h->mem_align = stx.stx_dio_mem_align;
    if (stx.stx_dio_offset_align > h->off_align)
      h->off_align = stx.stx_dio_offset_align;
  }
#endif
}

/* Open the O_DIRECT fd.  With direct=auto a filesystem that refuses
 * O_DIRECT (EINVAL at open, e.g. ramfs or tmpfs before Linux 6.6) or an
 * alignment above the largest block size leaves us with the page cache. */
static int
file_open_direct (struct handle *h)
{
  int flags = (h->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC | O_DIRECT;

  if (file_direct == FILE_OFF)
    return 0;
  h->dfd = open (file_path, flags);
  if (h->dfd == -1) {
    if (file_direct == FILE_AUTO && errno == EINVAL) {
      blkgate_debug ("file: %s: no O_DIRECT, using the page cache",
                     file_path);
      return 0;
    }
    blkgate_error ("open: %s: O_DIRECT: %m", file_path);
    return -1;
  }
  file_dio_align (h);
  if (h->off_align > 65536 || h->mem_align == 0) {
    if (file_direct == FILE_ON) {
      blkgate_error ("%s: O_DIRECT alignment %u is not usable",
                     file_path, h->off_align);
      return -1;
    }
    close (h->dfd);
    h->dfd = -1;
    return 0;
  }
  h->block_size = h->off_align;
  return 0;
}

/* Find out what trim and zero can use, without changing any byte the
 * guest can read.  Block devices: a zero-length BLKDISCARD discards
 * nothing but fails with EOPNOTSUPP when the device cannot discard;
 * fallocate ZERO_RANGE always works (the kernel writes zeroes if it
 * must).  Regular files: punching a hole past EOF with KEEP_SIZE
 * touches no data and no size but still fails with EOPNOTSUPP when the
 * filesystem lacks it.  ZERO_RANGE is then simply tried on the first
 * zero request, falling back to punching (file_op_fallback); only when
 * punching is impossible is ZERO_RANGE probed past EOF, which may
 * preallocate one block there (size and data unchanged). */
static void
file_probe (struct handle *h)
{
  off_t beyond;

  if (h->readonly)
    return;
  if (h->is_bdev) {
    uint64_t range[2] = { 0, 0 };

    h->can_discard = ioctl (h->fd, BLKDISCARD, range) == 0 ||
      errno != EOPNOTSUPP;
    h->can_punch = h->can_zero_range = true;
    return;
  }
  beyond = (h->size | (FILE_PROBE_LEN - 1)) + 1;
  h->can_punch = fallocate (h->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                            beyond, FILE_PROBE_LEN) == 0;
  h->can_zero_range = h->can_punch ||
    fallocate (h->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
               beyond, FILE_PROBE_LEN) == 0;
}

/* inline=auto: a file in memory (tmpfs, ramfs) whose reads and writes
 * refuse RWF_NOWAIT.  io_uring cannot try those without blocking, so it
 * hands every one to a worker thread (a wake-up and a context switch
 * each, on the CPUs the guest needs); done in the queue thread they are
 * a copy between the page cache and the guest's buffer that never waits
 * for a disk. */
static bool
file_want_inline (const struct handle *h, const struct statfs *sfs)
{
  char byte;
  struct iovec iov = { &byte, 1 };

  if (file_inline != FILE_AUTO)
    return file_inline == FILE_ON;
  if (h->is_bdev ||
      (sfs->f_type != 0x01021994 && sfs->f_type != 0x858458f6)) /* TMPFS, RAMFS */
    return false;
  return preadv2 (h->fd, &iov, 1, 0, RWF_NOWAIT) == -1 && errno == EOPNOTSUPP;
}

/* Close both fds.  Also undoes a half-done file_open. */
static void
file_close (void *handle)
{
  struct handle *h = handle;

  if (h->dfd >= 0)
    close (h->dfd);
  if (h->fd >= 0)
    close (h->fd);
  free (h);
}

/* Open the buffered fd.  A file we may not write is served read-only
 * rather than not at all, as nbdkit does. */
static void
file_open_buffered (struct handle *h)
{
  h->fd = open (file_path, (h->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
  if (h->fd == -1 && !h->readonly &&
      (errno == EACCES || errno == EPERM || errno == EROFS)) {
    blkgate_debug ("file: %s: %m, serving it read-only", file_path);
    h->readonly = true;
    h->fd = open (file_path, O_RDONLY | O_CLOEXEC);
  }
}

/* Open the file and fix its size and capabilities.  The daemon does
 * this once at start-up and keeps the handle for every connection
 * (blkgate-plugin(3)); nothing here assumes either way. */
static void *
file_open (int readonly)
{
  struct handle *h = calloc (1, sizeof *h);
  struct statfs sfs;

  if (h == NULL) {
    blkgate_error ("calloc: %m");
    return NULL;
  }
  h->readonly = readonly;
  h->dfd = -1;
  file_open_buffered (h);
  if (h->fd == -1) {
    blkgate_error ("open: %s: %m", file_path);
    goto err;
  }
  if (file_stat (h) == -1 || file_open_direct (h) == -1)
    goto err;
  file_probe (h);
  if (fstatfs (h->fd, &sfs) == -1) {
    blkgate_error ("fstatfs: %s: %m", file_path);
    goto err;
  }
  if (sfs.f_type == 0x65735546) /* FUSE */
    blkgate_debug ("file: %s is on a FUSE file system: the fuse plugin "
                   "would survive a restart of its daemon", file_path);
  h->inline_rw = file_want_inline (h, &sfs);
  blkgate_debug ("file: %s: size=%" PRIi64 " block_size=%d direct=%s "
                 "inline=%s punch=%d zero_range=%d discard=%d", file_path,
                 h->size, h->block_size, h->dfd >= 0 ? "on" : "off",
                 h->inline_rw ? "on" : "off", h->can_punch,
                 h->can_zero_range, h->can_discard);
  return h;

 err:
  file_close (h);
  return NULL;
}

/* Capabilities, fixed at open. */
static int64_t
file_get_size (void *handle)
{
  struct handle *h = handle;
  struct stat st;
  uint64_t size;

  /* Asked again at a resize (blkgate-ctl resize): the file or the
   * device may have grown since the open. */
  if (h->is_bdev ? ioctl (h->fd, BLKGETSIZE64, &size) == 0
      : fstat (h->fd, &st) == 0)
    return h->is_bdev ? (int64_t) size : st.st_size;
  blkgate_error ("%s: cannot read the size: %m", file_path);
  return -1;
}

static int
file_block_size (void *handle)
{
  return ((struct handle *) handle)->block_size;
}

/* False for -r, and for a file we were not allowed to open rw. */
static int
file_can_write (void *handle)
{
  return !((struct handle *) handle)->readonly;
}

static int
file_can_flush (void *handle)
{
  return 1;
}

/* What file_probe found: punching holes, or discard on a device. */
static int
file_can_trim (void *handle)
{
  struct handle *h = handle;

  return h->is_bdev ? h->can_discard : h->can_punch;
}

/* Either fallocate mode will do; zero falls back between them. */
static int
file_can_zero (void *handle)
{
  struct handle *h = handle;

  return h->can_punch || h->can_zero_range;
}

/* Writes carry RWF_DSYNC, trim and zero a trailing fdatasync. */
static int
file_can_fua (void *handle)
{
  return BLKGATE_FUA_NATIVE;
}

static struct blkgate_plugin plugin = {
  .name              = "file",
  .longname          = "blkgate file plugin",
  .version           = PACKAGE_VERSION,
  .description       = "serve a regular file or block device with io_uring",
  .unload            = file_unload,
  .config            = file_config,
  .config_complete   = file_config_complete,
  .config_help       =
    "file=<FILENAME>     (required) The file or block device to serve.\n"
    "direct=on|off|auto  Use O_DIRECT (default: auto, if accepted).\n"
    "inline=on|off|auto  Read and write in the queue thread, not io_uring\n"
    "                    (default: auto, for tmpfs and ramfs files).",
  .magic_config_key  = "file",
  .dump_plugin       = file_dump_plugin,
  .open              = file_open,
  .close             = file_close,
  .get_size          = file_get_size,
  .block_size        = file_block_size,
  .can_write         = file_can_write,
  .can_flush         = file_can_flush,
  .can_trim          = file_can_trim,
  .can_zero          = file_can_zero,
  .can_fua           = file_can_fua,
  .queue_open        = file_queue_open,
  .queue_close       = file_queue_close,
  .get_fd            = file_get_fd,
  .poll              = file_poll,
  .submit            = file_submit,
  .aio_preadv        = file_aio_preadv,
  .aio_pwritev       = file_aio_pwritev,
  .aio_flush         = file_aio_flush,
  .aio_trim          = file_aio_trim,
  .aio_zero          = file_aio_zero,
  .aio_cancel        = file_aio_cancel,
};

BLKGATE_REGISTER_PLUGIN (plugin)
