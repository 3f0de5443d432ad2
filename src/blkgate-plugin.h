/* blkgate plugin ABI.
 *
 * A plugin is a shared object that fills a struct blkgate_plugin and
 * registers it with BLKGATE_REGISTER_PLUGIN.  Write
 *
 *   #define BLKGATE_API_VERSION 1
 *   #include <blkgate-plugin.h>
 *
 * This header is plain C99 (it also compiles as C++) and uses no glib
 * types, so plugins are not tied to the daemon's libraries.
 *
 * ABI guarantee: struct blkgate_plugin only grows at its end.  The
 * daemon copies min(sizeof ours, _struct_size) bytes of a plugin's
 * struct and treats every field it did not receive as NULL/0, so a
 * plugin built against an older, smaller struct keeps loading.  An API
 * version the daemon does not know is refused with a clear message.
 *
 * See blkgate-plugin(3) for the semantics of every callback.
 */

#ifndef BLKGATE_PLUGIN_H
#define BLKGATE_PLUGIN_H

#include <stdint.h>
#include <stddef.h>
#include <sys/uio.h>

#ifndef BLKGATE_API_VERSION
#error "#define BLKGATE_API_VERSION 1 before #include <blkgate-plugin.h>"
#elif BLKGATE_API_VERSION != 1
#error "this blkgate-plugin.h supports only BLKGATE_API_VERSION 1"
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* Thread models for the synchronous data calls.  Async plugins are
 * always called on the queue thread that owns the queue context. */
#define BLKGATE_THREAD_MODEL_SERIALIZE_REQUESTS 0 /* one sync call at a time */
#define BLKGATE_THREAD_MODEL_PARALLEL           1 /* sync calls may overlap */

/* Flags passed to data calls. */
#define BLKGATE_FLAG_FUA      (1u << 0) /* write must be durable on completion */
#define BLKGATE_FLAG_MAY_TRIM (1u << 1) /* zero: the range may be unmapped */

/* Answers of can_fua. */
#define BLKGATE_FUA_NONE    0 /* the core emulates FUA with a flush */
#define BLKGATE_FUA_EMULATE 1 /* same as NONE, stated explicitly */
#define BLKGATE_FUA_NATIVE  2 /* the plugin honours BLKGATE_FLAG_FUA */

/* One guest request as the plugin sees it: an opaque token handed to
 * the async calls and given back through blkgate_complete. */
struct blkgate_request;

struct blkgate_plugin {
  /* Set by BLKGATE_REGISTER_PLUGIN: never set these by hand. */
  uint64_t _struct_size;
  int _api_version;
  int _thread_model;

  /* Metadata.  name is required: lower case, [a-z0-9_-]. */
  const char *name;
  const char *longname;
  const char *version;
  const char *description;

  /* Lifecycle, called on the main thread in this order:
   * load, config (once per KEY=VALUE), config_complete, open (at
   * start-up, before the socket listens, so errors stop the daemon
   * before it detaches), close and unload at exit.  The one handle
   * serves every front-end connection, so a reconnecting front-end sees
   * the same capabilities.  The control socket's "reopen" calls open
   * again while serving, and close on the handle that is no longer
   * used.  Return 0 on success, -1 after calling blkgate_error. */
  void (*load) (void);
  void (*unload) (void);
  int (*config) (const char *key, const char *value);
  int (*config_complete) (void);
  const char *config_help;
  const char *magic_config_key; /* a bare VALUE means MAGIC=VALUE */
  void (*dump_plugin) (void);   /* extra key=value lines for --dump-plugin */

  /* open returns a handle (never NULL on success). */
  void *(*open) (int readonly);
  void (*close) (void *handle);

  /* Capabilities, queried once after each open.  -1 on error.
   * Omitted: size is required; block_size 512; can_write from
   * pwritev/aio_pwritev; can_flush, can_trim, can_zero likewise from
   * their data calls; can_fua BLKGATE_FUA_NONE; max_queues unlimited. */
  int64_t (*get_size) (void *handle);
  int (*block_size) (void *handle); /* logical block: 512 .. 65536, 2^n */
  int (*can_write) (void *handle);
  int (*can_flush) (void *handle);
  int (*can_trim) (void *handle);
  int (*can_zero) (void *handle);
  int (*can_fua) (void *handle);
  int (*max_queues) (void *handle); /* caps --num-queues; 0 = no limit */

  /* Synchronous data calls, run on the core's worker threads under
   * _thread_model.  The iovecs point into guest memory: read or fill
   * them, never keep them.  Return 0, or -1 with errno set (ENOTSUP
   * maps to VIRTIO_BLK_S_UNSUPP, everything else to IOERR). */
  int (*preadv) (void *handle, const struct iovec *iov, int iovcnt,
                 uint64_t offset, uint32_t flags);
  int (*pwritev) (void *handle, const struct iovec *iov, int iovcnt,
                  uint64_t offset, uint32_t flags);
  int (*flush) (void *handle, uint32_t flags);
  int (*trim) (void *handle, uint64_t offset, uint64_t count, uint32_t flags);
  int (*zero) (void *handle, uint64_t offset, uint64_t count, uint32_t flags);

