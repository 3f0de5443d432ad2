/* blkgate-io bench: IOPS, bandwidth and latency percentiles.
 *
 * Thread model: one thread per queue, each the only user of its ring
 * and its requests while the bench runs.  It keeps iodepth requests
 * outstanding: whatever it reaps it resubmits at once, then kicks once
 * for the batch.  The main thread only sleeps, prints the progress line
 * (when stdout is a terminal) from the threads' relaxed counters, and
 * raises the stop flag; it reads the histograms after joining.
 *
 * Latency is submit-to-reap, in a log-linear histogram (32 sub-buckets
 * per power of two: under 3% error) per thread, merged at the end. */

#include <config.h>

#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"

#define SUB_BITS 5
#define SUB (1u << SUB_BITS)
#define NBUCKETS ((64 - SUB_BITS) * SUB + SUB)

enum rw { RANDREAD, RANDWRITE, READ, WRITE, RANDRW };
static const char *const rw_names[] = {
  "randread", "randwrite", "read", "write", "randrw",
};

struct bench_opts {
  enum rw rw;
  unsigned bs, iodepth, queues, rwmix;
  double time_s;
  bool poll;
  uint64_t size;                /* disk range used (default: all) */
};

struct worker {
  const struct bench_opts *o;
  struct vuc_ring *ring;
  struct vuc_mem *mem;
  struct vuc_req *reqs;
  uint8_t *bufs;
  uint64_t rng;
  uint64_t seq, seq_start, seq_end;
  uint64_t ios, reads, errors;  /* ios is read by the progress line */
  uint64_t lat_sum, lat_min, lat_max;
  uint64_t hist[NBUCKETS];
  const int *stop;
  int timeout_ms;
  char err[256];
  pthread_t thread;
};

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

static void
prepare (struct worker *w, struct vuc_req *r, unsigned slot)
{
  const struct bench_opts *o = w->o;
  uint64_t off, nblocks = o->size / o->bs;
  bool write;

  switch (o->rw) {
  case RANDREAD: case RANDWRITE: case RANDRW:
    off = (rnd (&w->rng) % nblocks) * o->bs;
    break;
  default:
    off = w->seq;
    w->seq += o->bs;
    if (w->seq + o->bs > w->seq_end)
      w->seq = w->seq_start;
  }
  write = o->rw == RANDWRITE || o->rw == WRITE ||
    (o->rw == RANDRW && rnd (&w->rng) % 100 >= o->rwmix);
  vuc_req_rw (r, write, off, vuc_gpa (w->mem, w->bufs +
                                      (uint64_t) slot * o->bs), o->bs);
  r->opaque = (void *) (uintptr_t) slot;
}

static void
account (struct worker *w, struct vuc_req *r, uint64_t now)
{
  uint64_t lat = now - r->t_submit;

  w->hist[bucket (lat)]++;
  w->lat_sum += lat;
  if (lat < w->lat_min)
    w->lat_min = lat;
  if (lat > w->lat_max)
    w->lat_max = lat;
  if (r->result != VIRTIO_BLK_S_OK)
    w->errors++;
  if (r->type == VIRTIO_BLK_T_IN)
    w->reads++;
  __atomic_store_n (&w->ios, w->ios + 1, __ATOMIC_RELAXED);
}

static int
submit (struct worker *w, struct vuc_req *r, unsigned slot)
{
  prepare (w, r, slot);
  if (vuc_blk_submit (w->ring, w->mem, r) == -1) {
    snprintf (w->err, sizeof w->err, "%s", vuc_error ());
    return -1;
  }
  return 0;
}

/* Waits for the outstanding requests so the ring is clean after. */
static void
drain (struct worker *w)
{
  uint64_t deadline = vuc_now_ns () + (uint64_t) w->timeout_ms * 1000000;
  int err;

  vuc_ring_kick (w->ring);
  while (w->ring->outstanding > 0) {
    while (vuc_blk_reap (w->ring, &err))
      ;
    if (err || (w->ring->outstanding > 0 &&
                vuc_ring_wait (w->ring, deadline) <= 0)) {
      if (!w->err[0])
        snprintf (w->err, sizeof w->err, "draining: %s", vuc_error ());
      return;
    }
  }
}

