/* The message sequences QEMU sends to a vhost-user-blk back-end (QEMU
 * 7.2, hw/virtio/vhost.c, vhost-user.c, vhost-user-blk.c):
 *
 *   init:  GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES,
 *          GET_QUEUE_NUM, GET_MAX_MEM_SLOTS, SET_OWNER, GET_FEATURES,
 *          per queue SET_VRING_CALL (masked notifier) + SET_VRING_ERR,
 *          GET_CONFIG (at realize only, not on reconnect)
 *   start: SET_FEATURES, GET_INFLIGHT_FD (no region yet), SET_INFLIGHT_FD,
 *          per queue SET_VRING_CALL, SET_FEATURES, SET_MEM_TABLE or
 *          ADD_MEM_REG, per queue SET_VRING_NUM/BASE/ADDR/KICK, per queue
 *          SET_VRING_ENABLE(1)
 *   stop:  SET_VRING_ENABLE(0), GET_VRING_BASE
 *
 * After a back-end crash QEMU keeps guest memory and the inflight
 * region, connects again and sends init + start with SET_VRING_BASE =
 * used->idx.  All of that is here; the rings and memory stay ours. */

#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "vuc.h"

#define BLK_FEATURES                                                    \
  (VU_BIT (VIRTIO_BLK_F_SIZE_MAX) | VU_BIT (VIRTIO_BLK_F_SEG_MAX) |     \
   VU_BIT (VIRTIO_BLK_F_GEOMETRY) | VU_BIT (VIRTIO_BLK_F_RO) |          \
   VU_BIT (VIRTIO_BLK_F_BLK_SIZE) | VU_BIT (VIRTIO_BLK_F_FLUSH) |       \
   VU_BIT (VIRTIO_BLK_F_TOPOLOGY) | VU_BIT (VIRTIO_BLK_F_CONFIG_WCE) |  \
   VU_BIT (VIRTIO_BLK_F_MQ) | VU_BIT (VIRTIO_BLK_F_DISCARD) |           \
   VU_BIT (VIRTIO_BLK_F_WRITE_ZEROES))

void
vuc_conn_init (struct vuc_conn *c, const char *path)
{
  memset (c, 0, sizeof *c);
  c->path = strdup (path);
  c->timeout_ms = 30000;
  c->queue_size = VUC_DEFAULT_QSIZE;
  c->feature_mask = BLK_FEATURES | VU_BIT (VU_F_INDIRECT_DESC) |
    VU_BIT (VU_F_EVENT_IDX) | VU_BIT (VU_F_VERSION_1) |
    VU_BIT (VU_F_PROTOCOL_FEATURES);
  /* What QEMU negotiates for vhost-user-blk, minus BACKEND_REQ (we
   * have no config-change handler) and the opt-in inflight-migration
   * bits. */
  c->protocol_mask = VU_BIT (VU_PF_MQ) | VU_BIT (VU_PF_LOG_SHMFD) |
    VU_BIT (VU_PF_REPLY_ACK) | VU_BIT (VU_PF_CONFIG) |
    VU_BIT (VU_PF_INFLIGHT_SHMFD) | VU_BIT (VU_PF_RESET_DEVICE) |
    VU_BIT (VU_PF_CONFIGURE_MEM_SLOTS);
  c->sock = -1;
  c->inflight_fd = -1;
  c->log_fd = -1;
  c->mem.fd = -1;
}

bool
vuc_has_pf (const struct vuc_conn *c, unsigned bit)
{
  return c->acked_protocol & VU_BIT (bit);
}

bool
vuc_has_f (const struct vuc_conn *c, unsigned bit)
{
  return c->acked_features & VU_BIT (bit);
}

static int
setup_ring (struct vuc_conn *c, unsigned i)
{
  struct vuc_ring *r;

  if (i >= VUC_MAX_QUEUES) {
    vuc_set_error ("at most %d queues", VUC_MAX_QUEUES);
    return -1;
  }
  if (c->rings[i])
    return 0;
  r = vuc_ring_new (&c->mem, i, c->queue_size, VUC_MAX_DATA + 2);
  if (r == NULL)
    return -1;
  r->poll = c->poll;
  r->sock = c->sock;
  c->rings[i] = r;
  if (i >= c->nqueues)
    c->nqueues = i + 1;
  return 0;
}

