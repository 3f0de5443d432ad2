/* nbd-aio-bench: the same bench as 'blkgate-io SOCKET bench', but run
 * straight against an NBD server with libnbd's asynchronous API, with
 * no virtio and no gateway in between.  contrib/bench/nbd uses it as
 * the limit that blkgate's nbd plugin is measured against.
 *
 *   nbd-aio-bench --uri nbd+unix:///?socket=/tmp/nbd.sock \
 *       [--rw randread|randwrite|read|write] [--bs 4k] [--iodepth 32] \
 *       [--queues 1] [--time 5] [--size BYTES]
 *
 * Thread model: one libnbd handle (one connection) and one thread per
 * queue.  Each thread keeps iodepth commands in flight on its handle:
 * the completion callback records the latency and puts the slot on a
 * ready list (callbacks may not call into the same handle), and the
 * loop resubmits ready slots, then polls the handle's socket in the
 * direction libnbd asks for and calls nbd_aio_notify_read/write.  The
 * main thread only sleeps, raises the stop flag and prints the report.
 *
 * Latency is submit-to-callback, in the same log-linear histogram as
 * blkgate-io bench (32 sub-buckets per power of two), so that the two
 * tools' percentiles can be set side by side.  The last line has the
 * same format as blkgate-io bench's result line. */

#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <libnbd.h>

#define PROG "nbd-aio-bench"

#define SUB_BITS 5
#define SUB (1u << SUB_BITS)
#define NBUCKETS ((64 - SUB_BITS) * SUB + SUB)

#define MAX_QUEUES 64
#define MAX_IODEPTH 1024
#define MAX_BS (32u << 20)
/* How long a thread waits for the server before it gives up. */
#define TIMEOUT_NS (UINT64_C (30) * 1000000000)

enum rw { RANDREAD, RANDWRITE, READ, WRITE };
static const char *const rw_names[] = { "randread", "randwrite", "read", "write" };

struct opts {
  const char *uri;
  enum rw rw;
  unsigned bs, iodepth, queues;
  double time_s;
  uint64_t size;                /* bytes of the export used (default: all) */
};

struct worker;

struct slot {
  struct worker *w;
  unsigned idx;
  uint64_t t_submit;
  void *buf;
};

struct worker {
  const struct opts *o;
  struct nbd_handle *nbd;
  struct slot *slots;
  unsigned *ready;              /* slots whose command completed */
  unsigned nready;
  uint64_t rng;
  uint64_t seq, seq_start, seq_end;
  uint64_t ios, errors;
  uint64_t lat_sum, lat_min, lat_max;
  uint64_t hist[NBUCKETS];
  const int *stop;
  int failed;                   /* set (atomically) once err is */
  char err[256];
  pthread_t thread;
};

static void die (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2), noreturn));

static void
die (const char *fmt, ...)
{
  va_list ap;

  fputs (PROG ": ", stderr);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputc ('\n', stderr);
  exit (EXIT_FAILURE);
}

static uint64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static unsigned
bucket (uint64_t v)
{
  unsigned msb, shift;

  if (v < SUB)
    return v;
  msb = 63 - __builtin_clzll (v);
  shift = msb - SUB_BITS;
  return (shift + 1) * SUB + ((v >> shift) & (SUB - 1));
}

/* The middle of a bucket, in ns. */
static double
bucket_mid (unsigned i)
{
  unsigned shift;

  if (i < SUB)
    return i;
  shift = i / SUB - 1;
  return (double) ((uint64_t) (SUB + i % SUB) << shift) +
    ((uint64_t) 1 << shift) / 2.0;
}

/* xorshift64*: fast, and good enough to spread offsets. */
static uint64_t
rnd (uint64_t *s)
{
  *s ^= *s >> 12;
  *s ^= *s << 25;
  *s ^= *s >> 27;
  return *s * UINT64_C (0x2545F4914F6CDD1D);
}

/* ------------------------------------------------------------------ */

static int
completed (void *opaque, int *error)
{
  struct slot *s = opaque;
  struct worker *w = s->w;
  uint64_t lat;

  w->ready[w->nready++] = s->idx;
  if (__atomic_load_n (w->stop, __ATOMIC_RELAXED))
    return 1;                   /* draining: not counted */
  lat = now_ns () - s->t_submit;
  w->hist[bucket (lat)]++;
  w->lat_sum += lat;
  if (lat < w->lat_min)
    w->lat_min = lat;
  if (lat > w->lat_max)
    w->lat_max = lat;
  if (*error)
    w->errors++;
  __atomic_store_n (&w->ios, w->ios + 1, __ATOMIC_RELAXED);
  return 1;                     /* retire the command */
}

