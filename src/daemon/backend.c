/* The backend: capabilities and request dispatch.
 *
 * Thread model: backend_open/close run on the main thread.  Everything
 * per queue runs on that queue's thread, except sync plugin calls,
 * which run on a GThreadPool shared by all queues (one thread when the
 * plugin asks for SERIALIZE_REQUESTS).  A worker hands a finished job
 * back through the queue's done list and eventfd, so completions are
 * always processed on the queue thread. */

#include <config.h>

#include <assert.h>
#include <errno.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#include "backend.h"
#include "filters.h"
#include "log.h"

#define MAX_DISCARD_SECTORS (UINT32_C (1) << 22)  /* 2 GiB per segment */
#define SYNC_WORKERS 8

/* A capability: the plugin's answer, or a default derived from
 * whether it has the data calls that need it. */
static int
cap (int (*fn) (void *), void *h, bool have_calls)
{
  return fn ? fn (h) : have_calls;
}

static int
read_caps (struct backend *be, bool readonly)
{
  const struct blkgate_plugin *p = &be->pl->p;
  struct blk_dev *d = &be->dev;
  int64_t size = p->get_size (be->handle);
  int bs = p->block_size ? p->block_size (be->handle) : 512;
  bool wr = be->async ? p->aio_pwritev != NULL : p->pwritev != NULL;
  int w = cap (p->can_write, be->handle, wr);
  int f = cap (p->can_flush, be->handle, p->flush || p->aio_flush);
  int t = cap (p->can_trim, be->handle, p->trim || p->aio_trim);
  int z = cap (p->can_zero, be->handle, p->zero || p->aio_zero);
  int fua = p->can_fua ? p->can_fua (be->handle) : BLKGATE_FUA_NONE;
  int mq = p->max_queues ? p->max_queues (be->handle) : 0;

  if (size < 0 || bs < 0 || w < 0 || f < 0 || t < 0 || z < 0 || fua < 0 ||
      mq < 0)
    return -1;
  if (bs < 512 || bs > 65536 || (bs & (bs - 1))) {
    blkgate_error ("%s: invalid block size %d", p->name, bs);
    return -1;
  }
  if (size % bs)
    blkgate_info ("%s: size %lld is not a multiple of the block size; the "
                  "last %lld bytes are not served", p->name, (long long) size,
                  (long long) (size % bs));
  d->size = size - size % bs;
  d->blk_size = bs;
  /* A capability needs the data call of the plugin's own mode. */
  d->readonly = readonly || !w || !wr;
  d->can_flush = f && (be->async ? p->aio_flush != NULL : p->flush != NULL);
  d->can_discard = t && !d->readonly &&
    (be->async ? p->aio_trim != NULL : p->trim != NULL);
  d->can_zero = z && !d->readonly &&
    (be->async ? p->aio_zero != NULL : p->zero != NULL);
  d->zero_may_unmap = d->can_discard;
  d->wce = d->can_flush;
  d->max_discard_sectors = MAX_DISCARD_SECTORS;
  d->max_zero_sectors = MAX_DISCARD_SECTORS;
  be->fua_native = fua == BLKGATE_FUA_NATIVE;
  be->max_queues = mq;
  return 0;
}

static void sync_worker (gpointer data, gpointer user_data);

int
backend_open (struct backend *be, struct plugin *pl, bool readonly,
              const char *serial)
{
  const struct blkgate_plugin *p = &pl->p;

  memset (be, 0, sizeof *be);
  be->pl = pl;
  be->readonly_opt = readonly;
  be->async = p->queue_open != NULL;
  be->handle = p->open (readonly);
  if (be->handle == NULL)
    return -1;
  if (read_caps (be, readonly) == -1) {
    if (p->close)
      p->close (be->handle);
    be->handle = NULL;
    return -1;
  }
  strncpy (be->dev.serial, serial ? serial : "", BLK_ID_BYTES);
  debug ("%s: size %llu, block size %u, %s%s%s%s%s", p->name,
         (unsigned long long) be->dev.size, be->dev.blk_size,
         be->dev.readonly ? "read-only" : "writable",
         be->dev.can_flush ? ", flush" : "", be->dev.can_discard ? ", trim" : "",
         be->dev.can_zero ? ", zero" : "", be->async ? ", async" : ", sync");
  return 0;
}

int64_t
backend_current_size (struct backend *be)
{
  int64_t size = be->pl->p.get_size (be->handle);

  return size < 0 ? -1 : size - size % be->dev.blk_size;
}

/* What a front-end may have negotiated must still hold. */
static bool
same_caps (const struct blk_dev *a, const struct blk_dev *b)
{
  return a->blk_size == b->blk_size && a->readonly == b->readonly &&
    a->can_flush == b->can_flush && a->can_discard == b->can_discard &&
    a->can_zero == b->can_zero;
}

