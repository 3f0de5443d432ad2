/* The backend: one opened plugin, its capabilities, and the dispatch
 * of parsed virtio-blk requests to its async or sync calls. */

#ifndef BLKGATE_BACKEND_H
#define BLKGATE_BACKEND_H

#include <pthread.h>
#include <stdbool.h>
#include <glib.h>

#include "blk.h"
#include "plugins.h"
#include "request.h"

struct backend {
  struct plugin *pl;
  void *handle;
  bool async;
  bool fua_native;
  struct blk_dev dev;           /* capabilities as virtio-blk sees them */
  unsigned max_queues;          /* 0 = any */
  bool readonly_opt;            /* -r: open read-only */
  GThreadPool *pool;            /* sync plugins */
};

/* Per-queue side of the backend, owned by the queue thread. */
struct backend_queue {
  struct backend *be;
  void *qctx;                   /* async plugins */
  int done_fd;                  /* eventfd: sync jobs finished */
  pthread_mutex_t lock;
  struct sync_job *done;        /* finished sync jobs (LIFO) */
  bool need_submit;
};

/* Opens the plugin and reads its capabilities.  -1 after an error. */
int backend_open (struct backend *be, struct plugin *pl, bool readonly,
                  const char *serial);
void backend_close (struct backend *be);

/* The plugin's size now, rounded down to the block size (resize):
 * -1 after an error. */
int64_t backend_current_size (struct backend *be);
/* Opens a second handle for reopen and checks that it can do what the
 * first could (the front-end negotiated it); NULL with *err set
 * otherwise.  Its size is in *size. */
void *backend_open_again (struct backend *be, uint64_t *size,
                          const char **err);
/* Closes a handle that backend_open_again returned, or the old one
 * after a swap (unless it is the same, as plugins may return). */
void backend_close_handle (struct backend *be, void *h);

int backend_queue_open (struct backend_queue *bq, struct backend *be,
                        unsigned index);
void backend_queue_close (struct backend_queue *bq);

/* Plugin fd to wait on (-1 for none) and its events. */
int backend_queue_fd (struct backend_queue *bq, short *events);
/* Keeps backend_queue_fd registered in epfd with data.u32 = tag; call
 * it before every wait, as the fd and its events may change.  *fd and
 * *events hold what is registered (-1 and 0 at first, and again after
 * a new epfd); they are updated even when epoll_ctl fails, which
 * returns -1 with errno set. */
int backend_queue_watch (struct backend_queue *bq, int epfd, uint32_t tag,
                         int *fd, short *events);
/* The plugin fd fired / sync jobs finished / end of a batch. */
void backend_queue_poll (struct backend_queue *bq);
void backend_queue_reap (struct backend_queue *bq);
void backend_queue_submit (struct backend_queue *bq);

/* Asks the plugin to give up on r if its I/O has not started (a no-op
 * for plugins without aio_cancel). */
void backend_cancel (struct backend_queue *bq, struct request *r);

/* Starts the plugin calls of a parsed request (op != NONE). */
void backend_start (struct backend_queue *bq, struct request *r);

#endif /* BACKEND_H */
