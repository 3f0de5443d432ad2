/* blkgate-io soak: a long write-and-verify load that lives through
 * back-end crashes and migrations (contrib/soak drives the faults).
 *
 * It keeps --depth requests outstanding on each queue: writes of 1 to
 * --max-blocks 4 KiB blocks at random places, each with its own seeded
 * pattern, and (--read-pct of them) reads that verify what the blocks
 * must hold.  Per block it remembers the seed of the last write the
 * back-end ACKNOWLEDGED; a request never overlaps one in flight, so that
 * value is exact: a write lost, or a completed one executed again after
 * a restart, shows up as a mismatch.  The disk must start zeroed.
 *
 * Faults: a back-end that goes away is reconnected as QEMU does with
 * reconnect=1 (same memory and inflight region, base = used->idx); the
 * control FIFO (--control) takes one command a line:
 *   migrate SOCKET [--skip-drain]   stop every ring and start on SOCKET
 *   stop                            drain, verify the whole range, then
 *                                   wait for 'check FILE' or 'end'
 *   check FILE                      compare FILE (the image) too, end
 *   end                             end
 * and each is answered by a line 'soak: ...' on stdout.  Without
 * --control, --time ends the run (and --image is checked at the end).
 *
 * The figures go to stdout as 'figure NAME VALUE' lines; the command
 * fails on any lost write or unexpected error. */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <glib.h>

#include "cli.h"

#define BLK 4096u
#define MAX_BLKS 64u            /* per request: 256 KiB */
#define MAX_DEPTH 64u
#define UNKNOWN UINT64_MAX       /* a write failed: content undefined */

struct sreq {
  struct vuc_req req;           /* first: reap hands back &req */
  unsigned queue;
  bool write, busy, sweep;
  uint64_t blk, nblk;
  uint64_t seed;
  uint64_t seq;                 /* submission order */
  uint8_t *buf;
};

struct figures {
  uint64_t writes, write_bytes, reads, read_bytes;
  uint64_t reconnects, outstanding_at_hangup, overtaken_at_hangup;
  uint64_t idle_hangups;        /* nothing was in flight */
  uint64_t migrations, skip_drain_migrations;
  uint64_t inflight_at_migration, handed_over;  /* before the stop; after */
  uint64_t max_reconnect_ns, max_stall_ns;
  uint64_t mismatched_blocks, errors;
};

struct soak {
  struct session *s;
  /* Options. */
  unsigned depth, max_blks, read_pct;
  uint64_t nblocks, seed;
  double time_s;
  const char *control, *image;
  int timeout_ms;
  /* State. */
  uint64_t rng, gen, seq, done_seq;
  uint64_t *expect;             /* per block: seed, 0 (zero), UNKNOWN */
  uint8_t *lock;                /* per block: a request in flight */
  struct sreq *reqs;            /* queues * depth */
  unsigned nq, busy;
  uint64_t t0, last_done, last_report;
  int ctl;
  char line[1024];
  size_t line_len;
  bool stopping, ended, fatal;
  GHashTable *lost;             /* seeds of acknowledged writes not found */
  uint8_t *expect_buf;
  struct figures f;
};

static uint64_t
rnd (struct soak *k)
{
  uint64_t x = (k->rng += UINT64_C (0x9e3779b97f4a7c15));
  x = (x ^ (x >> 30)) * UINT64_C (0xbf58476d1ce4e5b9);
  x = (x ^ (x >> 27)) * UINT64_C (0x94d049bb133111eb);
  return x ^ (x >> 31);
}

static void
error_count (struct soak *k, bool fatal, const char *fmt, ...)
  __attribute__ ((format (printf, 3, 4)));

static void
error_count (struct soak *k, bool fatal, const char *fmt, ...)
{
  va_list ap;

  k->f.errors++;
  k->fatal |= fatal;
  printf ("soak: ERROR: ");
  va_start (ap, fmt);
  vprintf (fmt, ap);
  va_end (ap);
  printf ("\n");
}

/* ------------------------------------------------------------------ */
/* Checking data */

/* Compares one block read back with what it must hold. */
static void
check_block (struct soak *k, uint64_t blk, const uint8_t *got,
             const char *where)
{
  uint64_t want = k->expect[blk];

  if (want == UNKNOWN)
    return;
  if (want == 0)
    memset (k->expect_buf, 0, BLK);
  else
    pattern_fill (k->expect_buf, blk * BLK, BLK, -1, want);
  if (memcmp (got, k->expect_buf, BLK) == 0)
    return;
  k->f.mismatched_blocks++;
  if (want != 0)
    g_hash_table_add (k->lost, g_memdup2 (&want, sizeof want));
  printf ("soak: MISMATCH (%s) at block %" PRIu64 " (offset %" PRIu64
          "): expected %s%" PRIx64 "\n", where, blk, blk * BLK,
          want ? "the write with seed 0x" : "zeroes", want);
  k->expect[blk] = UNKNOWN;     /* report each block once */
}

