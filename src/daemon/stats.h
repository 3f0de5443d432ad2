/* Counters for the control socket's "stats" command. */

#ifndef BLKGATE_STATS_H
#define BLKGATE_STATS_H

#include <stdint.h>

#include "blk.h"

/* Latency bucket i counts requests that took less than 2^i
 * microseconds (and at least 2^(i-1)); the last one, all the rest. */
#define STATS_LAT_BUCKETS 24

struct queue_stats {
  uint64_t ops[BLK_OP_ZERO + 1];        /* by enum blk_op */
  uint64_t bytes_read, bytes_written;
  uint64_t errors;
  uint64_t lat[STATS_LAT_BUCKETS];
  uint64_t lat_sum_ns;
};

/* Sizes the table for queues 0 to n - 1 (at startup). */
int stats_init (unsigned n);
/* Queue index's counters, or NULL when outside the table. */
struct queue_stats *stats_queue (unsigned index);
unsigned stats_nqueues (void);

/* A finished request, on its queue's thread. */
void stats_request (struct queue_stats *s, const struct blk_req *b, int err,
                    uint64_t lat_ns);

/* A copy of a queue's counters, on any thread. */
void stats_read (const struct queue_stats *s, struct queue_stats *copy);

/* Named plugin counters (blkgate_stat_add in the plugin API). */
#define STATS_MAX_NAMED 32
struct stats_named {
  const char *name;
  uint64_t value;
};
/* Copies up to max counters into out; returns how many. */
unsigned stats_named (struct stats_named *out, unsigned max);

#endif /* BLKGATE_STATS_H */