  /* Asynchronous mode: a plugin that sets queue_open is async.  Each
   * started virtqueue gets its own queue context.  queue_open and
   * queue_close are called on the main thread while that queue's thread
   * is not running; every other callback for the context is called on
   * the queue's thread.  The core polls get_fd (if it returns >= 0) for
   * the events in *events (POLLIN/POLLOUT, re-read before every wait)
   * and calls poll when they fire.  submit is called after a batch of
   * aio_* calls so the plugin can push them out together.
   *
   * The iovec array of an aio_* call is valid only during the call
   * (copy it to finish later); the guest buffers it points to stay
   * valid until the request is completed.
   *
   * An aio_* call returns 0 when it took the request; the plugin then
   * calls blkgate_complete exactly once, on the queue thread, from
   * inside one of its callbacks for that queue context (the aio_* call
   * itself, submit or poll).  It returns -1 with errno when it could
   * not take the request (then it must not complete it). */
  void *(*queue_open) (void *handle, unsigned queue_index);
  void (*queue_close) (void *qctx);
  int (*get_fd) (void *qctx, short *events);
  int (*poll) (void *qctx);
  int (*submit) (void *qctx);
  int (*aio_preadv) (void *qctx, const struct iovec *iov, int iovcnt,
                     uint64_t offset, uint32_t flags,
                     struct blkgate_request *req);
  int (*aio_pwritev) (void *qctx, const struct iovec *iov, int iovcnt,
                      uint64_t offset, uint32_t flags,
                      struct blkgate_request *req);
  int (*aio_flush) (void *qctx, uint32_t flags, struct blkgate_request *req);
  int (*aio_trim) (void *qctx, uint64_t offset, uint64_t count,
                   uint32_t flags, struct blkgate_request *req);
  int (*aio_zero) (void *qctx, uint64_t offset, uint64_t count,
                   uint32_t flags, struct blkgate_request *req);

  /* Optional, async mode: give up on req if its I/O has not started
   * yet (the core asks when a migration suspends the queue, so that it
   * waits only for what is really under way).  A cancelled request is
   * completed with ECANCELED, now or later; one already running must
   * complete normally (a write must never land after its completion).
   * Called on the queue thread; submit follows.  Return 0, or -1. */
  int (*aio_cancel) (void *qctx, struct blkgate_request *req);

  /* New fields are only ever added here, at the end. */
};

/* Functions the daemon provides to plugins. */

/* Report an error; %m is errno.  errno is preserved.  (gcc with
 * -std=c99 -pedantic warns that ISO C has no %m: use strerror (errno)
 * there, or -std=gnu99.) */
extern void blkgate_error (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2)));
/* Debug message, printed only with -v.  errno is preserved. */
extern void blkgate_debug (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2)));
/* Parse "512", "4k", "1M", "1G", "1T", "1P", also "1GB"/"1GiB"
 * (powers of 1024); -1 on error (after blkgate_error). */
extern int64_t blkgate_parse_size (const char *str);
/* Parse on/off, yes/no, true/false, 1/0; -1 on error (after
 * blkgate_error). */
extern int blkgate_parse_bool (const char *str);
/* Complete an async request: err is 0 or a positive errno. */
extern void blkgate_complete (struct blkgate_request *req, int err);
/* Count n events under name (a string that lives as long as the
 * plugin, e.g. a literal such as "reconnects"): shown per backend by
 * the control socket's stats.  Any thread; meant for rare events, it
 * takes a lock.  Up to 32 names. */
extern void blkgate_stat_add (const char *name, uint64_t n);

/* The plugin's entry point, defined by BLKGATE_REGISTER_PLUGIN.  It is
 * declared here, inside extern "C", so that it keeps its C name when
 * the plugin is written in C++. */
extern struct blkgate_plugin *plugin_init (void);

#ifdef __cplusplus
}
#endif

/* A plugin must #define BLKGATE_THREAD_MODEL (one of the values above)
 * before it uses this macro. */
#define BLKGATE_REGISTER_PLUGIN(plugin)                                 \
  __attribute__ ((visibility ("default")))                              \
  struct blkgate_plugin *                                               \
  plugin_init (void)                                                    \
  {                                                                     \
    (plugin)._struct_size = sizeof (plugin);                            \
    (plugin)._api_version = BLKGATE_API_VERSION;                        \
    (plugin)._thread_model = BLKGATE_THREAD_MODEL;                      \
    return &(plugin);                                                   \
  }

#endif /* BLKGATE_PLUGIN_H */