static int
submit (struct worker *w, struct slot *s)
{
  const struct opts *o = w->o;
  nbd_completion_callback cb = { .callback = completed, .user_data = s };
  uint64_t off;
  int64_t cookie;

  if (o->rw == RANDREAD || o->rw == RANDWRITE)
    off = (rnd (&w->rng) % (o->size / o->bs)) * o->bs;
  else {
    off = w->seq;
    w->seq += o->bs;
    if (w->seq + o->bs > w->seq_end)
      w->seq = w->seq_start;
  }
  s->t_submit = now_ns ();
  if (o->rw == RANDREAD || o->rw == READ)
    cookie = nbd_aio_pread (w->nbd, s->buf, o->bs, off, cb, 0);
  else
    cookie = nbd_aio_pwrite (w->nbd, s->buf, o->bs, off, cb, 0);
  if (cookie == -1) {
    snprintf (w->err, sizeof w->err, "%s", nbd_get_error ());
    return -1;
  }
  return 0;
}

/* Waits until the socket is ready in the direction libnbd wants, and
 * lets libnbd move on.  0: progress or nothing to do yet; -1: error. */
static int
step (struct worker *w, int timeout_ms)
{
  struct pollfd pfd;
  unsigned dir;
  int fd, r;

  fd = nbd_aio_get_fd (w->nbd);
  if (fd == -1) {
    snprintf (w->err, sizeof w->err, "%s", nbd_get_error ());
    return -1;
  }
  dir = nbd_aio_get_direction (w->nbd);
  pfd.fd = fd;
  pfd.events = 0;
  pfd.revents = 0;
  if (dir & LIBNBD_AIO_DIRECTION_READ)
    pfd.events |= POLLIN;
  if (dir & LIBNBD_AIO_DIRECTION_WRITE)
    pfd.events |= POLLOUT;
  r = poll (&pfd, 1, timeout_ms);
  if (r == -1) {
    if (errno == EINTR)
      return 0;
    snprintf (w->err, sizeof w->err, "poll: %s", strerror (errno));
    return -1;
  }
  if (r == 0)
    return 0;
  /* An error or hang-up shows up as a failed read in libnbd. */
  if ((dir & LIBNBD_AIO_DIRECTION_READ) &&
      (pfd.revents & (POLLIN | POLLHUP | POLLERR))) {
    if (nbd_aio_notify_read (w->nbd) == -1)
      goto fail;
  }
  else if ((dir & LIBNBD_AIO_DIRECTION_WRITE) &&
           (pfd.revents & (POLLOUT | POLLHUP | POLLERR))) {
    if (nbd_aio_notify_write (w->nbd) == -1)
      goto fail;
  }
  return 0;
 fail:
  snprintf (w->err, sizeof w->err, "%s", nbd_get_error ());
  return -1;
}

/* Lets the commands in flight finish so that the connection closes
 * cleanly; they are not counted. */
static void
drain (struct worker *w)
{
  uint64_t deadline = now_ns () + TIMEOUT_NS;

  while (nbd_aio_in_flight (w->nbd) > 0) {
    if (now_ns () > deadline) {
      if (!w->err[0])
        snprintf (w->err, sizeof w->err, "draining: no reply from the server");
      return;
    }
    if (step (w, 100) == -1)
      return;
  }
}

static void *
worker_run (void *arg)
{
  struct worker *w = arg;
  uint64_t last = now_ns ();
  unsigned i;

  for (i = 0; i < w->o->iodepth; i++)
    if (submit (w, &w->slots[i]) == -1)
      goto out;
  while (!__atomic_load_n (w->stop, __ATOMIC_RELAXED)) {
    if (w->nready) {
      /* A stack: should a callback run inside nbd_aio_p*, it pushes
       * where the slot just taken was. */
      while (w->nready)
        if (submit (w, &w->slots[w->ready[--w->nready]]) == -1)
          goto out;
      last = now_ns ();
    }
    else if (now_ns () - last > TIMEOUT_NS) {
      snprintf (w->err, sizeof w->err, "no reply from the server in %" PRIu64
                " s", TIMEOUT_NS / 1000000000);
      goto out;
    }
    /* Short timeout: the stop flag is checked between polls. */
    if (step (w, 100) == -1)
      goto out;
  }
 out:
  if (!nbd_aio_is_dead (w->nbd) && !nbd_aio_is_closed (w->nbd))
    drain (w);
  if (w->err[0])
    __atomic_store_n (&w->failed, 1, __ATOMIC_RELEASE);
  return NULL;
}

