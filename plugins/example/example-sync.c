/* blkgate example-sync plugin: a RAM disk, as a template for
 * synchronous plugins.
 *
 * Copy this file, rename "example_sync" and "example-sync" to your
 * plugin's name, and replace the RAM with your storage.  It builds
 * alone against the installed header:
 *
 *   cc -shared -fPIC -o blkgate-mydisk-plugin.so mydisk.c \
 *      $(pkg-config --cflags blkgate-plugin)
 *   blkgate -f -s /tmp/disk.sock ./blkgate-mydisk-plugin.so size=1G
 *
 * A synchronous plugin is the simple kind: its data callbacks (preadv,
 * pwritev, ...) block until the work is done, and the daemon calls
 * them on its own worker threads.  Everything else (vhost-user, the
 * virtqueues, checking every request against the disk's size and
 * block size, read-only disks, FUA emulation) is the daemon's job.
 * See blkgate-plugin(3) for every callback.
 */

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* The API version this source was written for: the header refuses
 * any other, and the daemon refuses a plugin with a version it does
 * not know, instead of misreading its struct. */
#define BLKGATE_API_VERSION 1

/* PARALLEL: up to 8 data calls may run at once, on different threads.
 * Requests touch disjoint bytes of the disk (overlapping requests in
 * flight have no defined result on any disk), so memcpy needs no lock.
 * A plugin with shared mutable state would either lock it or say
 * BLKGATE_THREAD_MODEL_SERIALIZE_REQUESTS (one call at a time). */
#define BLKGATE_THREAD_MODEL BLKGATE_THREAD_MODEL_PARALLEL
#include <blkgate-plugin.h>

/* Configuration, written only by config/config_complete on the main
 * thread before any data call, read-only afterwards: static variables
 * are fine. */
static int64_t size = -1;    /* size=, required */
static char *disk;           /* the RAM, size bytes */

/* Called once per KEY=VALUE on the command line.  A bare "1G" arrives
 * here as size=1G, because of .magic_config_key below.  Report errors
 * with blkgate_error and return -1: the daemon then exits with 1. */
static int
example_sync_config (const char *key, const char *value)
{
  if (strcmp (key, "size") == 0) {
    size = blkgate_parse_size (value);   /* "64M", "1G", ... */
    return size == -1 ? -1 : 0;          /* it reported the error */
  }
  blkgate_error ("unknown parameter '%s'", key);
  return -1;
}

/* Called once after the last config: check the parameters and set up
 * global state.  The disk is allocated here, not in open, so it lives
 * as long as the daemon, whichever front-end connects. */
static int
example_sync_config_complete (void)
{
  if (size == -1) {
    blkgate_error ("you must supply the size=SIZE parameter");
    return -1;
  }
  disk = calloc (1, size > 0 ? size : 1);  /* reads zeroes until written */
  if (disk == NULL) {
    blkgate_error ("cannot allocate %lld bytes: %m", (long long) size);
    return -1;
  }
  return 0;
}

/* The last call of all: free global resources. */
static void
example_sync_unload (void)
{
  free (disk);
}

/* Called once at start-up, after config_complete.  The handle is
 * passed to every later callback; anything but NULL (which means
 * failure).  With blkgate -r, readonly is 1 and the daemon refuses
 * writes before they reach us. */
static void *
example_sync_open (int readonly)
{
  return disk;
}

/* Required: the size of the disk in bytes.  It is rounded down to the
 * block size (512 bytes, as .block_size is not set). */
static int64_t
example_sync_get_size (void *handle)
{
  return size;
}

/* Read: fill the guest's buffers.  iov points straight into guest
 * memory, valid only until we return.  offset and the total length
 * have been checked against the disk, so no bounds check is needed.
 * On failure: return -1 with errno set (the guest sees an I/O error,
 * or "unsupported" for ENOTSUP). */
static int
example_sync_preadv (void *handle, const struct iovec *iov, int iovcnt,
                     uint64_t offset, uint32_t flags)
{
  const char *d = handle;
  int i;

  for (i = 0; i < iovcnt; i++) {
    memcpy (iov[i].iov_base, d + offset, iov[i].iov_len);
    offset += iov[i].iov_len;
  }
  return 0;
}

/* Write: copy the guest's buffers in.  Having pwritev makes the disk
 * writable (no .can_write needed).  flags holds BLKGATE_FLAG_FUA only
 * if .can_fua says BLKGATE_FUA_NATIVE; without .can_fua and without
 * .flush, the guest sees a disk with no write cache: every completed
 * write counts as durable, which RAM (for the daemon's life) is. */
static int
example_sync_pwritev (void *handle, const struct iovec *iov, int iovcnt,
                      uint64_t offset, uint32_t flags)
{
  char *d = handle;
  int i;

  for (i = 0; i < iovcnt; i++) {
    memcpy (d + offset, iov[i].iov_base, iov[i].iov_len);
    offset += iov[i].iov_len;
  }
  return 0;
}

/* Write-zeroes: having .zero offers VIRTIO_BLK_F_WRITE_ZEROES.  Without
 * .flush and .trim the guest sees no write cache and no discard. */
static int
example_sync_zero (void *handle, uint64_t offset, uint64_t count,
                   uint32_t flags)
{
  memset ((char *) handle + offset, 0, count);
  return 0;
}

/* Everything not named here is NULL and gets its default (see
 * blkgate-plugin(3), CALLBACKS).  Only name, open, get_size and a
 * read callback are required. */
static struct blkgate_plugin plugin = {
  .name              = "example-sync",
  .longname          = "blkgate example synchronous plugin",
  .version           = "1.0",
  .description       = "a RAM disk: the template for synchronous plugins",
  .config            = example_sync_config,
  .config_complete   = example_sync_config_complete,
  .config_help       = "size=<SIZE>  (required) Size of the disk.",
  .magic_config_key  = "size",
  .unload            = example_sync_unload,
  .open              = example_sync_open,
  .get_size          = example_sync_get_size,
  .preadv            = example_sync_preadv,
  .pwritev           = example_sync_pwritev,
  .zero              = example_sync_zero,
};

/* Defines plugin_init, the only symbol the daemon looks up, and fills
 * in _struct_size, _api_version and _thread_model. */
BLKGATE_REGISTER_PLUGIN (plugin)
