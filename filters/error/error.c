/* blkgate error filter: a failing backend, for tests.
 *
 * Each request fails with the configured errno at the configured rate,
 * before it reaches the next layer (so a failed write never lands).
 * With error-file=PATH errors happen only while PATH exists, so a test
 * can switch them on and off.  error-seed makes the sequence of
 * failures repeatable.
 *
 * Thread model: the configuration is read-only after config_complete;
 * the random state is shared by every thread under a mutex (the filter
 * is for tests, not for speed).
 */

#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define BLKGATE_FILTER_API_VERSION 1
#include <blkgate-filter.h>

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

enum op { OP_READ, OP_WRITE, OP_FLUSH, OP_TRIM, OP_ZERO, NR_OPS };
static const char *const op_names[NR_OPS] = {
  "read", "write", "flush", "trim", "zero"
};

/* Configuration. */
static double rate[NR_OPS];
static int err[NR_OPS] = { EIO, EIO, EIO, EIO, EIO };
static char *error_file;
static uint64_t seed;
static bool seeded;

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static uint64_t state;          /* under lock */

static const struct { const char *name; int err; } errnos[] = {
  { "EIO", EIO }, { "ENOSPC", ENOSPC }, { "EPERM", EPERM },
  { "ENOMEM", ENOMEM }, { "EINVAL", EINVAL }, { "EROFS", EROFS },
  { "ENOTSUP", ENOTSUP }, { "EFBIG", EFBIG }, { "EDQUOT", EDQUOT },
  { "ESHUTDOWN", ESHUTDOWN }, { "ECANCELED", ECANCELED },
};

static int
parse_errno (const char *key, const char *value, int *out)
{
  for (size_t i = 0; i < sizeof errnos / sizeof errnos[0]; i++)
    if (strcasecmp (value, errnos[i].name) == 0) {
      *out = errnos[i].err;
      return 0;
    }
  blkgate_error ("%s=%s: unknown error (use EIO, ENOSPC, EPERM, ENOMEM, "
                 "EINVAL, EROFS, ENOTSUP, EFBIG, EDQUOT, ESHUTDOWN or "
                 "ECANCELED)", key, value);
  return -1;
}

/* 0 .. 1, or 0% .. 100%. */
static int
parse_rate (const char *key, const char *value, double *out)
{
  char *end;
  double v;

  errno = 0;
  v = strtod (value, &end);
  if (end != value && strcmp (end, "%") == 0)
    v /= 100;
  else if (*end)
    end = (char *) value;
  if (end == value || errno || !isfinite (v) || v < 0 || v > 1) {
    blkgate_error ("%s=%s: expected a rate from 0 to 1, or 0%% to 100%%",
                   key, value);
    return -1;
  }
  *out = v;
  return 0;
}

/* error-rate / error, or error-OP-rate / error-OP. */
static int
error_config (blkgate_next_config *next, void *nxdata,
              const char *key, const char *value)
{
  char k[64];

  if (strcmp (key, "error-file") == 0) {
    free (error_file);
    error_file = strdup (value);
    return error_file ? 0 : -1;
  }
  if (strcmp (key, "error-seed") == 0) {
    char *end;

    errno = 0;
    seed = strtoull (value, &end, 0);
    if (*value == '\0' || *end || errno || *value == '-') {
      blkgate_error ("error-seed=%s: expected a number", value);
      return -1;
    }
    seeded = true;
    return 0;
  }
  if (strcmp (key, "error-rate") == 0) {
    double r = 0;

    if (parse_rate (key, value, &r) == -1)
      return -1;
    for (int op = 0; op < NR_OPS; op++)
      rate[op] = r;
    return 0;
  }
  if (strcmp (key, "error") == 0) {
    int e = EIO;

    if (parse_errno (key, value, &e) == -1)
      return -1;
    for (int op = 0; op < NR_OPS; op++)
      err[op] = e;
    return 0;
  }
  for (int op = 0; op < NR_OPS; op++) {
    snprintf (k, sizeof k, "error-%s-rate", op_names[op]);
    if (strcmp (key, k) == 0)
      return parse_rate (key, value, &rate[op]);
    snprintf (k, sizeof k, "error-%s", op_names[op]);
    if (strcmp (key, k) == 0)
      return parse_errno (key, value, &err[op]);
  }
  return next (nxdata, key, value);
}

