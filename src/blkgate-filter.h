/* blkgate filter ABI.
 *
 * A filter is a shared object that sits between the daemon's core and
 * the plugin (or the next filter) and sees every call on its way down:
 * it may pass a call on unchanged, change it, delay it, fail it, or
 * watch its completion.  Write
 *
 *   #define BLKGATE_FILTER_API_VERSION 1
 *   #include <blkgate-filter.h>
 *
 * and fill a struct blkgate_filter registered with
 * BLKGATE_REGISTER_FILTER.  Load it with blkgate --filter=NAME; the
 * first --filter on the command line is the outermost layer.
 *
 * Every callback a filter leaves NULL passes the call straight to the
 * next layer.  A callback that is set receives the next layer as a
 * pair: next (a table of functions, all of them non-NULL) and nxdata
 * (the next layer's handle, or its queue context in the async calls),
 * which it passes as the first argument of every next-> call.
 *
 * The layers take the plugin's mode: when the plugin is synchronous
 * only the synchronous data callbacks are called (on worker threads,
 * under the plugin's thread model), when it is asynchronous only the
 * queue callbacks (on the queue's thread).  A filter that handles both
 * sets both.
 *
 * ABI guarantee: both structs only grow at their end.  The daemon
 * copies min(sizeof ours, _struct_size) bytes of a filter's struct and
 * treats the fields it did not receive as NULL/0.
 *
 * This header is plain C99 and uses no glib types.  See
 * blkgate-filter(3).
 */

#ifndef BLKGATE_FILTER_H
#define BLKGATE_FILTER_H

#ifndef BLKGATE_FILTER_API_VERSION
#error "#define BLKGATE_FILTER_API_VERSION 1 before #include <blkgate-filter.h>"
#elif BLKGATE_FILTER_API_VERSION != 1
#error "this blkgate-filter.h supports only BLKGATE_FILTER_API_VERSION 1"
#endif

/* The plugin header gives the flags, struct blkgate_request and the
 * functions the daemon provides (blkgate_error, blkgate_complete ...). */
#ifndef BLKGATE_API_VERSION
#define BLKGATE_API_VERSION 1
#endif
#include <blkgate-plugin.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The next layer.  Capability queries return the next layer's
 * effective answer (with the defaults of blkgate-plugin(3) applied).
 * A data call the plugin does not have fails with ENOTSUP. */
struct blkgate_next_ops {
  uint64_t _struct_size;        /* grows at the end like the rest */

  int64_t (*get_size) (void *nxdata);
  int (*block_size) (void *nxdata);
  int (*can_write) (void *nxdata);
  int (*can_flush) (void *nxdata);
  int (*can_trim) (void *nxdata);
  int (*can_zero) (void *nxdata);
  int (*can_fua) (void *nxdata);
  int (*max_queues) (void *nxdata);

  /* Synchronous mode: nxdata is the next layer's handle. */
  int (*preadv) (void *nxdata, const struct iovec *iov, int iovcnt,
                 uint64_t offset, uint32_t flags);
  int (*pwritev) (void *nxdata, const struct iovec *iov, int iovcnt,
                  uint64_t offset, uint32_t flags);
  int (*flush) (void *nxdata, uint32_t flags);
  int (*trim) (void *nxdata, uint64_t offset, uint64_t count,
               uint32_t flags);
  int (*zero) (void *nxdata, uint64_t offset, uint64_t count,
               uint32_t flags);

  /* Asynchronous mode: nxdata is the next layer's queue context.  The
   * same contract as the plugin's aio_* calls: 0 when the next layer
   * took req (it completes it later, exactly once), -1 with errno when
   * it did not.  After issuing requests outside of a call that the
   * core follows with submit (e.g. from a timer in poll), call
   * next->submit. */
  int (*aio_preadv) (void *nxdata, const struct iovec *iov, int iovcnt,
                     uint64_t offset, uint32_t flags,
                     struct blkgate_request *req);
  int (*aio_pwritev) (void *nxdata, const struct iovec *iov, int iovcnt,
                      uint64_t offset, uint32_t flags,
                      struct blkgate_request *req);
  int (*aio_flush) (void *nxdata, uint32_t flags,
                    struct blkgate_request *req);
  int (*aio_trim) (void *nxdata, uint64_t offset, uint64_t count,
                   uint32_t flags, struct blkgate_request *req);
  int (*aio_zero) (void *nxdata, uint64_t offset, uint64_t count,
                   uint32_t flags, struct blkgate_request *req);
  int (*submit) (void *nxdata);
  int (*aio_cancel) (void *nxdata, struct blkgate_request *req);
};

/* Configuration is passed down: a filter's config handles the keys it
 * knows and hands every other one to next (nxdata is opaque). */
typedef int blkgate_next_config (void *nxdata, const char *key,
                                 const char *value);
typedef int blkgate_next_config_complete (void *nxdata);

struct blkgate_filter {
  /* Set by BLKGATE_REGISTER_FILTER: never set these by hand. */
  uint64_t _struct_size;
  int _api_version;

  /* Metadata.  name is required: lower case, [a-z0-9_-]. */
  const char *name;
  const char *longname;
  const char *version;
  const char *description;

  /* Lifecycle, on the main thread: load; config for every KEY=VALUE
   * of the command line (the outermost filter first; pass the keys
   * that are not yours to next); config_complete (call next too);
   * open, after the next layer opened (a NULL return is an error;
   * without open the handle is NULL); close, before the next layer
   * closes; unload at exit.  Return 0 or -1 after blkgate_error. */
  void (*load) (void);
  void (*unload) (void);
  int (*config) (blkgate_next_config *next, void *nxdata,
                 const char *key, const char *value);
  int (*config_complete) (blkgate_next_config_complete *next, void *nxdata);
  const char *config_help;
  void (*dump_filter) (void);   /* extra key=value lines for --dump-plugin */
  void *(*open) (int readonly);
  void (*close) (void *handle);

