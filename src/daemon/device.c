/* vhost-user message handlers: one function per request, each changing
 * the device or queue state and saying whether it succeeded.  The
 * dispatcher sends the reply: a handler's own payload for the GET_*
 * requests, or a REPLY_ACK status when the front-end asked for one.
 *
 * Runs on the main thread.  Queue state that a running queue thread
 * owns is changed only through queue.c's commands. */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <glib.h>

#include "device.h"
#include "log.h"
#include "vu-msg.h"

/* What a handler did. */
enum { H_FAIL = -1, H_OK = 0, H_REPLIED = 1 };

uint64_t
device_features (const struct backend *be)
{
  return blk_features (&be->dev) | VU_BIT (VU_F_VERSION_1) |
    VU_BIT (VU_F_INDIRECT_DESC) | VU_BIT (VU_F_EVENT_IDX) |
    VU_BIT (VU_F_RING_PACKED) |
    VU_BIT (VU_F_LOG_ALL) | VU_BIT (VU_F_PROTOCOL_FEATURES);
}

/* GET_VRING_BASE_INFLIGHT (20) and GET_VRING_BASE_SKIP_DRAIN (23) are
 * opt-in: a front-end that negotiates them migrates the inflight region,
 * and a destination QEMU that does not know the migration subsection
 * would refuse the stream. */
uint64_t
device_protocol_features (const struct device_config *cfg)
{
  uint64_t f = VU_BIT (VU_PF_MQ) | VU_BIT (VU_PF_REPLY_ACK) |
    VU_BIT (VU_PF_CONFIG) | VU_BIT (VU_PF_RESET_DEVICE) |
    VU_BIT (VU_PF_CONFIGURE_MEM_SLOTS) | VU_BIT (VU_PF_INFLIGHT_SHMFD) |
    VU_BIT (VU_PF_LOG_SHMFD) | VU_BIT (VU_PF_BACKEND_REQ);

  if (cfg->inflight_migration)
    f |= VU_BIT (VU_PF_GET_VRING_BASE_INFLIGHT) |
      VU_BIT (VU_PF_GET_VRING_BASE_SKIP_DRAIN);
  return f;
}

struct device *
device_new (struct backend *be, int sock, const struct device_config *cfg)
{
  struct device *dev = calloc (1, sizeof *dev);

  if (dev == NULL)
    return NULL;
  dev->be = be;
  dev->cfg = cfg;
  dev->sock = sock;
  dev->backend_req_fd = -1;
  dev->nqueues = cfg->nqueues;
  dev->blk = be->dev;
  dev->blk.num_queues = cfg->nqueues;
  dev->queues = calloc (cfg->nqueues, sizeof *dev->queues);
  dev->mem = memtable_new ();
  if (dev->queues == NULL || dev->mem == NULL) {
    device_free (dev);
    return NULL;
  }
  return dev;
}

/* Stop every queue.  gone: the front-end has disconnected; with an
 * inflight region, requests the backend has not started stay there for
 * the next front-end (a plugin waiting for its server must not hold up
 * a reconnection) and only I/O under way is waited for.  Otherwise
 * every request is finished. */
static void
stop_all (struct device *dev, bool gone)
{
  unsigned i;

  for (i = 0; i < dev->nqueues; i++)
    if (dev->queues[i]) {
      if (gone && dev->inflight.addr)
        queue_suspend (dev->queues[i]);
      else
        queue_stop (dev->queues[i]);
    }
}

void
device_free (struct device *dev)
{
  unsigned i;

  if (dev == NULL)
    return;
  stop_all (dev, true);
  for (i = 0; dev->queues && i < dev->nqueues; i++)
    if (dev->queues[i]) {
      queue_reset (dev->queues[i]);
      free (dev->queues[i]);
    }
  free (dev->queues);
  if (dev->backend_req_fd >= 0)
    close (dev->backend_req_fd);
  memtable_free (dev->mem);
  inflight_unmap (&dev->inflight);
  if (dev->log) {
    dirty_log_unmap (dev->log);
    free (dev->log);
  }
  free (dev);
}