/* ------------------------------------------------------------------ */

/* A size: a number with an optional k, m, g or t suffix (powers of 1024). */
static uint64_t
parse_size (const char *what, const char *str)
{
  unsigned long long n;
  char *end;
  unsigned shift = 0;

  errno = 0;
  if (str[0] == '-' || str[0] == '\0')
    die ("%s '%s': not a size", what, str);
  n = strtoull (str, &end, 10);
  if (errno || end == str)
    die ("%s '%s': not a size", what, str);
  switch (*end) {
  case '\0': break;
  case 'k': case 'K': shift = 10; end++; break;
  case 'm': case 'M': shift = 20; end++; break;
  case 'g': case 'G': shift = 30; end++; break;
  case 't': case 'T': shift = 40; end++; break;
  default: die ("%s '%s': a number with an optional k, m, g or t suffix",
                what, str);
  }
  if (*end == 'i' || *end == 'I')
    end++;
  if (*end == 'b' || *end == 'B')
    end++;
  if (*end != '\0')
    die ("%s '%s': a number with an optional k, m, g or t suffix", what, str);
  if (shift && n > (UINT64_MAX >> shift))
    die ("%s '%s' is too large", what, str);
  return (uint64_t) n << shift;
}

static unsigned
parse_uint (const char *what, const char *str, unsigned min, unsigned max)
{
  uint64_t n = parse_size (what, str);

  if (n < min || n > max)
    die ("%s '%s': from %u to %u", what, str, min, max);
  return n;
}

static void
usage (FILE *f)
{
  fprintf (f,
           "usage: " PROG " --uri URI [--rw randread|randwrite|read|write]\n"
           "       [--bs SIZE] [--iodepth N] [--queues N] [--time SECONDS]\n"
           "       [--size BYTES]\n"
           "Keeps iodepth requests in flight on each of 'queues' connections\n"
           "to the NBD server at URI and prints IOPS and latency; the last\n"
           "line has the format of 'blkgate-io SOCKET bench'.\n"
           "Defaults: --rw randread --bs 4k --iodepth 32 --queues 1 --time 5,\n"
           "--size the export's size.\n");
}

static void
parse_opts (int argc, char **argv, struct opts *o)
{
  static const struct option longopts[] = {
    { "uri", required_argument, NULL, 'u' },
    { "rw", required_argument, NULL, 'r' },
    { "bs", required_argument, NULL, 'b' },
    { "iodepth", required_argument, NULL, 'd' },
    { "queues", required_argument, NULL, 'q' },
    { "time", required_argument, NULL, 't' },
    { "size", required_argument, NULL, 's' },
    { "help", no_argument, NULL, 'h' },
    { 0 }
  };
  char *end;
  unsigned i;
  int c;

  opterr = 0;                   /* our own messages */
  while ((c = getopt_long (argc, argv, "", longopts, NULL)) != -1) {
    switch (c) {
    case 'u': o->uri = optarg; break;
    case 'r':
      for (i = 0; i < sizeof rw_names / sizeof rw_names[0]; i++)
        if (strcmp (optarg, rw_names[i]) == 0)
          break;
      if (i == sizeof rw_names / sizeof rw_names[0])
        die ("--rw '%s': randread, randwrite, read or write", optarg);
      o->rw = i;
      break;
    case 'b':
      o->bs = parse_uint ("--bs", optarg, 512, MAX_BS);
      if (o->bs % 512)
        die ("--bs '%s': a multiple of 512", optarg);
      break;
    case 'd': o->iodepth = parse_uint ("--iodepth", optarg, 1, MAX_IODEPTH); break;
    case 'q': o->queues = parse_uint ("--queues", optarg, 1, MAX_QUEUES); break;
    case 't':
      errno = 0;
      o->time_s = strtod (optarg, &end);
      if (errno || end == optarg || *end || !(o->time_s > 0) ||
          o->time_s > 86400)
        die ("--time '%s': seconds, more than 0 and at most 86400", optarg);
      break;
    case 's':
      o->size = parse_size ("--size", optarg);
      if (o->size == 0)
        die ("--size '%s': more than 0", optarg);
      break;
    case 'h': usage (stdout); exit (EXIT_SUCCESS);
    default:
      die ("unknown option or missing value: '%s' (see --help)",
           argv[optind - 1]);
    }
  }
  if (optind < argc)
    die ("unexpected argument '%s' (see --help)", argv[optind]);
  if (o->uri == NULL)
    die ("--uri is required (e.g. nbd+unix:///?socket=/tmp/nbd.sock)");
}