int
vuc_conn_setup (struct vuc_conn *c, uint64_t mem_size, uint64_t gpa,
                unsigned nregions, unsigned nqueues)
{
  unsigned i;

  if (vuc_mem_init (&c->mem, mem_size, gpa, nregions) == -1)
    return -1;
  for (i = 0; i < nqueues; i++)
    if (setup_ring (c, i) == -1)
      return -1;
  return 0;
}

static void
drop_inflight (struct vuc_conn *c)
{
  if (c->inflight_addr)
    munmap (c->inflight_addr, c->inflight_size);
  if (c->inflight_fd >= 0)
    close (c->inflight_fd);
  c->inflight_addr = NULL;
  c->inflight_fd = -1;
  c->inflight_size = 0;
}

void
vuc_conn_free (struct vuc_conn *c)
{
  unsigned i;

  vuc_close (c);
  for (i = 0; i < VUC_MAX_QUEUES; i++)
    vuc_ring_free (c->rings[i]);
  drop_inflight (c);
  vuc_log_free (c);
  vuc_mem_free (&c->mem);
  free (c->path);
  c->path = NULL;
}

static int
connect_once (const char *path)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  int fd;

  if (strlen (path) >= sizeof sa.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  strcpy (sa.sun_path, path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1)
    return -1;
  if (connect (fd, (struct sockaddr *) &sa, sizeof sa) == -1) {
    int e = errno;
    close (fd);
    errno = e;
    return -1;
  }
  return fd;
}

/* Retries while the server is (re)starting: no socket yet, or nobody
 * listening on it. */
static int
connect_retry (const char *path, int retry_ms)
{
  uint64_t deadline = vuc_now_ns () + (uint64_t) retry_ms * 1000000;
  int fd;

  for (;;) {
    fd = connect_once (path);
    if (fd >= 0)
      return fd;
    if ((errno != ENOENT && errno != ECONNREFUSED && errno != EAGAIN) ||
        vuc_now_ns () >= deadline)
      break;
    usleep (50000);
  }
  vuc_set_error ("cannot connect to %s: %s", path, strerror (errno));
  return -1;
}

static void
set_sock (struct vuc_conn *c, int sock)
{
  unsigned i;

  c->sock = sock;
  for (i = 0; i < c->nqueues; i++) {
    c->rings[i]->sock = sock;
    c->rings[i]->hangup = false;
  }
}

int
vuc_open (struct vuc_conn *c, int retry_ms)
{
  int fd;

  if (c->sock >= 0)
    return 0;
  fd = connect_retry (c->path, retry_ms);
  if (fd == -1)
    return -1;
  set_sock (c, fd);
  c->replies = 0;
  return 0;
}

/* Like a back-end crash for QEMU: rings that ran restart from used->idx;
 * rings stopped with GET_VRING_BASE keep the index it returned. */
void
vuc_close (struct vuc_conn *c)
{
  unsigned i;

  for (i = 0; i < c->nqueues; i++) {
    struct vuc_ring *r = c->rings[i];
    if (r->started)
      r->base_from_used = true;
    r->started = r->enabled = false;
  }
  if (c->sock >= 0)
    close (c->sock);
  set_sock (c, -1);
  c->inited = c->started = c->mem_added = false;
}

static int
negotiate_protocol (struct vuc_conn *c)
{
  uint64_t pf;

  if (vuc_get_u64 (c, VU_GET_PROTOCOL_FEATURES, &c->protocol_features) == -1)
    return -1;
  pf = c->protocol_features & c->protocol_mask;
  /* Bit 20 needs 12, bit 23 needs 20 (vhost-user.rst). */
  if (!(pf & VU_BIT (VU_PF_INFLIGHT_SHMFD)))
    pf &= ~VU_BIT (VU_PF_GET_VRING_BASE_INFLIGHT);
  if (!(pf & VU_BIT (VU_PF_GET_VRING_BASE_INFLIGHT)))
    pf &= ~VU_BIT (VU_PF_GET_VRING_BASE_SKIP_DRAIN);
  /* No NEED_REPLY here: REPLY_ACK is not in force until this lands. */
  c->acked_protocol = 0;
  if (vuc_send (c, VU_SET_PROTOCOL_FEATURES, VU_VERSION, &pf, sizeof pf,
                NULL, 0) == -1)
    return -1;
  c->acked_protocol = pf;
  if (!vuc_has_pf (c, VU_PF_CONFIG)) {
    vuc_set_error ("the back-end does not offer PROTOCOL_F_CONFIG, which "
                   "vhost-user-blk needs");
    return -1;
  }
  c->queue_num = 1;
  if (vuc_has_pf (c, VU_PF_MQ) &&
      vuc_get_u64 (c, VU_GET_QUEUE_NUM, &c->queue_num) == -1)
    return -1;
  if (c->queue_num == 0) {
    vuc_set_error ("GET_QUEUE_NUM says 0 queues");
    return -1;
  }
  if (vuc_has_pf (c, VU_PF_CONFIGURE_MEM_SLOTS)) {
    if (vuc_get_u64 (c, VU_GET_MAX_MEM_SLOTS, &c->max_mem_slots) == -1)
      return -1;
    if (c->max_mem_slots < c->mem.nregions) {
      vuc_set_error ("the back-end takes %llu memory slots, we need %u",
                     (unsigned long long) c->max_mem_slots, c->mem.nregions);
      return -1;
    }
  }
  return 0;
}