/* One deadline for all queues: each waits only for what is left. */
bool
device_quiesce_for_exit (struct device *dev, int timeout_ms)
{
  gint64 deadline = g_get_monotonic_time () + (gint64) timeout_ms * 1000;
  bool all = true;
  unsigned i;

  for (i = 0; i < dev->nqueues; i++) {
    gint64 left = (deadline - g_get_monotonic_time ()) / 1000;
    if (dev->queues[i] &&
        !queue_quiesce_for_exit (dev->queues[i], left > 0 ? left : 0)) {
      blkgate_info ("queue %u: %u requests still in flight at exit; they "
                    "stay recorded for the next blkgate", i,
                    dev->queues[i]->inflight);
      all = false;
    }
  }
  return all;
}

/* The queue a message names, allocated on first use; NULL if the index
 * is beyond what we offered. */
static struct queue *
get_queue (struct device *dev, uint32_t index)
{
  struct queue *q;

  if (index >= dev->nqueues) {
    blkgate_error ("queue index %u out of range (%u queues)", index,
                   dev->nqueues);
    return NULL;
  }
  if (dev->queues[index] == NULL) {
    q = malloc (sizeof *q);
    if (q == NULL)
      return NULL;
    queue_init (q, index, dev->be);
    q->stats = stats_queue (index);
    q->event_idx = dev->features & VU_BIT (VU_F_EVENT_IDX);
    q->indirect = dev->features & VU_BIT (VU_F_INDIRECT_DESC);
    q->packed = dev->features & VU_BIT (VU_F_RING_PACKED);
    q->enabled = !(dev->features & VU_BIT (VU_F_PROTOCOL_FEATURES));
    q->poll_max_ns = (uint64_t) dev->cfg->poll_us * 1000;
    if (dev->features & VU_BIT (VU_F_LOG_ALL))
      q->log = dev->log;
    dev->queues[index] = q;
  }
  return dev->queues[index];
}

/* A stopped queue whose setup a message changes. */
static struct queue *
get_stopped_queue (struct device *dev, uint32_t index, const char *what)
{
  struct queue *q = get_queue (dev, index);

  if (q && q->running) {
    blkgate_error ("%s on queue %u while it runs", what, index);
    return NULL;
  }
  return q;
}

/* Replies never wait: a front-end that leaves its replies unread
 * until the socket is full would otherwise stall the main loop. */
static int
send_reply (struct device *dev, const struct vu_msg *msg, const void *payload,
            uint32_t size, int fd)
{
  if (vu_msg_reply (dev->sock, msg, payload, size, fd) == 0)
    return 0;
  if (errno == EAGAIN || errno == EWOULDBLOCK)
    blkgate_error ("%s: the front-end does not read its replies",
                   vu_request_name (msg->hdr.request));
  else
    blkgate_error ("%s: cannot send the reply: %m",
                   vu_request_name (msg->hdr.request));
  return -1;
}

static int
reply_u64 (struct device *dev, struct vu_msg *msg, uint64_t v)
{
  return send_reply (dev, msg, &v, sizeof v, -1) == 0 ? H_REPLIED : H_FAIL;
}

static int
h_get_features (struct device *dev, struct vu_msg *msg)
{
  return reply_u64 (dev, msg, device_features (dev->be));
}

/* Every queue logs its guest writes while LOG_ALL is acked and a log
 * has been given. */
static void
set_logging (struct device *dev)
{
  const struct dirty_log *log =
    (dev->features & VU_BIT (VU_F_LOG_ALL)) ? dev->log : NULL;
  unsigned i;

  for (i = 0; i < dev->nqueues; i++)
    if (dev->queues[i])
      queue_set_log (dev->queues[i], log);
}

/* SET_LOG_BASE may come again mid-migration with a bigger log: the
 * queues move to the new one before the old one is unmapped. */
