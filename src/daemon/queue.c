/* A virtqueue and the thread that serves it.
 *
 * Thread model: each started queue has one thread, which alone reads
 * and writes its ring, its requests and its plugin queue context.  It
 * waits in epoll on the kick eventfd, a command eventfd and the
 * plugin's fd.  The control (main) thread never touches that state
 * while the thread runs: it posts a command (a function and argument
 * in a slot, then a write to the command eventfd) and waits until the
 * thread has run it.  Stop and pause are commands too; the thread
 * reports "drained" through the same mutex and condition variable.
 * The hot path takes no lock. */

#include <config.h>

#include <endian.h>
#include <errno.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/mman.h>
#include <sys/eventfd.h>

#include "log.h"
#include "queue.h"

enum { EV_KICK, EV_CMD, EV_PLUGIN };

#define CHAIN_MAX_IOV(num) ((num) + 8)
#define PUBLISH_EVERY 1
#define SIGNAL_BACKLOG 8  /* a saturated queue notifies below this backlog */

static uint64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * UINT64_C (1000000000) + ts.tv_nsec;
}

void
queue_init (struct queue *q, unsigned index, struct backend *be)
{
  memset (q, 0, sizeof *q);
  q->index = index;
  q->be = be;
  q->kick_fd = q->call_fd = q->err_fd = -1;
  q->epfd = q->cmd_fd = -1;
  q->plugin_fd = -1;
  pthread_mutex_init (&q->lock, NULL);
  pthread_cond_init (&q->cond, NULL);
}

static void
replace_fd (int *slot, int fd)
{
  if (*slot >= 0)
    close (*slot);
  *slot = fd;
}

/* Runs fn on the queue thread (or directly when there is none) and
 * waits until it has run. */
static void
queue_call (struct queue *q, void (*fn) (struct queue *, void *), void *arg)
{
  if (!q->running) {
    fn (q, arg);
    return;
  }
  pthread_mutex_lock (&q->lock);
  q->cmd = fn;
  q->cmd_arg = arg;
  q->cmd_done = false;
  pthread_mutex_unlock (&q->lock);
  eventfd_write (q->cmd_fd, 1);
  pthread_mutex_lock (&q->lock);
  while (!q->cmd_done)
    pthread_cond_wait (&q->cond, &q->lock);
  pthread_mutex_unlock (&q->lock);
}

static void
run_command (struct queue *q)
{
  eventfd_t v;

  eventfd_read (q->cmd_fd, &v);
  pthread_mutex_lock (&q->lock);
  if (q->cmd && !q->cmd_done) {
    q->cmd (q, q->cmd_arg);
    q->cmd = NULL;
    q->cmd_done = true;
    pthread_cond_broadcast (&q->cond);
  }
  pthread_mutex_unlock (&q->lock);
}

/* The guest broke the ring's rules: stop serving it (requests already
 * in flight still complete) and tell the front-end if it listens. */
static void
mark_broken (struct queue *q, const char *why)
{
  blkgate_error ("queue %u: %s: ring stopped until the device is reset",
                 q->index, why);
  q->broken = true;
  if (q->err_fd >= 0)
    eventfd_write (q->err_fd, 1);
}

/* Logs every writable buffer of the chain (data and status byte),
 * after we wrote it.  blk_parse took the status byte off the last
 * piece's length. */
static bool
log_request (struct queue *q, const struct chain *c)
{
  unsigned i;

  for (i = c->nout; i < c->niov; i++)
    if (!dirty_log_mark (q->log, c->gpa[i],
                         c->iov[i].iov_len + (i == c->niov - 1)))
      return false;
  return true;
}

