/* --fuse-export: the mailbox and the I/O thread, which alone calls the
 * plugin for the export.
 *
 * Thread model: one export I/O thread owns the export's backend_queue,
 * as a queue thread owns its own (queue.c): it waits in epoll on the
 * mailbox eventfd and the plugin's fd, starts posted requests with
 * backend_start and runs their done hook (request.h), which replies to
 * FUSE (libfuse replies may come from any thread) or wakes a handler
 * that waits for the request on fx->cond.  The FUSE loop threads post
 * requests (xreq_post, xreq_run_wait) under fx->lock, which guards the
 * mailbox, the in-flight count, the waiters' flags and io_stop.
 * fuse_export_io_start and fuse_export_io_stop run on the main
 * thread. */

#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "fuse-export-int.h"
#include "log.h"

/* The export's plugin queue: an index no virtqueue has (main.c allows
 * at most 256 of them). */
#define EXPORT_QUEUE_INDEX 1024
#define BUF_ALIGN 4096

enum { EV_MAIL, EV_PLUGIN };

#define XREQ(req) \
  ((struct xreq *) ((char *) (req) - offsetof (struct xreq, r)))

/* --- Requests and the mailbox ------------------------------------------ */

void
xreq_free (struct xreq *x)
{
  free (x->buf);
  free (x);
}

static void xreq_done (struct request *r);

struct xreq *
xreq_new (struct fuse_export *fx, fuse_req_t freq, enum reply reply,
          enum blk_op op, uint64_t off, uint64_t len)
{
  struct xreq *x = calloc (1, sizeof *x);

  if (x == NULL)
    return NULL;
  x->fx = fx;
  x->freq = freq;
  x->reply = reply;
  x->r.done = xreq_done;
  x->r.blk.op = op;
  x->r.blk.offset = off;
  x->r.blk.len = len;
  if (op == BLK_OP_READ || op == BLK_OP_WRITE) {
    if (posix_memalign ((void **) &x->buf, BUF_ALIGN, len ? len : 1)) {
      free (x);
      return NULL;
    }
    x->iov = (struct iovec) { .iov_base = x->buf, .iov_len = len };
    x->r.blk.data = &x->iov;
    x->r.blk.ndata = 1;
  }
  return x;
}

void
xreq_post (struct xreq *x)
{
  struct fuse_export *fx = x->fx;

  x->next = NULL;
  pthread_mutex_lock (&fx->lock);
  *fx->mail_tail = x;
  fx->mail_tail = &x->next;
  fx->inflight++;
  pthread_mutex_unlock (&fx->lock);
  eventfd_write (fx->mail_fd, 1);
}

int
xreq_run_wait (struct xreq *x)
{
  struct fuse_export *fx = x->fx;

  x->reply = REPLY_WAKE;
  x->finished = false;
  xreq_post (x);
  pthread_mutex_lock (&fx->lock);
  while (!x->finished)
    pthread_cond_wait (&fx->cond, &fx->lock);
  pthread_mutex_unlock (&fx->lock);
  return x->r.err;
}

static void
reply (struct xreq *x)
{
  int err = x->r.err;

  switch (x->reply) {
  case REPLY_DATA:
    if (err)
      fuse_reply_err (x->freq, err);
    else
      fuse_reply_buf (x->freq, x->buf + x->skip, x->count);
    break;
  case REPLY_WRITE:
    if (err)
      fuse_reply_err (x->freq, err);
    else
      fuse_reply_write (x->freq, x->count);
    break;
  case REPLY_STATUS:
    fuse_reply_err (x->freq, err);
    break;
  case REPLY_WAKE:
    break;
  }
}

/* The done hook (request.h), on the I/O thread: every plugin call of
 * the request has completed. */