static int
h_set_log_base (struct device *dev, struct vu_msg *msg)
{
  struct dirty_log *log = calloc (1, sizeof *log), *old = dev->log;
  const char *err;

  if (log == NULL ||
      dirty_log_map (log, msg->fds[0], msg->payload.log.mmap_size,
                     msg->payload.log.mmap_offset, &err) == -1) {
    blkgate_error ("SET_LOG_BASE: %s", log ? err : "out of memory");
    free (log);
    return H_FAIL;
  }
  dev->log = log;
  set_logging (dev);
  if (old) {
    dirty_log_unmap (old);
    free (old);
  }
  debug ("dirty log: %llu bytes", (unsigned long long) log->size);
  /* With LOG_SHMFD the front-end waits for a reply. */
  if (dev->protocol_features & VU_BIT (VU_PF_LOG_SHMFD))
    return reply_u64 (dev, msg, 0);
  return H_OK;
}

/* We log into the shared bitmap only; a log eventfd is not needed. */
static int
h_set_log_fd (struct device *dev, struct vu_msg *msg)
{
  return H_OK;
}

/* The channel for messages from us to the front-end (resize). */
static int
h_set_backend_req_fd (struct device *dev, struct vu_msg *msg)
{
  if (dev->backend_req_fd >= 0)
    close (dev->backend_req_fd);
  dev->backend_req_fd = msg->fds[0];
  msg->fds[0] = -1;
  return H_OK;
}

static int
h_set_features (struct device *dev, struct vu_msg *msg)
{
  uint64_t f = msg->payload.u64;
  unsigned i;

  if (f & ~device_features (dev->be)) {
    blkgate_error ("front-end acked features we did not offer: 0x%llx",
                   (unsigned long long) (f & ~device_features (dev->be)));
    return H_FAIL;
  }
  if ((f ^ dev->features) & VU_BIT (VU_F_LOG_ALL))
    blkgate_info ("dirty logging %s", (f & VU_BIT (VU_F_LOG_ALL))
                  ? "on (migration)" : "off");
  dev->features = f;
  set_logging (dev);
  dev->features_set = true;
  for (i = 0; i < dev->nqueues; i++) {
    struct queue *q = dev->queues[i];
    if (q && !q->running) {
      q->event_idx = f & VU_BIT (VU_F_EVENT_IDX);
      q->indirect = f & VU_BIT (VU_F_INDIRECT_DESC);
      q->packed = f & VU_BIT (VU_F_RING_PACKED);
      if (!(f & VU_BIT (VU_F_PROTOCOL_FEATURES)))
        q->enabled = true;
    }
  }
  return H_OK;
}

static int
h_get_protocol_features (struct device *dev, struct vu_msg *msg)
{
  return reply_u64 (dev, msg, device_protocol_features (dev->cfg));
}

/* Bit 20 needs 12; bit 23 needs 20 and 12. */
static bool
consistent_protocol_features (uint64_t f)
{
  const uint64_t inflight = VU_BIT (VU_PF_INFLIGHT_SHMFD);
  const uint64_t b20 = VU_BIT (VU_PF_GET_VRING_BASE_INFLIGHT);
  const uint64_t b23 = VU_BIT (VU_PF_GET_VRING_BASE_SKIP_DRAIN);

  if ((f & b20) && !(f & inflight))
    return false;
  return !(f & b23) || (f & (b20 | inflight)) == (b20 | inflight);
}

static int
h_set_protocol_features (struct device *dev, struct vu_msg *msg)
{
  uint64_t f = msg->payload.u64;

  if (f & ~device_protocol_features (dev->cfg)) {
    blkgate_error ("front-end acked protocol features we did not offer");
    return H_FAIL;
  }
  if (!consistent_protocol_features (f)) {
    blkgate_error ("front-end acked GET_VRING_BASE_INFLIGHT or _SKIP_DRAIN "
                   "without the features they need");
    return H_FAIL;
  }
  dev->protocol_features = f;
  return H_OK;
}

static int
h_get_queue_num (struct device *dev, struct vu_msg *msg)
{
  return reply_u64 (dev, msg, dev->nqueues);
}

