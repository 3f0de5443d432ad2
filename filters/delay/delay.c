/* blkgate delay filter: a slow backend, for tests.
 *
 * Every request waits its configured delay (plus an optional random
 * jitter) before it goes on to the next layer.  With an async plugin the
 * queue thread never sleeps: a held request sits on its queue's list,
 * sorted by due time, and the queue's timerfd (watched by the daemon
 * through get_fd) sends it on when due.  With a sync plugin the worker
 * thread that runs the call sleeps.
 *
 * Thread model: the configuration is read-only after config_complete;
 * a queue context is used only by its queue's thread.
 */

#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <math.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/timerfd.h>

#define BLKGATE_FILTER_API_VERSION 1
#include <blkgate-filter.h>

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

enum op { OP_READ, OP_WRITE, OP_FLUSH, OP_TRIM, OP_ZERO, NR_OPS };

#define MAX_DELAY_NS (UINT64_C (3600) * 1000000000)

/* Configuration, in nanoseconds. */
static uint64_t delay_ns[NR_OPS];
static uint64_t jitter_ns;

/* "10" (milliseconds), "10ms", "1s", "0.5s", "250us". */
static int
parse_delay (const char *key, const char *value, uint64_t *ns)
{
  char *end;
  double v, unit = 1e6;

  errno = 0;
  v = strtod (value, &end);
  if (end == value || errno || !isfinite (v) || v < 0)
    goto bad;
  if (strcmp (end, "s") == 0)
    unit = 1e9;
  else if (strcmp (end, "us") == 0)
    unit = 1e3;
  else if (strcmp (end, "ns") == 0)
    unit = 1;
  else if (*end && strcmp (end, "ms") != 0)
    goto bad;
  if (v * unit > (double) MAX_DELAY_NS) {
    blkgate_error ("%s=%s: at most one hour", key, value);
    return -1;
  }
  *ns = (uint64_t) (v * unit);
  return 0;

 bad:
  blkgate_error ("%s=%s: expected a delay such as 10, 10ms, 1s or 500us",
                 key, value);
  return -1;
}

static int
delay_config (blkgate_next_config *next, void *nxdata,
              const char *key, const char *value)
{
  static const struct { const char *key; int op; } keys[] = {
    { "rdelay", OP_READ }, { "delay-read", OP_READ },
    { "wdelay", OP_WRITE }, { "delay-write", OP_WRITE },
    { "delay-flush", OP_FLUSH }, { "delay-trim", OP_TRIM },
    { "delay-zero", OP_ZERO }, { "delay", -1 },
  };
  uint64_t ns;

  if (strcmp (key, "delay-jitter") == 0)
    return parse_delay (key, value, &jitter_ns);
  for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
    if (strcmp (key, keys[i].key) != 0)
      continue;
    if (parse_delay (key, value, &ns) == -1)
      return -1;
    for (int op = 0; op < NR_OPS; op++)
      if (keys[i].op == -1 || keys[i].op == op)
        delay_ns[op] = ns;
    return 0;
  }
  return next (nxdata, key, value);
}

/* xorshift64*: jitter needs no quality, only no lock. */
static uint64_t
rnd (uint64_t *s)
{
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * UINT64_C (2685821657736338717);
}

static uint64_t
delay_for (enum op op, uint64_t *seed)
{
  uint64_t d = delay_ns[op];

  if (jitter_ns)
    d += rnd (seed) % (jitter_ns + 1);
  return d;
}

static uint64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* Synchronous mode: the worker thread sleeps. */
static __thread uint64_t thread_seed;

static void
sleep_for (enum op op)
{
  uint64_t d;
  struct timespec ts;

  if (thread_seed == 0)
    thread_seed = now_ns () | 1;
  d = delay_for (op, &thread_seed);
  ts.tv_sec = d / 1000000000;
  ts.tv_nsec = d % 1000000000;
  while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
    ;
}

static int
delay_preadv (const struct blkgate_next_ops *next, void *nxdata,
              void *handle, const struct iovec *iov, int iovcnt,
              uint64_t offset, uint32_t flags)
{
  sleep_for (OP_READ);
  return next->preadv (nxdata, iov, iovcnt, offset, flags);
}

static int
delay_pwritev (const struct blkgate_next_ops *next, void *nxdata,
               void *handle, const struct iovec *iov, int iovcnt,
               uint64_t offset, uint32_t flags)
{
  sleep_for (OP_WRITE);
  return next->pwritev (nxdata, iov, iovcnt, offset, flags);
}