void
queue_request_done (struct request *r)
{
  struct queue *q = r->q;
  uint32_t len;

  if (q->suspending) {
    /* Still in flight for the region; the destination resubmits it.
     * A read already filled guest buffers: log them for migration. */
    if (q->log && !log_request (q, &r->chain))
      mark_broken (q, "a guest buffer lies outside the dirty log");
    r->busy = false;
    __atomic_store_n (&r->t_start, 0, __ATOMIC_RELAXED);
    __atomic_store_n (&q->inflight, q->inflight - 1, __ATOMIC_RELAXED);
    q->suspended++;
    return;
  }
  /* A request refused at parsing (past the end, unsupported) is an
   * error too. */
  stats_request (q->stats, &r->blk, r->err || (r->blk.op == BLK_OP_NONE &&
                                               r->blk.status != VIRTIO_BLK_S_OK),
                 q->round_ns - r->t_start);
  __atomic_store_n (&r->t_start, 0, __ATOMIC_RELAXED);
  len = blk_finish (&r->blk, r->err);
  /* A write we cannot log must not be reported: the destination would
   * get a stale page.  The request stays in flight in the region. */
  if (q->log && !log_request (q, &r->chain)) {
    mark_broken (q, "a guest buffer lies outside the dirty log");
    r->busy = false;
    __atomic_store_n (&q->inflight, q->inflight - 1, __ATOMIC_RELAXED);
    return;
  }
  if (r->err)
    debug ("queue %u: request %u failed: %s", q->index, r->chain.head,
           strerror (r->err));
  else if (r->blk.op == BLK_OP_NONE && r->blk.why)
    debug ("queue %u: request %u refused: %s", q->index, r->chain.head,
           r->blk.why);
  vring_push (&q->vr, r->chain.head, len);
  inflight_link (&q->ir, r->chain.head);
  q->batch[q->nbatch++] = r->chain.head;
  r->busy = false;
  __atomic_store_n (&q->inflight, q->inflight - 1, __ATOMIC_RELAXED);
}

/* Starts the request in q->spare.  A resubmitted one is already
 * recorded in the inflight region with its original counter. */
static void
start_request (struct queue *q, bool resubmit)
{
  struct request *r = &q->reqs[q->spare.head];
  struct chain tmp;

  if (r->busy) {
    mark_broken (q, "guest reused a head that is still in flight");
    return;
  }
  tmp = r->chain;               /* swap iovec arrays, no copy */
  r->chain = q->spare;
  q->spare = tmp;
  if (blk_parse (&q->blk, &r->blk, r->chain.iov, r->chain.niov,
                 r->chain.nout) == -1) {
    mark_broken (q, "request has no writable status byte");
    return;
  }
  r->busy = true;
  __atomic_store_n (&r->t_start, q->round_ns, __ATOMIC_RELAXED);
  __atomic_store_n (&q->inflight, q->inflight + 1, __ATOMIC_RELAXED);
  if (!resubmit)
    inflight_begin (&q->ir, &r->chain);
  if (r->blk.op == BLK_OP_NONE)
    queue_request_done (r);
  else
    backend_start (&q->bq, r);
}

static bool
can_issue (const struct queue *q)
{
  return q->enabled && !q->paused && !q->stopping && !q->broken;
}

/* New requests wait until every recovered one has been resubmitted. */
static bool
can_fetch (const struct queue *q)
{
  return can_issue (q) && q->recover_pos == q->nrecover;
}

/* Resubmits recovered requests one at a time, oldest first, so that
 * overlapping writes land in their original order. */
static void
resubmit (struct queue *q)
{
  const char *err;

  while (q->recover_pos < q->nrecover && q->inflight == 0 && !q->paused &&
         !q->broken && !q->suspending && (q->enabled || q->stopping)) {
    uint16_t head = q->recover[q->recover_pos++];
    if (inflight_walk (&q->ir, &q->vr, q->mem, head, &q->spare,
                       &err) == -1) {
      mark_broken (q, err);
      return;
    }
    debug ("queue %u: resubmitting head %u", q->index, head);
    start_request (q, true);
  }
}

static void publish (struct queue *q, bool end_of_round);