static int
h_get_max_mem_slots (struct device *dev, struct vu_msg *msg)
{
  return reply_u64 (dev, msg, VU_MAX_MEM_SLOTS);
}

static int
h_nop (struct device *dev, struct vu_msg *msg)
{
  return H_OK;
}

/* Swaps the memory table under every running queue: pause (drain),
 * re-translate the rings, resume; then the old mappings can go. */
static int
swap_memtable (struct device *dev, struct memtable *t)
{
  const char *err = NULL;
  int ret = H_OK;
  unsigned i;

  for (i = 0; i < dev->nqueues; i++)
    if (dev->queues[i])
      queue_pause (dev->queues[i]);
  for (i = 0; i < dev->nqueues; i++)
    if (dev->queues[i] && queue_resume (dev->queues[i], t, &err) == -1) {
      blkgate_error ("queue %u: %s after a memory table change", i, err);
      ret = H_FAIL;
    }
  dev->mem = t;
  return ret;
}

static int
h_set_mem_table (struct device *dev, struct vu_msg *msg)
{
  struct memtable *t = memtable_new (), *old = dev->mem;
  const char *err;
  unsigned i;
  int ret;

  if (t == NULL)
    return H_FAIL;
  for (i = 0; i < msg->payload.memory.nregions; i++)
    if (memtable_map (t, &msg->payload.memory.regions[i], msg->fds[i],
                      &err) == -1) {
      blkgate_error ("SET_MEM_TABLE region %u: %s", i, err);
      memtable_free (t);
      return H_FAIL;
    }
  ret = swap_memtable (dev, t);
  memtable_free (old);
  return ret;
}

static int
h_add_mem_reg (struct device *dev, struct vu_msg *msg)
{
  struct memtable *t = memtable_dup (dev->mem), *old = dev->mem;
  const char *err;
  int ret;

  if (t == NULL)
    return H_FAIL;
  if (memtable_map (t, &msg->payload.mem_reg.region, msg->fds[0], &err)) {
    blkgate_error ("ADD_MEM_REG: %s", err);
    memtable_free_shell (t);
    return H_FAIL;
  }
  ret = swap_memtable (dev, t);
  memtable_free_shell (old);
  return ret;
}

static int
h_rem_mem_reg (struct device *dev, struct vu_msg *msg)
{
  struct memtable *t = memtable_dup (dev->mem), *old = dev->mem;
  struct mem_region gone;
  int ret;

  if (t == NULL)
    return H_FAIL;
  if (memtable_remove (t, &msg->payload.mem_reg.region, &gone) == -1) {
    blkgate_error ("REM_MEM_REG: no such region");
    memtable_free_shell (t);
    return H_FAIL;
  }
  ret = swap_memtable (dev, t);
  memtable_free_shell (old);
  mem_region_unmap (&gone);
  return ret;
}

static int
h_set_vring_num (struct device *dev, struct vu_msg *msg)
{
  struct vu_vring_state *s = &msg->payload.state;
  struct queue *q = get_stopped_queue (dev, s->index, "SET_VRING_NUM");

  if (q == NULL)
    return H_FAIL;
  if (s->num == 0 || s->num > VU_MAX_QUEUE_SIZE || (s->num & (s->num - 1))) {
    blkgate_error ("queue %u: invalid ring size %u", s->index, s->num);
    return H_FAIL;
  }
  q->num = s->num;
  return H_OK;
}

static int
h_set_vring_addr (struct device *dev, struct vu_msg *msg)
{
  struct vu_vring_addr *a = &msg->payload.addr;
  struct queue *q = get_queue (dev, a->index);

  if (q == NULL)
    return H_FAIL;
  if (q->running) {
    /* Only the log flag may change while running (migration). */
    if (a->desc_user_addr != q->desc_uva || a->avail_user_addr != q->avail_uva
        || a->used_user_addr != q->used_uva) {
      blkgate_error ("queue %u: ring moved while running", a->index);
      return H_FAIL;
    }
    queue_set_log_addr (q, a->flags & VU_VRING_F_LOG, a->log_guest_addr);
    return H_OK;
  }
  q->log_used = a->flags & VU_VRING_F_LOG;
  q->log_guest_addr = a->log_guest_addr;
  q->desc_uva = a->desc_user_addr;
  q->avail_uva = a->avail_user_addr;
  q->used_uva = a->used_user_addr;
  q->addr_set = true;
  return H_OK;
}