static int
delay_flush (const struct blkgate_next_ops *next, void *nxdata,
             void *handle, uint32_t flags)
{
  sleep_for (OP_FLUSH);
  return next->flush (nxdata, flags);
}

static int
delay_trim (const struct blkgate_next_ops *next, void *nxdata,
            void *handle, uint64_t offset, uint64_t count, uint32_t flags)
{
  sleep_for (OP_TRIM);
  return next->trim (nxdata, offset, count, flags);
}

static int
delay_zero (const struct blkgate_next_ops *next, void *nxdata,
            void *handle, uint64_t offset, uint64_t count, uint32_t flags)
{
  sleep_for (OP_ZERO);
  return next->zero (nxdata, offset, count, flags);
}

/* Asynchronous mode: requests wait on their queue's list. */
struct held {
  struct held *next;
  uint64_t due;
  enum op op;
  const struct iovec *iov;
  int iovcnt;
  uint64_t offset, count;
  uint32_t flags;
  struct blkgate_request *req;
};

struct dq {
  int tfd;
  struct held *list;            /* by due time */
  uint64_t seed;
};

static void *
delay_queue_open (void *handle, unsigned index)
{
  struct dq *q = calloc (1, sizeof *q);

  if (q == NULL) {
    blkgate_error ("calloc: %m");
    return NULL;
  }
  q->tfd = timerfd_create (CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
  if (q->tfd == -1) {
    blkgate_error ("timerfd_create: %m");
    free (q);
    return NULL;
  }
  q->seed = (now_ns () ^ ((uint64_t) index << 32)) | 1;
  return q;
}

/* The core drains a queue before closing it: nothing should be held. */
static void
delay_queue_close (void *qctx)
{
  struct dq *q = qctx;

  while (q->list) {
    struct held *h = q->list;

    q->list = h->next;
    free (h);
  }
  close (q->tfd);
  free (q);
}

static int
delay_get_fd (void *qctx, short *events)
{
  struct dq *q = qctx;

  *events = POLLIN;
  return q->tfd;
}

/* The timer fires when the first held request is due. */
static void
arm (struct dq *q)
{
  struct itimerspec its = { { 0, 0 }, { 0, 0 } };

  if (q->list) {
    its.it_value.tv_sec = q->list->due / 1000000000;
    its.it_value.tv_nsec = q->list->due % 1000000000;
    if (its.it_value.tv_sec == 0 && its.it_value.tv_nsec == 0)
      its.it_value.tv_nsec = 1;
  }
  timerfd_settime (q->tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

static int
hold (struct dq *q, const struct held *tmpl)
{
  struct held *h = malloc (sizeof *h), **pp;

  if (h == NULL) {
    errno = ENOMEM;
    return -1;
  }
  *h = *tmpl;
  h->due = now_ns () + delay_for (h->op, &q->seed);
  for (pp = &q->list; *pp && (*pp)->due <= h->due; pp = &(*pp)->next)
    ;
  h->next = *pp;
  *pp = h;
  if (q->list == h)
    arm (q);
  return 0;
}

static int
issue (const struct blkgate_next_ops *next, void *nxdata,
       const struct held *h)
{
  switch (h->op) {
  case OP_READ:
    return next->aio_preadv (nxdata, h->iov, h->iovcnt, h->offset, h->flags,
                             h->req);
  case OP_WRITE:
    return next->aio_pwritev (nxdata, h->iov, h->iovcnt, h->offset,
                              h->flags, h->req);
  case OP_FLUSH:
    return next->aio_flush (nxdata, h->flags, h->req);
  case OP_TRIM:
    return next->aio_trim (nxdata, h->offset, h->count, h->flags, h->req);
  case OP_ZERO:
    return next->aio_zero (nxdata, h->offset, h->count, h->flags, h->req);
  case NR_OPS:
    break;
  }
  errno = EINVAL;
  return -1;
}

/* A request without a delay goes on at once. */
static int
start (const struct blkgate_next_ops *next, void *nxdata, struct dq *q,
       const struct held *tmpl)
{
  if (delay_ns[tmpl->op] == 0 && jitter_ns == 0)
    return issue (next, nxdata, tmpl);
  return hold (q, tmpl);
}

static int
delay_poll (const struct blkgate_next_ops *next, void *nxdata, void *qctx)
{
  struct dq *q = qctx;
  uint64_t expirations, now = now_ns ();
  unsigned n = 0;

  if (read (q->tfd, &expirations, sizeof expirations) == -1 &&
      errno != EAGAIN)
    blkgate_error ("delay filter: timerfd read: %m");
  while (q->list && q->list->due <= now) {
    struct held *h = q->list;

    q->list = h->next;
    errno = 0;
    if (issue (next, nxdata, h) == -1)
      blkgate_complete (h->req, errno ? errno : EIO);
    free (h);
    n++;
  }
  if (n)
    next->submit (nxdata);
  arm (q);
  return 0;
}

static int
delay_aio_preadv (const struct blkgate_next_ops *next, void *nxdata,
                  void *qctx, const struct iovec *iov, int iovcnt,
                  uint64_t offset, uint32_t flags,
                  struct blkgate_request *req)
{
  struct held t = { .op = OP_READ, .iov = iov, .iovcnt = iovcnt,
                    .offset = offset, .flags = flags, .req = req };

  return start (next, nxdata, qctx, &t);
}

static int
delay_aio_pwritev (const struct blkgate_next_ops *next, void *nxdata,
                   void *qctx, const struct iovec *iov, int iovcnt,
                   uint64_t offset, uint32_t flags,
                   struct blkgate_request *req)
{
  struct held t = { .op = OP_WRITE, .iov = iov, .iovcnt = iovcnt,
                    .offset = offset, .flags = flags, .req = req };

  return start (next, nxdata, qctx, &t);
}

static int
delay_aio_flush (const struct blkgate_next_ops *next, void *nxdata,
                 void *qctx, uint32_t flags, struct blkgate_request *req)
{
  struct held t = { .op = OP_FLUSH, .flags = flags, .req = req };

  return start (next, nxdata, qctx, &t);
}

static int
delay_aio_trim (const struct blkgate_next_ops *next, void *nxdata,
                void *qctx, uint64_t offset, uint64_t count, uint32_t flags,
                struct blkgate_request *req)
{
  struct held t = { .op = OP_TRIM, .offset = offset, .count = count,
                    .flags = flags, .req = req };

  return start (next, nxdata, qctx, &t);
}

static int
delay_aio_zero (const struct blkgate_next_ops *next, void *nxdata,
                void *qctx, uint64_t offset, uint64_t count, uint32_t flags,
                struct blkgate_request *req)
{
  struct held t = { .op = OP_ZERO, .offset = offset, .count = count,
                    .flags = flags, .req = req };

  return start (next, nxdata, qctx, &t);
}

/* A held request has not started: it is cancelled here.  Otherwise it
 * is the next layer's. */
static int
delay_aio_cancel (const struct blkgate_next_ops *next, void *nxdata,
                  void *qctx, struct blkgate_request *req)
{
  struct dq *q = qctx;
  struct held **pp = &q->list;
  bool found = false;

  while (*pp) {
    struct held *h = *pp;

    if (h->req != req) {
      pp = &h->next;
      continue;
    }
    *pp = h->next;
    free (h);
    found = true;
    blkgate_complete (req, ECANCELED);
  }
  if (!found)
    return next->aio_cancel (nxdata, req);
  arm (q);
  return 0;
}

static struct blkgate_filter filter = {
  .name = "delay",
  .longname = "blkgate delay filter",
  .version = PACKAGE_VERSION,
  .description = "Delays requests, to test slow backends.",
  .config = delay_config,
  .config_help =
    "rdelay=DELAY / delay-read=DELAY  Delay reads (10, 10ms, 1s, 500us).\n"
    "wdelay=DELAY / delay-write=DELAY Delay writes.\n"
    "delay-flush=DELAY, delay-trim=DELAY, delay-zero=DELAY\n"
    "delay=DELAY                      Delay every request.\n"
    "delay-jitter=DELAY               Add a random 0..DELAY to each.",
  .preadv = delay_preadv,
  .pwritev = delay_pwritev,
  .flush = delay_flush,
  .trim = delay_trim,
  .zero = delay_zero,
  .queue_open = delay_queue_open,
  .queue_close = delay_queue_close,
  .get_fd = delay_get_fd,
  .poll = delay_poll,
  .aio_preadv = delay_aio_preadv,
  .aio_pwritev = delay_aio_pwritev,
  .aio_flush = delay_aio_flush,
  .aio_trim = delay_aio_trim,
  .aio_zero = delay_aio_zero,
  .aio_cancel = delay_aio_cancel,
};

BLKGATE_REGISTER_FILTER (filter)
