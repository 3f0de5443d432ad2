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
  bool seen_message;            /* the front-end has sent a message */
  uint64_t features;            /* acked by the front-end */
  uint64_t protocol_features;
  bool features_set;
  struct memtable *mem;
  unsigned nqueues;             /* offered (GET_QUEUE_NUM) */
  struct queue **queues;        /* allocated when first named */
  struct blk_dev blk;           /* the backend's, with the guest's wce */
  struct inflight_region inflight;
  struct dirty_log *log;        /* SET_LOG_BASE, or NULL */
  int backend_req_fd;           /* SET_BACKEND_REQ_FD, or -1 */
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

/* A new capacity in bytes (control socket resize): the queues check
 * requests against it from now on, and the front-end is told through
 * the back-end request channel (CONFIG_CHANGE_MSG), after which it
 * reads the config space again and tells the guest.  Returns false
 * when there is no such channel to tell it. */
bool device_set_size (struct device *dev, uint64_t size);

/* Reopen: the queues are paused (their requests finish), their plugin
 * contexts closed, the backend's handle replaced by new_handle, the
 * contexts opened again and the queues resumed.  The old handle is
 * returned for the caller to close.  NULL with *err set when a queue
 * could not resume (it is then broken, as after a bad ring). */
void *device_swap_backend (struct device *dev, void *new_handle,
                           const char **err);

/* The feature words we offer. */
uint64_t device_features (const struct backend *be);
uint64_t device_protocol_features (const struct device_config *cfg);

#endif /* BLKGATE_DEVICE_H */