static int
h_set_vring_base (struct device *dev, struct vu_msg *msg)
{
  struct vu_vring_state *s = &msg->payload.state;
  struct queue *q = get_stopped_queue (dev, s->index, "SET_VRING_BASE");

  if (q == NULL)
    return H_FAIL;
  /* Split: the next avail index.  Packed: avail and used positions,
   * checked when the ring starts (vring_set_base). */
  if (s->num > 0xffff && !(dev->features & VU_BIT (VU_F_RING_PACKED))) {
    blkgate_error ("queue %u: vring base 0x%x out of range", s->index, s->num);
    return H_FAIL;
  }
  q->base = s->num;
  return H_OK;
}

/* Whether a GET_VRING_BASE (11) or GET_VRING_BASE_SKIP_DRAIN (45) asks
 * us to suspend rather than drain:
 *   bit 23 negotiated: 45 suspends, 11 always drains;
 *   only bit 20: 11 with num == 1 (skip_drain) suspends, num == 0 drains;
 *   neither: drain (every front-end before inflight migration). */
static int
wants_suspend (const struct device *dev, const struct vu_msg *msg)
{
  bool b20 = dev->protocol_features & VU_BIT (VU_PF_GET_VRING_BASE_INFLIGHT);
  bool b23 = dev->protocol_features & VU_BIT (VU_PF_GET_VRING_BASE_SKIP_DRAIN);

  if (msg->hdr.request == VU_GET_VRING_BASE_SKIP_DRAIN) {
    if (!b23) {
      blkgate_error ("GET_VRING_BASE_SKIP_DRAIN without it negotiated");
      return -1;
    }
    return 1;
  }
  if (msg->payload.state.num > 1) {
    blkgate_error ("GET_VRING_BASE with an unknown argument %u",
                   msg->payload.state.num);
    return -1;
  }
  return b20 && !b23 && msg->payload.state.num == 1;
}

static int
h_get_vring_base (struct device *dev, struct vu_msg *msg)
{
  struct vu_vring_state s = { .index = msg->payload.state.index };
  struct queue *q = get_queue (dev, s.index);
  int suspend = wants_suspend (dev, msg);

  if (q == NULL || suspend == -1)
    return H_FAIL;
  s.num = suspend ? queue_suspend (q) : queue_stop (q);
  debug ("queue %u: %s, vring base 0x%x", s.index,
         suspend ? "suspended" : "drained", s.num);
  return send_reply (dev, msg, &s, sizeof s, -1) == 0 ? H_REPLIED : H_FAIL;
}

/* Kick, call and err fds must be eventfds: anything else (a pipe at
 * EOF, a socket) could spin or block a queue thread.  We make them
 * non-blocking so a saturated counter cannot block us either. */
static bool
is_eventfd (int fd)
{
  char link[64], target[64];
  ssize_t n;

  snprintf (link, sizeof link, "/proc/self/fd/%d", fd);
  n = readlink (link, target, sizeof target - 1);
  if (n <= 0)
    return false;
  target[n] = '\0';
  return strcmp (target, "anon_inode:[eventfd]") == 0;
}

/* Takes the fd of a SET_VRING_KICK/CALL/ERR message: *fd is -1 for
 * "no fd".  -1 if the fd is not an eventfd. */
static int
take_vring_fd (struct vu_msg *msg, int *fd)
{
  *fd = -1;
  if (msg->payload.u64 & VU_VRING_NOFD_MASK)
    return 0;
  if (!is_eventfd (msg->fds[0])) {
    blkgate_error ("%s: the fd is not an eventfd",
                   vu_request_name (msg->hdr.request));
    return -1;
  }
  *fd = msg->fds[0];
  msg->fds[0] = -1;
  fcntl (*fd, F_SETFL, fcntl (*fd, F_GETFL) | O_NONBLOCK);
  return 0;
}