/* ------------------------------------------------------------------ */
/* Requests */

static bool
range_free (const struct soak *k, uint64_t blk, uint64_t n)
{
  uint64_t i;

  for (i = 0; i < n; i++)
    if (k->lock[blk + i])
      return false;
  return true;
}

static int
submit (struct soak *k, struct sreq *r, bool write, uint64_t blk,
        uint64_t n)
{
  struct vuc_ring *ring = k->s->c.rings[r->queue];

  r->write = write;
  r->blk = blk;
  r->nblk = n;
  r->seed = write ? ((++k->gen) << 32) | (k->seed & 0xffffffff) : 0;
  if (write)
    pattern_fill (r->buf, blk * BLK, n * BLK, -1, r->seed);
  vuc_req_rw (&r->req, write, blk * BLK, vuc_gpa (&k->s->c.mem, r->buf),
              n * BLK);
  if (vuc_blk_submit (ring, &k->s->c.mem, &r->req) == -1) {
    error_count (k, true, "queue %u: submit: %s", r->queue, vuc_error ());
    return -1;
  }
  memset (k->lock + blk, 1, n);
  r->busy = true;
  r->seq = ++k->seq;
  k->busy++;
  return 0;
}

/* A random request for r; false when the place drawn is busy. */
static bool
submit_random (struct soak *k, struct sreq *r)
{
  uint64_t n = 1 + rnd (k) % k->max_blks, blk;
  bool write = rnd (k) % 100 >= k->read_pct;

  if (n > k->nblocks)
    n = k->nblocks;
  blk = rnd (k) % (k->nblocks - n + 1);
  if (!range_free (k, blk, n))
    return false;
  return submit (k, r, write, blk, n) == 0;
}

static void
complete (struct soak *k, struct sreq *r)
{
  uint64_t i;

  r->busy = false;
  k->busy--;
  memset (k->lock + r->blk, 0, r->nblk);
  if (r->seq > k->done_seq)
    k->done_seq = r->seq;
  if (r->req.result != VIRTIO_BLK_S_OK) {
    error_count (k, false, "%s of %" PRIu64 " blocks at block %" PRIu64
                 ": status %s", r->write ? "write" : "read", r->nblk, r->blk,
                 vuc_status_name (r->req.result));
    if (r->write)
      for (i = 0; i < r->nblk; i++)
        k->expect[r->blk + i] = UNKNOWN;
    return;
  }
  if (r->write) {
    for (i = 0; i < r->nblk; i++)
      k->expect[r->blk + i] = r->seed;
    k->f.writes++;
    k->f.write_bytes += r->nblk * BLK;
    return;
  }
  for (i = 0; i < r->nblk; i++)
    check_block (k, r->blk + i, r->buf + i * BLK,
                 r->sweep ? "final read" : "verify read");
  k->f.reads++;
  k->f.read_bytes += r->nblk * BLK;
}

/* Reaps every ring; the number of completions, -1 on a bad used entry. */
static int
reap_all (struct soak *k)
{
  unsigned q;
  int n = 0, err;
  struct vuc_req *r;

  for (q = 0; q < k->nq; q++) {
    while ((r = vuc_blk_reap (k->s->c.rings[q], &err)) != NULL) {
      complete (k, (struct sreq *) r);
      n++;
    }
    if (err) {
      error_count (k, true, "%s", vuc_error ());
      return -1;
    }
  }
  if (n)
    k->last_done = vuc_now_ns ();
  return n;
}

/* ------------------------------------------------------------------ */
/* Faults */

static unsigned
overtaken (const struct soak *k)
{
  unsigned i, n = 0;

  for (i = 0; i < k->nq * k->depth; i++)
    n += k->reqs[i].busy && k->reqs[i].seq < k->done_seq;
  return n;
}