static void *
worker_run (void *arg)
{
  struct worker *w = arg;
  struct vuc_req *r;
  unsigned i;
  int err;

  for (i = 0; i < w->o->iodepth; i++)
    if (submit (w, &w->reqs[i], i) == -1)
      goto out;
  vuc_ring_kick (w->ring);
  while (!__atomic_load_n (w->stop, __ATOMIC_RELAXED)) {
    unsigned n = 0;
    uint64_t now = 0;
    while ((r = vuc_blk_reap (w->ring, &err)) != NULL) {
      if (n++ == 0 || (n & 15) == 0)
        now = vuc_now_ns ();
      account (w, r, now);
      if (submit (w, r, (uintptr_t) r->opaque) == -1)
        goto out;
    }
    if (err) {
      snprintf (w->err, sizeof w->err, "%s", vuc_error ());
      goto out;
    }
    if (n) {
      vuc_ring_kick (w->ring);
      continue;
    }
    if (vuc_ring_wait (w->ring, vuc_now_ns () + (uint64_t) w->timeout_ms
                       * 1000000) <= 0) {
      snprintf (w->err, sizeof w->err, "waiting: %s", vuc_error ());
      goto out;
    }
  }
 out:
  drain (w);
  return NULL;
}

/* ------------------------------------------------------------------ */

static const struct option bench_opts_long[] = {
  { "rw", required_argument, NULL, 'r' },
  { "bs", required_argument, NULL, 'b' },
  { "iodepth", required_argument, NULL, 'd' },
  { "queues", required_argument, NULL, 'q' },
  { "time", required_argument, NULL, 't' },
  { "poll", no_argument, NULL, 'p' },
  { "rwmixread", required_argument, NULL, 'm' },
  { "size", required_argument, NULL, 's' },
  { 0 }
};

static int
parse_rw (const char *arg, enum rw *rw)
{
  unsigned i;

  for (i = 0; i < sizeof rw_names / sizeof rw_names[0]; i++)
    if (strcmp (arg, rw_names[i]) == 0) {
      *rw = i;
      return 0;
    }
  fail ("--rw: randread, randwrite, read, write or randrw");
  return -1;
}

static int
parse_bench (int argc, char **argv, struct bench_opts *o)
{
  char *end;
  int c;

  while ((c = getopt_long (argc, argv, "", bench_opts_long, NULL)) != -1) {
    int r = 0;
    switch (c) {
    case 'r': r = parse_rw (optarg, &o->rw); break;
    case 'b': r = parse_uint ("--bs", optarg, &o->bs); break;
    case 'd': r = parse_uint ("--iodepth", optarg, &o->iodepth); break;
    case 'q': r = parse_uint ("--queues", optarg, &o->queues); break;
    case 'm': r = parse_uint ("--rwmixread", optarg, &o->rwmix); break;
    case 's': r = parse_u64 ("--size", optarg, &o->size); break;
    case 'p': o->poll = true; break;
    case 't':
      o->time_s = strtod (optarg, &end);
      if (*end || o->time_s <= 0 || o->time_s > 86400) {
        fail ("--time '%s': seconds", optarg);
        r = -1;
      }
      break;
    default: r = -1;
    }
    if (r == -1)
      return -1;
  }
  if (o->bs == 0 || o->bs % 512 || o->bs > CHUNK * 16 || o->iodepth == 0 ||
      o->iodepth > 1024 || o->queues == 0 || o->queues > VUC_MAX_QUEUES ||
      o->rwmix > 100) {
    fail ("--bs: a multiple of 512; --iodepth 1-1024; --queues 1-%d; "
          "--rwmixread 0-100", VUC_MAX_QUEUES);
    return -1;
  }
  return no_args_left (argc, argv, optind, 0);
}