static int
h_set_vring_kick (struct device *dev, struct vu_msg *msg)
{
  struct queue *q = get_queue (dev, msg->payload.u64 & VU_VRING_IDX_MASK);
  const char *err;
  int fd;

  if (q == NULL)
    return H_FAIL;
  if (msg->payload.u64 & VU_VRING_NOFD_MASK) {
    blkgate_error ("queue %u: polling without a kick fd is not supported",
                   q->index);
    return H_FAIL;
  }
  if (take_vring_fd (msg, &fd) == -1)
    return H_FAIL;
  if (q->running) {
    queue_set_kick_fd (q, fd);
    return H_OK;
  }
  queue_set_kick_fd (q, fd);     /* not running: closes an earlier fd */
  if (queue_start (q, dev->mem, &dev->blk, &dev->inflight, &err) == -1) {
    blkgate_error ("queue %u: %s", q->index, err);
    return H_FAIL;
  }
  return H_OK;
}

static int
h_set_vring_call (struct device *dev, struct vu_msg *msg)
{
  struct queue *q = get_queue (dev, msg->payload.u64 & VU_VRING_IDX_MASK);
  int fd;

  if (q == NULL || take_vring_fd (msg, &fd) == -1)
    return H_FAIL;
  queue_set_call_fd (q, fd);
  return H_OK;
}

static int
h_set_vring_err (struct device *dev, struct vu_msg *msg)
{
  struct queue *q = get_queue (dev, msg->payload.u64 & VU_VRING_IDX_MASK);
  int fd;

  if (q == NULL || take_vring_fd (msg, &fd) == -1)
    return H_FAIL;
  queue_set_err_fd (q, fd);
  return H_OK;
}

static int
h_set_vring_enable (struct device *dev, struct vu_msg *msg)
{
  struct vu_vring_state *s = &msg->payload.state;
  struct queue *q = get_queue (dev, s->index);

  if (q == NULL || s->num > 1)
    return H_FAIL;
  queue_set_enabled (q, s->num == 1);
  return H_OK;
}

static int
h_get_config (struct device *dev, struct vu_msg *msg)
{
  struct vu_config *c = &msg->payload.config;
  uint8_t space[VU_MAX_CONFIG_SIZE] = { 0 };
  struct vu_config reply;

  if (c->offset > sizeof space || c->size > sizeof space - c->offset) {
    blkgate_error ("GET_CONFIG outside the config space");
    return H_FAIL;
  }
  blk_config (&dev->blk, (struct virtio_blk_config *) space);
  reply.offset = c->offset;
  reply.size = c->size;
  reply.flags = 0;
  memcpy (reply.data, space + c->offset, c->size);
  return send_reply (dev, msg, &reply, VU_CONFIG_HDR_SIZE + c->size,
                       -1) == 0 ? H_REPLIED : H_FAIL;
}

/* Only the writeback-cache byte is writable by the guest. */
static int
h_set_config (struct device *dev, struct vu_msg *msg)
{
  struct vu_config *c = &msg->payload.config;
  unsigned i;

  if (c->offset != offsetof (struct virtio_blk_config, wce) || c->size != 1) {
    if (c->flags == 1)          /* live-migration restore: ours anyway */
      return H_OK;
    blkgate_error ("SET_CONFIG of a read-only field (offset %u)", c->offset);
    return H_FAIL;
  }
  if (!dev->blk.can_flush)
    return H_FAIL;
  dev->blk.wce = c->data[0] != 0;
  blkgate_info ("guest turned the write cache %s", dev->blk.wce ? "on" : "off");
  for (i = 0; i < dev->nqueues; i++)
    if (dev->queues[i])
      queue_set_wce (dev->queues[i], dev->blk.wce);
  return H_OK;
}

static bool
any_running (const struct device *dev)
{
  unsigned i;

  for (i = 0; i < dev->nqueues; i++)
    if (dev->queues[i] && dev->queues[i]->running)
      return true;
  return false;
}

