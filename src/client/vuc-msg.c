/* vhost-user framing, front-end side: send a request with its fds,
 * receive a reply within a deadline, check it the way QEMU does (flags
 * exactly 0x5, the same request id, the expected size).
 *
 * A back-end that dies or stalls must give a clear error, not a hang,
 * so every read waits in poll with the connection's timeout. */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "vuc.h"

/* A short description of a payload, for -v. */
static void
describe (uint32_t req, const union vu_payload *p, uint32_t size,
          char *buf, size_t len)
{
  buf[0] = '\0';
  switch (req) {
  case VU_SET_VRING_NUM: case VU_SET_VRING_BASE: case VU_GET_VRING_BASE:
  case VU_SET_VRING_ENABLE: case VU_GET_VRING_BASE_SKIP_DRAIN:
    if (size >= sizeof p->state)
      snprintf (buf, len, " {index %u, num %u}", p->state.index,
                p->state.num);
    return;
  case VU_SET_VRING_ADDR:
    if (size >= sizeof p->addr)
      snprintf (buf, len, " {index %u, flags %u, desc 0x%" PRIx64 ", used 0x%"
                PRIx64 ", avail 0x%" PRIx64 ", log 0x%" PRIx64 "}",
                p->addr.index, p->addr.flags, p->addr.desc_user_addr,
                p->addr.used_user_addr, p->addr.avail_user_addr,
                p->addr.log_guest_addr);
    return;
  case VU_SET_MEM_TABLE:
    if (size >= 8)
      snprintf (buf, len, " {%u regions}", p->memory.nregions);
    return;
  case VU_ADD_MEM_REG: case VU_REM_MEM_REG:
    if (size >= sizeof p->mem_reg)
      snprintf (buf, len, " {gpa 0x%" PRIx64 ", size 0x%" PRIx64 ", uva 0x%"
                PRIx64 ", offset 0x%" PRIx64 "}",
                p->mem_reg.region.guest_phys_addr,
                p->mem_reg.region.memory_size,
                p->mem_reg.region.userspace_addr,
                p->mem_reg.region.mmap_offset);
    return;
  case VU_GET_CONFIG: case VU_SET_CONFIG:
    if (size >= VU_CONFIG_HDR_SIZE)
      snprintf (buf, len, " {offset %u, size %u, flags %u}",
                p->config.offset, p->config.size, p->config.flags);
    return;
  case VU_GET_INFLIGHT_FD: case VU_SET_INFLIGHT_FD:
    if (size >= 20)
      snprintf (buf, len, " {mmap_size %" PRIu64 ", offset %" PRIu64
                ", queues %u, queue_size %u}", p->inflight.mmap_size,
                p->inflight.mmap_offset, p->inflight.num_queues,
                p->inflight.queue_size);
    return;
  }
  if (size == 8)
    snprintf (buf, len, " 0x%" PRIx64, p->u64);
}

static void
trace (const struct vuc_conn *c, const char *dir, const struct vu_header *h,
       const void *payload, unsigned nfds)
{
  union vu_payload p;
  char d[256];

  if (!c->verbose)
    return;
  memset (&p, 0, sizeof p);
  memcpy (&p, payload, h->size < sizeof p ? h->size : sizeof p);
  describe (h->request, &p, h->size, d, sizeof d);
  fprintf (stderr, "blkgate-io: %s %s (%u) flags 0x%x size %u%s%s\n", dir,
           vu_request_name (h->request), h->request, h->flags, h->size,
           nfds ? " +fd" : "", d);
}