/* The back-end went away: reconnect as QEMU with reconnect=1. */
static int
reconnect (struct soak *k)
{
  struct session *s = k->s;
  int limit = s->auto_reconnect_ms ? s->auto_reconnect_ms : 60000;
  uint64_t t0 = vuc_now_ns (), took;
  unsigned over = overtaken (k);

  k->f.outstanding_at_hangup += k->busy;
  k->f.idle_hangups += k->busy == 0;
  k->f.overtaken_at_hangup += over;
  while (vuc_reconnect (&s->c, limit - (int) ((vuc_now_ns () - t0) / 1000000))
         == -1) {
    if (!s->c.hangup || vuc_now_ns () - t0 >= (uint64_t) limit * 1000000) {
      error_count (k, true, "reconnect: %s", vuc_error ());
      return -1;
    }
    usleep (20000);
  }
  took = vuc_now_ns () - t0;
  if (took > k->f.max_reconnect_ns)
    k->f.max_reconnect_ns = took;
  k->f.reconnects++;
  printf ("soak: reconnected in %.1f ms (%u requests outstanding, %u of "
          "them overtaken)\n", took / 1e6, k->busy, over);
  return 0;
}

/* migrate SOCKET [--skip-drain]: QEMU's switch-over. */
static int
migrate (struct soak *k, const char *path, bool skip)
{
  struct vuc_conn *c = &k->s->c;
  /* With bit 23 too, num = 1 drains: message 45 suspends. */
  enum vuc_stop_mode mode = !skip ? VUC_STOP_DRAIN
    : vuc_has_pf (c, VU_PF_GET_VRING_BASE_SKIP_DRAIN) ? VUC_STOP_MSG45
    : VUC_STOP_SKIP_DRAIN;
  uint64_t t0 = vuc_now_ns ();
  unsigned q, busy_before = k->busy;
  uint16_t base;
  uint64_t us;

  if (skip && !vuc_has_pf (c, VU_PF_GET_VRING_BASE_INFLIGHT)) {
    error_count (k, true, "migrate --skip-drain: protocol feature %u is "
                 "not negotiated (--inflight-migration)",
                 VU_PF_GET_VRING_BASE_INFLIGHT);
    return -1;
  }
  for (q = 0; q < k->nq; q++)
    if (c->rings[q]->started && c->rings[q]->enabled) {
      if (vuc_set_state (c, VU_SET_VRING_ENABLE, q, 0) == -1)
        goto fail;
      c->rings[q]->enabled = false;
    }
  for (q = 0; q < k->nq; q++)
    if (c->rings[q]->started &&
        vuc_stop_queue (c, q, mode, &base, &us) == -1)
      goto fail;
  if (reap_all (k) == -1)
    return -1;
  k->f.inflight_at_migration += busy_before;
  k->f.handed_over += k->busy;
  if (vuc_migrate (c, path, true) == -1)
    goto fail;
  k->f.migrations++;
  k->f.skip_drain_migrations += skip;
  printf ("soak: migrated to %s in %.1f ms (%s; %u requests outstanding "
          "before, %u after the stop)\n", path, (vuc_now_ns () - t0) / 1e6,
          skip ? "skip-drain" : "drain", busy_before, k->busy);
  return 0;

 fail:
  error_count (k, true, "migrate to %s: %s", path, vuc_error ());
  return -1;
}

/* ------------------------------------------------------------------ */
/* The control FIFO */

static void sweep (struct soak *k);
static void check_image (struct soak *k, const char *path);

static void
control_line (struct soak *k, char *line)
{
  char *arg = strchr (line, ' ');

  if (arg)
    *arg++ = '\0';
  if (strcmp (line, "migrate") == 0 && arg) {
    char *opt = strstr (arg, " --skip-drain");
    if (opt)
      *opt = '\0';
    migrate (k, arg, opt != NULL);
  }
  else if (strcmp (line, "stop") == 0)
    k->stopping = true;
  else if (strcmp (line, "check") == 0 && arg) {
    check_image (k, arg);
    k->ended = true;
  }
  else if (strcmp (line, "end") == 0)
    k->ended = true;
  else
    printf ("soak: unknown control command '%s'\n", line);
}

/* Reads what the FIFO has; wait_ms > 0 waits for something. */
static void
control_poll (struct soak *k, int wait_ms)
{
  struct pollfd p = { .fd = k->ctl, .events = POLLIN };
  ssize_t n;
  char *nl;

  if (k->ctl < 0 || poll (&p, 1, wait_ms) <= 0)
    return;
  n = read (k->ctl, k->line + k->line_len, sizeof k->line - 1 - k->line_len);
  if (n <= 0)
    return;
  k->line_len += n;
  k->line[k->line_len] = '\0';
  while ((nl = strchr (k->line, '\n')) != NULL) {
    *nl = '\0';
    control_line (k, k->line);
    memmove (k->line, nl + 1, k->line_len - (nl + 1 - k->line) + 1);
    k->line_len -= nl + 1 - k->line;
  }
  if (k->line_len == sizeof k->line - 1)
    k->line_len = 0;            /* a line too long: dropped */
}