static int
h_get_inflight_fd (struct device *dev, struct vu_msg *msg)
{
  struct vu_inflight reply = msg->payload.inflight;
  const char *err;
  int fd, r;

  if (!(dev->protocol_features & VU_BIT (VU_PF_INFLIGHT_SHMFD))) {
    blkgate_error ("GET_INFLIGHT_FD without INFLIGHT_SHMFD negotiated");
    return H_FAIL;
  }
  if (inflight_create (reply.num_queues, reply.queue_size, &fd,
                       &reply.mmap_size, &err) == -1) {
    blkgate_error ("GET_INFLIGHT_FD: %s", err);
    return H_FAIL;
  }
  reply.mmap_offset = 0;
  r = send_reply (dev, msg, &reply, sizeof reply, fd);
  close (fd);
  return r == 0 ? H_REPLIED : H_FAIL;
}

static int
h_set_inflight_fd (struct device *dev, struct vu_msg *msg)
{
  struct vu_inflight *in = &msg->payload.inflight;
  const char *err;

  if (!(dev->protocol_features & VU_BIT (VU_PF_INFLIGHT_SHMFD)) ||
      any_running (dev)) {
    blkgate_error ("SET_INFLIGHT_FD %s",
                   any_running (dev) ? "while queues run"
                   : "without INFLIGHT_SHMFD negotiated");
    return H_FAIL;
  }
  if (inflight_map (&dev->inflight, msg->fds[0], in->mmap_size,
                    in->mmap_offset, &err) == -1) {
    blkgate_error ("SET_INFLIGHT_FD: refusing the region: %s", err);
    return H_FAIL;
  }
  debug ("inflight region: %u queues of %u", dev->inflight.num_queues,
         dev->inflight.queue_size);
  return H_OK;
}

static int
h_reset_device (struct device *dev, struct vu_msg *msg)
{
  unsigned i;

  stop_all (dev, false);
  for (i = 0; i < dev->nqueues; i++)
    if (dev->queues[i])
      queue_reset (dev->queues[i]);
  dev->features = 0;
  dev->features_set = false;
  dev->blk.wce = dev->be->dev.wce;
  inflight_unmap (&dev->inflight);
  return H_OK;
}

typedef int (*handler) (struct device *, struct vu_msg *);

static const handler handlers[VU_REQUEST_MAX] = {
  [VU_GET_FEATURES] = h_get_features,
  [VU_SET_FEATURES] = h_set_features,
  [VU_SET_OWNER] = h_nop,
  [VU_RESET_OWNER] = h_nop,
  [VU_SET_MEM_TABLE] = h_set_mem_table,
  [VU_SET_LOG_BASE] = h_set_log_base,
  [VU_SET_LOG_FD] = h_set_log_fd,
  [VU_SET_VRING_NUM] = h_set_vring_num,
  [VU_SET_VRING_ADDR] = h_set_vring_addr,
  [VU_SET_VRING_BASE] = h_set_vring_base,
  [VU_GET_VRING_BASE] = h_get_vring_base,
  [VU_GET_VRING_BASE_SKIP_DRAIN] = h_get_vring_base,
  [VU_SET_VRING_KICK] = h_set_vring_kick,
  [VU_SET_VRING_CALL] = h_set_vring_call,
  [VU_SET_VRING_ERR] = h_set_vring_err,
  [VU_GET_PROTOCOL_FEATURES] = h_get_protocol_features,
  [VU_SET_PROTOCOL_FEATURES] = h_set_protocol_features,
  [VU_GET_QUEUE_NUM] = h_get_queue_num,
  [VU_SET_VRING_ENABLE] = h_set_vring_enable,
  [VU_GET_CONFIG] = h_get_config,
  [VU_SET_CONFIG] = h_set_config,
  [VU_RESET_DEVICE] = h_reset_device,
  [VU_GET_INFLIGHT_FD] = h_get_inflight_fd,
  [VU_SET_INFLIGHT_FD] = h_set_inflight_fd,
  [VU_GET_MAX_MEM_SLOTS] = h_get_max_mem_slots,
  [VU_ADD_MEM_REG] = h_add_mem_reg,
  [VU_REM_MEM_REG] = h_rem_mem_reg,
  [VU_SET_BACKEND_REQ_FD] = h_set_backend_req_fd,
};

