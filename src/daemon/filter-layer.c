/* The layered plugin: the core's calls through the filters.
 *
 * filters_wrap makes a struct plugin that looks like the real one to
 * backend.c (same mode, same data calls) but whose callbacks walk the
 * filter stack.  Every layer has its own handle object (struct lh) and,
 * for async plugins, queue object (struct lq), each pointing at the
 * layer below; the last one holds the plugin's handle or queue context.
 * A filter that leaves a callback NULL is skipped for that call.
 *
 * Both a filter (its timerfd, say) and the layers below may have an fd
 * to wait on, but the core watches one per queue: a layer with both
 * puts them into an epoll fd of its own and gives the core that one;
 * when it fires, epoll_wait tells which side to poll.
 *
 * Tokens from blkgate_request_wrap are tagged in their low bit (a
 * struct request is aligned), so blkgate_complete can tell them from
 * the core's requests without looking at the memory behind them. */

#include <config.h>

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <glib.h>

#include "filters.h"
#include "log.h"

static struct plugin *bottom;   /* the real plugin */
static struct plugin top;       /* what the core calls */

#define P (&bottom->p)
#define F(x) (&filter_stack[(x)->i].f)
#define IS_PLUGIN(x) ((x)->i == filter_count)
#define EXPAND(...) __VA_ARGS__

/* A layer's handle. */
struct lh {
  unsigned i;                   /* layer: filter_count is the plugin */
  void *h;                      /* the filter's or plugin's handle */
  struct lh *next;              /* layer below */
  struct lh *live_next;         /* list of open handles */
};

enum fd_mode { FD_NONE, FD_FILTER, FD_NEXT, FD_BOTH };

/* A layer's queue context. */
struct lq {
  unsigned i;
  void *q;                      /* the filter's or plugin's qctx */
  struct lq *next;
  enum fd_mode mode;            /* what the last get_fd returned */
  int epfd;                     /* FD_BOTH: the filter's and next's fds */
  int fd[2];                    /* registered in epfd: filter, next */
  short ev[2];
};

static struct lh *live;         /* open handles (main thread) */

static const struct blkgate_next_ops next_ops;

static int
notsup (void)
{
  errno = ENOTSUP;
  return -1;
}

/* Capabilities: a filter's answer, or the next layer's, down to the
 * plugin's with the defaults of blkgate-plugin(3). */
#define CAP(name, type, dflt)                                           \
  static type                                                           \
  lh_##name (void *v)                                                   \
  {                                                                     \
    struct lh *x = v;                                                   \
                                                                        \
    if (IS_PLUGIN (x))                                                  \
      return P->name ? P->name (x->h) : (dflt);                         \
    if (F (x)->name)                                                    \
      return F (x)->name (&next_ops, x->next, x->h);                    \
    return lh_##name (x->next);                                         \
  }

#define ASYNC (P->queue_open != NULL)
CAP (get_size, int64_t, -1)
CAP (block_size, int, 512)
CAP (can_write, int, ASYNC ? P->aio_pwritev != NULL : P->pwritev != NULL)
CAP (can_flush, int, P->flush != NULL || P->aio_flush != NULL)
CAP (can_trim, int, P->trim != NULL || P->aio_trim != NULL)
CAP (can_zero, int, P->zero != NULL || P->aio_zero != NULL)
CAP (can_fua, int, BLKGATE_FUA_NONE)
CAP (max_queues, int, 0)

/* Synchronous data calls. */
#define SYNC_CALL(name, params, args)                                   \
  static int                                                            \
  lh_##name (void *v, EXPAND params)                                    \
  {                                                                     \
    struct lh *x = v;                                                   \
                                                                        \
    if (IS_PLUGIN (x))                                                  \
      return P->name ? P->name (x->h, EXPAND args) : notsup ();         \
    if (F (x)->name)                                                    \
      return F (x)->name (&next_ops, x->next, x->h, EXPAND args);       \
    return lh_##name (x->next, EXPAND args);                            \
  }

SYNC_CALL (preadv, (const struct iovec *iov, int iovcnt, uint64_t offset,
                    uint32_t flags), (iov, iovcnt, offset, flags))
SYNC_CALL (pwritev, (const struct iovec *iov, int iovcnt, uint64_t offset,
                     uint32_t flags), (iov, iovcnt, offset, flags))
SYNC_CALL (flush, (uint32_t flags), (flags))
SYNC_CALL (trim, (uint64_t offset, uint64_t count, uint32_t flags),
           (offset, count, flags))
SYNC_CALL (zero, (uint64_t offset, uint64_t count, uint32_t flags),
           (offset, count, flags))

