/* Counters for the control socket's "stats" command.
 *
 * Thread model: a queue's counters are written only by that queue's
 * thread, with relaxed atomic stores (no lock and no locked
 * instruction on the hot path), and read by the main thread with
 * relaxed loads: each counter is exact, a set of them is a snapshot
 * only up to the requests finishing meanwhile.  The table outlives
 * front-end connections, so the counts cover the daemon's life.  The
 * plugins' named counters count rare events (reconnects, retries) from
 * any thread and take a mutex. */

#include <config.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"

#define BLKGATE_API_VERSION 1
#include <blkgate-plugin.h>

static struct queue_stats *table;
static unsigned table_size;

static pthread_mutex_t named_lock = PTHREAD_MUTEX_INITIALIZER;
static struct stats_named named[STATS_MAX_NAMED];
static unsigned nnamed;

int
stats_init (unsigned n)
{
  table = calloc (n, sizeof *table);
  if (table == NULL)
    return -1;
  table_size = n;
  return 0;
}

struct queue_stats *
stats_queue (unsigned index)
{
  return index < table_size ? &table[index] : NULL;
}

unsigned
stats_nqueues (void)
{
  return table_size;
}

/* The only writer adds: a plain load and a relaxed store suffice. */
static inline void
bump (uint64_t *c, uint64_t n)
{
  __atomic_store_n (c, *c + n, __ATOMIC_RELAXED);
}

static unsigned
lat_bucket (uint64_t lat_ns)
{
  uint64_t us = lat_ns / 1000;
  unsigned b = us ? 64 - __builtin_clzll (us) : 0;

  return b < STATS_LAT_BUCKETS ? b : STATS_LAT_BUCKETS - 1;
}

void
stats_request (struct queue_stats *s, const struct blk_req *b, int err,
               uint64_t lat_ns)
{
  if (s == NULL)
    return;
  if (b->op <= BLK_OP_ZERO)
    bump (&s->ops[b->op], 1);
  if (err)
    bump (&s->errors, 1);
  else if (b->op == BLK_OP_READ)
    bump (&s->bytes_read, b->len);
  else if (b->op == BLK_OP_WRITE)
    bump (&s->bytes_written, b->len);
  bump (&s->lat[lat_bucket (lat_ns)], 1);
  bump (&s->lat_sum_ns, lat_ns);
}

void
stats_read (const struct queue_stats *s, struct queue_stats *copy)
{
  const uint64_t *from = (const uint64_t *) s;
  uint64_t *to = (uint64_t *) copy;
  size_t i;

  for (i = 0; i < sizeof *s / sizeof (uint64_t); i++)
    to[i] = __atomic_load_n (&from[i], __ATOMIC_RELAXED);
}

/* Public API: a plugin counts an event under a name of its choosing
 * (a string that lives as long as the plugin, e.g. a literal). */
void
blkgate_stat_add (const char *name, uint64_t n)
{
  unsigned i;

  if (name == NULL)
    return;
  pthread_mutex_lock (&named_lock);
  for (i = 0; i < nnamed && strcmp (named[i].name, name) != 0; i++)
    ;
  if (i == nnamed && nnamed < STATS_MAX_NAMED)
    named[nnamed++].name = name;
  if (i < nnamed)
    named[i].value += n;
  pthread_mutex_unlock (&named_lock);
}

unsigned
stats_named (struct stats_named *out, unsigned max)
{
  unsigned i;

  pthread_mutex_lock (&named_lock);
  for (i = 0; i < nnamed && i < max; i++)
    out[i] = named[i];
  pthread_mutex_unlock (&named_lock);
  return i;
}