/* The guest's features are fixed once negotiated: a back-end that
 * comes back must offer them all again (QEMU fails otherwise). */
static int
negotiate_features (struct vuc_conn *c)
{
  uint64_t want;

  if (vuc_get_u64 (c, VU_GET_FEATURES, &c->features) == -1)
    return -1;
  if (c->acked_features) {
    if ((c->features & c->acked_features) != c->acked_features) {
      vuc_set_error ("the back-end no longer offers features 0x%llx that "
                     "were negotiated", (unsigned long long)
                     (c->acked_features & ~c->features));
      return -1;
    }
    return 0;
  }
  want = c->features & c->feature_mask;
  if (!(want & VU_BIT (VU_F_VERSION_1))) {
    vuc_set_error ("the back-end does not offer VIRTIO_F_VERSION_1");
    return -1;
  }
  if (!(want & VU_BIT (VIRTIO_BLK_F_MQ)) && c->nqueues > 1) {
    vuc_set_error ("the back-end does not offer VIRTIO_BLK_F_MQ");
    return -1;
  }
  c->acked_features = want;
  return 0;
}

static int
get_config (struct vuc_conn *c)
{
  struct vu_config req = { .offset = 0, .size = VUC_CONFIG_LEN };
  struct vu_config rep;

  if (vuc_call (c, VU_GET_CONFIG, &req, VU_CONFIG_HDR_SIZE + req.size,
                NULL, 0, &rep, VU_CONFIG_HDR_SIZE + req.size, NULL) == -1)
    return -1;
  if (rep.offset != 0 || rep.size != req.size) {
    vuc_set_error ("GET_CONFIG: reply for offset %u size %u, asked 0/%u",
                   rep.offset, rep.size, req.size);
    return -1;
  }
  memcpy (c->config, rep.data, req.size);
  c->config_len = req.size;
  c->realized = true;
  return 0;
}

int
vuc_init (struct vuc_conn *c)
{
  unsigned i;

  if (vuc_open (c, 0) == -1)
    return -1;
  if (c->inited)
    return 0;
  if (vuc_get_u64 (c, VU_GET_FEATURES, &c->features) == -1)
    return -1;
  if (!(c->features & VU_BIT (VU_F_PROTOCOL_FEATURES))) {
    vuc_set_error ("the back-end does not offer "
                   "VHOST_USER_F_PROTOCOL_FEATURES");
    return -1;
  }
  if (negotiate_protocol (c) == -1 ||
      vuc_set (c, VU_SET_OWNER, NULL, 0, NULL, 0) == -1 ||
      negotiate_features (c) == -1)
    return -1;
  if (c->nqueues > c->queue_num) {
    vuc_set_error ("the back-end offers %llu queues, %u are in use",
                   (unsigned long long) c->queue_num, c->nqueues);
    return -1;
  }
  for (i = 0; i < c->nqueues; i++)
    if (vuc_set_vring_fd (c, VU_SET_VRING_CALL, i,
                          c->rings[i]->masked_fd) == -1 ||
        vuc_set_vring_fd (c, VU_SET_VRING_ERR, i, c->rings[i]->err_fd) == -1)
      return -1;
  if (!c->realized && get_config (c) == -1)
    return -1;
  c->inited = true;
  return 0;
}

