/* blkgate stats filter: what the layers below were asked to do.
 *
 * Counts requests, bytes and errors per type and measures their
 * latency as seen from this layer (so a delay filter below it is
 * counted, one above it is not).  The totals are written to statsfile=
 * when the disk closes and are added to the daemon's named counters
 * (blkgate_stat_add), which blkgate-ctl stats shows.
 *
 * Async requests are wrapped (blkgate_request_wrap) to see their
 * completion; each queue keeps its wrapped requests on a list, so that
 * a cancel of a request can be handed on as a cancel of its wrappers.
 *
 * Thread model: counters are atomics; a queue's list is used only by
 * that queue's thread.
 */

#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BLKGATE_FILTER_API_VERSION 1
#include <blkgate-filter.h>

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

enum op { OP_READ, OP_WRITE, OP_FLUSH, OP_TRIM, OP_ZERO, NR_OPS };
static const char *const op_names[NR_OPS] = {
  "read", "write", "flush", "trim", "zero"
};
/* Named counters: literals, they must outlive the filter's use. */
static const char *const ops_stat[NR_OPS] = {
  "stats-reads", "stats-writes", "stats-flushes", "stats-trims",
  "stats-zeros"
};

struct counters {
  uint64_t ops, bytes, errors;
  uint64_t lat_sum_ns, lat_min_ns, lat_max_ns;
};

static struct counters counters[NR_OPS];
static char *statsfile;
static char handle;             /* every open shares the counters */

static int
stats_config (blkgate_next_config *next, void *nxdata,
              const char *key, const char *value)
{
  if (strcmp (key, "statsfile") == 0) {
    if (*value == '\0') {
      blkgate_error ("statsfile: the path is empty");
      return -1;
    }
    free (statsfile);
    statsfile = strdup (value);
    return statsfile ? 0 : -1;
  }
  return next (nxdata, key, value);
}

static void
stats_load (void)
{
  for (int op = 0; op < NR_OPS; op++)
    counters[op].lat_min_ns = UINT64_MAX;
}

static void
stats_unload (void)
{
  free (statsfile);
  statsfile = NULL;    /* a filter loaded twice is unloaded twice */
}

static uint64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void
atomic_max (uint64_t *p, uint64_t v)
{
  uint64_t old = __atomic_load_n (p, __ATOMIC_RELAXED);

  while (v > old && !__atomic_compare_exchange_n (p, &old, v, true,
                                                  __ATOMIC_RELAXED,
                                                  __ATOMIC_RELAXED))
    ;
}

static void
atomic_min (uint64_t *p, uint64_t v)
{
  uint64_t old = __atomic_load_n (p, __ATOMIC_RELAXED);

  while (v < old && !__atomic_compare_exchange_n (p, &old, v, true,
                                                  __ATOMIC_RELAXED,
                                                  __ATOMIC_RELAXED))
    ;
}

static void
record (enum op op, uint64_t bytes, int err, uint64_t lat_ns)
{
  struct counters *c = &counters[op];

  __atomic_add_fetch (&c->ops, 1, __ATOMIC_RELAXED);
  blkgate_stat_add (ops_stat[op], 1);
  if (err) {
    __atomic_add_fetch (&c->errors, 1, __ATOMIC_RELAXED);
    blkgate_stat_add ("stats-errors", 1);
    return;
  }
  __atomic_add_fetch (&c->bytes, bytes, __ATOMIC_RELAXED);
  __atomic_add_fetch (&c->lat_sum_ns, lat_ns, __ATOMIC_RELAXED);
  atomic_min (&c->lat_min_ns, lat_ns);
  atomic_max (&c->lat_max_ns, lat_ns);
  if (op == OP_READ)
    blkgate_stat_add ("stats-read-bytes", bytes);
  else if (op == OP_WRITE)
    blkgate_stat_add ("stats-write-bytes", bytes);
  blkgate_stat_add ("stats-latency-us", lat_ns / 1000);
}

static void *
stats_open (int readonly)
{
  return &handle;
}

/* OP.ops, OP.bytes, OP.errors and the latency of the successful ones
 * (microseconds), one KEY=VALUE a line. */
