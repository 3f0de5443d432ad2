/* --fuse-export, private: the export's state and requests, shared by
 * fuse-export.c (mount, FUSE threads, start/stop), fuse-export-io.c
 * (the mailbox and the I/O thread) and fuse-export-ops.c (the FUSE
 * handlers).  The locking rules are in fuse-export.c. */

#ifndef BLKGATE_FUSE_EXPORT_INT_H
#define BLKGATE_FUSE_EXPORT_INT_H

#ifndef FUSE_USE_VERSION
#define FUSE_USE_VERSION 35
#endif

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <fuse_lowlevel.h>

#include "backend.h"
#include "fuse-export.h"

#define FUSE_THREADS 4

enum reply {
  REPLY_DATA,                   /* fuse_reply_buf of a slice of buf */
  REPLY_WRITE,                  /* fuse_reply_write of count */
  REPLY_STATUS,                 /* fuse_reply_err of the status */
  REPLY_WAKE,                   /* a handler waits for it (finished) */
};

/* One plugin request of the export. */
struct xreq {
  struct request r;
  struct fuse_export *fx;
  fuse_req_t freq;
  enum reply reply;
  char *buf;                    /* owned, aligned; NULL for no data */
  size_t skip, count;           /* the reply's slice of buf */
  struct iovec iov;
  bool finished;                /* REPLY_WAKE: done (under fx->lock) */
  struct xreq *next;            /* in the mailbox */
};

struct fuse_export {
  struct backend *be;
  char *path;
  bool writable, created;
  uid_t uid;
  gid_t gid;
  struct fuse_session *se;
  struct backend_queue bq;
  bool bq_open, io_started;
  pthread_t io_thread;
  pthread_t loops[FUSE_THREADS];
  unsigned nloops;              /* loop threads started */
  int mail_fd, stop_fd, epfd;
  int plugin_fd;
  short plugin_events;
  pthread_mutex_t rmw_lock;

  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct xreq *mail, **mail_tail;
  unsigned inflight;            /* posted and not done */
  unsigned loops_running;
  bool stopping, io_stop;
  struct timespec atime, mtime, ctime;
};

/* fuse-export-io.c */

/* A request for [off, off + len); READ and WRITE get an aligned buffer
 * of len bytes.  NULL when out of memory. */
struct xreq *xreq_new (struct fuse_export *fx, fuse_req_t freq,
                       enum reply reply, enum blk_op op, uint64_t off,
                       uint64_t len);
void xreq_free (struct xreq *x);
/* Hands x to the I/O thread, which replies to FUSE when it is done. */
void xreq_post (struct xreq *x);
/* Posts x and waits until it is done: 0 or its errno.  The caller
 * still owns x. */
int xreq_run_wait (struct xreq *x);

/* Opens the export's plugin queue and starts the I/O thread (main
 * thread).  -1 after an error, which has been logged; call
 * fuse_export_io_stop to undo the part that was done. */
int fuse_export_io_start (struct fuse_export *fx);
/* Lets the I/O thread finish what is in flight, joins it, closes the
 * plugin queue and the I/O thread's fds (main thread). */
void fuse_export_io_stop (struct fuse_export *fx);

/* fuse-export-ops.c */

extern const struct fuse_lowlevel_ops fuse_export_ops;

#endif /* BLKGATE_FUSE_EXPORT_INT_H */