/* ------------------------------------------------------------------ */
/* The loop */

/* Waits a little for a completion on any ring with requests out. */
static int
wait_some (struct soak *k)
{
  static unsigned next;
  unsigned i;

  for (i = 0; i < k->nq; i++) {
    struct vuc_ring *r = k->s->c.rings[(next + i) % k->nq];
    if (r->outstanding == 0)
      continue;
    next = (next + i + 1) % k->nq;
    if (vuc_ring_wait (r, vuc_now_ns () + 5000000) >= 0)
      return 0;
    if (r->hangup || k->s->c.hangup)
      return reconnect (k);
    error_count (k, true, "%s", vuc_error ());
    return -1;
  }
  control_poll (k, 5);
  return 0;
}

static void
fill (struct soak *k)
{
  unsigned q, i, tries;

  for (q = 0; q < k->nq; q++) {
    for (i = 0; i < k->depth; i++) {
      struct sreq *r = &k->reqs[q * k->depth + i];
      for (tries = 0; !r->busy && tries < 4 && !k->fatal; tries++)
        submit_random (k, r);
    }
    vuc_ring_kick (k->s->c.rings[q]);
  }
}

static void
progress (struct soak *k, uint64_t now)
{
  if (now - k->last_report < UINT64_C (10000000000))
    return;
  k->last_report = now;
  printf ("soak: %.0f s: %" PRIu64 " writes, %" PRIu64 " verify reads, %"
          PRIu64 " reconnects, %" PRIu64 " migrations, %" PRIu64
          " mismatched blocks, %" PRIu64 " errors\n", (now - k->t0) / 1e9,
          k->f.writes, k->f.reads, k->f.reconnects, k->f.migrations,
          k->f.mismatched_blocks, k->f.errors);
}

/* Runs until 'stop' (or --time) and every request is back. */
static void
run_load (struct soak *k)
{
  uint64_t now;

  while (!k->fatal && !k->ended && !(k->stopping && k->busy == 0)) {
    if (!k->stopping)
      fill (k);
    if (reap_all (k) == -1)
      return;
    if (k->busy && reap_all (k) == 0 && wait_some (k) == -1)
      return;
    if (!k->busy)
      control_poll (k, k->stopping ? 0 : 1);
    else
      control_poll (k, 0);
    now = vuc_now_ns ();
    if (k->busy && now - k->last_done > (uint64_t) k->timeout_ms * 1000000) {
      error_count (k, true, "no completion for %d ms (%u requests "
                   "outstanding)", k->timeout_ms, k->busy);
      return;
    }
    if (k->busy && now - k->last_done > k->f.max_stall_ns)
      k->f.max_stall_ns = now - k->last_done;
    if (!k->busy)
      k->last_done = now;
    if (k->time_s > 0 && now - k->t0 >= k->time_s * 1e9)
      k->stopping = true;
    progress (k, now);
  }
}

/* Reads every block back through the back-end, in request-size pieces
 * on the first queue. */
static void
sweep (struct soak *k)
{
  uint64_t blk = 0, n;
  unsigned i;

  while (!k->fatal && (blk < k->nblocks || k->busy)) {
    for (i = 0; i < k->depth && blk < k->nblocks; i++) {
      struct sreq *r = &k->reqs[i];
      if (r->busy)
        continue;
      n = k->nblocks - blk < k->max_blks ? k->nblocks - blk : k->max_blks;
      r->sweep = true;
      if (submit (k, r, false, blk, n) == -1)
        return;
      blk += n;
    }
    vuc_ring_kick (k->s->c.rings[0]);
    if (reap_all (k) == 0 && wait_some (k) == -1)
      return;
  }
  printf ("soak: read back all %" PRIu64 " blocks through the back-end\n",
          k->nblocks);
}

/* After a fatal error: what is still in flight may land or not. */
static void
abandon (struct soak *k)
{
  unsigned i;
  uint64_t b;

  for (i = 0; i < k->nq * k->depth; i++) {
    struct sreq *r = &k->reqs[i];
    if (r->busy && r->write)
      for (b = 0; b < r->nblk; b++)
        k->expect[r->blk + b] = UNKNOWN;
  }
}

