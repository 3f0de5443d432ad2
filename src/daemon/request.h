/* One guest request in flight, from pop to used publish. */

#ifndef BLKGATE_REQUEST_H
#define BLKGATE_REQUEST_H

#include <stdbool.h>
#include <stdint.h>

#include "blk.h"
#include "vring.h"

struct queue;
struct request;
struct backend_queue;

/* A synchronous plugin call run on a worker thread. */
struct sync_job {
  struct request *r;
  struct backend_queue *bq;
  struct sync_job *next;        /* on the queue's done list */
  uint8_t op;                   /* enum blk_op */
  uint32_t flags;
  uint64_t offset;
  uint64_t len;
  int err;
};

enum request_phase {
  PHASE_DATA,                   /* the operation itself */
  PHASE_FUA_FLUSH,              /* emulated FUA: a flush after a write */
};

struct request {
  struct queue *q;
  struct backend_queue *bq;
  bool busy;                    /* head popped, not yet in the used ring */
  uint64_t t_start;             /* CLOCK_MONOTONIC ns at start, 0 when idle
                                 * (atomic: the main thread reads it) */
  enum request_phase phase;
  unsigned pending;             /* plugin calls not yet completed */
  int err;                      /* first error */
  struct chain chain;
  struct blk_req blk;
  struct sync_job jobs[BLK_MAX_SEGMENTS];
  /* NULL for a virtqueue's request; otherwise called instead of
   * queue_request_done (fuse-export.c). */
  void (*done) (struct request *r);
};

/* Called (on the queue thread) when every plugin call of r is done,
 * unless r->done is set. */
void queue_request_done (struct request *r);

#endif /* BLKGATE_REQUEST_H */