void *
backend_open_again (struct backend *be, uint64_t *size, const char **err)
{
  struct backend nb = *be;

  nb.handle = be->pl->p.open (be->readonly_opt);
  if (nb.handle == NULL) {
    *err = "the plugin could not open its backend again (see the log)";
    return NULL;
  }
  if (read_caps (&nb, be->readonly_opt) == -1 || !same_caps (&be->dev, &nb.dev)) {
    *err = "the reopened backend cannot do what the old one could "
      "(block size, read-only, flush, trim or zero differ)";
    backend_close_handle (be, nb.handle);
    return NULL;
  }
  *size = nb.dev.size;
  return nb.handle;
}

void
backend_close_handle (struct backend *be, void *h)
{
  if (h != be->handle && be->pl->p.close)
    be->pl->p.close (h);
}

void
backend_close (struct backend *be)
{
  if (be->pool)
    g_thread_pool_free (be->pool, FALSE, TRUE);
  if (be->handle && be->pl->p.close)
    be->pl->p.close (be->handle);
  be->handle = NULL;
  be->pool = NULL;
}

int
backend_queue_open (struct backend_queue *bq, struct backend *be,
                    unsigned index)
{
  memset (bq, 0, sizeof *bq);
  bq->be = be;
  bq->done_fd = -1;
  if (be->async) {
    bq->qctx = be->pl->p.queue_open (be->handle, index);
    return bq->qctx ? 0 : -1;
  }
  /* Workers are created after daemonizing, when a queue first starts. */
  if (be->pool == NULL) {
    int n = be->pl->p._thread_model == BLKGATE_THREAD_MODEL_PARALLEL
      ? SYNC_WORKERS : 1;
    be->pool = g_thread_pool_new (sync_worker, be, n, FALSE, NULL);
  }
  bq->done_fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (bq->done_fd == -1) {
    blkgate_error ("eventfd: %m");
    return -1;
  }
  pthread_mutex_init (&bq->lock, NULL);
  return 0;
}

void
backend_queue_close (struct backend_queue *bq)
{
  if (bq->qctx && bq->be->pl->p.queue_close)
    bq->be->pl->p.queue_close (bq->qctx);
  if (bq->done_fd >= 0) {
    close (bq->done_fd);
    pthread_mutex_destroy (&bq->lock);
  }
  bq->qctx = NULL;
  bq->done_fd = -1;
}

int
backend_queue_fd (struct backend_queue *bq, short *events)
{
  const struct blkgate_plugin *p = &bq->be->pl->p;

  if (!bq->be->async) {
    *events = POLLIN;
    return bq->done_fd;
  }
  *events = 0;
  /* No context between the two halves of a reopen. */
  if (bq->qctx == NULL)
    return -1;
  return p->get_fd ? p->get_fd (bq->qctx, events) : -1;
}

int
backend_queue_watch (struct backend_queue *bq, int epfd, uint32_t tag,
                     int *fd, short *events)
{
  short new_events;
  int new_fd = backend_queue_fd (bq, &new_events);
  struct epoll_event ev = { .data.u32 = tag };
  int r = 0;

  if (new_fd == *fd && new_events == *events)
    return 0;
  if (*fd >= 0 && new_fd != *fd)
    epoll_ctl (epfd, EPOLL_CTL_DEL, *fd, NULL);
  ev.events = ((new_events & POLLIN) ? EPOLLIN : 0) |
    ((new_events & POLLOUT) ? EPOLLOUT : 0);
  if (new_fd >= 0)
    r = epoll_ctl (epfd, new_fd == *fd ? EPOLL_CTL_MOD : EPOLL_CTL_ADD,
                   new_fd, &ev);
  *fd = new_fd;
  *events = new_events;
  return r == -1 ? -1 : 0;
}

void
backend_queue_poll (struct backend_queue *bq)
{
  if (bq->be->pl->p.poll)
    bq->be->pl->p.poll (bq->qctx);
}

void
backend_queue_submit (struct backend_queue *bq)
{
  if (bq->need_submit && bq->be->pl->p.submit)
    bq->be->pl->p.submit (bq->qctx);
  bq->need_submit = false;
}

/* Runs one sync call on a worker thread. */
static int
run_sync (struct backend *be, struct sync_job *j)
{
  const struct blkgate_plugin *p = &be->pl->p;
  struct blk_req *b = &j->r->blk;
  void *h = be->handle;

  switch (j->op) {
  case BLK_OP_READ:
    return p->preadv (h, b->data, b->ndata, j->offset, j->flags);
  case BLK_OP_WRITE:
    return p->pwritev (h, b->data, b->ndata, j->offset, j->flags);
  case BLK_OP_FLUSH:
    return p->flush (h, j->flags);
  case BLK_OP_DISCARD:
    return p->trim (h, j->offset, j->len, j->flags);
  case BLK_OP_ZERO:
    return p->zero (h, j->offset, j->len, j->flags);
  }
  errno = EINVAL;
  return -1;
}