/* Rings, requests and buffers for each queue. */
static int
setup_workers (struct session *s, struct bench_opts *o, struct worker *w,
               const int *stop)
{
  unsigned q, i;
  uint64_t span = o->size / o->queues / o->bs * o->bs;

  for (q = 0; q < o->queues; q++) {
    struct vuc_ring *ring = session_ring (s, q);
    if (ring == NULL)
      return -1;
    if (ring->outstanding) {
      fail ("queue %u has requests outstanding ('wait' first)", q);
      return -1;
    }
    if (o->iodepth * (ring->indirect ? 1 : 3) > ring->num) {
      fail ("--iodepth %u needs %u descriptors, the ring has %u "
            "(--queue-size)", o->iodepth, o->iodepth * (ring->indirect ? 1 : 3),
            ring->num);
      return -1;
    }
    memset (&w[q], 0, sizeof w[q]);
    w[q] = (struct worker) {
      .o = o, .ring = ring, .mem = &s->c.mem, .stop = stop,
      .rng = UINT64_C (0x9E3779B97F4A7C15) * (q + 1),
      .seq_start = q * span, .seq = q * span, .seq_end = (q + 1) * span,
      .lat_min = UINT64_MAX, .timeout_ms = s->c.timeout_ms,
    };
    w[q].reqs = calloc (o->iodepth, sizeof *w[q].reqs);
    w[q].bufs = vuc_mem_push (&s->c.mem, (uint64_t) o->iodepth * o->bs, 4096);
    if (w[q].reqs == NULL || w[q].bufs == NULL)
      return fail_vuc ("bench buffers");
    memset (w[q].bufs, 0xa5, (uint64_t) o->iodepth * o->bs);
    for (i = 0; i < o->iodepth; i++)
      if (vuc_req_setup (&s->c.mem, &w[q].reqs[i], true) == -1)
        return fail_vuc ("bench requests");
    ring->poll = o->poll;
  }
  return 0;
}

static uint64_t
total_ios (const struct worker *w, unsigned n)
{
  uint64_t t = 0;
  unsigned i;

  for (i = 0; i < n; i++)
    t += __atomic_load_n (&w[i].ios, __ATOMIC_RELAXED);
  return t;
}

/* Sleeps for the run time; a progress line each second on a tty. */
static double
run_clock (const struct bench_opts *o, struct worker *w, int *stop)
{
  bool tty = isatty (STDOUT_FILENO);
  uint64_t t0 = vuc_now_ns (), end = t0 + (uint64_t) (o->time_s * 1e9);
  uint64_t last_ios = 0, last_t = t0, now;

  while ((now = vuc_now_ns ()) < end) {
    uint64_t step = end - now < 1000000000 ? end - now : 1000000000;
    usleep (step / 1000);
    if (tty) {
      uint64_t ios = total_ios (w, o->queues), t = vuc_now_ns ();
      double iops = (ios - last_ios) / ((t - last_t) / 1e9);
      printf ("\r%6.1fs/%gs %12.0f IOPS %10.1f MiB/s\033[K",
              (t - t0) / 1e9, o->time_s, iops,
              iops * o->bs / (1024.0 * 1024));
      fflush (stdout);
      last_ios = ios;
      last_t = t;
    }
  }
  __atomic_store_n (stop, 1, __ATOMIC_RELAXED);
  if (tty)
    printf ("\r\033[K");
  return (vuc_now_ns () - t0) / 1e9;
}

struct totals {
  uint64_t ios, reads, errors, lat_sum, lat_min, lat_max, kicks, waits;
  uint64_t hist[NBUCKETS];
};

static void
merge (const struct worker *w, unsigned n, struct totals *t)
{
  unsigned i, b;

  memset (t, 0, sizeof *t);
  t->lat_min = UINT64_MAX;
  for (i = 0; i < n; i++) {
    t->ios += w[i].ios;
    t->reads += w[i].reads;
    t->errors += w[i].errors;
    t->lat_sum += w[i].lat_sum;
    t->lat_min = w[i].lat_min < t->lat_min ? w[i].lat_min : t->lat_min;
    t->lat_max = w[i].lat_max > t->lat_max ? w[i].lat_max : t->lat_max;
    t->kicks += w[i].ring->kicks;
    t->waits += w[i].ring->waits;
    for (b = 0; b < NBUCKETS; b++)
      t->hist[b] += w[i].hist[b];
  }
}

static double
percentile_us (const struct totals *t, double p)
{
  uint64_t want = (uint64_t) (p * t->ios + 0.999999), seen = 0;
  unsigned b;

  if (want == 0)
    want = 1;
  for (b = 0; b < NBUCKETS; b++) {
    seen += t->hist[b];
    if (seen >= want)
      return bucket_mid (b) / 1000;
  }
  return 0;
}