static void
stats_close (void *h)
{
  FILE *fp;

  if (statsfile == NULL)
    return;
  fp = fopen (statsfile, "w");
  if (fp == NULL) {
    blkgate_error ("stats filter: %s: %m", statsfile);
    return;
  }
  for (int op = 0; op < NR_OPS; op++) {
    struct counters c;
    uint64_t ok;

    memcpy (&c, &counters[op], sizeof c);
    ok = c.ops - c.errors;
    fprintf (fp, "%s.ops=%llu\n%s.bytes=%llu\n%s.errors=%llu\n",
             op_names[op], (unsigned long long) c.ops,
             op_names[op], (unsigned long long) c.bytes,
             op_names[op], (unsigned long long) c.errors);
    fprintf (fp, "%s.latency_min_us=%llu\n%s.latency_avg_us=%llu\n"
             "%s.latency_max_us=%llu\n",
             op_names[op], ok ? (unsigned long long) c.lat_min_ns / 1000 : 0,
             op_names[op], ok ? (unsigned long long) (c.lat_sum_ns / ok / 1000)
             : 0, op_names[op], (unsigned long long) c.lat_max_ns / 1000);
  }
  if (fclose (fp) == EOF)
    blkgate_error ("stats filter: %s: %m", statsfile);
}

/* Synchronous mode: time the call. */
#define TIMED(op, bytes, call)                                          \
  do {                                                                  \
    uint64_t t0 = now_ns ();                                            \
    int r_ = (call);                                                    \
    int e_ = errno;                                                     \
                                                                        \
    record ((op), (bytes), r_ == -1 ? e_ : 0, now_ns () - t0);          \
    errno = e_;                                                         \
    return r_;                                                          \
  } while (0)

static uint64_t
iov_bytes (const struct iovec *iov, int iovcnt)
{
  uint64_t n = 0;

  for (int i = 0; i < iovcnt; i++)
    n += iov[i].iov_len;
  return n;
}

static int
stats_preadv (const struct blkgate_next_ops *next, void *nxdata,
              void *h, const struct iovec *iov, int iovcnt,
              uint64_t offset, uint32_t flags)
{
  TIMED (OP_READ, iov_bytes (iov, iovcnt),
         next->preadv (nxdata, iov, iovcnt, offset, flags));
}

static int
stats_pwritev (const struct blkgate_next_ops *next, void *nxdata,
               void *h, const struct iovec *iov, int iovcnt,
               uint64_t offset, uint32_t flags)
{
  TIMED (OP_WRITE, iov_bytes (iov, iovcnt),
         next->pwritev (nxdata, iov, iovcnt, offset, flags));
}

static int
stats_flush (const struct blkgate_next_ops *next, void *nxdata,
             void *h, uint32_t flags)
{
  TIMED (OP_FLUSH, 0, next->flush (nxdata, flags));
}

static int
stats_trim (const struct blkgate_next_ops *next, void *nxdata,
            void *h, uint64_t offset, uint64_t count, uint32_t flags)
{
  TIMED (OP_TRIM, count, next->trim (nxdata, offset, count, flags));
}

static int
stats_zero (const struct blkgate_next_ops *next, void *nxdata,
            void *h, uint64_t offset, uint64_t count, uint32_t flags)
{
  TIMED (OP_ZERO, count, next->zero (nxdata, offset, count, flags));
}

/* Asynchronous mode: one wrapper per call passed on. */
struct sreq {
  struct sreq *prev, *next;     /* on the queue's list */
  struct sq *q;
  enum op op;
  bool cancelled;               /* aio_cancel passed on */
  uint64_t bytes;
  uint64_t t0;
  struct blkgate_request *req;  /* from the layer above */
  struct blkgate_request *tok;  /* to the layer below */
};

struct sq {
  struct sreq *list;
};

static void *
stats_queue_open (void *h, unsigned index)
{
  struct sq *q = calloc (1, sizeof *q);

  if (q == NULL)
    blkgate_error ("calloc: %m");
  return q;
}

static void
stats_queue_close (void *qctx)
{
  free (qctx);
}

static void
unlink_sreq (struct sreq *s)
{
  if (s->prev)
    s->prev->next = s->next;
  else
    s->q->list = s->next;
  if (s->next)
    s->next->prev = s->prev;
}

static void
done (void *opaque, int err)
{
  struct sreq *s = opaque;
  struct blkgate_request *req = s->req;

  record (s->op, s->bytes, err, now_ns () - s->t0);
  unlink_sreq (s);
  free (s);
  blkgate_complete (req, err);
}