/* Asynchronous calls, on a queue context. */
#define ASYNC_CALL(name, params, args, dflt)                            \
  static int                                                            \
  lq_##name (void *v, EXPAND params)                                    \
  {                                                                     \
    struct lq *x = v;                                                   \
                                                                        \
    if (IS_PLUGIN (x))                                                  \
      return P->name ? P->name (x->q, EXPAND args) : (dflt);            \
    if (F (x)->name)                                                    \
      return F (x)->name (&next_ops, x->next, x->q, EXPAND args);       \
    return lq_##name (x->next, EXPAND args);                            \
  }

ASYNC_CALL (aio_preadv, (const struct iovec *iov, int iovcnt, uint64_t offset,
                         uint32_t flags, struct blkgate_request *req),
            (iov, iovcnt, offset, flags, req), notsup ())
ASYNC_CALL (aio_pwritev, (const struct iovec *iov, int iovcnt,
                          uint64_t offset, uint32_t flags,
                          struct blkgate_request *req),
            (iov, iovcnt, offset, flags, req), notsup ())
ASYNC_CALL (aio_flush, (uint32_t flags, struct blkgate_request *req),
            (flags, req), notsup ())
ASYNC_CALL (aio_trim, (uint64_t offset, uint64_t count, uint32_t flags,
                       struct blkgate_request *req),
            (offset, count, flags, req), notsup ())
ASYNC_CALL (aio_zero, (uint64_t offset, uint64_t count, uint32_t flags,
                       struct blkgate_request *req),
            (offset, count, flags, req), notsup ())
ASYNC_CALL (aio_cancel, (struct blkgate_request *req), (req), 0)

static int
lq_submit (void *v)
{
  struct lq *x = v;

  if (IS_PLUGIN (x))
    return P->submit ? P->submit (x->q) : 0;
  if (F (x)->submit)
    return F (x)->submit (&next_ops, x->next, x->q);
  return lq_submit (x->next);
}

/* Tokens of blkgate_request_wrap. */
struct token {
  void (*done) (void *opaque, int err);
  void *opaque;
};

#define IS_TOKEN(req) (((uintptr_t) (req) & 1) != 0)
#define TOKEN(req) ((struct token *) ((uintptr_t) (req) & ~(uintptr_t) 1))

struct blkgate_request *
blkgate_request_wrap (void (*done) (void *opaque, int err), void *opaque)
{
  struct token *t = malloc (sizeof *t);

  if (t == NULL) {
    errno = ENOMEM;
    return NULL;
  }
  t->done = done;
  t->opaque = opaque;
  return (struct blkgate_request *) ((uintptr_t) t | 1);
}

bool
filter_token_complete (struct blkgate_request *req, int err)
{
  struct token *t;
  void (*done) (void *, int);
  void *opaque;

  if (!IS_TOKEN (req))
    return false;
  t = TOKEN (req);
  done = t->done;
  opaque = t->opaque;
  free (t);
  done (opaque, err);
  return true;
}

/* The next layer did not take req: a token dies with the call. */
static int
dropped (int r, struct blkgate_request *req)
{
  if (r == -1 && IS_TOKEN (req)) {
    int e = errno;

    free (TOKEN (req));
    errno = e;
  }
  return r;
}

