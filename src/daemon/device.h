/* The vhost-user device of one front-end connection: negotiated
 * features, memory table, queues, config space. */

#ifndef BLKGATE_DEVICE_H
#define BLKGATE_DEVICE_H

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "dirty-log.h"
#include "inflight.h"
#include "memtable.h"
#include "queue.h"
#include "vhost-user-proto.h"

/* What the admin chose for every connection. */
struct device_config {
  unsigned nqueues;             /* offered (GET_QUEUE_NUM) */
  bool inflight_migration;      /* offer GET_VRING_BASE_INFLIGHT (20, 23) */
  unsigned poll_us;             /* --poll-us: spin after activity (0: off) */
};

struct device {
  struct backend *be;
  const struct device_config *cfg;
  int sock;
  uint64_t features;            /* acked by the front-end */
  uint64_t protocol_features;
  bool features_set;
  struct memtable *mem;
  unsigned nqueues;             /* offered (GET_QUEUE_NUM) */
  struct queue **queues;        /* allocated when first named */
  struct blk_dev blk;           /* the backend's, with the guest's wce */
  struct inflight_region inflight;
  struct dirty_log *log;        /* SET_LOG_BASE, or NULL */
};

struct device *device_new (struct backend *be, int sock,
                           const struct device_config *cfg);
/* Stops every queue (draining it), unmaps guest memory, frees. */
void device_free (struct device *dev);

/* Shutting down: stop every queue, waiting up to timeout_ms for the
 * requests in flight.  Returns false if some are left (recorded in the
 * inflight region); the device must then not be freed. */
bool device_quiesce_for_exit (struct device *dev, int timeout_ms);

/* Handles one message, replying as the protocol asks.  Returns 0 to
 * keep the connection, -1 to close it (after logging why). */
int device_handle (struct device *dev, struct vu_msg *msg);

/* The feature words we offer. */
uint64_t device_features (const struct backend *be);
uint64_t device_protocol_features (const struct device_config *cfg);

#endif /* BLKGATE_DEVICE_H */