int
vuc_send_raw (struct vuc_conn *c, const struct vu_header *h,
              const void *body, uint32_t body_len, const int *fds,
              unsigned nfds)
{
  struct iovec iov[2] = { { (void *) h, sizeof *h },
                          { (void *) body, body_len } };
  char control[CMSG_SPACE (VU_MAX_FDS * sizeof (int))];
  struct msghdr mh = { .msg_iov = iov, .msg_iovlen = body_len ? 2 : 1 };
  ssize_t r;

  if (c->sock < 0) {
    vuc_set_error ("not connected");
    return -1;
  }
  if (nfds > VU_MAX_FDS) {
    vuc_set_error ("too many fds for one message");
    return -1;
  }
  if (nfds) {
    struct cmsghdr *cm;
    memset (control, 0, sizeof control);
    mh.msg_control = control;
    mh.msg_controllen = CMSG_SPACE (nfds * sizeof (int));
    cm = CMSG_FIRSTHDR (&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN (nfds * sizeof (int));
    memcpy (CMSG_DATA (cm), fds, nfds * sizeof (int));
  }
  trace (c, "->", h, body, nfds);
  do
    r = sendmsg (c->sock, &mh, MSG_NOSIGNAL);
  while (r == -1 && errno == EINTR);
  if (r == -1 && (errno == EPIPE || errno == ECONNRESET))
    c->hangup = true;
  if (r != (ssize_t) (sizeof *h + body_len)) {
    vuc_set_error ("sending %s: %s", vu_request_name (h->request),
                   r < 0 ? strerror (errno) : "short write");
    return -1;
  }
  return 0;
}

int
vuc_send (struct vuc_conn *c, uint32_t req, uint32_t flags,
          const void *payload, uint32_t size, const int *fds, unsigned nfds)
{
  struct vu_header h = { .request = req, .flags = flags, .size = size };

  return vuc_send_raw (c, &h, payload, size, fds, nfds);
}

/* Waits until sock is readable; 1, 0 on timeout, -1 on error. */
static int
wait_readable (int sock, uint64_t deadline)
{
  struct pollfd p = { .fd = sock, .events = POLLIN };
  uint64_t now;
  int r;

  for (;;) {
    now = vuc_now_ns ();
    if (now >= deadline)
      return 0;
    r = poll (&p, 1, (int) ((deadline - now + 999999) / 1000000));
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1) {
      vuc_set_error ("poll: %s", strerror (errno));
      return -1;
    }
    if (r > 0)
      return 1;
  }
}

static void
take_fds (struct msghdr *mh, struct vu_msg *msg)
{
  struct cmsghdr *cm;

  for (cm = CMSG_FIRSTHDR (mh); cm; cm = CMSG_NXTHDR (mh, cm)) {
    size_t n, i;
    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
      continue;
    n = (cm->cmsg_len - CMSG_LEN (0)) / sizeof (int);
    for (i = 0; i < n; i++) {
      int fd;
      memcpy (&fd, CMSG_DATA (cm) + i * sizeof fd, sizeof fd);
      if (msg->nfds < VU_MAX_FDS)
        msg->fds[msg->nfds++] = fd;
      else
        close (fd);
    }
  }
}

/* Reads exactly len bytes (the first read may carry fds). */
static int
read_full (struct vuc_conn *c, struct vu_msg *msg, void *buf, size_t len,
           uint64_t deadline, bool first)
{
  char control[CMSG_SPACE (VU_MAX_FDS * sizeof (int))];
  size_t done = 0;

  while (done < len) {
    struct iovec iov = { (char *) buf + done, len - done };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
    ssize_t r;
    int w = wait_readable (c->sock, deadline);

    if (w < 0)
      return -1;
    if (w == 0) {
      if (done || !first)
        vuc_set_error ("the back-end stopped in the middle of a message");
      else
        vuc_set_error ("no reply within %d ms", c->timeout_ms);
      return done || !first ? -1 : 0;
    }
    if (first && done == 0) {
      mh.msg_control = control;
      mh.msg_controllen = sizeof control;
    }
    r = recvmsg (c->sock, &mh, MSG_CMSG_CLOEXEC | MSG_DONTWAIT);
    if (r == -1 && (errno == EINTR || errno == EAGAIN))
      continue;
    if (r == 0 || errno == ECONNRESET)
      c->hangup = true;
    if (r == 0) {
      vuc_set_error ("the back-end closed the connection");
      return -1;
    }
    if (r < 0) {
      vuc_set_error ("recvmsg: %s", strerror (errno));
      return -1;
    }
    if (mh.msg_control)
      take_fds (&mh, msg);
    done += r;
  }
  return 1;
}

int
vuc_recv (struct vuc_conn *c, struct vu_msg *msg, int timeout_ms)
{
  uint64_t deadline = vuc_now_ns () + (uint64_t) timeout_ms * 1000000;
  int r;

  msg->nfds = 0;
  if (c->sock < 0) {
    vuc_set_error ("not connected");
    return -1;
  }
  r = read_full (c, msg, &msg->hdr, sizeof msg->hdr, deadline, true);
  if (r <= 0)
    return r;
  if (msg->hdr.size > sizeof msg->payload) {
    vuc_set_error ("%s reply: payload of %u bytes is larger than any "
                   "message", vu_request_name (msg->hdr.request),
                   msg->hdr.size);
    return -1;
  }
  if (read_full (c, msg, &msg->payload, msg->hdr.size, deadline, false) <= 0)
    return -1;
  trace (c, "<-", &msg->hdr, &msg->payload, msg->nfds);
  c->replies++;
  return 1;
}