/* Requests that always carry a reply payload of their own. */
static bool
has_own_reply (const struct device *dev, uint32_t req)
{
  if (req == VU_SET_LOG_BASE)
    return dev->protocol_features & VU_BIT (VU_PF_LOG_SHMFD);
  switch (req) {
  case VU_GET_FEATURES: case VU_GET_PROTOCOL_FEATURES: case VU_GET_QUEUE_NUM:
  case VU_GET_MAX_MEM_SLOTS: case VU_GET_VRING_BASE: case VU_GET_CONFIG:
  case VU_GET_INFLIGHT_FD: case VU_GET_STATUS:
  case VU_GET_VRING_BASE_SKIP_DRAIN:
    return true;
  }
  return false;
}

int
device_handle (struct device *dev, struct vu_msg *msg)
{
  uint32_t req = msg->hdr.request;
  bool ack = (msg->hdr.flags & VU_FLAG_NEED_REPLY) &&
    (dev->protocol_features & VU_BIT (VU_PF_REPLY_ACK)) &&
    !has_own_reply (dev, req);
  const char *err;
  int ret;

  debug ("message %s (%u), size %u, %u fds", vu_request_name (req), req,
         msg->hdr.size, msg->nfds);
  if (vu_msg_check (msg, &err) == -1) {
    blkgate_error ("bad %s message (%u): %s", vu_request_name (req), req, err);
    ret = H_FAIL;
  }
  else if (req >= VU_REQUEST_MAX || handlers[req] == NULL) {
    blkgate_error ("unsupported request %s (%u)", vu_request_name (req), req);
    ret = H_FAIL;
  }
  else
    ret = handlers[req] (dev, msg);
  vu_msg_close_fds (msg);

  if (ack)
    return reply_u64 (dev, msg, ret == H_FAIL) == H_FAIL ? -1 : 0;
  if (ret == H_FAIL) {
    blkgate_error ("closing the connection after a failed %s",
                   vu_request_name (req));
    return -1;
  }
  return 0;
}

/* CONFIG_CHANGE_MSG carries no payload and asks for no reply: the
 * front-end answers by sending GET_CONFIG on the main channel, which
 * the main loop serves after we return. */
static bool
notify_config_change (struct device *dev)
{
  struct vu_header hdr = { .request = VU_BACKEND_CONFIG_CHANGE_MSG,
                          .flags = VU_VERSION, .size = 0 };

  if (dev->backend_req_fd < 0)
    return false;
  if (send (dev->backend_req_fd, &hdr, sizeof hdr,
            MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t) sizeof hdr) {
    blkgate_error ("back-end request channel: send: %m");
    return false;
  }
  return true;
}

bool
device_set_size (struct device *dev, uint64_t size)
{
  unsigned i;

  dev->blk.size = size;
  for (i = 0; i < dev->nqueues; i++)
    if (dev->queues[i])
      queue_set_size (dev->queues[i], size);
  return notify_config_change (dev);
}

void *
device_swap_backend (struct device *dev, void *new_handle, const char **err)
{
  void *old = dev->be->handle;
  unsigned i;
  bool ok = true;

  for (i = 0; i < dev->nqueues; i++)
    if (dev->queues[i]) {
      queue_pause (dev->queues[i]);
      queue_backend_close (dev->queues[i]);
    }
  dev->be->handle = new_handle;
  for (i = 0; i < dev->nqueues; i++)
    if (dev->queues[i]) {
      if (queue_backend_open (dev->queues[i]) == -1)
        ok = false;
      if (queue_resume (dev->queues[i], dev->mem, err) == -1)
        ok = false;
    }
  if (!ok && *err == NULL)
    *err = "a queue could not open the new backend";
  return old;
}