/* GET_INFLIGHT_FD the first time; the region then stays with us. */
static int
get_inflight (struct vuc_conn *c)
{
  struct vu_inflight req = { 0 }, rep;
  int fd;

  req.num_queues = c->queue_num < VUC_MAX_QUEUES ? c->queue_num
    : VUC_MAX_QUEUES;
  req.queue_size = c->queue_size;
  if (vuc_call (c, VU_GET_INFLIGHT_FD, &req, sizeof req, NULL, 0,
                &rep, sizeof rep, &fd) == -1)
    return -1;
  if (rep.mmap_size == 0) {     /* the back-end keeps no region */
    if (fd >= 0)
      close (fd);
    return 0;
  }
  if (fd < 0) {
    vuc_set_error ("GET_INFLIGHT_FD: a region of %llu bytes but no fd",
                   (unsigned long long) rep.mmap_size);
    return -1;
  }
  c->inflight_addr = mmap (NULL, rep.mmap_size, PROT_READ | PROT_WRITE,
                           MAP_SHARED, fd, rep.mmap_offset);
  if (c->inflight_addr == MAP_FAILED) {
    c->inflight_addr = NULL;
    close (fd);
    vuc_set_error ("GET_INFLIGHT_FD: mmap: %s", strerror (errno));
    return -1;
  }
  c->inflight_fd = fd;
  c->inflight_size = rep.mmap_size;
  c->inflight_offset = rep.mmap_offset;
  c->inflight_queues = req.num_queues;
  return 0;
}

static int
set_inflight (struct vuc_conn *c)
{
  struct vu_inflight m = { 0 };

  if (!vuc_has_pf (c, VU_PF_INFLIGHT_SHMFD))
    return 0;
  if (c->inflight_fd < 0 && get_inflight (c) == -1)
    return -1;
  if (c->inflight_fd < 0)
    return 0;
  m.mmap_size = c->inflight_size;
  m.mmap_offset = c->inflight_offset;
  m.num_queues = c->inflight_queues;
  m.queue_size = c->queue_size;
  return vuc_set (c, VU_SET_INFLIGHT_FD, &m, sizeof m, &c->inflight_fd, 1);
}

static int
set_memory (struct vuc_conn *c)
{
  struct vu_mem_region reg[VUC_MAX_REGIONS];
  unsigned i, n = vuc_mem_regions (&c->mem, reg);
  int fds[VUC_MAX_REGIONS];

  /* With memory slots QEMU sends only the regions that changed since
   * the last start on this connection (vhost_user_add_remove_regions):
   * none, for our fixed memory. */
  if (vuc_has_pf (c, VU_PF_CONFIGURE_MEM_SLOTS)) {
    if (c->mem_added)
      return 0;
    c->mem_added = true;
    for (i = 0; i < n; i++) {
      struct vu_mem_single s = { .region = reg[i] };
      if (vuc_set (c, VU_ADD_MEM_REG, &s, sizeof s, &c->mem.fd, 1) == -1)
        return -1;
    }
    return 0;
  }
  {
    struct vu_mem_table t = { .nregions = n };
    memcpy (t.regions, reg, n * sizeof reg[0]);
    for (i = 0; i < n; i++)
      fds[i] = c->mem.fd;
    return vuc_set (c, VU_SET_MEM_TABLE, &t, 8 + n * sizeof reg[0], fds, n);
  }
}

static uint64_t
uva (const void *p)
{
  return (uint64_t) (uintptr_t) p;
}

/* SET_VRING_ADDR: the ring addresses are our (QEMU's) virtual
 * addresses; log_guest_addr is the used ring's guest-physical address,
 * where the back-end logs its used-ring writes while F_LOG is set. */
static int
set_vring_addr (struct vuc_conn *c, struct vuc_ring *r, bool log)
{
  struct vu_vring_addr a = {
    .index = r->index, .flags = log ? VU_VRING_F_LOG : 0,
    .desc_user_addr = uva (r->desc), .used_user_addr = uva (r->used),
    .avail_user_addr = uva (r->avail),
    .log_guest_addr = r->log_gpa ? r->log_gpa : vuc_gpa (&c->mem, r->used),
  };

  return vuc_set (c, VU_SET_VRING_ADDR, &a, sizeof a, NULL, 0);
}

/* SET_VRING_NUM, BASE, ADDR, KICK for one ring. */
static int
start_ring (struct vuc_conn *c, struct vuc_ring *r)
{
  uint16_t base = r->base_from_used ? vuc_ring_used_idx (r) : r->base;

  r->event_idx = vuc_has_f (c, VU_F_EVENT_IDX);
  r->indirect = vuc_has_f (c, VU_F_INDIRECT_DESC);
  if (vuc_set_state (c, VU_SET_VRING_NUM, r->index, r->num) == -1 ||
      vuc_set_state (c, VU_SET_VRING_BASE, r->index, base) == -1 ||
      set_vring_addr (c, r, c->log_on) == -1 ||
      vuc_set_vring_fd (c, VU_SET_VRING_KICK, r->index, r->kick_fd) == -1)
    return -1;
  r->started = true;
  r->stopped = false;
  r->base_from_used = false;
  r->base = base;
  return 0;
}