/* Pops everything available.  With EVENT_IDX, asks for the next kick
 * and looks again, so an entry added meanwhile is not missed.
 * Completions are published every PUBLISH_EVERY requests rather than
 * at the end of a long batch, so the driver can reap and refill while
 * this thread goes on: both sides stay busy instead of taking turns.
 * At most a ring's worth per call: a guest that never stops adding
 * entries (or whose avail index lies on the used ring, so each
 * completion looks like a new entry) must not keep the thread from
 * the front-end's commands, which the main thread waits for.  The
 * thread loop comes back without sleeping while q->kicked is set. */
static void
fetch (struct queue *q)
{
  unsigned budget = q->vr.num;
  const char *err;
  int r;

  for (;;) {
    while (can_fetch (q) &&
           (r = vring_pop (&q->vr, q->mem, &q->spare, &err)) != 0) {
      if (r == -1) {
        mark_broken (q, err);
        return;
      }
      start_request (q, false);
      if (q->nbatch >= PUBLISH_EVERY)
        publish (q, false);
      if (--budget == 0) {
        q->kicked = true;       /* there may be more: look again soon */
        return;
      }
    }
    if (!can_fetch (q) || q->polling || !vring_arm_kick (&q->vr))
      return;
  }
}

/* Makes the batch visible, then clears its inflight flags and records
 * the new used index, in the order that keeps the region recoverable
 * at every step; then notifies, if the driver asked for it.  While this
 * thread is the queue's limit (rate_busy) and the driver has
 * SIGNAL_BACKLOG or more requests waiting here, the notification waits
 * for the backlog to shrink or the round to end. */
static void
publish (struct queue *q, bool end_of_round)
{
  unsigned i;

  if (q->nbatch > 0) {
    if (vring_publish (&q->vr))
      q->signal_owed = true;
    if (q->vr.log_failed && !q->broken)
      mark_broken (q, "the used ring lies outside the dirty log");
    for (i = 0; i < q->nbatch; i++)
      inflight_done (&q->ir, q->batch[i]);
    inflight_commit (&q->ir, q->vr.used_idx);
    q->nbatch = 0;
  }
  if (q->signal_owed &&
      (end_of_round || !q->saturated ||
       vring_backlog (&q->vr) < SIGNAL_BACKLOG)) {
    q->signal_owed = false;
    if (q->call_fd >= 0)
      eventfd_write (q->call_fd, 1);
  }
}

/* One round after events: fetch, submit the batch, publish used
 * entries with one notification, report drained/stopped. */
static void
process (struct queue *q)
{
  if (q->recover_pos < q->nrecover)
    resubmit (q);
  if (q->kicked && can_fetch (q)) {
    q->kicked = false;
    fetch (q);
  }
  backend_queue_submit (&q->bq);
  publish (q, true);
  if (q->inflight == 0 &&
      (q->paused || (q->stopping && (q->recover_pos == q->nrecover ||
                                     q->broken || q->suspending)))) {
    pthread_mutex_lock (&q->lock);
    q->drained = true;
    pthread_cond_broadcast (&q->cond);
    pthread_mutex_unlock (&q->lock);
    if (q->stopping)
      q->exit = true;
  }
}

static void
handle_event (struct queue *q, uint32_t tag)
{
  eventfd_t v;

  switch (tag) {
  case EV_KICK:
    eventfd_read (q->kick_fd, &v);
    q->kicked = true;
    break;
  case EV_CMD:
    run_command (q);
    break;
  case EV_PLUGIN:
    if (q->be->async)
      backend_queue_poll (&q->bq);
    else
      backend_queue_reap (&q->bq);
    break;
  }
}

/* Waits up to timeout_ms (0: only looks, -1: sleeps) and handles what
 * came.  Returns 1 when a kick or the plugin fired, 0 when commands
 * or nothing did, -1 after an error. */