static void
xreq_done (struct request *r)
{
  struct xreq *x = XREQ (r);
  struct fuse_export *fx = x->fx;
  bool wake = x->reply == REPLY_WAKE;

  if (r->err)
    debug ("fuse export: request at %llu failed: %s",
           (unsigned long long) r->blk.offset, strerror (r->err));
  reply (x);
  pthread_mutex_lock (&fx->lock);
  fx->inflight--;
  x->finished = true;           /* x may be freed by its waiter now */
  pthread_cond_broadcast (&fx->cond);
  pthread_mutex_unlock (&fx->lock);
  if (!wake)
    xreq_free (x);
}

/* --- The I/O thread ----------------------------------------------------- */

/* Starts everything posted.  A request may complete inside
 * backend_start and be freed. */
static void
take_mail (struct fuse_export *fx)
{
  struct xreq *x, *next;
  eventfd_t v;

  eventfd_read (fx->mail_fd, &v);
  pthread_mutex_lock (&fx->lock);
  x = fx->mail;
  fx->mail = NULL;
  fx->mail_tail = &fx->mail;
  pthread_mutex_unlock (&fx->lock);
  for (; x; x = next) {
    next = x->next;
    backend_start (&fx->bq, &x->r);
  }
}

static bool
io_done (struct fuse_export *fx)
{
  bool done;

  pthread_mutex_lock (&fx->lock);
  done = fx->io_stop && fx->inflight == 0;
  pthread_mutex_unlock (&fx->lock);
  return done;
}

static void *
io_thread (void *arg)
{
  struct fuse_export *fx = arg;
  struct epoll_event ev[16];
  int i, n;

  while (!io_done (fx)) {
    if (backend_queue_watch (&fx->bq, fx->epfd, EV_PLUGIN, &fx->plugin_fd,
                             &fx->plugin_events) == -1)
      blkgate_error ("fuse export: epoll_ctl plugin fd: %m");
    n = epoll_wait (fx->epfd, ev, 16, -1);
    if (n == -1 && errno != EINTR) {
      blkgate_error ("fuse export: epoll_wait: %m");
      break;
    }
    for (i = 0; i < n; i++) {
      if (ev[i].data.u32 == EV_MAIL)
        take_mail (fx);
      else if (fx->be->async)
        backend_queue_poll (&fx->bq);
      else
        backend_queue_reap (&fx->bq);
    }
    backend_queue_submit (&fx->bq);
  }
  return NULL;
}

/* --- Start and stop ----------------------------------------------------- */

int
fuse_export_io_start (struct fuse_export *fx)
{
  struct epoll_event ev = { .events = EPOLLIN, .data.u32 = EV_MAIL };

  fx->mail_fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
  fx->epfd = epoll_create1 (EPOLL_CLOEXEC);
  if (fx->mail_fd == -1 || fx->epfd == -1 ||
      epoll_ctl (fx->epfd, EPOLL_CTL_ADD, fx->mail_fd, &ev) == -1) {
    blkgate_error ("fuse export: %m");
    return -1;
  }
  if (backend_queue_open (&fx->bq, fx->be, EXPORT_QUEUE_INDEX) == -1) {
    blkgate_error ("fuse export: cannot open a plugin queue");
    return -1;
  }
  fx->bq_open = true;
  if (pthread_create (&fx->io_thread, NULL, io_thread, fx) != 0) {
    blkgate_error ("fuse export: cannot start the I/O thread");
    return -1;
  }
  fx->io_started = true;
  return 0;
}

static void
close_fd (int *fd)
{
  if (*fd >= 0)
    close (*fd);
  *fd = -1;
}

void
fuse_export_io_stop (struct fuse_export *fx)
{
  if (fx->io_started) {
    pthread_mutex_lock (&fx->lock);
    fx->io_stop = true;
    pthread_mutex_unlock (&fx->lock);
    eventfd_write (fx->mail_fd, 1);
    pthread_join (fx->io_thread, NULL);
    fx->io_started = false;
  }
  if (fx->bq_open)
    backend_queue_close (&fx->bq);
  fx->bq_open = false;
  close_fd (&fx->mail_fd);
  close_fd (&fx->epfd);
}