/* Without REPLY_ACK, QEMU sends GET_FEATURES to know earlier messages
 * were processed (vhost_user_write_sync). */
static int
barrier (struct vuc_conn *c)
{
  uint64_t f;

  if (vuc_has_pf (c, VU_PF_REPLY_ACK))
    return 0;
  return vuc_get_u64 (c, VU_GET_FEATURES, &f);
}

static bool
to_start (const struct vuc_ring *r)
{
  return !r->started && !r->stopped;
}

/* The features QEMU sends: the guest's, plus LOG_ALL while migrating. */
static uint64_t
features_now (const struct vuc_conn *c)
{
  return c->acked_features | (c->log_on ? VU_BIT (VU_F_LOG_ALL) : 0);
}

static int set_log_base (struct vuc_conn *c, int fd, uint64_t size);

int
vuc_start (struct vuc_conn *c)
{
  unsigned i;

  if (vuc_init (c) == -1)
    return -1;
  if (c->started)
    return 0;
  if (vuc_set_u64 (c, VU_SET_FEATURES, features_now (c)) == -1 ||
      set_inflight (c) == -1)
    return -1;
  for (i = 0; i < c->nqueues; i++)
    if (to_start (c->rings[i]) &&
        vuc_set_vring_fd (c, VU_SET_VRING_CALL, i,
                          c->rings[i]->call_fd) == -1)
      return -1;
  if (vuc_set_u64 (c, VU_SET_FEATURES, features_now (c)) == -1 ||
      set_memory (c) == -1)
    return -1;
  for (i = 0; i < c->nqueues; i++)
    if (to_start (c->rings[i]) && start_ring (c, c->rings[i]) == -1)
      return -1;
  /* Restarted while migrating: the log goes again (vhost_dev_start). */
  if (c->log_on && set_log_base (c, c->log_fd, c->log_size) == -1)
    return -1;
  for (i = 0; i < c->nqueues; i++)
    if (c->rings[i]->started && !c->rings[i]->enabled) {
      if (vuc_set_state (c, VU_SET_VRING_ENABLE, i, 1) == -1)
        return -1;
      c->rings[i]->enabled = true;
    }
  if (barrier (c) == -1)
    return -1;
  c->started = true;
  return 0;
}

/* The per-queue part of start, for one ring. */
static int
start_one (struct vuc_conn *c, struct vuc_ring *r)
{
  if (vuc_set_vring_fd (c, VU_SET_VRING_CALL, r->index, r->call_fd) == -1 ||
      start_ring (c, r) == -1 ||
      vuc_set_state (c, VU_SET_VRING_ENABLE, r->index, 1) == -1)
    return -1;
  r->enabled = true;
  return barrier (c);
}

int
vuc_add_queue (struct vuc_conn *c, unsigned i)
{
  unsigned j;

  if (c->inited && i >= c->queue_num) {
    vuc_set_error ("queue %u: the back-end offers %llu queues", i,
                   (unsigned long long) c->queue_num);
    return -1;
  }
  if (i > 0 && c->inited && !vuc_has_f (c, VIRTIO_BLK_F_MQ)) {
    vuc_set_error ("the back-end does not offer VIRTIO_BLK_F_MQ");
    return -1;
  }
  for (j = c->nqueues; j <= i; j++) {
    if (setup_ring (c, j) == -1)
      return -1;
    if (c->inited &&
        (vuc_set_vring_fd (c, VU_SET_VRING_CALL, j,
                           c->rings[j]->masked_fd) == -1 ||
         vuc_set_vring_fd (c, VU_SET_VRING_ERR, j, c->rings[j]->err_fd) == -1))
      return -1;
    if (c->started && start_one (c, c->rings[j]) == -1)
      return -1;
  }
  return 0;
}

