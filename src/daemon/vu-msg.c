/* vhost-user message framing.
 *
 * The front-end is not trusted: a message larger than any legitimate
 * payload, a truncated one, or one with fds where none belong is
 * refused here, before any handler sees it.  Every fd received is
 * either handed to a handler or closed. */

#include <config.h>

#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>

#include "vu-msg.h"

void
vu_msg_close_fds (struct vu_msg *msg)
{
  unsigned i;

  for (i = 0; i < msg->nfds; i++)
    if (msg->fds[i] >= 0) {
      close (msg->fds[i]);
      msg->fds[i] = -1;
    }
  msg->nfds = 0;
}

/* Collects SCM_RIGHTS fds; anything beyond VU_MAX_FDS is closed. */
static void
take_fds (struct msghdr *mh, struct vu_msg *msg)
{
  struct cmsghdr *cm;

  for (cm = CMSG_FIRSTHDR (mh); cm; cm = CMSG_NXTHDR (mh, cm)) {
    size_t n, i;
    int *fds;

    if (cm->cmsg_level != SOL_SOCKET || cm->cmsg_type != SCM_RIGHTS)
      continue;
    n = (cm->cmsg_len - CMSG_LEN (0)) / sizeof (int);
    fds = (int *) CMSG_DATA (cm);
    for (i = 0; i < n; i++) {
      int fd;
      memcpy (&fd, &fds[i], sizeof fd);
      if (msg->nfds < VU_MAX_FDS)
        msg->fds[msg->nfds++] = fd;
      else
        close (fd);
    }
  }
}

/* Reads what is missing of the header with recvmsg (its fds come with
 * its bytes).  Returns bytes read, 0 at EOF or -1 (errno set). */
static ssize_t
recv_header (int sock, struct vu_rx *rx, int flags)
{
  char control[CMSG_SPACE (VU_MAX_FDS * sizeof (int))];
  struct iovec iov = { (char *) &rx->msg.hdr + rx->got,
                       sizeof rx->msg.hdr - rx->got };
  struct msghdr mh = {
    .msg_iov = &iov, .msg_iovlen = 1,
    .msg_control = control, .msg_controllen = sizeof control,
  };
  ssize_t r = recvmsg (sock, &mh, MSG_CMSG_CLOEXEC | flags);

  if (r > 0) {
    take_fds (&mh, &rx->msg);
    if (mh.msg_flags & MSG_CTRUNC) {
      errno = EMSGSIZE;
      return -1;
    }
  }
  return r;
}

/* The payload is read without a control buffer: fds attached to its
 * bytes are dropped (closed) by the kernel, never received. */
static ssize_t
recv_payload (int sock, struct vu_rx *rx, int flags)
{
  size_t off = rx->got - sizeof rx->msg.hdr;

  return recv (sock, (char *) &rx->msg.payload + off,
               rx->msg.hdr.size - off, flags);
}

void
vu_rx_reset (struct vu_rx *rx)
{
  vu_msg_close_fds (&rx->msg);
  memset (&rx->msg.hdr, 0, sizeof rx->msg.hdr);
  memset (&rx->msg.payload, 0, sizeof rx->msg.payload);
  rx->got = 0;
}

int
vu_rx_step (int sock, struct vu_rx *rx, int flags, const char **err)
{
  const size_t hsize = sizeof rx->msg.hdr;

  for (;;) {
    bool in_header = rx->got < hsize;
    ssize_t r;

    if (!in_header && rx->msg.hdr.size > sizeof rx->msg.payload) {
      *err = "message payload too large";
      goto fail;
    }
    if (!in_header && rx->got == hsize + rx->msg.hdr.size)
      return 1;
    r = in_header ? recv_header (sock, rx, flags)
                  : recv_payload (sock, rx, flags);
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK) &&
        (flags & MSG_DONTWAIT))
      return 2;
    if (r == 0 && rx->got == 0)
      return 0;
    if (r <= 0) {
      if (r == -1 && errno == EMSGSIZE)
        *err = "too many file descriptors on a message";
      else if (r == -1 && rx->got == 0)
        *err = "recvmsg failed";
      else
        *err = in_header ? "truncated message header"
                         : "truncated message payload";
      goto fail;
    }
    rx->got += r;
  }

 fail:
  vu_rx_reset (rx);
  return -1;
}

int
vu_msg_recv (int sock, struct vu_msg *msg, const char **err)
{
  struct vu_rx rx = { .got = 0 };
  int r;

  rx.msg.nfds = 0;
  vu_rx_reset (&rx);
  r = vu_rx_step (sock, &rx, MSG_WAITALL, err);
  *msg = rx.msg;
  return r;
}

/* Sizes a message type must have: exact, or a range for variable
 * payloads (memory table, config). */
struct shape {
  uint32_t min, max;
  unsigned min_fds, max_fds;
};