static void
sync_worker (gpointer data, gpointer user_data)
{
  struct sync_job *j = data;
  struct backend_queue *bq = j->bq;

  errno = 0;
  j->err = run_sync (user_data, j) == -1 ? (errno ? errno : EIO) : 0;
  pthread_mutex_lock (&bq->lock);
  j->next = bq->done;
  bq->done = j;
  pthread_mutex_unlock (&bq->lock);
  eventfd_write (bq->done_fd, 1);
}

void
backend_queue_reap (struct backend_queue *bq)
{
  struct sync_job *j, *next;
  eventfd_t v;

  eventfd_read (bq->done_fd, &v);
  pthread_mutex_lock (&bq->lock);
  j = bq->done;
  bq->done = NULL;
  pthread_mutex_unlock (&bq->lock);
  for (; j; j = next) {
    next = j->next;
    blkgate_complete ((struct blkgate_request *) j->r, j->err);
  }
}

static int
issue_async (struct backend_queue *bq, struct request *r, uint8_t op,
             uint64_t off, uint64_t len, uint32_t flags)
{
  const struct blkgate_plugin *p = &bq->be->pl->p;
  struct blkgate_request *tok = (struct blkgate_request *) r;
  struct blk_req *b = &r->blk;

  switch (op) {
  case BLK_OP_READ:
    return p->aio_preadv (bq->qctx, b->data, b->ndata, off, flags, tok);
  case BLK_OP_WRITE:
    return p->aio_pwritev (bq->qctx, b->data, b->ndata, off, flags, tok);
  case BLK_OP_FLUSH:
    return p->aio_flush (bq->qctx, flags, tok);
  case BLK_OP_DISCARD:
    return p->aio_trim (bq->qctx, off, len, flags, tok);
  case BLK_OP_ZERO:
    return p->aio_zero (bq->qctx, off, len, flags, tok);
  }
  errno = EINVAL;
  return -1;
}

/* One plugin call for r.  Holds a reference (pending) until the call
 * completes, so a plugin completing inline cannot finish r early. */
static void
issue (struct backend_queue *bq, struct request *r, struct sync_job *j,
       uint8_t op, uint64_t off, uint64_t len, uint32_t flags)
{
  r->pending++;
  if (bq->be->async) {
    bq->need_submit = true;
    errno = 0;
    if (issue_async (bq, r, op, off, len, flags) == -1)
      blkgate_complete ((struct blkgate_request *) r, errno ? errno : EIO);
    return;
  }
  *j = (struct sync_job) { .r = r, .bq = bq, .op = op, .flags = flags,
                           .offset = off, .len = len };
  g_thread_pool_push (bq->be->pool, j, NULL);
}

void
backend_start (struct backend_queue *bq, struct request *r)
{
  struct blk_req *b = &r->blk;
  unsigned i;

  assert (b->op != BLK_OP_NONE);
  r->bq = bq;
  r->phase = PHASE_DATA;
  r->err = 0;
  r->pending = 1;
  switch (b->op) {
  case BLK_OP_READ:
    issue (bq, r, &r->jobs[0], b->op, b->offset, b->len, 0);
    break;
  case BLK_OP_WRITE:
    issue (bq, r, &r->jobs[0], b->op, b->offset, b->len,
           b->fua && bq->be->fua_native ? BLKGATE_FLAG_FUA : 0);
    break;
  case BLK_OP_FLUSH:
    issue (bq, r, &r->jobs[0], b->op, 0, 0, 0);
    break;
  case BLK_OP_DISCARD:
  case BLK_OP_ZERO:
    for (i = 0; i < b->nseg; i++)
      issue (bq, r, &r->jobs[i], b->op, b->seg[i].offset, b->seg[i].len,
             b->seg[i].unmap ? BLKGATE_FLAG_MAY_TRIM : 0);
    break;
  case BLK_OP_NONE:
    break;
  }
  blkgate_complete ((struct blkgate_request *) r, 0);
}

void
backend_cancel (struct backend_queue *bq, struct request *r)
{
  const struct blkgate_plugin *p = &bq->be->pl->p;

  if (bq->be->async && p->aio_cancel) {
    p->aio_cancel (bq->qctx, (struct blkgate_request *) r);
    bq->need_submit = true;
  }
}

/* Public: a plugin call of req finished.  When the last one is done,
 * an emulated FUA adds a flush; otherwise the request is finished. */
void
blkgate_complete (struct blkgate_request *req, int err)
{
  struct request *r = (struct request *) req;

  /* A filter's token (blkgate_request_wrap), not one of ours. */
  if (filter_token_complete (req, err))
    return;
  assert (r->pending > 0);
  if (err && !r->err)
    r->err = err;
  if (--r->pending > 0)
    return;
  if (r->phase == PHASE_DATA && r->blk.op == BLK_OP_WRITE && r->blk.fua &&
      !r->bq->be->fua_native && r->err == 0) {
    r->phase = PHASE_FUA_FLUSH;
    r->pending = 1;
    issue (r->bq, r, &r->jobs[0], BLK_OP_FLUSH, 0, 0, 0);
    blkgate_complete (req, 0);
    return;
  }
  if (r->done)
    r->done (r);
  else
    queue_request_done (r);
}