/* ------------------------------------------------------------------ */

static struct nbd_handle *
connect_one (const struct opts *o, unsigned q)
{
  struct nbd_handle *nbd = nbd_create ();

  if (nbd == NULL)
    die ("%s", nbd_get_error ());
  if (nbd_connect_uri (nbd, o->uri) == -1)
    die ("connection %u to %s: %s", q, o->uri, nbd_get_error ());
  return nbd;
}

static void
setup (struct opts *o, struct worker *w, const int *stop)
{
  uint64_t span, export_size;
  int64_t sz;
  unsigned q, i;

  for (q = 0; q < o->queues; q++)
    w[q].nbd = connect_one (o, q);

  sz = nbd_get_size (w[0].nbd);
  if (sz == -1)
    die ("%s: %s", o->uri, nbd_get_error ());
  export_size = sz;
  if (o->size == 0)
    o->size = export_size;
  else if (o->size > export_size)
    die ("--size %" PRIu64 ": larger than the export (%" PRIu64 " bytes)",
         o->size, export_size);
  if (o->size < (uint64_t) o->bs * o->queues)
    die ("the export (%" PRIu64 " bytes used) is too small for --bs %u and "
         "--queues %u", o->size, o->bs, o->queues);
  if ((o->rw == RANDWRITE || o->rw == WRITE) && nbd_is_read_only (w[0].nbd) == 1)
    die ("%s is read-only: cannot bench --rw %s", o->uri, rw_names[o->rw]);
  if (o->queues > 1 && nbd_can_multi_conn (w[0].nbd) != 1)
    fprintf (stderr, PROG ": warning: the server does not advertise "
             "multi-conn; %u connections may see each other's writes late\n",
             o->queues);

  span = o->size / o->queues / o->bs * o->bs;
  for (q = 0; q < o->queues; q++) {
    struct worker *x = &w[q];
    x->o = o;
    x->stop = stop;
    x->rng = UINT64_C (0x9E3779B97F4A7C15) * (q + 1);
    x->seq_start = x->seq = q * span;
    x->seq_end = (q + 1) * span;
    x->lat_min = UINT64_MAX;
    x->slots = calloc (o->iodepth, sizeof *x->slots);
    x->ready = calloc (o->iodepth, sizeof *x->ready);
    if (x->slots == NULL || x->ready == NULL)
      die ("out of memory");
    for (i = 0; i < o->iodepth; i++) {
      struct slot *s = &x->slots[i];
      s->w = x;
      s->idx = i;
      if (posix_memalign (&s->buf, 4096, o->bs) != 0)
        die ("out of memory for %u buffers of %u bytes", o->iodepth, o->bs);
      memset (s->buf, 0xa5, o->bs);
    }
  }
}

