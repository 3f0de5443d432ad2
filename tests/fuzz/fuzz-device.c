/* device.c and what it drives: the vhost-user state machine, with real
 * queue threads, rings in guest memory, inflight regions and the null
 * plugin as the backend.  No QEMU: the harness plays the front-end on
 * a socketpair, handing each message to device_handle as the main loop
 * does after vu_msg_recv (framing has its own target, fuzz-vu-msg).
 *
 * Input: a sequence of operations, each one byte and its arguments:
 *   0x00-0xef  a message with that request number: flags byte, payload
 *              size (u16, at most the payload union), the payload, then
 *              an fd byte (low nibble: count, up to VU_MAX_FDS) and a
 *              u16 of 2-bit kinds: 0 guest RAM (a 64 KiB memfd), 1 a
 *              new eventfd, 2 an inflight region (inflight_create, 2
 *              queues of 128), 3 /dev/null
 *   0xf0       write guest RAM: offset (u16), length (u16, < 512), bytes
 *   0xf1       kick: write every eventfd handed out
 *   0xf2       write the inflight region: offset (u16), length, bytes
 *   other      end
 * Replies are read and thrown away (with any fd they carry).  A
 * message the device refuses closes the connection, as in the daemon;
 * the device is then freed, which stops its queues. */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "device.h"
#include "fuzz.h"
#include "inflight.h"
#include "null-backend.h"
#include "vu-msg.h"

#define RAM_SIZE (64 * 1024)
#define MAX_OPS 64
#define MAX_OWN_FDS 64

static struct backend *be;
static const struct device_config cfg = {
  .nqueues = FUZZ_QUEUES, .inflight_migration = true, .poll_us = 0,
};

/* The front-end's side of one input. */
static struct {
  int sock;                     /* our end of the socketpair */
  int ram;                      /* guest RAM memfd */
  int inflight;                 /* inflight region memfd, or -1 */
  uint64_t inflight_size;
  int own[MAX_OWN_FDS];         /* eventfds we keep to kick */
  unsigned nown;
} fe;

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  be = null_backend_open ();
  return 0;
}

/* Reads and drops whatever the device replied, with its fds. */
static void
drain (void)
{
  for (;;) {
    char buf[512], control[CMSG_SPACE (8 * sizeof (int))];
    struct iovec iov = { buf, sizeof buf };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = control,
                         .msg_controllen = sizeof control };
    struct cmsghdr *cm;

    if (recvmsg (fe.sock, &mh, MSG_DONTWAIT | MSG_CMSG_CLOEXEC) <= 0)
      return;
    for (cm = CMSG_FIRSTHDR (&mh); cm; cm = CMSG_NXTHDR (&mh, cm))
      if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
        size_t i, n = (cm->cmsg_len - CMSG_LEN (0)) / sizeof (int);
        for (i = 0; i < n; i++) {
          int fd;
          memcpy (&fd, CMSG_DATA (cm) + i * sizeof fd, sizeof fd);
          close (fd);
        }
      }
  }
}

/* The inflight region, made on first use. */
static int
inflight_region (void)
{
  const char *err;

  if (fe.inflight == -1 &&
      inflight_create (FUZZ_QUEUES, 128, &fe.inflight, &fe.inflight_size,
                       &err) == -1)
    abort ();
  return fe.inflight;
}

static int
make_fd (unsigned kind)
{
  int fd;

  switch (kind) {
  case 0:
    return dup (fe.ram);
  case 1:
    fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (fd >= 0 && fe.nown < MAX_OWN_FDS)
      fe.own[fe.nown++] = dup (fd);
    return fd;
  case 2:
    return dup (inflight_region ());
  default:
    return open ("/dev/null", O_RDWR | O_CLOEXEC);
  }
}

/* One message; -1 once the device closed the connection. */
static int
message (struct device *dev, uint8_t request, struct input *in)
{
  struct vu_msg msg;
  uint8_t fdspec;
  uint16_t kinds;
  unsigned i;

  memset (&msg, 0, sizeof msg);
  msg.hdr.request = request;
  msg.hdr.flags = take_u8 (in);
  msg.hdr.size = take_u16 (in) % (sizeof msg.payload + 1);
  take (in, &msg.payload, msg.hdr.size);
  fdspec = take_u8 (in);
  kinds = take_u16 (in);
  msg.nfds = (fdspec & 15) % (VU_MAX_FDS + 1);
  for (i = 0; i < msg.nfds; i++)
    if ((msg.fds[i] = make_fd ((kinds >> (2 * i)) & 3)) == -1)
      abort ();                 /* out of fds: something leaks them */
  if (device_handle (dev, &msg) == -1)
    return -1;
  drain ();
  return 0;
}

static void
poke (int fd, uint64_t limit, struct input *in)
{
  uint16_t off = take_u16 (in), len = take_u16 (in) % 512;
  uint8_t buf[512];

  take (in, buf, len);
  if (off < limit)
    (void) pwrite (fd, buf, len < limit - off ? len : limit - off, off);
}

static void
kick (void)
{
  unsigned i;

  for (i = 0; i < fe.nown; i++)
    (void) eventfd_write (fe.own[i], 1);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct input in = { data, size };
  struct device *dev;
  unsigned ops, i;
  int sv[2];

  memset (&fe, 0, sizeof fe);
  fe.inflight = -1;
  fe.ram = memfd_create ("fuzz-ram", MFD_CLOEXEC);
  if (fe.ram == -1 || ftruncate (fe.ram, RAM_SIZE) == -1 ||
      socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0,
                  sv) == -1)
    abort ();
  fe.sock = sv[1];
  dev = device_new (be, sv[0], &cfg);
  if (dev == NULL)
    abort ();
  for (ops = 0; ops < MAX_OPS && in.n > 0; ops++) {
    uint8_t op = take_u8 (&in);
    if (op < 0xf0) {
      if (message (dev, op, &in) == -1)
        break;
    }
    else if (op == 0xf0)
      poke (fe.ram, RAM_SIZE, &in);
    else if (op == 0xf1)
      kick ();
    else if (op == 0xf2)
      poke (inflight_region (), fe.inflight_size, &in);
    else
      break;
  }
  device_free (dev);
  close (sv[0]);
  close (sv[1]);
  close (fe.ram);
  if (fe.inflight >= 0)
    close (fe.inflight);
  for (i = 0; i < fe.nown; i++)
    close (fe.own[i]);
  check_fd_leak ();
  return 0;
}