static int
wait_events (struct queue *q, int timeout_ms)
{
  struct epoll_event ev[16];
  int i, n, active = 0;

  if (backend_queue_watch (&q->bq, q->epfd, EV_PLUGIN, &q->plugin_fd,
                           &q->plugin_events) == -1)
    blkgate_error ("queue %u: epoll_ctl plugin fd: %m", q->index);
  n = epoll_wait (q->epfd, ev, 16, timeout_ms);
  q->round_ns = now_ns ();
  if (n == -1 && errno != EINTR) {
    blkgate_error ("queue %u: epoll_wait: %m", q->index);
    return -1;
  }
  for (i = 0; i < n; i++) {
    handle_event (q, ev[i].data.u32);
    if (ev[i].data.u32 != EV_CMD)
      active = 1;
  }
  return active;
}

/* --poll-us, after activity: with guest kicks off, looks for new
 * entries, plugin completions and commands without sleeping, until
 * poll_ns pass with none or the queue stops issuing.  A command that
 * stops it is seen before process, which may report "drained" (after
 * which the ring may be unmapped): kicks are armed again first, then
 * looked for once more, so an entry the guest added without kicking
 * is never left behind. */
static void
poll_queue (struct queue *q)
{
  uint64_t deadline = now_ns () + q->poll_ns;

  q->polling = true;
  vring_disable_kick (&q->vr);
  for (;;) {
    uint16_t seen = q->vr.last_avail_idx;
    int r = wait_events (q, 0);

    if (r == -1 || !can_issue (q))
      break;
    q->kicked = true;
    process (q);
    if (r == 1 || q->vr.last_avail_idx != seen)
      deadline = now_ns () + q->poll_ns;
    else if (now_ns () >= deadline)
      break;
  }
  q->polling = false;
  vring_arm_kick (&q->vr);
  q->kicked = true;
  process (q);
}

/* The spin adapts to the traffic, as QEMU's AioContext polling does:
 * a sleep that ended within poll_max_ns could have been a spin, so the
 * spin doubles (from POLL_START_NS); a longer sleep means the queue
 * is idle or slow, and the spin drops to nothing.  An idle queue
 * costs no CPU, a busy one stops taking wake-ups. */
#define POLL_START_NS 4000

static void
adapt_poll (struct queue *q, uint64_t slept_ns)
{
  if (slept_ns > q->poll_max_ns)
    q->poll_ns = 0;
  else if (q->poll_ns < q->poll_max_ns)
    q->poll_ns = q->poll_ns ? q->poll_ns * 2 : POLL_START_NS;
  if (q->poll_ns > q->poll_max_ns)
    q->poll_ns = q->poll_max_ns;
}

/* Whether this thread, not the driver, is what limits the queue: it
 * slept less than 1/32 of the time, averaged over about 8 windows of
 * 1 ms.  Then publish() holds back notifications while the driver has
 * work queued here, since each costs this thread a cross-CPU wake-up
 * (30% of its time on a tmpfs file) and gains the driver nothing it can
 * use; otherwise they go out at once, so that a driver that is the
 * limit gets its completions as soon as it can.  (Measured with
 * blkgate-io bench at depth 32: the null plugin sleeps about a third of
 * the time, the file plugin on tmpfs under 1%.) */
#define BUSY_WINDOW_NS 1000000

static void
rate_busy (struct queue *q, uint64_t idle_ns)
{
  q->idle_ns += idle_ns;
  if (q->round_ns - q->window_ns >= BUSY_WINDOW_NS) {
    /* The window is at least 1 ms, so its 65536th is at least 15 ns;
     * no shift of idle_ns that could overflow after days asleep. */
    uint64_t frac = q->idle_ns / ((q->round_ns - q->window_ns) >> 16);

    /* A moving average over about 8 windows, in 1/65536ths. */
    q->idle_avg += ((int64_t) (frac > 65536 ? 65536 : frac) - q->idle_avg) / 8;
    q->saturated = q->idle_avg < 65536 / 32;
    q->window_ns = q->round_ns;
    q->idle_ns = 0;
  }
}