int
vuc_stop_queue (struct vuc_conn *c, unsigned i, enum vuc_stop_mode mode,
                uint16_t *base, uint64_t *us)
{
  struct vuc_ring *r = i < c->nqueues ? c->rings[i] : NULL;
  struct vu_vring_state s = { i, mode == VUC_STOP_SKIP_DRAIN }, rep;
  uint32_t req = mode == VUC_STOP_MSG45 ? VU_GET_VRING_BASE_SKIP_DRAIN
    : VU_GET_VRING_BASE;
  uint64_t t0;

  if (r == NULL || !r->started) {
    vuc_set_error ("queue %u is not running", i);
    return -1;
  }
  if (r->enabled && vuc_set_state (c, VU_SET_VRING_ENABLE, i, 0) == -1)
    return -1;
  r->enabled = false;
  t0 = vuc_now_ns ();
  if (vuc_call (c, req, &s, sizeof s, NULL, 0, &rep, sizeof rep, NULL) == -1)
    return -1;
  *us = (vuc_now_ns () - t0) / 1000;
  if (rep.index != i) {
    vuc_set_error ("%s: reply names queue %u, asked %u",
                   vu_request_name (req), rep.index, i);
    return -1;
  }
  if (rep.num > 0xffff) {
    vuc_set_error ("%s: index 0x%x has bits above 15 set (split ring)",
                   vu_request_name (req), rep.num);
    return -1;
  }
  r->started = false;
  r->stopped = true;
  r->base = *base = rep.num;
  r->base_from_used = false;
  return 0;
}

int
vuc_restart_queue (struct vuc_conn *c, unsigned i)
{
  struct vuc_ring *r = i < c->nqueues ? c->rings[i] : NULL;

  if (r == NULL || !r->stopped) {
    vuc_set_error ("queue %u was not stopped", i);
    return -1;
  }
  if (!c->started) {            /* reconnected meanwhile: full start */
    r->stopped = false;
    return vuc_start (c);
  }
  r->stopped = false;
  return start_one (c, r);
}

int
vuc_connect (struct vuc_conn *c, int retry_ms, bool start)
{
  uint64_t t0 = vuc_now_ns ();
  uint64_t hangup_end = t0 + (uint64_t) (retry_ms > 2000 ? retry_ms : 2000)
    * 1000000;
  int left;

  for (;;) {
    left = retry_ms - (int) ((vuc_now_ns () - t0) / 1000000);
    if (vuc_open (c, left > 0 ? left : 0) == -1)
      return -1;
    c->hangup = false;
    if ((start ? vuc_start (c) : vuc_init (c)) == 0)
      return 0;
    /* Only a back-end that hung up before answering anything is one
     * that refused the connection; any other failure is final. */
    if (!c->hangup || c->replies > 0 || vuc_now_ns () >= hangup_end)
      return -1;
    vuc_close (c);
    usleep (20000);
  }
}

int
vuc_reconnect (struct vuc_conn *c, int retry_ms)
{
  vuc_close (c);
  return vuc_connect (c, retry_ms, true);
}

/* A destination QEMU receives the region's bytes in the migration
 * stream and puts them in a memfd of its own. */
static int
copy_inflight (struct vuc_conn *c)
{
  int fd = memfd_create ("blkgate-io-inflight", MFD_CLOEXEC);
  void *p;

  if (fd == -1 || ftruncate (fd, c->inflight_size) == -1)
    goto fail;
  p = mmap (NULL, c->inflight_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED)
    goto fail;
  memcpy (p, c->inflight_addr, c->inflight_size);
  munmap (c->inflight_addr, c->inflight_size);
  close (c->inflight_fd);
  c->inflight_addr = p;
  c->inflight_fd = fd;
  c->inflight_offset = 0;
  return 0;

 fail:
  vuc_set_error ("inflight region copy: %s", strerror (errno));
  if (fd >= 0)
    close (fd);
  return -1;
}

int
vuc_migrate (struct vuc_conn *c, const char *path, bool keep_inflight)
{
  int old = c->sock;
  unsigned i;
  char *p = strdup (path);

  if (p == NULL) {
    vuc_set_error ("out of memory");
    return -1;
  }
  for (i = 0; i < c->nqueues; i++)
    if (c->rings[i]->started) {
      vuc_set_error ("queue %u still runs: stop every queue first", i);
      free (p);
      return -1;
    }
  if (keep_inflight && c->inflight_fd >= 0 && copy_inflight (c) == -1) {
    free (p);
    return -1;
  }
  if (!keep_inflight)
    drop_inflight (c);
  c->log_on = false;            /* the destination does not log */
  free (c->path);
  c->path = p;
  /* The source stays connected until the destination runs. */
  set_sock (c, -1);
  c->inited = c->started = c->realized = c->mem_added = false;
  for (i = 0; i < c->nqueues; i++)
    c->rings[i]->stopped = false;
  if (vuc_open (c, 0) == -1 || vuc_start (c) == -1) {
    if (old >= 0)
      close (old);
    return -1;
  }
  if (old >= 0)
    close (old);
  return 0;
}