static void
report (const struct opts *o, const struct worker *w, double secs)
{
  uint64_t ios = 0, errors = 0, lat_sum = 0, lat_max = 0;
  uint64_t *hist = calloc (NBUCKETS, sizeof *hist);
  double p[3] = { 0.50, 0.99, 0.999 }, pv[3] = { 0, 0, 0 };
  double iops, mibps, avg;
  unsigned q, b, k;

  if (hist == NULL)
    die ("out of memory");
  for (q = 0; q < o->queues; q++) {
    ios += w[q].ios;
    errors += w[q].errors;
    lat_sum += w[q].lat_sum;
    if (w[q].lat_max > lat_max)
      lat_max = w[q].lat_max;
    for (b = 0; b < NBUCKETS; b++)
      hist[b] += w[q].hist[b];
  }
  for (k = 0; k < 3; k++) {
    uint64_t want = (uint64_t) (p[k] * ios + 0.999999), seen = 0;
    if (want == 0)
      want = 1;
    for (b = 0; b < NBUCKETS; b++) {
      seen += hist[b];
      if (seen >= want) {
        pv[k] = bucket_mid (b) / 1000;
        break;
      }
    }
  }
  free (hist);
  iops = ios / secs;
  mibps = iops * o->bs / (1024.0 * 1024);
  avg = ios ? lat_sum / (double) ios / 1000 : 0;
  printf ("  %-10s %" PRIu64 " in %.2f s (errors %" PRIu64 ")\n",
          "requests", ios, secs, errors);
  printf ("  %-10s %.0f\n", "IOPS", iops);
  printf ("  %-10s %.1f MiB/s\n", "bandwidth", mibps);
  printf ("  %-10s avg %.1f, p50 %.1f, p99 %.1f, p99.9 %.1f, max %.1f (us)\n",
          "latency", avg, pv[0], pv[1], pv[2], lat_max / 1000.0);
  printf ("bench rw=%s bs=%u iodepth=%u queues=%u poll=0 time=%.2f ios=%"
          PRIu64 " errors=%" PRIu64 " iops=%.0f mibps=%.1f lat_avg_us=%.1f "
          "lat_p50_us=%.1f lat_p99_us=%.1f lat_p999_us=%.1f "
          "lat_max_us=%.1f\n", rw_names[o->rw], o->bs, o->iodepth, o->queues,
          secs, ios, errors, iops, mibps, avg, pv[0], pv[1], pv[2],
          lat_max / 1000.0);
  fflush (stdout);
}

int
main (int argc, char **argv)
{
  struct opts o = {
    .rw = RANDREAD, .bs = 4096, .iodepth = 32, .queues = 1, .time_s = 5,
  };
  struct worker *w;
  uint64_t t0, end, now, errors = 0;
  unsigned q, i, started = 0;
  int stop = 0, rc = EXIT_SUCCESS;
  double secs;

  parse_opts (argc, argv, &o);
  w = calloc (o.queues, sizeof *w);
  if (w == NULL)
    die ("out of memory");
  setup (&o, w, &stop);
  printf (PROG ": rw=%s bs=%u iodepth=%u queues=%u time=%gs size=%" PRIu64
          " on %s\n", rw_names[o.rw], o.bs, o.iodepth, o.queues, o.time_s,
          o.size, o.uri);
  fflush (stdout);

  t0 = now_ns ();
  for (q = 0; q < o.queues; q++) {
    if (pthread_create (&w[q].thread, NULL, worker_run, &w[q]) != 0) {
      fprintf (stderr, PROG ": cannot start a thread\n");
      rc = EXIT_FAILURE;
      break;
    }
    started++;
  }
  end = t0 + (uint64_t) (o.time_s * 1e9);
  while (rc == EXIT_SUCCESS && (now = now_ns ()) < end) {
    uint64_t left = end - now;
    /* Wake up now and then: a thread that failed ends the run early. */
    usleep ((left < 100000000 ? left : 100000000) / 1000);
    for (q = 0; q < started; q++)
      if (__atomic_load_n (&w[q].failed, __ATOMIC_ACQUIRE))
        rc = EXIT_FAILURE;
  }
  __atomic_store_n (&stop, 1, __ATOMIC_RELAXED);
  secs = (now_ns () - t0) / 1e9;
  for (q = 0; q < started; q++) {
    pthread_join (w[q].thread, NULL);
    if (w[q].err[0]) {
      fprintf (stderr, PROG ": connection %u: %s\n", q, w[q].err);
      rc = EXIT_FAILURE;
    }
    errors += w[q].errors;
  }
  if (rc == EXIT_SUCCESS)
    report (&o, w, secs);
  if (errors) {
    fprintf (stderr, PROG ": %" PRIu64 " requests failed\n", errors);
    rc = EXIT_FAILURE;
  }
  for (q = 0; q < o.queues; q++) {
    if (w[q].nbd) {
      if (rc == EXIT_SUCCESS)
        nbd_shutdown (w[q].nbd, 0);
      nbd_close (w[q].nbd);
    }
    for (i = 0; w[q].slots && i < o.iodepth; i++)
      free (w[q].slots[i].buf);
    free (w[q].slots);
    free (w[q].ready);
  }
  free (w);
  return rc;
}