static void *
queue_thread (void *arg)
{
  struct queue *q = arg;
  uint64_t t0 = 0;
  int r;

  q->kicked = true;             /* never rely on a first kick */
  q->poll_ns = 0;
  q->round_ns = q->window_ns = now_ns ();
  q->idle_avg = 65536;          /* not saturated until shown */
  process (q);
  while (!q->exit) {
    /* Work left over from a fetch: only look at events. */
    int timeout = q->kicked && can_fetch (q) ? 0 : -1;

    if (q->poll_max_ns || timeout == -1)
      t0 = now_ns ();
    r = wait_events (q, timeout);
    if (r == -1)
      break;
    rate_busy (q, timeout == -1 ? q->round_ns - t0 : 0);
    if (r == 1 && q->poll_max_ns)
      adapt_poll (q, q->round_ns - t0);
    if (r == 1 && q->poll_ns && can_issue (q))
      poll_queue (q);
    else
      process (q);
  }
  return NULL;
}

static int
epoll_add (int epfd, int fd, uint32_t tag)
{
  struct epoll_event ev = { .events = EPOLLIN, .data.u32 = tag };
  return epoll_ctl (epfd, EPOLL_CTL_ADD, fd, &ev);
}

/* The per-request arrays are sized for the worst case (a chain of
 * num + 8 buffers for every head) and mostly never touched, so they
 * live in one anonymous mapping of their own: only the pages requests
 * use become resident, and munmap gives them all back when the ring
 * stops.  Out of malloc's heap (where glibc puts them once an earlier
 * large free has raised its mmap threshold) calloc clears them in
 * full and free keeps them: 27 MiB per 1024-entry queue, resident for
 * the daemon's life. */
static size_t
carve (size_t *off, size_t n, size_t size)
{
  size_t at = (*off + 63) & ~(size_t) 63;

  *off = at + n * size;
  return at;
}