  /* Capabilities: return the next layer's answer or change it (a
   * filter may mask a capability, never add one the plugin lacks). */
  int64_t (*get_size) (const struct blkgate_next_ops *next, void *nxdata,
                       void *handle);
  int (*block_size) (const struct blkgate_next_ops *next, void *nxdata,
                     void *handle);
  int (*can_write) (const struct blkgate_next_ops *next, void *nxdata,
                    void *handle);
  int (*can_flush) (const struct blkgate_next_ops *next, void *nxdata,
                    void *handle);
  int (*can_trim) (const struct blkgate_next_ops *next, void *nxdata,
                   void *handle);
  int (*can_zero) (const struct blkgate_next_ops *next, void *nxdata,
                   void *handle);
  int (*can_fua) (const struct blkgate_next_ops *next, void *nxdata,
                  void *handle);
  int (*max_queues) (const struct blkgate_next_ops *next, void *nxdata,
                     void *handle);

  /* Synchronous data calls (worker threads).  Return 0, or -1 with
   * errno set. */
  int (*preadv) (const struct blkgate_next_ops *next, void *nxdata,
                 void *handle, const struct iovec *iov, int iovcnt,
                 uint64_t offset, uint32_t flags);
  int (*pwritev) (const struct blkgate_next_ops *next, void *nxdata,
                  void *handle, const struct iovec *iov, int iovcnt,
                  uint64_t offset, uint32_t flags);
  int (*flush) (const struct blkgate_next_ops *next, void *nxdata,
                void *handle, uint32_t flags);
  int (*trim) (const struct blkgate_next_ops *next, void *nxdata,
               void *handle, uint64_t offset, uint64_t count,
               uint32_t flags);
  int (*zero) (const struct blkgate_next_ops *next, void *nxdata,
               void *handle, uint64_t offset, uint64_t count,
               uint32_t flags);

  /* Asynchronous mode.  queue_open/queue_close run on the main thread
   * (after/before the next layer's); the rest on the queue's thread.
   * get_fd is the filter's own fd, if any (a timerfd, say): the daemon
   * watches it together with the next layer's and calls poll when it
   * fires.  qctx is what queue_open returned (NULL without it).  An
   * aio_* call returns 0 when the filter took req: it then passes req
   * on, now or later (from poll), or completes it with
   * blkgate_complete, on this queue's thread inside one of its
   * callbacks.  -1 with errno: the core completes req with errno. */
  void *(*queue_open) (void *handle, unsigned queue_index);
  void (*queue_close) (void *qctx);
  int (*get_fd) (void *qctx, short *events);
  int (*poll) (const struct blkgate_next_ops *next, void *nxdata,
               void *qctx);
  int (*submit) (const struct blkgate_next_ops *next, void *nxdata,
                 void *qctx);
  int (*aio_preadv) (const struct blkgate_next_ops *next, void *nxdata,
                     void *qctx, const struct iovec *iov, int iovcnt,
                     uint64_t offset, uint32_t flags,
                     struct blkgate_request *req);
  int (*aio_pwritev) (const struct blkgate_next_ops *next, void *nxdata,
                      void *qctx, const struct iovec *iov, int iovcnt,
                      uint64_t offset, uint32_t flags,
                      struct blkgate_request *req);
  int (*aio_flush) (const struct blkgate_next_ops *next, void *nxdata,
                    void *qctx, uint32_t flags, struct blkgate_request *req);
  int (*aio_trim) (const struct blkgate_next_ops *next, void *nxdata,
                   void *qctx, uint64_t offset, uint64_t count,
                   uint32_t flags, struct blkgate_request *req);
  int (*aio_zero) (const struct blkgate_next_ops *next, void *nxdata,
                   void *qctx, uint64_t offset, uint64_t count,
                   uint32_t flags, struct blkgate_request *req);
  /* A filter that holds requests, or wraps them, must map req to what
   * it holds or passed on (see blkgate-filter(3)). */
  int (*aio_cancel) (const struct blkgate_next_ops *next, void *nxdata,
                     void *qctx, struct blkgate_request *req);

  /* New fields are only ever added here, at the end. */
};

/* Watch a request's completion: returns a new token to pass to a
 * next->aio_* call instead of req.  When the next layer completes it,
 * done (opaque, err) is called (on the queue thread, inside the next
 * layer's callback) and the token is freed; done usually ends with
 * blkgate_complete (req, err) on the original.  If the next->aio_* call
 * returns -1 the token is freed and done is not called.  NULL with
 * errno set when out of memory. */
extern struct blkgate_request *
blkgate_request_wrap (void (*done) (void *opaque, int err), void *opaque);

#define BLKGATE_REGISTER_FILTER(filter)                                 \
  extern struct blkgate_filter *filter_init (void);                     \
  __attribute__ ((visibility ("default")))                              \
  struct blkgate_filter *                                               \
  filter_init (void)                                                    \
  {                                                                     \
    (filter)._struct_size = sizeof (filter);                            \
    (filter)._api_version = BLKGATE_FILTER_API_VERSION;                 \
    return &(filter);                                                   \
  }

#ifdef __cplusplus
}
#endif

#endif /* BLKGATE_FILTER_H */