/* A guest reset as QEMU 9.2+ does it: stop every ring (drain),
 * RESET_DEVICE when negotiated, forget the rings and the inflight
 * region; the next vuc_start starts from scratch on this connection. */
int
vuc_reset_device (struct vuc_conn *c)
{
  uint16_t base;
  uint64_t us;
  unsigned i;

  for (i = 0; i < c->nqueues; i++)
    if (c->rings[i]->started &&
        vuc_stop_queue (c, i, VUC_STOP_DRAIN, &base, &us) == -1)
      return -1;
  if (vuc_has_pf (c, VU_PF_RESET_DEVICE) &&
      vuc_set (c, VU_RESET_DEVICE, NULL, 0, NULL, 0) == -1)
    return -1;
  for (i = 0; i < c->nqueues; i++) {
    vuc_ring_reset (c->rings[i]);
    c->rings[i]->stopped = false;
  }
  drop_inflight (c);
  c->started = false;
  return 0;
}

/* Replaces an eventfd with a fresh one (keeps the old on failure). */
static void
renew_eventfd (int *fd)
{
  int n = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);

  if (n >= 0) {
    close (*fd);
    *fd = n;
  }
}

/* A new front-end, as a new QEMU: the back-end may still be winding
 * down the old connection (a polling queue thread sees the rings we
 * clear and may break them), so it gets new call and error eventfds
 * that the old connection's signals cannot reach. */
void
vuc_reset_guest (struct vuc_conn *c)
{
  unsigned i;

  vuc_close (c);
  for (i = 0; i < c->nqueues; i++) {
    vuc_ring_reset (c->rings[i]);
    renew_eventfd (&c->rings[i]->call_fd);
    renew_eventfd (&c->rings[i]->err_fd);
    renew_eventfd (&c->rings[i]->masked_fd);
    c->rings[i]->stopped = false;
  }
  drop_inflight (c);
  vuc_log_free (c);
  c->acked_features = 0;
}

/* ------------------------------------------------------------------ */
/* Dirty logging */

#define LOG_CHUNK (VUC_LOG_PAGE * UINT64_C (64))   /* one u64 of bitmap */

/* vhost_get_log_size: whole u64 chunks up to the last byte of guest
 * memory or of any used ring's log address range. */
uint64_t
vuc_log_default_size (const struct vuc_conn *c)
{
  uint64_t last = c->mem.gpa + c->mem.size - 1;
  unsigned i;

  for (i = 0; i < c->nqueues; i++) {
    const struct vuc_ring *r = c->rings[i];
    uint64_t end;
    if (r->log_gpa == 0)
      continue;
    end = r->log_gpa + 4 + 8 * (uint64_t) r->num + 2 - 1;
    if (end > last)
      last = end;
  }
  return (last / LOG_CHUNK + 1) * 8;
}

void
vuc_log_free (struct vuc_conn *c)
{
  if (c->log_addr)
    munmap (c->log_addr, c->log_size);
  if (c->log_fd >= 0)
    close (c->log_fd);
  c->log_addr = NULL;
  c->log_fd = -1;
  c->log_size = 0;
  c->log_on = false;
}

static int
new_log (uint64_t size, int *fd, uint8_t **addr)
{
  void *p;

  if (size == 0 || size > (UINT64_C (1) << 32)) {
    vuc_set_error ("dirty log of %llu bytes: 1 byte to 4 GiB",
                   (unsigned long long) size);
    return -1;
  }
  *fd = memfd_create ("blkgate-io-dirty-log", MFD_CLOEXEC);
  if (*fd == -1 || ftruncate (*fd, size) == -1) {
    vuc_set_error ("dirty log: %s", strerror (errno));
    goto fail;
  }
  p = mmap (NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, *fd, 0);
  if (p == MAP_FAILED) {
    vuc_set_error ("dirty log: mmap: %s", strerror (errno));
    goto fail;
  }
  *addr = p;
  return 0;
 fail:
  if (*fd >= 0)
    close (*fd);
  *fd = -1;
  return -1;
}

/* SET_LOG_BASE {mmap_size, mmap_offset 0} with the fd.  With LOG_SHMFD
 * the back-end answers with a u64 (vhost_user_set_log_base waits for
 * it); the message never asks for a REPLY_ACK. */