static int
alloc_requests (struct queue *q)
{
  size_t per = CHAIN_MAX_IOV (q->num), nchain = (size_t) q->num + 1;
  size_t off = 0, o_reqs, o_batch, o_recover, o_iov, o_gpa;
  char *base;
  unsigned i;

  o_reqs = carve (&off, q->num, sizeof *q->reqs);
  o_batch = carve (&off, q->num, sizeof *q->batch);
  o_recover = carve (&off, q->num, sizeof *q->recover);
  o_iov = carve (&off, nchain * per, sizeof *q->iov_mem);
  o_gpa = carve (&off, nchain * per, sizeof *q->gpa_mem);
  base = mmap (NULL, off, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (base == MAP_FAILED)
    return -1;
  q->req_mem = base;
  q->req_mem_len = off;
  q->reqs = (struct request *) (base + o_reqs);
  q->batch = (uint16_t *) (base + o_batch);
  q->recover = (uint16_t *) (base + o_recover);
  q->iov_mem = (struct iovec *) (base + o_iov);
  q->gpa_mem = (uint64_t *) (base + o_gpa);
  for (i = 0; i <= q->num; i++) {
    struct chain *c = i < q->num ? &q->reqs[i].chain : &q->spare;
    c->iov = &q->iov_mem[(size_t) i * per];
    c->gpa = &q->gpa_mem[(size_t) i * per];
    c->max = per;
    if (i < q->num)
      q->reqs[i].q = q;
  }
  return 0;
}

static void
free_requests (struct queue *q)
{
  if (q->req_mem)
    munmap (q->req_mem, q->req_mem_len);
  q->req_mem = NULL;
  q->req_mem_len = 0;
  q->batch = q->recover = NULL;
  q->reqs = NULL;
  q->iov_mem = NULL;
  q->gpa_mem = NULL;
}

static void
close_thread_fds (struct queue *q)
{
  replace_fd (&q->epfd, -1);
  replace_fd (&q->cmd_fd, -1);
  q->plugin_fd = -1;
  q->plugin_events = 0;
}

static int
setup_rings (struct queue *q, const struct memtable *mem, const char **err)
{
  memset (&q->vr, 0, sizeof q->vr);
  q->vr.packed = q->packed;
  if (vring_setup (&q->vr, mem, q->num, q->desc_uva, q->avail_uva,
                   q->used_uva, err) == -1 ||
      vring_set_base (&q->vr, q->base, err) == -1)
    return -1;
  q->vr.event_idx = q->event_idx;
  q->vr.indirect = q->indirect;
  q->vr.log = q->log_used ? q->log : NULL;
  q->vr.log_guest_addr = q->log_guest_addr;
  q->mem = mem;
  return 0;
}

/* Recovers the requests a previous back-end left in flight.  The ring
 * position then comes from the region (inflight_ring_start), whatever
 * SET_VRING_BASE said: after a crash QEMU sends a stale value. */
static int
recover (struct queue *q, struct inflight_region *region, const char **err)
{
  uint32_t base = vring_get_base (&q->vr);

  if (inflight_ring_start (&q->ir, region, q->index, &q->vr, q->recover,
                           &q->nrecover, err) == -1)
    return -1;
  q->recover_pos = 0;
  if (!inflight_active (&q->ir))
    return 0;
  if (vring_get_base (&q->vr) != base)
    debug ("queue %u: ring base 0x%x, region says 0x%x (%u in flight)",
           q->index, base, vring_get_base (&q->vr), q->nrecover);
  if (q->nrecover)
    blkgate_info ("queue %u: resubmitting %u requests left in flight",
                  q->index, q->nrecover);
  return 0;
}

int
queue_start (struct queue *q, const struct memtable *mem,
             const struct blk_dev *blk, struct inflight_region *region,
             const char **err)
{
  if (q->running)
    return 0;
  if (!q->addr_set || q->num == 0 || q->kick_fd < 0) {
    *err = "ring started before its size, addresses and kick fd were set";
    return -1;
  }
  if (setup_rings (q, mem, err) == -1)
    return -1;
  q->blk = *blk;
  q->paused = q->stopping = q->suspending = false;
  q->suspended = 0;
  q->broken = q->exit = q->drained = false;
  q->inflight = 0;
  q->nbatch = 0;
  if (alloc_requests (q) == -1) {
    *err = "out of memory";
    free_requests (q);
    return -1;
  }
  if (recover (q, region, err) == -1) {
    free_requests (q);
    return -1;
  }
  q->epfd = epoll_create1 (EPOLL_CLOEXEC);
  q->cmd_fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (q->epfd == -1 || q->cmd_fd == -1 ||
      epoll_add (q->epfd, q->cmd_fd, EV_CMD) == -1 ||
      epoll_add (q->epfd, q->kick_fd, EV_KICK) == -1 ||
      backend_queue_open (&q->bq, q->be, q->index) == -1) {
    *err = "cannot set up the queue thread";
    goto fail;
  }
  if (pthread_create (&q->thread, NULL, queue_thread, q) != 0) {
    *err = "cannot start the queue thread";
    backend_queue_close (&q->bq);
    goto fail;
  }
  q->running = true;
  debug ("queue %u: started, %s ring, size %u, avail %u, used %u", q->index,
         q->packed ? "packed" : "split", q->num, q->vr.last_avail_idx,
         q->vr.used_idx);
  return 0;

 fail:
  close_thread_fds (q);
  free_requests (q);
  return -1;
}

static void
cmd_stop (struct queue *q, void *arg)
{
  q->stopping = true;
  q->drained = false;
}

static void
join_and_free (struct queue *q)
{
  pthread_join (q->thread, NULL);
  q->running = false;
  backend_queue_close (&q->bq);
  close_thread_fds (q);
  free_requests (q);
  q->base = vring_get_base (&q->vr);
  replace_fd (&q->kick_fd, -1);
  debug ("queue %u: stopped at base 0x%x", q->index, q->base);
}

uint32_t
queue_stop (struct queue *q)
{
  if (!q->running)
    return q->base;
  queue_call (q, cmd_stop, NULL);
  join_and_free (q);
  return q->base;
}

/* Used entries pushed before the suspend are still published by the
 * round that runs this command; nothing after it. */
static void
cmd_suspend (struct queue *q, void *arg)
{
  unsigned i;

  cmd_stop (q, arg);
  q->suspending = true;
  /* What has not started need not be waited for: it stays in the
   * region either way.  Only I/O under way is waited for. */
  for (i = 0; i < q->num; i++)
    if (q->reqs[i].busy && q->reqs[i].blk.op != BLK_OP_NONE)
      backend_cancel (&q->bq, &q->reqs[i]);
}

uint32_t
queue_suspend (struct queue *q)
{
  unsigned left;

  if (!q->running)
    return q->base;
  queue_call (q, cmd_suspend, NULL);
  join_and_free (q);
  left = q->suspended + (q->nrecover - q->recover_pos);
  debug ("queue %u: suspended, %u requests left in the inflight region",
         q->index, left);
  return q->base;
}

bool
queue_quiesce_for_exit (struct queue *q, int timeout_ms)
{
  struct timespec deadline;
  bool drained;

  if (!q->running)
    return true;
  queue_call (q, cmd_stop, NULL);
  clock_gettime (CLOCK_REALTIME, &deadline);
  deadline.tv_sec += timeout_ms / 1000;
  deadline.tv_nsec += (long) (timeout_ms % 1000) * 1000000;
  if (deadline.tv_nsec >= 1000000000) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock (&q->lock);
  while (!q->drained &&
         pthread_cond_timedwait (&q->cond, &q->lock, &deadline) == 0)
    ;
  drained = q->drained;
  pthread_mutex_unlock (&q->lock);
  if (drained)
    join_and_free (q);
  return drained;
}

static void
cmd_enable (struct queue *q, void *arg)
{
  q->enabled = *(bool *) arg;
  q->kicked = true;             /* re-scan: kicks may have come early */
}

void
queue_set_enabled (struct queue *q, bool on)
{
  queue_call (q, cmd_enable, &on);
}

static void
cmd_set_call (struct queue *q, void *arg)
{
  replace_fd (&q->call_fd, *(int *) arg);
}

void
queue_set_call_fd (struct queue *q, int fd)
{
  queue_call (q, cmd_set_call, &fd);
}

static void
cmd_set_err (struct queue *q, void *arg)
{
  replace_fd (&q->err_fd, *(int *) arg);
}

void
queue_set_err_fd (struct queue *q, int fd)
{
  queue_call (q, cmd_set_err, &fd);
}

static void
cmd_set_kick (struct queue *q, void *arg)
{
  int fd = *(int *) arg;

  if (q->running) {
    epoll_ctl (q->epfd, EPOLL_CTL_DEL, q->kick_fd, NULL);
    if (fd >= 0 && epoll_add (q->epfd, fd, EV_KICK) == -1)
      blkgate_error ("queue %u: epoll_ctl kick fd: %m", q->index);
    q->kicked = true;
  }
  replace_fd (&q->kick_fd, fd);
}

void
queue_set_kick_fd (struct queue *q, int fd)
{
  queue_call (q, cmd_set_kick, &fd);
}

static void
cmd_set_wce (struct queue *q, void *arg)
{
  q->blk.wce = *(bool *) arg;
}

void
queue_set_wce (struct queue *q, bool wce)
{
  queue_call (q, cmd_set_wce, &wce);
}

static void
cmd_set_log (struct queue *q, void *arg)
{
  q->log = arg;
  q->vr.log = q->log_used ? q->log : NULL;
}

void
queue_set_log (struct queue *q, const struct dirty_log *log)
{
  queue_call (q, cmd_set_log, (void *) log);
}

struct log_addr {
  bool used_flag;
  uint64_t addr;
};

static void
cmd_set_log_addr (struct queue *q, void *arg)
{
  struct log_addr *a = arg;

  q->log_used = a->used_flag;
  q->log_guest_addr = a->addr;
  q->vr.log = q->log_used ? q->log : NULL;
  q->vr.log_guest_addr = a->addr;
}

void
queue_set_log_addr (struct queue *q, bool used_flag, uint64_t log_guest_addr)
{
  struct log_addr a = { used_flag, log_guest_addr };

  queue_call (q, cmd_set_log_addr, &a);
}

static void
cmd_pause (struct queue *q, void *arg)
{
  q->paused = *(bool *) arg;
  q->drained = false;
  q->kicked = true;
}

void
queue_pause (struct queue *q)
{
  bool on = true;

  if (!q->running)
    return;
  queue_call (q, cmd_pause, &on);
  pthread_mutex_lock (&q->lock);
  while (!q->drained)
    pthread_cond_wait (&q->cond, &q->lock);
  pthread_mutex_unlock (&q->lock);
}

struct resume_args {
  const struct memtable *mem;
  const char **err;
  int ret;
};

/* Re-translates the rings through the new table on the queue thread,
 * keeping its indexes. */
static void
cmd_resume (struct queue *q, void *arg)
{
  struct resume_args *a = arg;
  struct ring old = q->vr;
  bool off = false;

  a->ret = vring_setup (&q->vr, a->mem, q->num, q->desc_uva, q->avail_uva,
                        q->used_uva, a->err);
  if (a->ret == -1) {
    q->vr = old;
    mark_broken (q, *a->err);
    return;
  }
  q->mem = a->mem;
  cmd_pause (q, &off);
}

int
queue_resume (struct queue *q, const struct memtable *mem, const char **err)
{
  struct resume_args a = { mem, err, 0 };

  if (!q->running)
    return 0;
  queue_call (q, cmd_resume, &a);
  return a.ret;
}

void
queue_reset (struct queue *q)
{
  replace_fd (&q->kick_fd, -1);
  replace_fd (&q->call_fd, -1);
  replace_fd (&q->err_fd, -1);
  q->addr_set = false;
  q->enabled = false;
  q->num = 0;
  q->base = 0;
}

void
queue_inflight_info (const struct queue *q, unsigned *n, uint64_t *oldest_ns)
{
  uint64_t now = now_ns (), oldest = 0;
  unsigned i;

  *n = 0;
  *oldest_ns = 0;
  if (!q->running || q->reqs == NULL)
    return;
  *n = __atomic_load_n (&q->inflight, __ATOMIC_RELAXED);
  for (i = 0; i < q->num; i++) {
    uint64_t t = __atomic_load_n (&q->reqs[i].t_start, __ATOMIC_RELAXED);
    if (t && (oldest == 0 || t < oldest))
      oldest = t;
  }
  if (oldest && now > oldest)
    *oldest_ns = now - oldest;
}

static void
cmd_set_size (struct queue *q, void *arg)
{
  q->blk.size = *(uint64_t *) arg;
}

void
queue_set_size (struct queue *q, uint64_t size)
{
  queue_call (q, cmd_set_size, &size);
}

/* Reopen, on the queue thread of a paused queue: the plugin's queue
 * context goes, and its fd with it (out of epoll first: a new fd may
 * get the same number). */
static void
cmd_backend_close (struct queue *q, void *arg)
{
  if (q->plugin_fd >= 0)
    epoll_ctl (q->epfd, EPOLL_CTL_DEL, q->plugin_fd, NULL);
  q->plugin_fd = -1;
  q->plugin_events = 0;
  backend_queue_close (&q->bq);
}

static void
cmd_backend_open (struct queue *q, void *arg)
{
  *(int *) arg = backend_queue_open (&q->bq, q->be, q->index);
  if (*(int *) arg == -1)
    mark_broken (q, "the reopened backend refused a queue context");
}

void
queue_backend_close (struct queue *q)
{
  if (q->running)
    queue_call (q, cmd_backend_close, NULL);
}

int
queue_backend_open (struct queue *q)
{
  int r = 0;

  if (q->running)
    queue_call (q, cmd_backend_open, &r);
  return r;
}