static void
close_msg_fds (struct vu_msg *msg)
{
  unsigned i;

  for (i = 0; i < msg->nfds; i++)
    if (msg->fds[i] >= 0)
      close (msg->fds[i]);
  msg->nfds = 0;
}

/* Receives the reply to req and checks its header as QEMU does. */
static int
recv_reply (struct vuc_conn *c, uint32_t req, struct vu_msg *msg)
{
  int r = vuc_recv (c, msg, c->timeout_ms);

  if (r == 0)
    vuc_set_error ("%s: no reply within %d ms", vu_request_name (req),
                   c->timeout_ms);
  else if (r < 0) {
    char why[512];
    snprintf (why, sizeof why, "%s", vuc_error ());
    vuc_set_error ("%s: %s", vu_request_name (req), why);
  }
  if (r <= 0)
    return -1;
  if (msg->hdr.request != req) {
    vuc_set_error ("%s: the reply is for request %u (%s)",
                   vu_request_name (req), msg->hdr.request,
                   vu_request_name (msg->hdr.request));
    close_msg_fds (msg);
    return -1;
  }
  if (msg->hdr.flags != (VU_VERSION | VU_FLAG_REPLY)) {
    vuc_set_error ("%s: reply flags are 0x%x, not 0x5",
                   vu_request_name (req), msg->hdr.flags);
    close_msg_fds (msg);
    return -1;
  }
  return 0;
}

int
vuc_call (struct vuc_conn *c, uint32_t req, const void *payload,
          uint32_t size, const int *fds, unsigned nfds,
          void *reply, uint32_t reply_size, int *reply_fd)
{
  struct vu_msg msg;

  if (reply_fd)
    *reply_fd = -1;
  if (vuc_send (c, req, VU_VERSION, payload, size, fds, nfds) == -1 ||
      recv_reply (c, req, &msg) == -1)
    return -1;
  if (msg.hdr.size != reply_size) {
    vuc_set_error ("%s: reply of %u bytes, expected %u",
                   vu_request_name (req), msg.hdr.size, reply_size);
    close_msg_fds (&msg);
    return -1;
  }
  if (msg.nfds > (reply_fd ? 1u : 0u)) {
    vuc_set_error ("%s: reply carries %u unexpected fds",
                   vu_request_name (req), msg.nfds);
    close_msg_fds (&msg);
    return -1;
  }
  if (reply_fd && msg.nfds)
    *reply_fd = msg.fds[0];
  memcpy (reply, &msg.payload, reply_size);
  return 0;
}

int
vuc_set (struct vuc_conn *c, uint32_t req, const void *payload,
         uint32_t size, const int *fds, unsigned nfds)
{
  bool ack = vuc_has_pf (c, VU_PF_REPLY_ACK);
  struct vu_msg msg;

  if (vuc_send (c, req, VU_VERSION | (ack ? VU_FLAG_NEED_REPLY : 0),
                payload, size, fds, nfds) == -1)
    return -1;
  if (!ack)
    return 0;
  if (recv_reply (c, req, &msg) == -1)
    return -1;
  close_msg_fds (&msg);
  if (msg.hdr.size != 8) {
    vuc_set_error ("%s: REPLY_ACK of %u bytes, expected 8",
                   vu_request_name (req), msg.hdr.size);
    return -1;
  }
  if (msg.payload.u64 != 0) {
    vuc_set_error ("%s: the back-end refused it (ack 0x%" PRIx64 ")",
                   vu_request_name (req), msg.payload.u64);
    return -1;
  }
  return 0;
}

int
vuc_get_u64 (struct vuc_conn *c, uint32_t req, uint64_t *v)
{
  return vuc_call (c, req, NULL, 0, NULL, 0, v, sizeof *v, NULL);
}

int
vuc_set_u64 (struct vuc_conn *c, uint32_t req, uint64_t v)
{
  return vuc_set (c, req, &v, sizeof v, NULL, 0);
}

int
vuc_set_state (struct vuc_conn *c, uint32_t req, uint32_t index,
               uint32_t num)
{
  struct vu_vring_state s = { index, num };

  return vuc_set (c, req, &s, sizeof s, NULL, 0);
}

int
vuc_set_vring_fd (struct vuc_conn *c, uint32_t req, uint32_t index, int fd)
{
  uint64_t v = index | (fd < 0 ? VU_VRING_NOFD_MASK : 0);

  return vuc_set (c, req, &v, sizeof v, &fd, fd < 0 ? 0 : 1);
}