static int
shape_of (const struct vu_msg *msg, struct shape *s)
{
  const uint32_t u64 = 8, state = sizeof (struct vu_vring_state);

  switch (msg->hdr.request) {
  case VU_GET_FEATURES: case VU_GET_PROTOCOL_FEATURES: case VU_GET_QUEUE_NUM:
  case VU_SET_OWNER: case VU_RESET_OWNER: case VU_GET_MAX_MEM_SLOTS:
  case VU_GET_STATUS: case VU_RESET_DEVICE:
    *s = (struct shape) { 0, 0, 0, 0 }; break;
  case VU_SET_FEATURES: case VU_SET_PROTOCOL_FEATURES: case VU_SET_STATUS:
    *s = (struct shape) { u64, u64, 0, 0 }; break;
  case VU_SET_VRING_KICK: case VU_SET_VRING_CALL: case VU_SET_VRING_ERR:
    *s = (struct shape) { u64, u64, 0, 1 }; break;
  case VU_SET_VRING_NUM: case VU_SET_VRING_BASE: case VU_GET_VRING_BASE:
  case VU_SET_VRING_ENABLE: case VU_GET_VRING_BASE_SKIP_DRAIN:
    *s = (struct shape) { state, state, 0, 0 }; break;
  case VU_SET_VRING_ADDR:
    *s = (struct shape) { sizeof (struct vu_vring_addr),
                          sizeof (struct vu_vring_addr), 0, 0 }; break;
  case VU_SET_MEM_TABLE:
    *s = (struct shape) { 8 + sizeof (struct vu_mem_region),
                          sizeof (struct vu_mem_table), 1, VU_MAX_FDS }; break;
  case VU_ADD_MEM_REG:
    *s = (struct shape) { sizeof (struct vu_mem_single),
                          sizeof (struct vu_mem_single), 1, 1 }; break;
  case VU_REM_MEM_REG:          /* QEMU < 7.1 sends a stray fd */
    *s = (struct shape) { sizeof (struct vu_mem_single),
                          sizeof (struct vu_mem_single), 0, 1 }; break;
  case VU_SET_LOG_BASE:
    *s = (struct shape) { sizeof (struct vu_log), sizeof (struct vu_log),
                          1, 1 }; break;
  case VU_SET_LOG_FD: case VU_SET_BACKEND_REQ_FD:
    *s = (struct shape) { 0, u64, 1, 1 }; break;
  case VU_GET_CONFIG: case VU_SET_CONFIG:
    *s = (struct shape) { VU_CONFIG_HDR_SIZE, sizeof (struct vu_config),
                          0, 0 }; break;
  case VU_GET_INFLIGHT_FD:
    *s = (struct shape) { 20, sizeof (struct vu_inflight), 0, 0 }; break;
  case VU_SET_INFLIGHT_FD:
    *s = (struct shape) { 20, sizeof (struct vu_inflight), 1, 1 }; break;
  default:
    return -1;
  }
  return 0;
}

int
vu_msg_check (const struct vu_msg *msg, const char **err)
{
  const union vu_payload *p = &msg->payload;
  struct shape s;

  if ((msg->hdr.flags & VU_VERSION_MASK) != VU_VERSION) {
    *err = "bad protocol version in message flags";
    return -1;
  }
  if (shape_of (msg, &s) == -1) {
    *err = "unknown request";
    return -1;
  }
  if (msg->hdr.size < s.min || msg->hdr.size > s.max) {
    *err = "payload size does not match the request";
    return -1;
  }
  if (msg->nfds < s.min_fds || msg->nfds > s.max_fds) {
    *err = "wrong number of file descriptors for the request";
    return -1;
  }
  switch (msg->hdr.request) {
  case VU_SET_MEM_TABLE:
    if (p->memory.nregions == 0 || p->memory.nregions > VU_MAX_MEM_REGIONS ||
        msg->hdr.size != 8 + p->memory.nregions * sizeof (struct vu_mem_region) ||
        msg->nfds != p->memory.nregions) {
      *err = "memory table size, region count and fds disagree";
      return -1;
    }
    break;
  case VU_GET_CONFIG: case VU_SET_CONFIG:
    if (p->config.size > VU_MAX_CONFIG_SIZE ||
        msg->hdr.size != VU_CONFIG_HDR_SIZE + p->config.size) {
      *err = "config payload size does not match its header";
      return -1;
    }
    break;
  case VU_SET_VRING_KICK: case VU_SET_VRING_CALL: case VU_SET_VRING_ERR:
    if ((p->u64 & VU_VRING_NOFD_MASK) ? msg->nfds != 0 : msg->nfds != 1) {
      *err = "vring fd flag and fds disagree";
      return -1;
    }
    break;
  }
  return 0;
}

int
vu_msg_reply (int sock, const struct vu_msg *msg, const void *payload,
              uint32_t size, int fd)
{
  struct vu_header hdr = {
    .request = msg->hdr.request,
    .flags = VU_VERSION | VU_FLAG_REPLY,
    .size = size,
  };
  struct iovec iov[2] = { { &hdr, sizeof hdr }, { (void *) payload, size } };
  char control[CMSG_SPACE (sizeof (int))];
  struct msghdr mh = { .msg_iov = iov, .msg_iovlen = size ? 2 : 1 };
  ssize_t r;

  if (fd >= 0) {
    struct cmsghdr *cm;
    memset (control, 0, sizeof control);
    mh.msg_control = control;
    mh.msg_controllen = sizeof control;
    cm = CMSG_FIRSTHDR (&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN (sizeof (int));
    memcpy (CMSG_DATA (cm), &fd, sizeof fd);
  }
  do
    r = sendmsg (sock, &mh, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (r == -1 && errno == EINTR);
  if (r >= 0 && r != (ssize_t) (sizeof hdr + size))
    errno = EAGAIN;             /* sent in part: the socket is full */
  return r == (ssize_t) (sizeof hdr + size) ? 0 : -1;
}