/* Compares the image (the NBD export copied out, or its file). */
static void
check_image (struct soak *k, const char *path)
{
  int fd = open (path, O_RDONLY | O_CLOEXEC);
  uint8_t *buf = malloc (BLK);
  uint64_t blk, before = k->f.mismatched_blocks;

  if (fd == -1 || buf == NULL) {
    error_count (k, false, "%s: %s", path, strerror (errno));
    goto out;
  }
  for (blk = 0; blk < k->nblocks; blk++) {
    if (pread (fd, buf, BLK, blk * BLK) != BLK) {
      error_count (k, false, "%s: cannot read block %" PRIu64, path, blk);
      break;
    }
    check_block (k, blk, buf, "image");
  }
  printf ("soak: checked %" PRIu64 " blocks of %s: %" PRIu64
          " mismatched\n", blk, path, k->f.mismatched_blocks - before);
 out:
  free (buf);
  if (fd >= 0)
    close (fd);
}

/* ------------------------------------------------------------------ */
/* Setup and figures */

static int
setup (struct soak *k, unsigned nq, uint64_t size)
{
  struct session *s = k->s;
  struct vuc_blk_info inf;
  unsigned i, q;

  if (session_start (s) == -1)
    return -1;
  for (q = 0; q < nq; q++)
    if (session_ring (s, q) == NULL)
      return -1;
  k->nq = nq;
  vuc_blk_info (&s->c, &inf);
  if (inf.readonly) {
    fail ("the disk is read-only");
    return -1;
  }
  if (size == 0 || size > inf.capacity)
    size = inf.capacity;
  k->nblocks = size / BLK;
  if (k->nblocks == 0) {
    fail ("the disk is smaller than one block");
    return -1;
  }
  k->expect = calloc (k->nblocks, sizeof *k->expect);
  k->lock = calloc (k->nblocks, 1);
  k->reqs = calloc (nq * k->depth, sizeof *k->reqs);
  k->expect_buf = malloc (BLK);
  if (!k->expect || !k->lock || !k->reqs || !k->expect_buf) {
    fail ("out of memory");
    return -1;
  }
  for (i = 0; i < nq * k->depth; i++) {
    struct sreq *r = &k->reqs[i];
    r->queue = i / k->depth;
    r->buf = vuc_mem_push (&s->c.mem, MAX_BLKS * BLK, 4096);
    if (r->buf == NULL || vuc_req_setup (&s->c.mem, &r->req, false) == -1)
      return fail_vuc ("guest memory (try a larger -m)");
  }
  return 0;
}

static void
figures (struct soak *k)
{
  struct figures *f = &k->f;

  printf ("figure seed %" PRIu64 "\n", k->seed);
  printf ("figure duration_s %.1f\n", (vuc_now_ns () - k->t0) / 1e9);
  printf ("figure blocks %" PRIu64 "\n", k->nblocks);
  printf ("figure queues %u\n", k->nq);
  printf ("figure depth %u\n", k->depth);
  printf ("figure writes_acked %" PRIu64 "\n", f->writes);
  printf ("figure bytes_written %" PRIu64 "\n", f->write_bytes);
  printf ("figure verify_reads %" PRIu64 "\n", f->reads);
  printf ("figure bytes_verified %" PRIu64 "\n", f->read_bytes);
  printf ("figure reconnects %" PRIu64 "\n", f->reconnects);
  printf ("figure outstanding_at_hangups %" PRIu64 "\n",
          f->outstanding_at_hangup);
  printf ("figure overtaken_at_hangups %" PRIu64 "\n",
          f->overtaken_at_hangup);
  printf ("figure idle_hangups %" PRIu64 "\n", f->idle_hangups);
  printf ("figure migrations %" PRIu64 "\n", f->migrations);
  printf ("figure skip_drain_migrations %" PRIu64 "\n",
          f->skip_drain_migrations);
  printf ("figure inflight_at_migrations %" PRIu64 "\n",
          f->inflight_at_migration);
  printf ("figure handed_over_at_migrations %" PRIu64 "\n", f->handed_over);
  printf ("figure max_reconnect_ms %.1f\n", f->max_reconnect_ns / 1e6);
  printf ("figure max_stall_ms %.1f\n", f->max_stall_ns / 1e6);
  printf ("figure mismatched_blocks %" PRIu64 "\n", f->mismatched_blocks);
  printf ("figure lost_writes %u\n", g_hash_table_size (k->lost));
  printf ("figure unexpected_errors %" PRIu64 "\n", f->errors);
}