static int
set_log_base (struct vuc_conn *c, int fd, uint64_t size)
{
  struct vu_log l = { .mmap_size = size, .mmap_offset = 0 };
  uint64_t rep;

  if (vuc_has_pf (c, VU_PF_LOG_SHMFD))
    return vuc_call (c, VU_SET_LOG_BASE, &l, sizeof l, &fd, 1, &rep,
                     sizeof rep, NULL);
  return vuc_send (c, VU_SET_LOG_BASE, VU_VERSION, &l, sizeof l, &fd, 1);
}

static int
log_preconditions (struct vuc_conn *c)
{
  if (!c->started) {
    vuc_set_error ("the device is not started");
    return -1;
  }
  if (!(c->features & VU_BIT (VU_F_LOG_ALL))) {
    vuc_set_error ("the back-end does not offer VHOST_F_LOG_ALL (QEMU "
                   "blocks migration)");
    return -1;
  }
  if (!vuc_has_pf (c, VU_PF_LOG_SHMFD)) {
    vuc_set_error ("PROTOCOL_F_LOG_SHMFD is not negotiated (QEMU blocks "
                   "migration)");
    return -1;
  }
  return 0;
}

int
vuc_log_resize (struct vuc_conn *c, uint64_t size)
{
  uint8_t *addr;
  int fd;

  if (size == 0)
    size = vuc_log_default_size (c);
  if (log_preconditions (c) == -1 || new_log (size, &fd, &addr) == -1)
    return -1;
  if (set_log_base (c, fd, size) == -1) {
    munmap (addr, size);
    close (fd);
    return -1;
  }
  /* The back-end has moved to the new log: carry the old bits over, as
   * QEMU syncs the old log before it frees it. */
  if (c->log_addr) {
    uint64_t i, n = size < c->log_size ? size : c->log_size;
    for (i = 0; i < n; i++)
      addr[i] |= __atomic_load_n (&c->log_addr[i], __ATOMIC_RELAXED);
    munmap (c->log_addr, c->log_size);
    close (c->log_fd);
  }
  c->log_addr = addr;
  c->log_fd = fd;
  c->log_size = size;
  return 0;
}

/* vhost_migration_log(enable): log resize, then vhost_dev_set_log. */
int
vuc_log_start (struct vuc_conn *c, uint64_t size)
{
  unsigned i;

  if (vuc_log_resize (c, size) == -1)
    return -1;
  c->log_on = true;
  if (vuc_set_u64 (c, VU_SET_FEATURES, features_now (c)) == -1 ||
      barrier (c) == -1)
    return -1;
  for (i = 0; i < c->nqueues; i++)
    if (c->rings[i]->started &&
        (set_vring_addr (c, c->rings[i], true) == -1 || barrier (c) == -1))
      return -1;
  return 0;
}

int
vuc_log_stop (struct vuc_conn *c)
{
  unsigned i;

  if (!c->log_on) {
    vuc_set_error ("dirty logging is not on");
    return -1;
  }
  c->log_on = false;
  if (!c->started)
    return 0;
  if (vuc_set_u64 (c, VU_SET_FEATURES, features_now (c)) == -1)
    return -1;
  for (i = 0; i < c->nqueues; i++)
    if (c->rings[i]->started && set_vring_addr (c, c->rings[i], false) == -1)
      return -1;
  return barrier (c);
}

int
vuc_log_stop_features (struct vuc_conn *c)
{
  if (!c->log_on) {
    vuc_set_error ("dirty logging is not on");
    return -1;
  }
  if (vuc_set_u64 (c, VU_SET_FEATURES, c->acked_features) == -1)
    return -1;
  return barrier (c);
}

int
vuc_log_stop_rings (struct vuc_conn *c)
{
  unsigned i;

  if (!c->log_on) {
    vuc_set_error ("dirty logging is not on");
    return -1;
  }
  for (i = 0; i < c->nqueues; i++)
    if (c->rings[i]->started && set_vring_addr (c, c->rings[i], false) == -1)
      return -1;
  return barrier (c);
}

int
vuc_log_test (const struct vuc_conn *c, uint64_t gpa)
{
  uint64_t page = gpa / VUC_LOG_PAGE;

  if (c->log_addr == NULL || page / 8 >= c->log_size)
    return -1;
  return (__atomic_load_n (&c->log_addr[page / 8], __ATOMIC_RELAXED)
          >> (page % 8)) & 1;
}