static void
report (const struct bench_opts *o, const struct totals *t, double secs)
{
  double iops = t->ios / secs, mibps = iops * o->bs / (1024.0 * 1024);
  double avg = t->ios ? t->lat_sum / (double) t->ios / 1000 : 0;
  double p50 = percentile_us (t, 0.50), p99 = percentile_us (t, 0.99);
  double p999 = percentile_us (t, 0.999);
  double min = t->ios ? t->lat_min / 1000.0 : 0, max = t->lat_max / 1000.0;

  printf ("  %-10s %" PRIu64 " in %.2f s (reads %" PRIu64 ", writes %" PRIu64
          ", errors %" PRIu64 ")\n", "requests", t->ios, secs, t->reads,
          t->ios - t->reads, t->errors);
  printf ("  %-10s %.0f\n", "IOPS", iops);
  printf ("  %-10s %.1f MiB/s\n", "bandwidth", mibps);
  printf ("  %-10s avg %.1f, min %.1f, p50 %.1f, p99 %.1f, p99.9 %.1f, "
          "max %.1f (us)\n", "latency", avg, min, p50, p99, p999, max);
  printf ("  %-10s %.3f kicks and %.3f waits per request\n", "notify",
          t->ios ? t->kicks / (double) t->ios : 0,
          t->ios ? t->waits / (double) t->ios : 0);
  printf ("bench rw=%s bs=%u iodepth=%u queues=%u poll=%d time=%.2f ios=%"
          PRIu64 " errors=%" PRIu64 " iops=%.0f mibps=%.1f lat_avg_us=%.1f "
          "lat_p50_us=%.1f lat_p99_us=%.1f lat_p999_us=%.1f "
          "lat_max_us=%.1f\n", rw_names[o->rw], o->bs, o->iodepth, o->queues,
          o->poll, secs, t->ios, t->errors, iops, mibps, avg, p50, p99, p999,
          max);
}

static int
run_workers (struct session *s, struct bench_opts *o, struct worker *w,
             int *stop)
{
  struct totals *t;
  unsigned q, started = 0;
  double secs = 0;
  int rc = 0;

  for (q = 0; q < o->queues; q++) {
    w[q].ring->kicks = w[q].ring->waits = 0;
    if (pthread_create (&w[q].thread, NULL, worker_run, &w[q]) != 0) {
      fail ("cannot start a bench thread");
      __atomic_store_n (stop, 1, __ATOMIC_RELAXED);
      rc = -1;
      break;
    }
    started++;
  }
  if (rc == 0)
    secs = run_clock (o, w, stop);
  for (q = 0; q < started; q++) {
    pthread_join (w[q].thread, NULL);
    if (w[q].err[0]) {
      fail ("queue %u: %s", q, w[q].err);
      rc = -1;
    }
  }
  t = malloc (sizeof *t);
  if (rc == 0 && t) {
    merge (w, o->queues, t);
    report (o, t, secs);
    if (t->errors)
      fail ("%" PRIu64 " requests failed", t->errors);
    rc = t->errors ? -1 : 0;
  }
  free (t);
  return rc;
}

int
cmd_bench (struct session *s, int argc, char **argv)
{
  struct bench_opts o = {
    .rw = RANDREAD, .bs = 4096, .iodepth = 1, .queues = 1, .rwmix = 50,
    .time_s = 5,
  };
  uint64_t mark = vuc_mem_mark (&s->c.mem);
  struct vuc_blk_info inf;
  struct worker *w = NULL;
  unsigned q;
  int stop = 0, rc = -1;

  o.poll = s->c.poll;
  if (parse_bench (argc, argv, &o) == -1 || session_start (s) == -1)
    return -1;
  vuc_blk_info (&s->c, &inf);
  if (o.size == 0 || o.size > inf.capacity)
    o.size = inf.capacity;
  if (o.size < (uint64_t) o.bs * o.queues) {
    fail ("the disk (%" PRIu64 " bytes) is too small for --bs", o.size);
    return -1;
  }
  if (s->naio) {
    fail ("asynchronous requests are outstanding ('wait' first)");
    return -1;
  }
  printf ("bench: rw=%s bs=%u iodepth=%u queues=%u time=%gs%s on %s\n",
          rw_names[o.rw], o.bs, o.iodepth, o.queues, o.time_s,
          o.poll ? " poll" : "", s->c.path);
  w = calloc (o.queues, sizeof *w);
  if (w && setup_workers (s, &o, w, &stop) == 0)
    rc = run_workers (s, &o, w, &stop);
  for (q = 0; w && q < o.queues; q++) {
    free (w[q].reqs);
    if (w[q].ring)
      w[q].ring->poll = s->c.poll;
  }
  free (w);
  vuc_mem_release (&s->c.mem, mark);
  return rc;
}