#define NEXT_AIO(name, params, args)                                    \
  static int                                                            \
  nx_##name (void *v, EXPAND params)                                    \
  {                                                                     \
    return dropped (lq_##name (v, EXPAND args), req);                   \
  }

NEXT_AIO (aio_preadv, (const struct iovec *iov, int iovcnt, uint64_t offset,
                       uint32_t flags, struct blkgate_request *req),
          (iov, iovcnt, offset, flags, req))
NEXT_AIO (aio_pwritev, (const struct iovec *iov, int iovcnt, uint64_t offset,
                        uint32_t flags, struct blkgate_request *req),
          (iov, iovcnt, offset, flags, req))
NEXT_AIO (aio_flush, (uint32_t flags, struct blkgate_request *req),
          (flags, req))
NEXT_AIO (aio_trim, (uint64_t offset, uint64_t count, uint32_t flags,
                     struct blkgate_request *req),
          (offset, count, flags, req))
NEXT_AIO (aio_zero, (uint64_t offset, uint64_t count, uint32_t flags,
                     struct blkgate_request *req),
          (offset, count, flags, req))

static const struct blkgate_next_ops next_ops = {
  ._struct_size = sizeof (struct blkgate_next_ops),
  .get_size = lh_get_size,
  .block_size = lh_block_size,
  .can_write = lh_can_write,
  .can_flush = lh_can_flush,
  .can_trim = lh_can_trim,
  .can_zero = lh_can_zero,
  .can_fua = lh_can_fua,
  .max_queues = lh_max_queues,
  .preadv = lh_preadv,
  .pwritev = lh_pwritev,
  .flush = lh_flush,
  .trim = lh_trim,
  .zero = lh_zero,
  .aio_preadv = nx_aio_preadv,
  .aio_pwritev = nx_aio_pwritev,
  .aio_flush = nx_aio_flush,
  .aio_trim = nx_aio_trim,
  .aio_zero = nx_aio_zero,
  .submit = lq_submit,
  .aio_cancel = lq_aio_cancel,
};

/* Handles: the layers below open first and close last. */
static void lh_close (void *v);

static struct lh *
lh_open (unsigned i, int readonly)
{
  struct lh *x = g_new0 (struct lh, 1);

  x->i = i;
  if (IS_PLUGIN (x)) {
    x->h = P->open (readonly);
    if (x->h == NULL)
      goto fail;
  }
  else {
    x->next = lh_open (i + 1, readonly);
    if (x->next == NULL)
      goto fail;
    if (F (x)->open && (x->h = F (x)->open (readonly)) == NULL) {
      blkgate_error ("filter %s: cannot open", F (x)->name);
      lh_close (x->next);
      goto fail;
    }
  }
  x->live_next = live;
  live = x;
  return x;

 fail:
  g_free (x);
  return NULL;
}

static void *
top_open (int readonly)
{
  return lh_open (0, readonly);
}

/* A plugin (or filter) may return the same handle to every open: it
 * is closed with the last layer handle that holds it. */
static bool
shared (const struct lh *x)
{
  for (const struct lh *o = live; o; o = o->live_next)
    if (o->i == x->i && o->h == x->h)
      return true;
  return false;
}

static void
lh_close (void *v)
{
  struct lh *x = v, **pp;

  for (pp = &live; *pp && *pp != x; pp = &(*pp)->live_next)
    ;
  if (*pp)
    *pp = x->live_next;
  if (IS_PLUGIN (x)) {
    if (P->close && !shared (x))
      P->close (x->h);
  }
  else {
    if (F (x)->close && !shared (x))
      F (x)->close (x->h);
    lh_close (x->next);
  }
  g_free (x);
}

/* Queue contexts. */
static void lq_close (void *v);

static void *
lq_open (void *handle, unsigned index)
{
  struct lh *h = handle;
  struct lq *x = g_new0 (struct lq, 1);

  x->i = h->i;
  x->epfd = x->fd[0] = x->fd[1] = -1;
  if (IS_PLUGIN (x)) {
    x->q = P->queue_open (h->h, index);
    if (x->q == NULL)
      goto fail;
    return x;
  }
  x->next = lq_open (h->next, index);
  if (x->next == NULL)
    goto fail;
  if (F (x)->queue_open && (x->q = F (x)->queue_open (h->h, index)) == NULL) {
    blkgate_error ("filter %s: cannot open queue %u", F (x)->name, index);
    lq_close (x->next);
    goto fail;
  }
  return x;

 fail:
  g_free (x);
  return NULL;
}

static void
lq_close (void *v)
{
  struct lq *x = v;

  if (IS_PLUGIN (x)) {
    if (P->queue_close)
      P->queue_close (x->q);
  }
  else {
    if (F (x)->queue_close)
      F (x)->queue_close (x->q);
    lq_close (x->next);
  }
  if (x->epfd >= 0)
    close (x->epfd);
  g_free (x);
}

/* Keeps fd registered in x->epfd under tag (0 filter, 1 next). */
static int
watch (struct lq *x, int tag, int fd, short events)
{
  struct epoll_event ev = { .data.u32 = tag };
  int r = 0;

  if (fd == x->fd[tag] && events == x->ev[tag])
    return 0;
  if (x->fd[tag] >= 0 && fd != x->fd[tag])
    epoll_ctl (x->epfd, EPOLL_CTL_DEL, x->fd[tag], NULL);
  ev.events = ((events & POLLIN) ? EPOLLIN : 0) |
    ((events & POLLOUT) ? EPOLLOUT : 0);
  r = epoll_ctl (x->epfd, fd == x->fd[tag] ? EPOLL_CTL_MOD : EPOLL_CTL_ADD,
                 fd, &ev);
  x->fd[tag] = r == -1 ? -1 : fd;
  x->ev[tag] = events;
  return r;
}

/* Out of FD_BOTH: forget the registrations, the fds may be closed and
 * their numbers reused before they are merged again. */
static void
unwatch (struct lq *x)
{
  for (int tag = 0; tag < 2; tag++) {
    if (x->fd[tag] >= 0)
      epoll_ctl (x->epfd, EPOLL_CTL_DEL, x->fd[tag], NULL);
    x->fd[tag] = -1;
    x->ev[tag] = 0;
  }
}

static int
merge (struct lq *x, int ffd, short fe, int nfd, short ne)
{
  if (x->epfd < 0) {
    x->epfd = epoll_create1 (EPOLL_CLOEXEC);
    if (x->epfd == -1) {
      blkgate_error ("filter %s: epoll_create1: %m", F (x)->name);
      return -1;
    }
  }
  if (watch (x, 0, ffd, fe) == -1 || watch (x, 1, nfd, ne) == -1) {
    blkgate_error ("filter %s: epoll_ctl: %m", F (x)->name);
    return -1;
  }
  return x->epfd;
}

static int
lq_get_fd (void *v, short *events)
{
  struct lq *x = v;
  short fe = 0, ne = 0;
  int ffd, nfd;

  *events = 0;
  if (IS_PLUGIN (x))
    return P->get_fd ? P->get_fd (x->q, events) : -1;
  ffd = F (x)->get_fd ? F (x)->get_fd (x->q, &fe) : -1;
  nfd = lq_get_fd (x->next, &ne);
  if (ffd >= 0 && nfd >= 0) {
    x->mode = FD_BOTH;
    *events = POLLIN;
    return merge (x, ffd, fe, nfd, ne);
  }
  if (x->mode == FD_BOTH)
    unwatch (x);
  x->mode = ffd >= 0 ? FD_FILTER : nfd >= 0 ? FD_NEXT : FD_NONE;
  *events = ffd >= 0 ? fe : ne;
  return ffd >= 0 ? ffd : nfd;
}

static int lq_poll (void *v);

static int
poll_side (struct lq *x, int tag)
{
  if (tag == 1)
    return lq_poll (x->next);
  return F (x)->poll ? F (x)->poll (&next_ops, x->next, x->q) : 0;
}

static int
lq_poll (void *v)
{
  struct lq *x = v;
  struct epoll_event evs[2];
  int n, r = 0;

  if (IS_PLUGIN (x))
    return P->poll ? P->poll (x->q) : 0;
  switch (x->mode) {
  case FD_NONE:
    return 0;
  case FD_FILTER:
    return poll_side (x, 0);
  case FD_NEXT:
    return poll_side (x, 1);
  case FD_BOTH:
    n = epoll_wait (x->epfd, evs, 2, 0);
    for (int i = 0; i < n; i++)
      if (poll_side (x, evs[i].data.u32) == -1)
        r = -1;
    return r;
  }
  return 0;
}

struct plugin *
filters_wrap (struct plugin *pl)
{
  struct blkgate_plugin *p = &top.p;
  const struct blkgate_plugin *b = &pl->p;

  if (filter_count == 0)
    return pl;
  bottom = pl;
  top = *pl;
  memset (&p->load, 0, sizeof *p - offsetof (struct blkgate_plugin, load));
  p->_struct_size = sizeof *p;
  p->open = top_open;
  p->close = lh_close;
  p->get_size = lh_get_size;
  p->block_size = lh_block_size;
  p->can_write = lh_can_write;
  p->can_flush = lh_can_flush;
  p->can_trim = lh_can_trim;
  p->can_zero = lh_can_zero;
  p->can_fua = lh_can_fua;
  p->max_queues = lh_max_queues;
  /* The same data calls as the plugin, so that the core derives the
   * same capabilities and picks the same mode. */
#define SAME(f, fn) p->f = b->f ? fn : NULL
  SAME (preadv, lh_preadv); SAME (pwritev, lh_pwritev);
  SAME (flush, lh_flush); SAME (trim, lh_trim); SAME (zero, lh_zero);
  if (b->queue_open) {
    p->queue_open = lq_open;
    p->queue_close = lq_close;
    p->get_fd = lq_get_fd;
    p->poll = lq_poll;
    p->submit = lq_submit;
    p->aio_cancel = lq_aio_cancel;
    SAME (aio_preadv, lq_aio_preadv); SAME (aio_pwritev, lq_aio_pwritev);
    SAME (aio_flush, lq_aio_flush); SAME (aio_trim, lq_aio_trim);
    SAME (aio_zero, lq_aio_zero);
  }
#undef SAME
  return &top;
}
