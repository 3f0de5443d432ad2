/* blkgate null plugin: a disk that reads zeroes and drops writes.
 *
 * It is the benchmark plugin: it measures the core and the vhost-user
 * path with no storage behind them.  So it is asynchronous (the same
 * path as real async plugins), completes every request inline inside
 * its aio_* call, has no fd to poll and never allocates.
 *
 * Thread model: there is no state besides the configuration, so any
 * number of queues may call in at once.
 */

#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <stdint.h>
#include <string.h>

#define BLKGATE_API_VERSION 1
#define BLKGATE_THREAD_MODEL BLKGATE_THREAD_MODEL_PARALLEL
#include <blkgate-plugin.h>

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

/* Configuration: written only in config/config_complete. */
static int64_t null_size = -1;   /* size= */

/* Handle and queue contexts carry no state; they only must not be
 * NULL, which would mean failure. */
static char null_handle;
static char null_queue;

/* size= is the only parameter. */
static int
null_config (const char *key, const char *value)
{
  if (strcmp (key, "size") != 0) {
    blkgate_error ("unknown parameter '%s'", key);
    return -1;
  }
  null_size = blkgate_parse_size (value);
  return null_size == -1 ? -1 : 0;
}

/* size= has no default: a disk of a forgotten size helps nobody. */
static int
null_config_complete (void)
{
  if (null_size == -1) {
    blkgate_error ("you must supply the size=SIZE parameter");
    return -1;
  }
  return 0;
}

/* The handle has no state, so every open returns the same one. */
static void *
null_open (int readonly)
{
  return &null_handle;
}

/* The configured size. */
static int64_t
null_get_size (void *handle)
{
  return null_size;
}

/* Dropped writes are as durable as they will ever be. */
static int
null_can_fua (void *handle)
{
  return BLKGATE_FUA_NATIVE;
}

/* Queues need no state either: requests complete where they start. */
static void *
null_queue_open (void *handle, unsigned queue_index)
{
  return &null_queue;
}

/* Nothing was allocated, nothing can be in flight. */
static void
null_queue_close (void *qctx)
{
}

/* No fd: every request is already complete when its aio_* returns. */
static int
null_get_fd (void *qctx, short *events)
{
  return -1;
}

/* Nothing is ever pending, so submit and poll have nothing to do. */
static int
null_nothing (void *qctx)
{
  return 0;
}

/* Reads fill the guest buffers with zeroes. */
static int
null_aio_preadv (void *qctx, const struct iovec *iov, int iovcnt,
                 uint64_t offset, uint32_t flags,
                 struct blkgate_request *req)
{
  int i;

  for (i = 0; i < iovcnt; i++)
    memset (iov[i].iov_base, 0, iov[i].iov_len);
  blkgate_complete (req, 0);
  return 0;
}

/* Writes are dropped: reads give zeroes anyway. */
static int
null_aio_pwritev (void *qctx, const struct iovec *iov, int iovcnt,
                  uint64_t offset, uint32_t flags,
                  struct blkgate_request *req)
{
  blkgate_complete (req, 0);
  return 0;
}

/* There is never anything to flush. */
static int
null_aio_flush (void *qctx, uint32_t flags, struct blkgate_request *req)
{
  blkgate_complete (req, 0);
  return 0;
}

/* Trim and zero: the range reads as zeroes already. */
static int
null_aio_discard (void *qctx, uint64_t offset, uint64_t count,
                  uint32_t flags, struct blkgate_request *req)
{
  blkgate_complete (req, 0);
  return 0;
}

static struct blkgate_plugin plugin = {
  .name              = "null",
  .longname          = "blkgate null plugin",
  .version           = PACKAGE_VERSION,
  .description       = "a disk that reads zeroes and discards writes",
  .config            = null_config,
  .config_complete   = null_config_complete,
  .config_help       = "size=<SIZE>  (required) Size of the disk.",
  .magic_config_key  = "size",
  .open              = null_open,
  .get_size          = null_get_size,
  .can_fua           = null_can_fua,
  .queue_open        = null_queue_open,
  .queue_close       = null_queue_close,
  .get_fd            = null_get_fd,
  .poll              = null_nothing,
  .submit            = null_nothing,
  .aio_preadv        = null_aio_preadv,
  .aio_pwritev       = null_aio_pwritev,
  .aio_flush         = null_aio_flush,
  .aio_trim          = null_aio_discard,
  .aio_zero          = null_aio_discard,
};

BLKGATE_REGISTER_PLUGIN (plugin)
