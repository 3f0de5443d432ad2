/* plugin-host: the daemon's side of the plugin ABI, for test-plugins.
 *
 * It loads a plugin .so as the daemon does, defines the blkgate_*
 * functions the plugin imports (so link the program with -rdynamic),
 * opens handles and queue contexts, and runs requests through the
 * sync or the async calls.  Results are reported as TAP; the counters
 * live in shared memory so that forked runs number on.
 */

#ifndef PLUGIN_HOST_H
#define PLUGIN_HOST_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#define BLKGATE_API_VERSION 1
#include <blkgate-plugin.h>

#define NQUEUES    2      /* queue contexts opened for async plugins */
#define MAX_IOV    8      /* iovecs per request */
#define TIMEOUT_MS 10000  /* longest wait for a completion */

struct blkgate_request {  /* the token: one per plugin call */
  int done;               /* times completed: must end up 1 */
  int err;
};

struct io {               /* one request */
  struct blkgate_request req;
  char type;              /* r(ead) w(rite) f(lush) t(rim) z(ero) */
  int q, iovcnt;          /* queue context index, iovecs used */
  struct iovec iov[MAX_IOV];
  uint64_t offset, count;
  uint32_t flags;
};

/* The plugin, as the daemon copies it, and what open_all found. */
extern struct blkgate_plugin P;
extern void *handle;
extern void *qctx[NQUEUES];
extern bool is_async, debug_on;
extern int64_t size;
extern int bs, can_write, can_flush, can_trim, can_zero, can_fua;

extern bool tap_init (void);
extern int tap_finish (void);
extern bool ok (bool cond, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));
extern void skip (const char *what, const char *why);

extern bool load_plugin (const char *path);
extern bool open_all (int readonly);
extern void close_all (void);
extern int start (struct io *io);
extern bool wait_all (struct io *ios, int n);
extern bool run (struct io *ios, int n);

#endif /* PLUGIN_HOST_H */