/* A wrapper for req, on q's list; NULL with errno. */
static struct sreq *
wrap (struct sq *q, enum op op, uint64_t bytes, struct blkgate_request *req)
{
  struct sreq *s = calloc (1, sizeof *s);

  if (s == NULL)
    return NULL;
  s->tok = blkgate_request_wrap (done, s);
  if (s->tok == NULL) {
    free (s);
    return NULL;
  }
  s->q = q;
  s->op = op;
  s->bytes = bytes;
  s->req = req;
  s->t0 = now_ns ();
  s->next = q->list;
  if (q->list)
    q->list->prev = s;
  q->list = s;
  return s;
}

/* The next layer did not take it (the token is gone already). */
static int
refused (struct sreq *s)
{
  int e = errno;

  record (s->op, s->bytes, e, 0);
  unlink_sreq (s);
  free (s);
  errno = e;
  return -1;
}

#define PASS_ON(q, op, bytes, req, call)                                \
  do {                                                                  \
    struct sreq *s = wrap ((q), (op), (bytes), (req));                  \
                                                                        \
    if (s == NULL)                                                      \
      return -1;                                                        \
    if ((call) == -1)                                                   \
      return refused (s);                                               \
    return 0;                                                           \
  } while (0)

static int
stats_aio_preadv (const struct blkgate_next_ops *next, void *nxdata,
                  void *qctx, const struct iovec *iov, int iovcnt,
                  uint64_t offset, uint32_t flags,
                  struct blkgate_request *req)
{
  PASS_ON (qctx, OP_READ, iov_bytes (iov, iovcnt), req,
           next->aio_preadv (nxdata, iov, iovcnt, offset, flags, s->tok));
}

static int
stats_aio_pwritev (const struct blkgate_next_ops *next, void *nxdata,
                   void *qctx, const struct iovec *iov, int iovcnt,
                   uint64_t offset, uint32_t flags,
                   struct blkgate_request *req)
{
  PASS_ON (qctx, OP_WRITE, iov_bytes (iov, iovcnt), req,
           next->aio_pwritev (nxdata, iov, iovcnt, offset, flags, s->tok));
}

static int
stats_aio_flush (const struct blkgate_next_ops *next, void *nxdata,
                 void *qctx, uint32_t flags, struct blkgate_request *req)
{
  PASS_ON (qctx, OP_FLUSH, 0, req, next->aio_flush (nxdata, flags, s->tok));
}

static int
stats_aio_trim (const struct blkgate_next_ops *next, void *nxdata,
                void *qctx, uint64_t offset, uint64_t count, uint32_t flags,
                struct blkgate_request *req)
{
  PASS_ON (qctx, OP_TRIM, count, req,
           next->aio_trim (nxdata, offset, count, flags, s->tok));
}

static int
stats_aio_zero (const struct blkgate_next_ops *next, void *nxdata,
                void *qctx, uint64_t offset, uint64_t count, uint32_t flags,
                struct blkgate_request *req)
{
  PASS_ON (qctx, OP_ZERO, count, req,
           next->aio_zero (nxdata, offset, count, flags, s->tok));
}

/* Cancel every wrapper of req.  The next layer may complete one inside
 * the call, which unlinks it: start over after each. */
static int
stats_aio_cancel (const struct blkgate_next_ops *next, void *nxdata,
                  void *qctx, struct blkgate_request *req)
{
  struct sq *q = qctx;
  struct sreq *s;
  int r = 0;

  for (;;) {
    for (s = q->list; s && (s->req != req || s->cancelled); s = s->next)
      ;
    if (s == NULL)
      return r;
    s->cancelled = true;
    if (next->aio_cancel (nxdata, s->tok) == -1)
      r = -1;
  }
}

static struct blkgate_filter filter = {
  .name = "stats",
  .longname = "blkgate stats filter",
  .version = PACKAGE_VERSION,
  .description = "Counts requests, bytes, errors and latency per type.",
  .load = stats_load,
  .unload = stats_unload,
  .config = stats_config,
  .config_help =
    "statsfile=PATH   Write the totals to PATH when the disk closes.",
  .open = stats_open,
  .close = stats_close,
  .preadv = stats_preadv,
  .pwritev = stats_pwritev,
  .flush = stats_flush,
  .trim = stats_trim,
  .zero = stats_zero,
  .queue_open = stats_queue_open,
  .queue_close = stats_queue_close,
  .aio_preadv = stats_aio_preadv,
  .aio_pwritev = stats_aio_pwritev,
  .aio_flush = stats_aio_flush,
  .aio_trim = stats_aio_trim,
  .aio_zero = stats_aio_zero,
  .aio_cancel = stats_aio_cancel,
};

BLKGATE_REGISTER_FILTER (filter)