static const struct option soak_opts[] = {
  { "time", required_argument, NULL, 't' },
  { "depth", required_argument, NULL, 'd' },
  { "queues", required_argument, NULL, 'q' },
  { "size", required_argument, NULL, 's' },
  { "seed", required_argument, NULL, 'S' },
  { "max-blocks", required_argument, NULL, 'b' },
  { "read-pct", required_argument, NULL, 'r' },
  { "control", required_argument, NULL, 'c' },
  { "image", required_argument, NULL, 'i' },
  { 0 }
};

static int
parse_opts (struct soak *k, int argc, char **argv, unsigned *nq,
            uint64_t *size)
{
  int o;

  while ((o = getopt_long (argc, argv, "", soak_opts, NULL)) != -1) {
    int rc = 0;
    switch (o) {
    case 't': k->time_s = atof (optarg); break;
    case 'd': rc = parse_uint ("--depth", optarg, &k->depth); break;
    case 'q': rc = parse_uint ("--queues", optarg, nq); break;
    case 's': rc = parse_u64 ("--size", optarg, size); break;
    case 'S': rc = parse_u64 ("--seed", optarg, &k->seed); break;
    case 'b': rc = parse_uint ("--max-blocks", optarg, &k->max_blks); break;
    case 'r': rc = parse_uint ("--read-pct", optarg, &k->read_pct); break;
    case 'c': k->control = optarg; break;
    case 'i': k->image = optarg; break;
    default: return -1;
    }
    if (rc == -1)
      return -1;
  }
  if (k->depth == 0 || k->depth > MAX_DEPTH || k->max_blks == 0 ||
      k->max_blks > MAX_BLKS || k->read_pct > 100 || *nq == 0 ||
      *nq > VUC_MAX_QUEUES) {
    fail ("--depth 1-%u, --max-blocks 1-%u, --read-pct 0-100, --queues "
          "1-%d", MAX_DEPTH, MAX_BLKS, VUC_MAX_QUEUES);
    return -1;
  }
  if (k->control == NULL && k->time_s <= 0) {
    fail ("--time or --control is needed");
    return -1;
  }
  return no_args_left (argc, argv, optind, 0);
}

int
cmd_soak (struct session *s, int argc, char **argv)
{
  struct soak k = { .s = s, .depth = 8, .max_blks = 16, .read_pct = 25,
                    .ctl = -1, .timeout_ms = s->c.timeout_ms };
  unsigned nq = s->c.nqueues ? s->c.nqueues : 1;
  uint64_t size = 0, mark = vuc_mem_mark (&s->c.mem);
  unsigned i;
  bool bad;

  k.seed = vuc_now_ns () ^ getpid ();
  if (parse_opts (&k, argc, argv, &nq, &size) == -1)
    return -1;
  k.rng = k.seed;
  k.lost = g_hash_table_new_full (g_int64_hash, g_int64_equal, g_free, NULL);
  if (k.control &&
      (k.ctl = open (k.control, O_RDWR | O_NONBLOCK | O_CLOEXEC)) == -1) {
    fail ("%s: %s", k.control, strerror (errno));
    goto out;
  }
  if (setup (&k, nq, size) == -1)
    goto out;
  printf ("soak: seed %" PRIu64 ", %" PRIu64 " blocks of 4 KiB, %u queues, "
          "depth %u\n", k.seed, k.nblocks, k.nq, k.depth);
  k.t0 = k.last_done = k.last_report = vuc_now_ns ();
  run_load (&k);
  if (!k.fatal && !k.ended)
    sweep (&k);
  if (k.fatal)
    abandon (&k);
  printf ("soak: drained%s\n", k.fatal ? " (given up after an error)" : "");
  /* The image is still worth comparing after an error (a write executed
   * again shows there); the driver has a minute to copy it. */
  for (i = 0; !k.ended && k.ctl >= 0 && i < 60; i++)
    control_poll (&k, 1000);
  if (k.image)
    check_image (&k, k.image);
  figures (&k);
 out:
  bad = k.fatal || k.f.errors || k.f.mismatched_blocks ||
    g_hash_table_size (k.lost);
  if (k.ctl >= 0)
    close (k.ctl);
  g_hash_table_destroy (k.lost);
  free (k.expect);
  free (k.lock);
  free (k.reqs);
  free (k.expect_buf);
  vuc_mem_release (&s->c.mem, mark);
  if (bad)
    fail ("lost writes or unexpected errors (see above)");
  return bad ? -1 : 0;
}