static int
error_config_complete (blkgate_next_config_complete *next, void *nxdata)
{
  if (!seeded) {
    struct timespec ts;

    clock_gettime (CLOCK_REALTIME, &ts);
    seed = ((uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec) ^ getpid ();
  }
  state = seed ? seed : 1;
  return next (nxdata);
}

static void
error_unload (void)
{
  free (error_file);
  error_file = NULL;    /* a filter loaded twice is unloaded twice */
}

static void
error_dump (void)
{
  printf ("error_file=%s\n", error_file ? error_file : "");
}

/* xorshift64*, a uniform double in [0, 1). */
static double
uniform (void)
{
  uint64_t x;

  pthread_mutex_lock (&lock);
  state ^= state >> 12;
  state ^= state << 25;
  state ^= state >> 27;
  x = state * UINT64_C (2685821657736338717);
  pthread_mutex_unlock (&lock);
  return (x >> 11) * (1.0 / 9007199254740992.0);
}

/* 0, or the errno that op must fail with now. */
static int
inject (enum op op)
{
  if (rate[op] <= 0)
    return 0;
  if (error_file && access (error_file, F_OK) != 0)
    return 0;
  if (rate[op] < 1 && uniform () >= rate[op])
    return 0;
  blkgate_debug ("error filter: failing a %s with %s", op_names[op],
                 strerror (err[op]));
  blkgate_stat_add ("error-filter-injected", 1);
  errno = err[op];
  return -1;
}

static int
error_preadv (const struct blkgate_next_ops *next, void *nxdata,
              void *handle, const struct iovec *iov, int iovcnt,
              uint64_t offset, uint32_t flags)
{
  if (inject (OP_READ))
    return -1;
  return next->preadv (nxdata, iov, iovcnt, offset, flags);
}

static int
error_pwritev (const struct blkgate_next_ops *next, void *nxdata,
               void *handle, const struct iovec *iov, int iovcnt,
               uint64_t offset, uint32_t flags)
{
  if (inject (OP_WRITE))
    return -1;
  return next->pwritev (nxdata, iov, iovcnt, offset, flags);
}

static int
error_flush (const struct blkgate_next_ops *next, void *nxdata,
             void *handle, uint32_t flags)
{
  if (inject (OP_FLUSH))
    return -1;
  return next->flush (nxdata, flags);
}

static int
error_trim (const struct blkgate_next_ops *next, void *nxdata,
            void *handle, uint64_t offset, uint64_t count, uint32_t flags)
{
  if (inject (OP_TRIM))
    return -1;
  return next->trim (nxdata, offset, count, flags);
}

static int
error_zero (const struct blkgate_next_ops *next, void *nxdata,
            void *handle, uint64_t offset, uint64_t count, uint32_t flags)
{
  if (inject (OP_ZERO))
    return -1;
  return next->zero (nxdata, offset, count, flags);
}

/* Async: -1 with errno makes the core complete the request. */
static int
error_aio_preadv (const struct blkgate_next_ops *next, void *nxdata,
                  void *qctx, const struct iovec *iov, int iovcnt,
                  uint64_t offset, uint32_t flags,
                  struct blkgate_request *req)
{
  if (inject (OP_READ))
    return -1;
  return next->aio_preadv (nxdata, iov, iovcnt, offset, flags, req);
}

static int
error_aio_pwritev (const struct blkgate_next_ops *next, void *nxdata,
                   void *qctx, const struct iovec *iov, int iovcnt,
                   uint64_t offset, uint32_t flags,
                   struct blkgate_request *req)
{
  if (inject (OP_WRITE))
    return -1;
  return next->aio_pwritev (nxdata, iov, iovcnt, offset, flags, req);
}

static int
error_aio_flush (const struct blkgate_next_ops *next, void *nxdata,
                 void *qctx, uint32_t flags, struct blkgate_request *req)
{
  if (inject (OP_FLUSH))
    return -1;
  return next->aio_flush (nxdata, flags, req);
}

static int
error_aio_trim (const struct blkgate_next_ops *next, void *nxdata,
                void *qctx, uint64_t offset, uint64_t count, uint32_t flags,
                struct blkgate_request *req)
{
  if (inject (OP_TRIM))
    return -1;
  return next->aio_trim (nxdata, offset, count, flags, req);
}

static int
error_aio_zero (const struct blkgate_next_ops *next, void *nxdata,
                void *qctx, uint64_t offset, uint64_t count, uint32_t flags,
                struct blkgate_request *req)
{
  if (inject (OP_ZERO))
    return -1;
  return next->aio_zero (nxdata, offset, count, flags, req);
}

static struct blkgate_filter filter = {
  .name = "error",
  .longname = "blkgate error filter",
  .version = PACKAGE_VERSION,
  .description = "Fails requests, to test failing backends.",
  .unload = error_unload,
  .config = error_config,
  .config_complete = error_config_complete,
  .config_help =
    "error-rate=RATE          Fail this share of requests (0..1 or N%).\n"
    "error=ERRNO              The error: EIO (default), ENOSPC, EPERM ...\n"
    "error-OP-rate=RATE, error-OP=ERRNO\n"
    "                         The same for one OP: read, write, flush,\n"
    "                         trim or zero.\n"
    "error-file=PATH          Fail only while PATH exists.\n"
    "error-seed=N             Repeatable failures.",
  .dump_filter = error_dump,
  .preadv = error_preadv,
  .pwritev = error_pwritev,
  .flush = error_flush,
  .trim = error_trim,
  .zero = error_zero,
  .aio_preadv = error_aio_preadv,
  .aio_pwritev = error_aio_pwritev,
  .aio_flush = error_aio_flush,
  .aio_trim = error_aio_trim,
  .aio_zero = error_aio_zero,
};

BLKGATE_REGISTER_FILTER (filter)
