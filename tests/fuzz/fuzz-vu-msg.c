/* vu-msg.c: framing and validation of one vhost-user message.
 *
 * Input: one byte, the number of fds (low 4 bits) sent with the first
 * byte of the stream, then the bytes the front-end writes: header and
 * payload, maybe truncated, maybe followed by junk.  They go through a
 * socketpair to vu_msg_recv (with the fds as SCM_RIGHTS), then
 * vu_msg_check, as the daemon's main loop does.  Every fd received
 * must be closed again (check_fd_leak). */

#include <config.h>

#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/socket.h>

#include "fuzz.h"
#include "vu-msg.h"

#define MAX_STREAM 4096

static void
send_stream (int sock, const uint8_t *p, size_t n, unsigned nfds)
{
  char control[CMSG_SPACE (16 * sizeof (int))] = { 0 };
  int fds[16];
  struct iovec iov = { (void *) p, n };
  struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
  unsigned i;

  for (i = 0; i < nfds; i++)
    fds[i] = open ("/dev/null", O_RDONLY | O_CLOEXEC);
  if (nfds) {
    struct cmsghdr *cm;
    mh.msg_control = control;
    mh.msg_controllen = CMSG_SPACE (nfds * sizeof (int));
    cm = CMSG_FIRSTHDR (&mh);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN (nfds * sizeof (int));
    memcpy (CMSG_DATA (cm), fds, nfds * sizeof (int));
  }
  if (n || nfds)
    (void) sendmsg (sock, &mh, MSG_NOSIGNAL);
  for (i = 0; i < nfds; i++)
    close (fds[i]);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct input in = { data, size };
  unsigned nfds = take_u8 (&in) & 15;
  size_t n = in.n < MAX_STREAM ? in.n : MAX_STREAM;
  int sv[2];

  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1)
    abort ();
  send_stream (sv[1], in.p, n, nfds);
  shutdown (sv[1], SHUT_WR);    /* a truncated message ends in EOF */
  for (;;) {
    struct vu_msg msg;
    const char *err = NULL;
    int r = vu_msg_recv (sv[0], &msg, &err);

    if (r <= 0)
      break;
    if (msg.nfds > VU_MAX_FDS)
      abort ();
    if (vu_msg_check (&msg, &err) == 0 && msg.hdr.size > sizeof msg.payload)
      abort ();
    (void) vu_request_name (msg.hdr.request);
    vu_msg_close_fds (&msg);
  }
  close (sv[0]);
  close (sv[1]);
  check_fd_leak ();
  return 0;
}
