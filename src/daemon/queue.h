/* A virtqueue and the thread that serves it. */

#ifndef BLKGATE_QUEUE_H
#define BLKGATE_QUEUE_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "blk.h"
#include "inflight.h"
#include "memtable.h"
#include "request.h"
#include "stats.h"
#include "vring.h"

struct queue {
  unsigned index;
  struct backend *be;

  /* Set by the control thread while the queue is stopped. */
  unsigned num;
  uint64_t desc_uva, avail_uva, used_uva;
  uint32_t base;                /* SET_VRING_BASE (vring_set_base) */
  bool addr_set;
  bool event_idx, indirect, packed;
  bool log_used;                /* SET_VRING_ADDR's VHOST_VRING_F_LOG */
  uint64_t log_guest_addr;
  int kick_fd, call_fd, err_fd;
  uint64_t poll_max_ns;         /* --poll-us: the longest spin (0: never) */
  struct queue_stats *stats;    /* this index's counters (stats.c) */

  /* Shared: written by the control thread only through commands. */
  bool running;                 /* thread exists */
  bool enabled;                 /* SET_VRING_ENABLE */
  const struct memtable *mem;
  const struct dirty_log *log;  /* LOG_ALL on: log guest writes here */
  struct blk_dev blk;

  /* Thread and command hand-off. */
  pthread_t thread;
  int epfd, cmd_fd;
  pthread_mutex_t lock;
  pthread_cond_t cond;
  void (*cmd) (struct queue *q, void *arg);
  void *cmd_arg;
  bool cmd_done;
  bool drained;                 /* paused with nothing in flight */

  /* Queue thread only. */
  struct ring vr;
  struct backend_queue bq;
  struct request *reqs;         /* indexed by head */
  struct chain spare;           /* pop target, swapped into reqs[head] */
  struct iovec *iov_mem;
  uint64_t *gpa_mem;
  void *req_mem;                /* one mapping: reqs, iov_mem, gpa_mem,
                                 * batch and recover (queue.c) */
  size_t req_mem_len;
  unsigned inflight;
  struct inflight_ring ir;
  uint16_t *batch;              /* heads pushed since the last publish */
  unsigned nbatch;
  bool signal_owed;             /* the driver asked to be notified */
  bool saturated;               /* rate_busy: this thread is the limit */
  uint64_t window_ns, idle_ns;  /* rate_busy's window and its idle time */
  int64_t idle_avg;             /* its idle share, averaged, of 65536 */
  uint16_t *recover;            /* heads to resubmit, oldest first */
  unsigned nrecover, recover_pos;
  unsigned suspended;           /* requests left in flight by a suspend */
  bool kicked, paused, stopping, suspending, broken, exit;
  bool polling;                 /* spinning with guest kicks off */
  uint64_t poll_ns;             /* the current spin, 0 to poll_max_ns */
  uint64_t round_ns;            /* clock at this round's start: request
                                 * times are taken once per round (a
                                 * clock read per request showed up as
                                 * 8% of the CPU in a profile) */
  int plugin_fd;
  short plugin_events;
};

void queue_init (struct queue *q, unsigned index, struct backend *be);

/* Starts the thread: rings translated through mem, requests allocated,
 * in-flight requests recovered from region (may be empty), plugin queue
 * opened.  -1 with a message in *err. */
int queue_start (struct queue *q, const struct memtable *mem,
                 const struct blk_dev *blk, struct inflight_region *region,
                 const char **err);
/* Stops fetching, waits for every request in flight to complete and
 * be published, joins the thread.  Returns GET_VRING_BASE's value
 * (vring_get_base). */
uint32_t queue_stop (struct queue *q);

/* Stops the queue without draining it (migration with the inflight
 * region): nothing new is issued, calls already in the plugin finish
 * (a write on its way is never left to land later), but unfinished
 * requests are not completed to the guest: they stay marked in the
 * inflight region, and no guest memory is written after this returns.
 * Returns GET_VRING_BASE's value, which counts them as consumed. */
uint32_t queue_suspend (struct queue *q);

/* Shutdown: stop fetching and wait up to timeout_ms for requests in
 * flight.  Returns false if some are still in flight (they stay
 * recorded in the inflight region); the thread is then left running. */
bool queue_quiesce_for_exit (struct queue *q, int timeout_ms);

void queue_set_enabled (struct queue *q, bool on);
/* Takes ownership of fd (-1 for none); closes the old one safely. */
void queue_set_call_fd (struct queue *q, int fd);
void queue_set_kick_fd (struct queue *q, int fd);
void queue_set_err_fd (struct queue *q, int fd);
void queue_set_wce (struct queue *q, bool wce);
/* Dirty logging: log is NULL when off.  The used ring is logged when
 * used_flag is set, at log_guest_addr. */
void queue_set_log (struct queue *q, const struct dirty_log *log);
void queue_set_log_addr (struct queue *q, bool used_flag,
                         uint64_t log_guest_addr);

/* Memory table change while running: pause waits until nothing is in
 * flight; resume re-translates the rings through the new table. */
void queue_pause (struct queue *q);
int queue_resume (struct queue *q, const struct memtable *mem,
                  const char **err);

/* For stats, on the main thread: requests in flight and the age of
 * the oldest (0 when none). */
void queue_inflight_info (const struct queue *q, unsigned *n,
                          uint64_t *oldest_ns);
/* A new capacity (control socket resize), in bytes. */
void queue_set_size (struct queue *q, uint64_t size);

/* Backend reopen, on a paused queue: its plugin queue context is
 * closed, then (after the handle is swapped) opened again. */
void queue_backend_close (struct queue *q);
int queue_backend_open (struct queue *q);

/* Closes all fds (connection gone; the queue must be stopped). */
void queue_reset (struct queue *q);

#endif /* BLKGATE_QUEUE_H */
