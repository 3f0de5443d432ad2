/* vu-hostile: a hostile vhost-user front-end.
 *
 *   vu-hostile SOCKET [--rounds N] [--seed S] [--first R]
 *                     [--scenarios LIST] [--timeout SECONDS] [--pid PID]
 *                     [--verbose]
 *   vu-hostile --list
 *
 * Opens N connections to a vhost-user back-end and sends malformed or
 * malicious traffic on each (one scenario per connection, in turn),
 * then closes it.  Every round ends with shutdown(SHUT_WR) and a wait
 * for the server to close its side, so the next round never races the
 * server's clean-up, and a server that stops answering is noticed (the
 * wait, every reply and every send are bounded by --timeout).  After
 * the rounds it connects once more and does a proper handshake
 * (GET_FEATURES, GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES,
 * GET_QUEUE_NUM, SET_OWNER, GET_CONFIG of 60 bytes), checking that
 * every reply is well-formed.
 *
 * Exit status: 0 when the server survived every round and the final
 * handshake succeeded; 1 when the server died, hung, sent a malformed
 * reply or failed the handshake (the messages of the failing round are
 * printed); 2 on usage errors.
 *
 * With --pid, the server's process is checked after every round, so a
 * round that kills it is named; without it, the death shows when the
 * next round cannot connect, and the previous round is blamed.
 *
 * Round R uses its own generator seeded from (seed, R), so a failure
 * can be replayed alone: --seed S --first R --rounds 1.  Scenario
 * groups: "protocol" (default: framing, sizes, fds, memory tables,
 * ring addresses and sizes, config), "deep" (a working ring fed with
 * hostile descriptor chains, guest memory or inflight regions smaller
 * than announced or changed behind the back-end's back, a saturated
 * call eventfd, a kick fd at EOF), "all" (both), or scenario names,
 * comma-separated.
 * "shrink" (the memfd truncated after the back-end mapped it) is only
 * run when named. */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_ring.h>

#include "vhost-user-proto.h"

/* ------------------------------------------------------------------ */
/* Options, statistics, the round's transcript */

static struct {
  const char *sock;
  unsigned long rounds;
  uint64_t seed;
  unsigned long first;
  int timeout_ms;
  bool verbose;
  const char *scenarios;
  long pid;                     /* the server's, to notice its death */
} opt = { .rounds = 100, .timeout_ms = 10000, .scenarios = "protocol" };

static struct {
  unsigned long rounds, msgs, bytes, fds, replies, bad_replies,
    closed_by_server, kept_open, refused_connects;
} st;

static char transcript[32768], prev_transcript[32768];
static size_t transcript_len;
static unsigned long cur_round;
static const char *cur_scenario = "", *prev_scenario;

static void note (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
static void
note (const char *fmt, ...)
{
  va_list ap;
  int n;

  if (transcript_len >= sizeof transcript - 64)
    return;
  va_start (ap, fmt);
  n = vsnprintf (transcript + transcript_len,
                 sizeof transcript - transcript_len - 1, fmt, ap);
  va_end (ap);
  if (n > 0)
    transcript_len += (size_t) n < sizeof transcript - transcript_len - 1
      ? (size_t) n : sizeof transcript - transcript_len - 1;
  transcript[transcript_len++] = '\n';
  transcript[transcript_len] = '\0';
  if (opt.verbose) {
    fprintf (stderr, "[%lu %s] ", cur_round, cur_scenario);
    va_start (ap, fmt);
    vfprintf (stderr, fmt, ap);
    va_end (ap);
    fputc ('\n', stderr);
  }
}

/* blame_previous: 0 this round, 1 the previous one, 2 this one but
 * show the previous one too. */
static void vfail (int blame_previous, const char *fmt, va_list ap)
  __attribute__ ((format (printf, 2, 0), noreturn));
static void
vfail (int blame_previous, const char *fmt, va_list ap)
{
  unsigned long round = cur_round;
  const char *scenario = cur_scenario, *msgs = transcript;

  /* The server died before this round could connect: the previous
   * round killed it (the server closing a connection looks the same
   * as refusing a message, so that round could not tell). */
  if (blame_previous == 1 && prev_scenario && round > 0) {
    round--;
    scenario = prev_scenario;
    msgs = prev_transcript;
  }
  fprintf (stderr, "vu-hostile: FAIL in round %lu (scenario %s, seed %"
           PRIu64 "): ", round, scenario, opt.seed);
  vfprintf (stderr, fmt, ap);
  fputc ('\n', stderr);
  if (blame_previous == 2 && prev_scenario && round > 0)
    fprintf (stderr, "vu-hostile: (it may also have been round %lu, scenario"
             " %s, whose clean-up can outlast its connection:)\n%s",
             round - 1, prev_scenario, prev_transcript);
  if (msgs[0])
    fprintf (stderr, "vu-hostile: messages of round %lu:\n%s", round, msgs);
  if (strcmp (scenario, "final-handshake") != 0)
    fprintf (stderr, "vu-hostile: replay with: vu-hostile %s --seed %"
             PRIu64 " --first %lu --rounds 1 --scenarios %s\n", opt.sock,
             opt.seed, round, scenario);
  fprintf (stderr, "vu-hostile: %lu rounds done, %lu messages sent\n",
           st.rounds, st.msgs);
  exit (1);
}

static void fail (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2), noreturn));
static void
fail (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vfail (0, fmt, ap);
}

static void fail_prev (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2), noreturn));
static void
fail_prev (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vfail (1, fmt, ap);
}

static void fail_died (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2), noreturn));
static void
fail_died (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vfail (2, fmt, ap);
}

/* With --pid: false once the server process is gone (or a zombie). */
static bool
server_alive (void)
{
  char path[64], buf[512], *p;
  FILE *f;
  size_t n;

  if (opt.pid <= 0)
    return true;
  snprintf (path, sizeof path, "/proc/%ld/stat", opt.pid);
  f = fopen (path, "r");
  if (f == NULL)
    return false;
  n = fread (buf, 1, sizeof buf - 1, f);
  fclose (f);
  buf[n] = '\0';
  p = strrchr (buf, ')');
  return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* ------------------------------------------------------------------ */
/* Random numbers: xorshift64*, one stream per round. */

static uint64_t rs;

static uint64_t
rnd (void)
{
  rs ^= rs >> 12;
  rs ^= rs << 25;
  rs ^= rs >> 27;
  return rs * UINT64_C (2685821657736338717);
}

static uint64_t
rn (uint64_t n)
{
  return n ? rnd () % n : 0;
}

static bool
chance (unsigned pct)
{
  return rn (100) < pct;
}

static void
fill_random (void *buf, size_t len)
{
  uint8_t *p = buf;
  size_t i;

  for (i = 0; i < len; i++)
    p[i] = rnd () >> 56;
}

static void
seed_round (unsigned long round)
{
  rs = opt.seed * UINT64_C (0x9e3779b97f4a7c15) + round * 2 + 1;
  if (rs == 0)
    rs = 1;
  rnd ();
  rnd ();
}

/* ------------------------------------------------------------------ */
/* Time */

static int64_t
now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
sleep_ms (int ms)
{
  struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000 };
  nanosleep (&ts, NULL);
}

/* ------------------------------------------------------------------ */
/* Connection */

struct conn {
  int fd;
  bool dead;                    /* the server closed it (or we broke it) */
  uint64_t features, pfeatures; /* offered by the server */
  bool ack;                     /* REPLY_ACK negotiated */
};


static void
set_timeouts (int fd, int ms)
{
  struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };

  setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

/* Connects; a missing or refusing socket means the server is gone. */
static void
conn_open (struct conn *c)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  int attempt;

  memset (c, 0, sizeof *c);
  strncpy (sa.sun_path, opt.sock, sizeof sa.sun_path - 1);
  for (attempt = 0;; attempt++) {
    c->fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c->fd == -1) {
      perror ("vu-hostile: socket");
      exit (1);
    }
    if (connect (c->fd, (struct sockaddr *) &sa, sizeof sa) == 0)
      break;
    close (c->fd);
    /* The backlog can be full for a moment; anything else is fatal. */
    if (errno == EAGAIN && attempt < 50) {
      sleep_ms (100);
      continue;
    }
    fail_prev ("cannot connect to %s: %s (the server died)", opt.sock,
               strerror (errno));
  }
  set_timeouts (c->fd, opt.timeout_ms);
}

/* Sends len bytes, fds on the first byte.  Errors from a server that
 * closed the connection mark it dead; a send that times out means the
 * server stopped reading, which is a failure. */
static int
send_raw (struct conn *c, const void *buf, size_t len, const int *fds,
          unsigned nfds)
{
  char control[CMSG_SPACE (32 * sizeof (int))];
  size_t done = 0;

  if (c->dead)
    return -1;
  if (nfds > 32)
    nfds = 32;
  while (done < len || (len == 0 && nfds && done == 0)) {
    struct iovec iov = { (char *) buf + done, len - done };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
    ssize_t r;

    if (nfds && done == 0) {
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
    r = sendmsg (c->fd, &mh, MSG_NOSIGNAL);
    if (r == -1 && errno == EINTR)
      continue;
    if (r == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
      fail ("the server stopped reading: a send blocked for %d ms",
            opt.timeout_ms);
    if (r == -1) {
      note ("   (send: %s: the server closed the connection)",
            strerror (errno));
      c->dead = true;
      return -1;
    }
    if (len == 0)
      break;
    done += r;
  }
  st.bytes += len;
  st.fds += nfds;
  return 0;
}

/* Sends a header and size bytes of payload (or only avail bytes of it,
 * for truncated messages: the header still says size). */
static int
send_msg_n (struct conn *c, uint32_t req, uint32_t flags, uint32_t size,
            const void *payload, size_t avail, const int *fds, unsigned nfds)
{
  uint8_t buf[sizeof (struct vu_header) + 4096];
  struct vu_header h = { req, flags, size };

  if (avail > 4096)
    avail = 4096;
  memcpy (buf, &h, sizeof h);
  if (avail)
    memcpy (buf + sizeof h, payload, avail);
  st.msgs++;
  note ("-> %s (%u) flags 0x%x size %u%s, %u fd%s", vu_request_name (req), req,
        flags, size, avail < size ? " (truncated)" : "", nfds,
        nfds == 1 ? "" : "s");
  return send_raw (c, buf, sizeof h + avail, fds, nfds);
}

static int
send_msg (struct conn *c, uint32_t req, const void *payload, uint32_t size,
          const int *fds, unsigned nfds)
{
  return send_msg_n (c, req, VU_VERSION, size, payload, size, fds, nfds);
}

struct reply {
  struct vu_header hdr;
  uint8_t payload[sizeof (union vu_payload)];
  int fd;
};

/* Waits up to ms for a reply.  1: got one (checked for flags 0x5 and a
 * sane size), 0: the server closed the connection, -1: nothing came. */
static int
recv_reply (struct conn *c, struct reply *r, int ms)
{
  char control[CMSG_SPACE (8 * sizeof (int))];
  struct iovec iov = { &r->hdr, sizeof r->hdr };
  struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
                       .msg_control = control,
                       .msg_controllen = sizeof control };
  struct pollfd pfd = { c->fd, POLLIN, 0 };
  struct cmsghdr *cm;
  ssize_t n;
  int p;

  r->fd = -1;
  if (c->dead)
    return 0;
  do
    p = poll (&pfd, 1, ms);
  while (p == -1 && errno == EINTR);
  if (p == 0)
    return -1;
  n = recvmsg (c->fd, &mh, MSG_WAITALL | MSG_CMSG_CLOEXEC);
  if (n == 0 || (n == -1 && errno == ECONNRESET)) {
    note ("   (the server closed the connection)");
    c->dead = true;
    return 0;
  }
  if (n == -1 && (errno == EAGAIN || errno == EWOULDBLOCK))
    fail ("a reply header stopped half-way for %d ms", opt.timeout_ms);
  for (cm = CMSG_FIRSTHDR (&mh); cm; cm = CMSG_NXTHDR (&mh, cm))
    if (cm->cmsg_level == SOL_SOCKET && cm->cmsg_type == SCM_RIGHTS) {
      size_t k, nfd = (cm->cmsg_len - CMSG_LEN (0)) / sizeof (int);
      for (k = 0; k < nfd; k++) {
        int fd;
        memcpy (&fd, CMSG_DATA (cm) + k * sizeof (int), sizeof fd);
        if (r->fd == -1)
          r->fd = fd;
        else
          close (fd);
      }
    }
  if (n != sizeof r->hdr)
    fail ("truncated reply header (%zd bytes)", n);
  st.replies++;
  if (r->hdr.flags != (VU_VERSION | VU_FLAG_REPLY) ||
      r->hdr.size > sizeof r->payload) {
    st.bad_replies++;
    fail ("malformed reply to %s: flags 0x%x size %u", vu_request_name (r->hdr.request),
          r->hdr.flags, r->hdr.size);
  }
  if (r->hdr.size) {
    n = recv (c->fd, r->payload, r->hdr.size, MSG_WAITALL);
    if (n != (ssize_t) r->hdr.size)
      fail ("truncated reply payload (%zd of %u bytes)", n, r->hdr.size);
  }
  note ("<- reply %s size %u%s", vu_request_name (r->hdr.request), r->hdr.size,
        r->fd >= 0 ? " + fd" : "");
  return 1;
}

/* Expects a reply to req of size bytes.  1: got it, 0: the server
 * closed the connection instead (refused what we sent before). */
static int
expect_reply (struct conn *c, uint32_t req, uint32_t size, struct reply *r)
{
  int got = recv_reply (c, r, opt.timeout_ms);

  if (got == -1)
    fail ("no reply to %s within %d ms: the server stopped answering",
          vu_request_name (req), opt.timeout_ms);
  if (got == 0)
    return 0;
  if (r->hdr.request != req || (size != UINT32_MAX && r->hdr.size != size)) {
    st.bad_replies++;
    fail ("reply to %s has request %u and size %u (expected %u and %u)",
          vu_request_name (req), r->hdr.request, r->hdr.size, req, size);
  }
  return 1;
}

/* A request whose reply is a u64.  Returns 1 with *v, or 0 if closed. */
static int
get_u64 (struct conn *c, uint32_t req, uint64_t *v)
{
  struct reply r;

  if (send_msg (c, req, NULL, 0, NULL, 0) == -1)
    return 0;
  if (!expect_reply (c, req, 8, &r)) {
    if (r.fd >= 0)
      close (r.fd);
    return 0;
  }
  memcpy (v, r.payload, 8);
  if (r.fd >= 0)
    fail ("unexpected fd with the reply to %s", vu_request_name (req));
  return 1;
}

/* With REPLY_ACK: sends with NEED_REPLY and reads the ack.  Returns
 * 1 on ack 0, 2 on a non-zero ack, 0 when the connection closed.
 * Without it: just sends (1, or 0 if the connection is dead). */
static int
send_acked (struct conn *c, uint32_t req, const void *payload, uint32_t size,
            const int *fds, unsigned nfds)
{
  struct reply r;
  uint64_t v;

  if (!c->ack)
    return send_msg (c, req, payload, size, fds, nfds) == 0;
  if (send_msg_n (c, req, VU_VERSION | VU_FLAG_NEED_REPLY, size, payload,
                  size, fds, nfds) == -1)
    return 0;
  if (!expect_reply (c, req, 8, &r))
    return 0;
  memcpy (&v, r.payload, 8);
  return v == 0 ? 1 : 2;
}

static bool
has_own_reply (uint32_t req)
{
  switch (req) {
  case VU_GET_FEATURES: case VU_GET_PROTOCOL_FEATURES: case VU_GET_QUEUE_NUM:
  case VU_GET_MAX_MEM_SLOTS: case VU_GET_VRING_BASE: case VU_GET_CONFIG:
  case VU_GET_INFLIGHT_FD: case VU_GET_STATUS:
  case VU_GET_VRING_BASE_SKIP_DRAIN:
    return true;
  }
  return false;
}

/* Sends a message and reads the reply the protocol promises for it, if
 * any: its own reply for the GET_* requests, an ack for NEED_REPLY once
 * REPLY_ACK is negotiated.  Either that reply comes or the server closes
 * the connection; anything else (silence) is a failure.  Returns false
 * once the connection is closed. */
static bool
transact (struct conn *c, uint32_t req, uint32_t flags, uint32_t size,
          const void *payload, size_t avail, const int *fds, unsigned nfds)
{
  struct reply r;

  if (send_msg_n (c, req, flags, size, payload, avail, fds, nfds) == -1)
    return false;
  if (avail < size || size > sizeof (union vu_payload))
    return !c->dead;            /* the server waits for the rest, or closes */
  if (has_own_reply (req) || ((flags & VU_FLAG_NEED_REPLY) && c->ack)) {
    if (!expect_reply (c, req, UINT32_MAX, &r))
      return false;
    if (r.fd >= 0)
      close (r.fd);
  }
  return !c->dead;
}

/* A barrier: GET_FEATURES must come back unless the server has closed
 * the connection.  True while the connection is usable. */
static bool
alive (struct conn *c)
{
  uint64_t f;
  return !c->dead && get_u64 (c, VU_GET_FEATURES, &f);
}

/* Ends a round: the server must notice our EOF and close its side. */
static void
conn_close (struct conn *c)
{
  int64_t deadline = now_ms () + opt.timeout_ms;
  char buf[4096];
  bool closed = c->dead;

  shutdown (c->fd, SHUT_WR);
  while (!closed) {
    struct pollfd pfd = { c->fd, POLLIN, 0 };
    int64_t left = deadline - now_ms ();
    ssize_t n;

    if (left <= 0 || poll (&pfd, 1, (int) left) == 0)
      fail ("the server did not close the connection within %d ms of our"
            " EOF (hung?)", opt.timeout_ms);
    n = read (c->fd, buf, sizeof buf);
    if (n == 0 || (n == -1 && errno != EINTR && errno != EAGAIN))
      closed = true;
  }
  close (c->fd);
  c->fd = -1;
}

/* ------------------------------------------------------------------ */
/* File descriptors and guest memory */

static int
new_eventfd (void)
{
  int fd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (fd == -1) {
    perror ("vu-hostile: eventfd");
    exit (1);
  }
  return fd;
}

static int
new_memfd (size_t size)
{
  int fd = memfd_create ("vu-hostile", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd == -1 || ftruncate (fd, size) == -1) {
    perror ("vu-hostile: memfd");
    exit (1);
  }
  return fd;
}

/* An fd of a random kind: eventfd, memfd, pipe end, socket, /dev/null. */
static int
random_fd (void)
{
  int p[2], fd;

  switch (rn (6)) {
  case 0: case 1:
    return new_eventfd ();
  case 2:
    return new_memfd (rn (3) * 4096);
  case 3: {
      unsigned k = rn (2);
      if (pipe2 (p, O_CLOEXEC) == -1)
        return new_eventfd ();
      close (p[1 - k]);
      return p[k];
    }
  case 4:
    if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) == -1)
      return new_eventfd ();
    close (p[1]);
    return p[0];
  default:
    fd = open ("/dev/null", O_RDWR | O_CLOEXEC);
    return fd >= 0 ? fd : new_eventfd ();
  }
}

static void
close_fds (int *fds, unsigned n)
{
  unsigned i;
  for (i = 0; i < n; i++)
    if (fds[i] >= 0)
      close (fds[i]);
}

/* Guest memory for scenarios with a working ring: one memfd, mapped
 * here too so we can write rings and buffers. */
#define GUEST_SIZE  (1024 * 1024)
#define GUEST_GPA   UINT64_C (0x100000000)
#define GUEST_UVA   UINT64_C (0x7f5a00000000)
#define DESC_OFF    0x0000
#define AVAIL_OFF   0x2000
#define USED_OFF    0x3000
#define TABLE_OFF   0x8000      /* indirect tables, 0x8000 - 0xffff */
#define BUF_OFF     0x10000     /* data buffers */

struct guest {
  int memfd;
  uint8_t *mem;
  size_t size;                  /* of the region */
  unsigned num;
  uint32_t qidx;                /* the queue the ring is for */
  uint16_t aidx;
  int kick, call, err;
  bool broken;                  /* the server said so (err eventfd) */
};

static void
guest_free (struct guest *g)
{
  if (g->mem && g->mem != MAP_FAILED)
    munmap (g->mem, g->size);
  if (g->memfd >= 0)
    close (g->memfd);
  if (g->kick >= 0)
    close (g->kick);
  if (g->call >= 0)
    close (g->call);
  if (g->err >= 0)
    close (g->err);
  memset (g, 0, sizeof *g);
  g->memfd = g->kick = g->call = g->err = -1;
}

/* file_size may be smaller than size (a region the fd cannot back). */
static void
guest_new (struct guest *g, size_t size, size_t file_size)
{
  memset (g, 0, sizeof *g);
  g->kick = g->call = g->err = -1;
  g->size = size;
  g->memfd = new_memfd (file_size);
  g->mem = file_size ? mmap (NULL, file_size, PROT_READ | PROT_WRITE,
                             MAP_SHARED, g->memfd, 0) : NULL;
  if (g->mem == MAP_FAILED) {
    perror ("vu-hostile: mmap");
    exit (1);
  }
  g->size = file_size ? file_size : size;
  if (g->mem)
    memset (g->mem, 0, file_size);
}

static int
send_mem_table_1 (struct conn *c, const struct guest *g, uint64_t size)
{
  struct vu_mem_table t = { .nregions = 1 };

  t.regions[0] = (struct vu_mem_region) { GUEST_GPA, size, GUEST_UVA, 0 };
  return send_acked (c, VU_SET_MEM_TABLE, &t, 8 + sizeof t.regions[0],
                     &g->memfd, 1);
}

/* Negotiates features like QEMU.  want_pf: protocol features wanted
 * (masked with the offer).  Returns false if the connection closed. */
static bool
negotiate (struct conn *c, uint64_t drop_features, uint64_t want_pf)
{
  uint64_t f, pf;

  if (!get_u64 (c, VU_GET_FEATURES, &c->features))
    return false;
  f = c->features & (VU_BIT (VU_F_VERSION_1) | VU_BIT (VU_F_INDIRECT_DESC) |
                     VU_BIT (VU_F_EVENT_IDX) | VU_BIT (VU_F_PROTOCOL_FEATURES)
                     | VU_BIT (VIRTIO_BLK_F_SEG_MAX) |
                     VU_BIT (VIRTIO_BLK_F_BLK_SIZE) |
                     VU_BIT (VIRTIO_BLK_F_FLUSH) | VU_BIT (VIRTIO_BLK_F_MQ) |
                     VU_BIT (VIRTIO_BLK_F_DISCARD) |
                     VU_BIT (VIRTIO_BLK_F_WRITE_ZEROES) |
                     VU_BIT (VIRTIO_BLK_F_CONFIG_WCE) |
                     VU_BIT (VIRTIO_BLK_F_RO));
  f &= ~drop_features;
  if (f & VU_BIT (VU_F_PROTOCOL_FEATURES)) {
    if (!get_u64 (c, VU_GET_PROTOCOL_FEATURES, &c->pfeatures))
      return false;
    pf = c->pfeatures & want_pf;
    if (send_msg (c, VU_SET_PROTOCOL_FEATURES, &pf, 8, NULL, 0) == -1)
      return false;
    c->ack = pf & VU_BIT (VU_PF_REPLY_ACK);
  }
  if (send_acked (c, VU_SET_FEATURES, &f, 8, NULL, 0) != 1)
    return false;
  c->features = f;
  return send_acked (c, VU_SET_OWNER, NULL, 0, NULL, 0) == 1;
}

/* Sets up queue 0 of num entries in g's memory and starts it (KICK).
 * Returns false if the server refused or closed. */
static bool
start_ring (struct conn *c, struct guest *g, unsigned num, uint64_t desc,
            uint64_t avail, uint64_t used)
{
  struct vu_vring_state s = { g->qidx, num };
  struct vu_vring_addr a = { g->qidx, 0, desc, used, avail, 0 };
  uint64_t idx = g->qidx;

  g->num = num;
  g->aidx = 0;
  if (g->kick < 0)
    g->kick = new_eventfd ();
  if (g->call < 0)
    g->call = new_eventfd ();
  if (g->err < 0)
    g->err = new_eventfd ();
  if (send_acked (c, VU_SET_VRING_NUM, &s, sizeof s, NULL, 0) != 1)
    return false;
  s.num = 0;
  if (send_acked (c, VU_SET_VRING_BASE, &s, sizeof s, NULL, 0) != 1 ||
      send_acked (c, VU_SET_VRING_ADDR, &a, sizeof a, NULL, 0) != 1 ||
      send_acked (c, VU_SET_VRING_CALL, &idx, 8, &g->call, 1) != 1 ||
      send_acked (c, VU_SET_VRING_ERR, &idx, 8, &g->err, 1) != 1 ||
      send_acked (c, VU_SET_VRING_KICK, &idx, 8, &g->kick, 1) != 1)
    return false;
  if (c->features & VU_BIT (VU_F_PROTOCOL_FEATURES)) {
    s.num = 1;
    if (send_acked (c, VU_SET_VRING_ENABLE, &s, sizeof s, NULL, 0) != 1)
      return false;
  }
  return alive (c);
}

static bool
start_ring_default (struct conn *c, struct guest *g, unsigned num)
{
  return start_ring (c, g, num, GUEST_UVA + DESC_OFF, GUEST_UVA + AVAIL_OFF,
                     GUEST_UVA + USED_OFF);
}

/* Ring access (our side, as the driver). */
static struct vring_desc *
g_desc (struct guest *g)
{
  return (struct vring_desc *) (g->mem + DESC_OFF);
}

static struct vring_avail *
g_avail (struct guest *g)
{
  return (struct vring_avail *) (g->mem + AVAIL_OFF);
}

static struct vring_used *
g_used (struct guest *g)
{
  return (struct vring_used *) (g->mem + USED_OFF);
}

static void
put_desc (struct vring_desc *d, unsigned i, uint64_t addr, uint32_t len,
          uint16_t flags, uint16_t next)
{
  d[i].addr = addr;
  d[i].len = len;
  d[i].flags = flags;
  d[i].next = next;
}

static void
post (struct guest *g, uint16_t head)
{
  g_avail (g)->ring[g->aidx % g->num] = head;
  g->aidx++;
  __atomic_store_n (&g_avail (g)->idx, g->aidx, __ATOMIC_RELEASE);
}

static void
kick (struct guest *g)
{
  eventfd_write (g->kick, 1);
}

/* Waits up to ms for used->idx to reach want; true if it did.  Stops
 * early when the server signals the err eventfd (ring broken). */
static bool
wait_used (struct guest *g, uint16_t want, int ms)
{
  int64_t deadline = now_ms () + ms;
  eventfd_t v;

  while (__atomic_load_n (&g_used (g)->idx, __ATOMIC_ACQUIRE) != want) {
    if (now_ms () > deadline || g->broken)
      return false;
    if (g->err >= 0 && read (g->err, &v, sizeof v) == sizeof v) {
      note ("   (the server signalled the ring broken)");
      g->broken = true;
      return false;
    }
    sleep_ms (1);
  }
  return true;
}

/* Stops queue 0 with GET_VRING_BASE: the reply must come (the drain
 * must finish).  False if the connection closed. */
static bool
stop_ring (struct conn *c, const struct guest *g)
{
  struct vu_vring_state s = { g->qidx, 0 };
  struct reply r;

  if (send_msg (c, VU_GET_VRING_BASE, &s, sizeof s, NULL, 0) == -1)
    return false;
  if (!expect_reply (c, VU_GET_VRING_BASE, sizeof s, &r))
    return false;
  memcpy (&s, r.payload, sizeof s);
  note ("   (queue %u stopped at avail %u)", g->qidx, s.num);
  return true;
}

/* ------------------------------------------------------------------ */
/* Payloads of the right size with random (sometimes plausible) values */

static const uint32_t known_reqs[] = {
  VU_GET_FEATURES, VU_SET_FEATURES, VU_SET_OWNER, VU_RESET_OWNER,
  VU_SET_MEM_TABLE, VU_SET_LOG_BASE, VU_SET_LOG_FD, VU_SET_VRING_NUM,
  VU_SET_VRING_ADDR, VU_SET_VRING_BASE, VU_GET_VRING_BASE,
  VU_SET_VRING_KICK, VU_SET_VRING_CALL, VU_SET_VRING_ERR,
  VU_GET_PROTOCOL_FEATURES, VU_SET_PROTOCOL_FEATURES, VU_GET_QUEUE_NUM,
  VU_SET_VRING_ENABLE, VU_SEND_RARP, VU_NET_SET_MTU, VU_SET_BACKEND_REQ_FD,
  VU_IOTLB_MSG, VU_SET_VRING_ENDIAN, VU_GET_CONFIG, VU_SET_CONFIG,
  VU_GET_INFLIGHT_FD, VU_SET_INFLIGHT_FD, VU_RESET_DEVICE,
  VU_GET_MAX_MEM_SLOTS, VU_ADD_MEM_REG, VU_REM_MEM_REG, VU_SET_STATUS,
  VU_GET_STATUS, VU_GET_VRING_BASE_SKIP_DRAIN,
};
#define NKNOWN (sizeof known_reqs / sizeof known_reqs[0])

/* The payload size a request legitimately has (one of them). */
static uint32_t
right_size (uint32_t req)
{
  switch (req) {
  case VU_SET_FEATURES: case VU_SET_PROTOCOL_FEATURES: case VU_SET_STATUS:
  case VU_SET_VRING_KICK: case VU_SET_VRING_CALL: case VU_SET_VRING_ERR:
  case VU_SET_VRING_NUM: case VU_SET_VRING_BASE: case VU_GET_VRING_BASE:
  case VU_SET_VRING_ENABLE: case VU_GET_VRING_BASE_SKIP_DRAIN:
  case VU_SET_LOG_FD: case VU_SET_BACKEND_REQ_FD: case VU_NET_SET_MTU:
  case VU_SEND_RARP: case VU_SET_VRING_ENDIAN:
    return 8;
  case VU_SET_VRING_ADDR: case VU_ADD_MEM_REG: case VU_REM_MEM_REG:
    return 40;
  case VU_SET_MEM_TABLE:
    return 8 + 32;
  case VU_SET_LOG_BASE:
    return 16;
  case VU_GET_CONFIG: case VU_SET_CONFIG:
    return 12 + 60;
  case VU_GET_INFLIGHT_FD: case VU_SET_INFLIGHT_FD:
    return 24;
  default:
    return 0;
  }
}

static uint32_t
random_queue_index (void)
{
  switch (rn (5)) {
  case 0: return 0;
  case 1: return 1;
  case 2: return rn (256);
  case 3: return 63 + rn (3);
  default: return rnd ();
  }
}

static uint32_t
random_num (void)
{
  static const uint32_t v[] = { 0, 1, 2, 3, 16, 100, 128, 256, 1024, 1025,
                                2048, 32768, 65535, 65536, 0x80000000u,
                                UINT32_MAX };
  return chance (80) ? v[rn (sizeof v / sizeof v[0])] : (uint32_t) rnd ();
}

static uint64_t
random_addr (void)
{
  switch (rn (8)) {
  case 0: return 0;
  case 1: return GUEST_UVA + rn (GUEST_SIZE);
  case 2: return GUEST_UVA + GUEST_SIZE - rn (64);
  case 3: return GUEST_GPA + rn (GUEST_SIZE);
  case 4: return UINT64_MAX - rn (4096);
  case 5: return GUEST_UVA + (rn (GUEST_SIZE) & ~UINT64_C (15));
  default: return rnd ();
  }
}

/* Fills a payload of size bytes for req with random values, mostly in
 * plausible ranges. */
static void
random_payload (uint32_t req, uint8_t *p, uint32_t size)
{
  fill_random (p, size);
  switch (req) {
  case VU_SET_VRING_NUM: case VU_SET_VRING_BASE: case VU_GET_VRING_BASE:
  case VU_SET_VRING_ENABLE: case VU_GET_VRING_BASE_SKIP_DRAIN:
    if (size >= 8) {
      struct vu_vring_state s = { random_queue_index (), random_num () };
      memcpy (p, &s, sizeof s);
    }
    break;
  case VU_SET_VRING_KICK: case VU_SET_VRING_CALL: case VU_SET_VRING_ERR:
    if (size >= 8) {
      uint64_t v = chance (70) ? rn (3) | (chance (30) ? VU_VRING_NOFD_MASK : 0)
        : rnd ();
      memcpy (p, &v, 8);
    }
    break;
  case VU_SET_VRING_ADDR:
    if (size >= 40) {
      struct vu_vring_addr a = { random_queue_index (), rn (3), random_addr (),
                                 random_addr (), random_addr (),
                                 random_addr () };
      memcpy (p, &a, sizeof a);
    }
    break;
  case VU_SET_MEM_TABLE:
    if (size >= 8) {
      uint32_t n = chance (80) ? (size - 8) / 32 : (uint32_t) rn (12);
      memcpy (p, &n, 4);
    }
    break;
  case VU_GET_CONFIG: case VU_SET_CONFIG:
    if (size >= 12) {
      uint32_t h[3] = { chance (50) ? rn (100) : (uint32_t) rnd (),
                        chance (70) ? size - 12 : (uint32_t) rn (300),
                        rn (3) };
      memcpy (p, h, sizeof h);
    }
    break;
  case VU_GET_INFLIGHT_FD: case VU_SET_INFLIGHT_FD:
    if (size >= 20) {
      struct vu_inflight in = { chance (50) ? rn (1 << 20) : rnd (),
                                chance (50) ? 0 : rnd (), random_num (),
                                random_num () };
      memcpy (p, &in, size < sizeof in ? size : sizeof in);
    }
    break;
  }
}

/* ------------------------------------------------------------------ */
/* Scenarios: protocol group */

/* Random bytes, sometimes with fds. */
static void
sc_random_bytes (struct conn *c)
{
  uint8_t buf[2048];
  size_t len = 1 + rn (chance (20) ? sizeof buf : 64);
  int fds[8] = { 0 };
  unsigned nfds = chance (30) ? 1 + rn (8) : 0, i;

  fill_random (buf, len);
  if (chance (30)) {            /* a plausible request id in front */
    uint32_t r = known_reqs[rn (NKNOWN)];
    memcpy (buf, &r, len < 4 ? len : 4);
  }
  for (i = 0; i < nfds; i++)
    fds[i] = random_fd ();
  note ("-> %zu random bytes, %u fds", len, nfds);
  st.msgs++;
  send_raw (c, buf, len, fds, nfds);
  close_fds (fds, nfds);
}

/* A header with random request, flags and size, then a payload that
 * may be shorter than announced. */
static void
sc_random_header (struct conn *c)
{
  uint8_t payload[1024];
  unsigned n = 1 + rn (4), k;

  for (k = 0; k < n && !c->dead; k++) {
    uint32_t req = chance (50) ? rn (50) : chance (50)
      ? known_reqs[rn (NKNOWN)] : (uint32_t) rnd ();
    uint32_t flags = chance (40) ? VU_VERSION : chance (50)
      ? (uint32_t) rn (16) : (uint32_t) rnd ();
    uint32_t size;
    size_t avail;
    int fds[8] = { 0 };
    unsigned nfds = chance (20) ? 1 + rn (8) : 0, i;

    switch (rn (6)) {
    case 0: size = rn (16); break;
    case 1: size = rn (300); break;
    case 2: size = 270 + rn (6); break;           /* around the union */
    case 3: size = 0x80000000u + rn (16); break;
    case 4: size = UINT32_MAX - rn (16); break;
    default: size = (uint32_t) rnd (); break;
    }
    avail = size;
    if (avail > sizeof payload || chance (40))
      avail = rn ((avail < sizeof payload ? avail : sizeof payload) + 1);
    fill_random (payload, avail);
    for (i = 0; i < nfds; i++)
      fds[i] = random_fd ();
    transact (c, req, flags, size, payload, avail, fds, nfds);
    close_fds (fds, nfds);
    if (avail < size)
      break;                    /* the rest would be eaten as payload */
  }
}

/* Known requests with a payload size that does not fit them. */
static void
sc_wrong_size (struct conn *c)
{
  uint8_t payload[300];
  uint32_t req = known_reqs[rn (NKNOWN)];
  uint32_t right = right_size (req), size;

  switch (rn (5)) {
  case 0: size = right + 1 + rn (8); break;
  case 1: size = right ? right - 1 - rn (right) : 1 + rn (16); break;
  case 2: size = right ? 0 : 8; break;
  case 3: size = sizeof (union vu_payload) + rn (2); break;
  default: size = rn (sizeof payload); break;
  }
  if (size == right)
    size++;
  if (size > sizeof payload)
    size = sizeof payload;
  random_payload (req, payload, size);
  transact (c, req, chance (80) ? VU_VERSION : VU_VERSION |
            VU_FLAG_NEED_REPLY, size, payload, size, NULL, 0);
  if (chance (50))
    alive (c);
}

/* SET_MEM_TABLE whose region count, size and fds disagree. */
static void
sc_mem_table_fds (struct conn *c)
{
  struct vu_mem_table t;
  int fds[12] = { 0 };
  unsigned n = 1 + rn (8), nfds, i;
  uint32_t size = 8 + n * 32;

  memset (&t, 0, sizeof t);
  t.nregions = n;
  for (i = 0; i < n; i++)
    t.regions[i] = (struct vu_mem_region) { (uint64_t) i << 24, 65536,
                                            GUEST_UVA + ((uint64_t) i << 24),
                                            0 };
  switch (rn (5)) {
  case 0: nfds = n - 1; break;                        /* missing */
  case 1: nfds = n + 1 + rn (3); break;               /* extra */
  case 2: nfds = 0; break;
  case 3: nfds = n; t.nregions = chance (50) ? 0 : 9 + rn (100); break;
  default: nfds = n; size = 8 + (n + (chance (50) ? 1 : -1)) * 32; break;
  }
  if (nfds > 12)
    nfds = 12;
  if (size > sizeof t)
    size = sizeof t;
  for (i = 0; i < nfds; i++)
    fds[i] = new_memfd (65536);
  send_msg (c, VU_SET_MEM_TABLE, &t, size, fds, nfds);
  close_fds (fds, nfds);
  alive (c);
}

/* Regions the fds cannot back, regions that overlap, sizes that wrap. */
static void
sc_mem_table_bad (struct conn *c)
{
  struct vu_mem_table t;
  int fds[8] = { 0 };
  unsigned n = 1 + rn (4), i;

  memset (&t, 0, sizeof t);
  t.nregions = n;
  for (i = 0; i < n; i++) {
    t.regions[i] = (struct vu_mem_region) {
      GUEST_GPA + ((uint64_t) i << 30), 1 << 20,
      GUEST_UVA + ((uint64_t) i << 30), 0 };
    fds[i] = new_memfd (1 << 20);
  }
  i = rn (n);
  switch (rn (9)) {
  case 0:                       /* overlap in gpa */
    if (n > 1)
      t.regions[n - 1].guest_phys_addr = t.regions[0].guest_phys_addr +
        rn (1 << 20);
    else
      t.regions[0].memory_size = 0;
    break;
  case 1:                       /* overlap in uva */
    if (n > 1)
      t.regions[n - 1].userspace_addr = t.regions[0].userspace_addr +
        rn (1 << 20);
    else
      t.regions[0].userspace_addr = UINT64_MAX - 4095;
    break;
  case 2:
    t.regions[i].guest_phys_addr = UINT64_MAX - rn (1 << 20);
    break;
  case 3:
    t.regions[i].memory_size = UINT64_MAX - rn (4096);
    break;
  case 4:
    t.regions[i].mmap_offset = UINT64_MAX - rn (1 << 20);
    break;
  case 5:
    t.regions[i].mmap_offset = (uint64_t) 1 << (40 + rn (20));
    break;
  case 6:                       /* memfd smaller than the region */
    ftruncate (fds[i], rn (2) * 4096);
    break;
  case 7:
    t.regions[i].memory_size = (uint64_t) 1 << (32 + rn (20));
    break;
  default:
    t.regions[i].memory_size = 0;
    break;
  }
  send_acked (c, VU_SET_MEM_TABLE, &t, 8 + n * 32, fds, n);
  close_fds (fds, n);
  alive (c);
}

/* ADD_MEM_REG / REM_MEM_REG abuse: too many slots, bad removals. */
static void
sc_mem_slots (struct conn *c)
{
  struct vu_mem_single m;
  unsigned n = 1 + rn (40), i;
  int fd;

  if (!negotiate (c, 0, VU_BIT (VU_PF_CONFIGURE_MEM_SLOTS) |
                  (chance (50) ? VU_BIT (VU_PF_REPLY_ACK) : 0)))
    return;
  for (i = 0; i < n && !c->dead; i++) {
    memset (&m, 0, sizeof m);
    m.region = (struct vu_mem_region) {
      (uint64_t) i << 20, 4096, GUEST_UVA + ((uint64_t) i << 20), 0 };
    if (chance (10))
      m.region.guest_phys_addr = 0;         /* overlap with slot 0 */
    if (chance (5))
      m.region.memory_size = 0;
    fd = new_memfd (chance (10) ? 0 : 4096);
    if (chance (70))
      send_acked (c, VU_ADD_MEM_REG, &m, sizeof m, &fd, 1);
    else
      send_acked (c, VU_REM_MEM_REG, &m, sizeof m, &fd, rn (2));
    close (fd);
  }
  alive (c);
}

/* A working memory table, then rings outside it (or misaligned). */
static void
sc_vring_addr (struct conn *c)
{
  struct guest g;
  uint64_t d = GUEST_UVA + DESC_OFF, a = GUEST_UVA + AVAIL_OFF,
    u = GUEST_UVA + USED_OFF;
  unsigned num = 1u << rn (11);

  guest_new (&g, GUEST_SIZE, GUEST_SIZE);
  if (!negotiate (c, 0, chance (50) ? VU_BIT (VU_PF_REPLY_ACK) : 0) ||
      send_mem_table_1 (c, &g, GUEST_SIZE) != 1)
    goto out;
  switch (rn (7)) {
  case 0: d = random_addr (); break;
  case 1: a = random_addr (); break;
  case 2: u = random_addr (); break;
  case 3: d = GUEST_UVA + GUEST_SIZE - 16 * num / 2; break;
  case 4: u = GUEST_UVA + GUEST_SIZE - 4; break;
  case 5: d += 8; break;                              /* misaligned */
  default: d = GUEST_GPA; a = GUEST_GPA + AVAIL_OFF;   /* GPAs, not UVAs */
    u = GUEST_GPA + USED_OFF; break;
  }
  start_ring (c, &g, num, d, a, u);
  alive (c);
 out:
  guest_free (&g);
}

/* SET_VRING_NUM with sizes that are not powers of 2 or too large. */
static void
sc_vring_num (struct conn *c)
{
  static const uint32_t bad[] = { 0, 3, 65536, 2048, 1023, 100, 65535,
                                  UINT32_MAX };
  struct vu_vring_state s;
  unsigned n = 1 + rn (4), i;

  if (chance (50) && !negotiate (c, 0, chance (50) ?
                                 VU_BIT (VU_PF_REPLY_ACK) : 0))
    return;
  for (i = 0; i < n && !c->dead; i++) {
    s.index = chance (70) ? 0 : random_queue_index ();
    s.num = chance (70) ? bad[rn (sizeof bad / sizeof bad[0])]
      : random_num ();
    send_acked (c, chance (80) ? VU_SET_VRING_NUM : VU_SET_VRING_BASE, &s,
                sizeof s, NULL, 0);
  }
  alive (c);
}

/* fds on messages that take none, too many on those that take one. */
static void
sc_stray_fds (struct conn *c)
{
  static const uint32_t none[] = {
    VU_GET_FEATURES, VU_SET_FEATURES, VU_SET_OWNER, VU_GET_PROTOCOL_FEATURES,
    VU_SET_PROTOCOL_FEATURES, VU_GET_QUEUE_NUM, VU_SET_VRING_NUM,
    VU_SET_VRING_ADDR, VU_SET_VRING_BASE, VU_GET_VRING_BASE, VU_GET_CONFIG,
    VU_SET_CONFIG, VU_SET_VRING_ENABLE, VU_GET_MAX_MEM_SLOTS,
    VU_RESET_DEVICE, VU_GET_INFLIGHT_FD,
  };
  static const uint32_t one[] = { VU_SET_VRING_KICK, VU_SET_VRING_CALL,
                                  VU_SET_VRING_ERR, VU_ADD_MEM_REG,
                                  VU_SET_INFLIGHT_FD, VU_SET_LOG_FD };
  uint8_t payload[300];
  int fds[8] = { 0 };
  unsigned nfds, i;
  uint32_t req, size;

  if (chance (30) && !negotiate (c, 0, chance (50) ?
                                 VU_BIT (VU_PF_REPLY_ACK) : 0))
    return;
  if (chance (70)) {
    req = none[rn (sizeof none / sizeof none[0])];
    nfds = 1 + rn (8);
  }
  else {
    req = one[rn (sizeof one / sizeof one[0])];
    nfds = 2 + rn (7);
  }
  size = right_size (req);
  random_payload (req, payload, size);
  if (req == VU_SET_VRING_KICK || req == VU_SET_VRING_CALL ||
      req == VU_SET_VRING_ERR) {
    uint64_t v = rn (2);
    memcpy (payload, &v, 8);
  }
  for (i = 0; i < nfds; i++)
    fds[i] = chance (50) ? new_eventfd () : new_memfd (4096);
  transact (c, req, chance (30) ? VU_VERSION | VU_FLAG_NEED_REPLY
            : VU_VERSION, size, payload, size, fds, nfds);
  close_fds (fds, nfds);
  alive (c);
}

/* KICK/CALL/ERR whose no-fd bit and fds disagree, odd fd kinds, queue
 * indexes beyond what was offered. */
static void
sc_vring_fds (struct conn *c)
{
  static const uint32_t reqs[] = { VU_SET_VRING_KICK, VU_SET_VRING_CALL,
                                   VU_SET_VRING_ERR };
  unsigned n = 1 + rn (4), i;

  if (chance (50) && !negotiate (c, 0, chance (50) ?
                                 VU_BIT (VU_PF_REPLY_ACK) : 0))
    return;
  for (i = 0; i < n && !c->dead; i++) {
    uint32_t req = reqs[rn (3)];
    uint64_t v = chance (60) ? rn (2) : random_queue_index ();
    int fd = random_fd ();
    bool nofd = chance (50);

    if (nofd)
      v |= VU_VRING_NOFD_MASK;
    switch (rn (3)) {
    case 0:                     /* disagree */
      send_acked (c, req, &v, 8, &fd, nofd ? 1 : 0);
      break;
    case 1:                     /* agree, odd fd or index */
      send_acked (c, req, &v, 8, &fd, nofd ? 0 : 1);
      break;
    default:
      v = rnd ();
      send_acked (c, req, &v, 8, &fd, rn (2));
      break;
    }
    close (fd);
  }
  alive (c);
}

/* GET_CONFIG / SET_CONFIG outside the config space. */
static void
sc_config (struct conn *c)
{
  struct vu_config cfg;
  unsigned n = 1 + rn (4), i;

  if (chance (50) && !negotiate (c, 0, VU_BIT (VU_PF_CONFIG) |
                                 (chance (50) ? VU_BIT (VU_PF_REPLY_ACK) : 0)))
    return;
  for (i = 0; i < n && !c->dead; i++) {
    uint32_t req = chance (70) ? VU_GET_CONFIG : VU_SET_CONFIG;
    struct reply r;

    memset (&cfg, 0, sizeof cfg);
    fill_random (cfg.data, sizeof cfg.data);
    switch (rn (7)) {
    case 0: cfg.offset = 256 + rn (1000); cfg.size = rn (16); break;
    case 1: cfg.offset = UINT32_MAX - rn (300); cfg.size = 1 + rn (255); break;
    case 2: cfg.offset = 1 + rn (255); cfg.size = 256; break;
    case 3: cfg.offset = 200 + rn (56); cfg.size = 57 + rn (100); break;
    case 4: cfg.offset = rn (96); cfg.size = rn (96); break;   /* legal */
    case 5: cfg.offset = 32; cfg.size = 1; cfg.flags = rn (3); break;
    default: cfg.offset = rnd (); cfg.size = rn (257); break;
    }
    if (cfg.size > 256)
      cfg.size = 256;
    if (req == VU_GET_CONFIG) {
      if (send_msg (c, req, &cfg, 12 + cfg.size, NULL, 0) == -1)
        break;
      if (expect_reply (c, req, 12 + cfg.size, &r)) {
        struct vu_config got;
        memcpy (&got, r.payload, sizeof got);
        if (got.size != cfg.size || got.offset != cfg.offset)
          fail ("GET_CONFIG reply says offset %u size %u for a request of "
                "offset %u size %u", got.offset, got.size, cfg.offset,
                cfg.size);
      }
    }
    else
      send_acked (c, req, &cfg, 12 + cfg.size, NULL, 0);
  }
  alive (c);
}

/* Well-formed messages with random contents and NEED_REPLY, read ack by
 * ack: a walk through the server's state machine. */
static void
sc_ack_fuzz (struct conn *c)
{
  struct guest g;
  unsigned n = 10 + rn (60), i;

  guest_new (&g, GUEST_SIZE, GUEST_SIZE);
  if (!negotiate (c, rnd () & (VU_BIT (VU_F_EVENT_IDX) |
                               VU_BIT (VU_F_INDIRECT_DESC)),
                  VU_BIT (VU_PF_REPLY_ACK) | VU_BIT (VU_PF_MQ) |
                  VU_BIT (VU_PF_CONFIG) |
                  (chance (50) ? VU_BIT (VU_PF_CONFIGURE_MEM_SLOTS) : 0) |
                  (chance (50) ? VU_BIT (VU_PF_RESET_DEVICE) : 0)))
    /* No INFLIGHT_SHMFD: inflight regions are the "inflight" scenario's
     * business (deep group). */
    goto out;
  if (chance (70))
    send_mem_table_1 (c, &g, GUEST_SIZE);
  if (chance (50)) {
    unsigned num = 1u << rn (9);
    uint32_t *ring = (uint32_t *) (g.mem + AVAIL_OFF);
    start_ring_default (c, &g, num);
    fill_random (g.mem + DESC_OFF, 16 * num);
    ring[0] = 0;
    if (chance (50))
      fill_random (g.mem + AVAIL_OFF, 4 + 2 * num);
    kick (&g);
  }
  for (i = 0; i < n && !c->dead; i++) {
    uint32_t req = known_reqs[rn (NKNOWN)];
    uint8_t payload[300];
    uint32_t size = right_size (req);
    int fds[2] = { -1, -1 };
    unsigned nfds = 0;

    if (req == VU_SET_MEM_TABLE && chance (50)) {
      send_mem_table_1 (c, &g, chance (80) ? GUEST_SIZE : 4096);
      continue;
    }
    random_payload (req, payload, size);
    switch (req) {
    case VU_SET_MEM_TABLE: case VU_ADD_MEM_REG: case VU_SET_INFLIGHT_FD:
    case VU_SET_LOG_BASE: case VU_SET_LOG_FD: case VU_SET_BACKEND_REQ_FD:
      fds[0] = new_memfd (4096 * rn (3));
      nfds = 1;
      if (req == VU_SET_MEM_TABLE) {
        uint32_t one = 1;
        memcpy (payload, &one, 4);
      }
      break;
    case VU_SET_VRING_KICK: case VU_SET_VRING_CALL: case VU_SET_VRING_ERR: {
        uint64_t v;
        memcpy (&v, payload, 8);
        if (!(v & VU_VRING_NOFD_MASK)) {
          fds[0] = new_eventfd ();
          nfds = 1;
        }
        break;
      }
    case VU_GET_CONFIG: case VU_SET_CONFIG: {
        uint32_t s = 60;
        memcpy (payload + 4, &s, 4);
        break;
      }
    }
    transact (c, req, VU_VERSION | VU_FLAG_NEED_REPLY, size, payload, size,
              fds, nfds);
    close_fds (fds, nfds);
    if (chance (20))
      kick (&g);
  }
  alive (c);
 out:
  guest_free (&g);
}

/* ------------------------------------------------------------------ */
/* Scenarios: deep group (a working data plane, hostile guest) */

/* Writes one random chain starting at descriptor head; returns head. */
static uint16_t
random_chain (struct guest *g, bool indirect_ok)
{
  struct vring_desc *d = g_desc (g);
  unsigned num = g->num, len = chance (5) ? 1 : 2 + rn (5), i;
  uint16_t head = rn (num);
  uint64_t buf = GUEST_GPA + BUF_OFF + (rn (GUEST_SIZE - BUF_OFF - 8192)
                                        & ~UINT64_C (511));
  struct virtio_blk_outhdr *h = (void *) (g->mem + (buf - GUEST_GPA));
  static const uint32_t types[] = { VIRTIO_BLK_T_IN, VIRTIO_BLK_T_OUT,
                                    VIRTIO_BLK_T_FLUSH, VIRTIO_BLK_T_GET_ID,
                                    VIRTIO_BLK_T_DISCARD,
                                    VIRTIO_BLK_T_WRITE_ZEROES, 2, 77 };

  /* A virtio-blk header with a random type and sector. */
  h->type = types[rn (sizeof types / sizeof types[0])];
  h->ioprio = 0;
  h->sector = chance (80) ? rn (64 * 2048) : rnd ();
  fill_random (g->mem + (buf - GUEST_GPA) + 16, 64);    /* segments */

  if (indirect_ok && chance (30)) {
    /* An indirect table at TABLE_OFF + k * 0x800. */
    uint64_t toff = TABLE_OFF + rn (16) * 0x800;
    struct vring_desc *t = (void *) (g->mem + toff);
    unsigned tl = 1 + rn (chance (90) ? 8 : num + 2);
    for (i = 0; i < tl && i < 128; i++)
      put_desc (t, i, buf + i * 512, i == 0 ? 16 : i + 1 == tl ? 1 : 512,
                (i + 1 < tl ? VRING_DESC_F_NEXT : 0) |
                (i > 0 && (i + 1 == tl || h->type == VIRTIO_BLK_T_IN)
                 ? VRING_DESC_F_WRITE : 0), i + 1);
    if (chance (30))
      fill_random (&t[rn (tl)], sizeof *t);
    put_desc (d, head, GUEST_GPA + toff, tl * 16, VRING_DESC_F_INDIRECT, 0);
    if (chance (20))
      d[head].len = rnd ();
    if (chance (10))
      d[head].flags |= VRING_DESC_F_NEXT;
    return head;
  }
  if (len > num)
    len = num;
  for (i = 0; i < len; i++) {
    uint16_t idx = (head + i) % num, next = (head + i + 1) % num;
    put_desc (d, idx, buf + i * 512, i == 0 ? 16 : i + 1 == len ? 1 : 512,
              (i + 1 < len ? VRING_DESC_F_NEXT : 0) |
              (i > 0 && (i + 1 == len || h->type == VIRTIO_BLK_T_IN)
               ? VRING_DESC_F_WRITE : 0), next);
  }
  /* Mutations (rare enough that whole batches of good requests reach
   * the plugin too). */
  if (chance (20)) {
    uint16_t idx = (head + rn (len)) % num;
    switch (rn (8)) {
    case 0: d[idx].next = rn (2) ? head : rnd (); d[idx].flags |= 1; break;
    case 1: d[idx].addr = random_addr (); break;
    case 2: d[idx].len = rnd (); break;
    case 3: d[idx].flags = rnd (); break;
    case 4: d[idx].addr = UINT64_MAX - rn (100); break;
    case 5: d[idx].addr = GUEST_GPA + GUEST_SIZE - rn (600); break;
    case 6: d[idx].flags ^= VRING_DESC_F_WRITE; break;
    default: fill_random (&d[idx], sizeof d[idx]); break;
    }
  }
  return head;
}

static void
sc_ring_fuzz (struct conn *c)
{
  struct guest g;
  unsigned num = 1u << (2 + rn (6)), rounds = 1 + rn (10), i, k;
  uint64_t drop = rnd () & (VU_BIT (VU_F_EVENT_IDX) |
                            VU_BIT (VU_F_INDIRECT_DESC));

  guest_new (&g, GUEST_SIZE, GUEST_SIZE);
  if (!negotiate (c, drop, VU_BIT (VU_PF_MQ) | VU_BIT (VU_PF_CONFIG) |
                  (chance (50) ? VU_BIT (VU_PF_REPLY_ACK) : 0)) ||
      send_mem_table_1 (c, &g, GUEST_SIZE) != 1 ||
      !start_ring_default (c, &g, num))
    goto out;
  for (i = 0; i < rounds && !c->dead; i++) {
    unsigned n = 1 + rn (num);
    for (k = 0; k < n; k++) {
      uint16_t head = random_chain (&g, !(drop & VU_BIT (VU_F_INDIRECT_DESC))
                                    || chance (10));
      post (&g, chance (95) ? head : chance (50) ? num : rnd ());
    }
    switch (rn (12)) {
    case 0:                     /* avail idx runs away */
      g.aidx += num + 1 + rn (1000);
      g_avail (&g)->idx = g.aidx;
      break;
    case 1:                     /* random used_event / flags */
      g_avail (&g)->ring[num] = rnd ();
      g_avail (&g)->flags = rnd ();
      break;
    case 2:                     /* scribble on the used ring */
      fill_random (g_used (&g), 4 + 8 * num);
      break;
    case 3:                     /* a whole random descriptor table */
      fill_random (g_desc (&g), 16 * num);
      break;
    }
    kick (&g);
    wait_used (&g, g.aidx, 20 + rn (30));
    if (chance (15)) {          /* memory table swap under the ring */
      send_mem_table_1 (c, &g, chance (70) ? GUEST_SIZE : 4096);
    }
    if (chance (10)) {
      uint64_t idx = 0;
      int fd = new_eventfd ();
      send_acked (c, rn (2) ? VU_SET_VRING_CALL : VU_SET_VRING_KICK, &idx, 8,
                  &fd, 1);
      close (fd);
    }
    if (chance (5)) {           /* the ring moves while running */
      struct vu_vring_addr a = { 0, 0, GUEST_UVA + DESC_OFF + 16,
                                 GUEST_UVA + USED_OFF,
                                 GUEST_UVA + AVAIL_OFF, 0 };
      send_acked (c, VU_SET_VRING_ADDR, &a, sizeof a, NULL, 0);
    }
    if (chance (5))
      send_acked (c, VU_RESET_DEVICE, NULL, 0, NULL, 0);
  }
  if (!c->dead)
    stop_ring (c, &g);
  alive (c);
 out:
  guest_free (&g);
}

/* Rings or buffers in the part of a region its memfd does not back
 * (mmap succeeds; touching it is SIGBUS). */
static void
sc_memfd_hole (struct conn *c)
{
  struct guest g;
  size_t file = rn (2) ? 0 : 64 * 1024;

  guest_new (&g, GUEST_SIZE, file);
  g.size = file;
  note ("   (guest memory: a memfd of %zu bytes for a region of %d)", file,
        GUEST_SIZE);
  if (!negotiate (c, 0, VU_BIT (VU_PF_REPLY_ACK)) ||
      send_mem_table_1 (c, &g, GUEST_SIZE) != 1)
    goto out;
  if (file == 0 || chance (50)) {
    /* The rings past the end of the file. */
    start_ring (c, &g, 16, GUEST_UVA + GUEST_SIZE - 0x4000,
                GUEST_UVA + GUEST_SIZE - 0x3000,
                GUEST_UVA + GUEST_SIZE - 0x2000);
  }
  else {
    /* Rings in the file, a read into the hole. */
    const size_t hoff = 0x6000;         /* inside the 64 KiB file */
    struct virtio_blk_outhdr *h = (void *) (g.mem + hoff);
    if (!start_ring_default (c, &g, 16))
      goto out;
    h->type = rn (2) ? VIRTIO_BLK_T_IN : VIRTIO_BLK_T_OUT;
    h->sector = 0;
    put_desc (g_desc (&g), 0, GUEST_GPA + hoff, 16, VRING_DESC_F_NEXT, 1);
    put_desc (g_desc (&g), 1, GUEST_GPA + GUEST_SIZE - 8192, 4096,
              (h->type == VIRTIO_BLK_T_IN ? VRING_DESC_F_WRITE : 0) |
              VRING_DESC_F_NEXT, 2);
    put_desc (g_desc (&g), 2, GUEST_GPA + hoff + 512, 1,
              VRING_DESC_F_WRITE, 0);
    post (&g, 0);
    kick (&g);
    wait_used (&g, 1, 200);
    stop_ring (c, &g);
  }
  alive (c);
 out:
  guest_free (&g);
}

/* The memfd shrinks after the server mapped it (opt-in). */
static void
sc_shrink (struct conn *c)
{
  struct guest g;

  guest_new (&g, GUEST_SIZE, GUEST_SIZE);
  if (!negotiate (c, 0, VU_BIT (VU_PF_REPLY_ACK)) ||
      send_mem_table_1 (c, &g, GUEST_SIZE) != 1 ||
      !start_ring_default (c, &g, 16))
    goto out;
  munmap (g.mem, g.size);
  g.mem = NULL;
  ftruncate (g.memfd, 0);
  note ("   (guest memfd truncated to 0 bytes)");
  kick (&g);
  sleep_ms (50);
  stop_ring (c, &g);
  alive (c);
 out:
  guest_free (&g);
}

/* Inflight regions: an fd smaller than announced, or a header changed
 * after SET_INFLIGHT_FD was accepted. */
static void
sc_inflight (struct conn *c)
{
  struct guest g;
  struct vu_inflight in = { 0, 0, 2, 16 };
  struct reply r;
  uint8_t *region = NULL;
  int fd = -1;

  guest_new (&g, GUEST_SIZE, GUEST_SIZE);
  if (!negotiate (c, 0, VU_BIT (VU_PF_INFLIGHT_SHMFD) |
                  VU_BIT (VU_PF_REPLY_ACK)))
    goto out;
  if (!(c->pfeatures & VU_BIT (VU_PF_INFLIGHT_SHMFD))) {
    note ("   (INFLIGHT_SHMFD not offered)");
    goto out;
  }
  if (chance (30)) {
    /* An empty or short memfd announced as a region of mmap_size. */
    size_t fsize = rn (2) * 32;
    int f = new_memfd (fsize);
    in.mmap_size = 4096 * (1 + rn (4));
    note ("   (inflight fd: a memfd of %zu bytes, announced as %" PRIu64 ")",
          fsize, (uint64_t) in.mmap_size);
    send_acked (c, VU_SET_INFLIGHT_FD, &in, sizeof in, &f, 1);
    close (f);
    alive (c);
    goto out;
  }
  in.queue_size = 16;
  if (send_msg_n (c, VU_GET_INFLIGHT_FD, VU_VERSION, sizeof in, &in,
                  sizeof in, NULL, 0) == -1 ||
      !expect_reply (c, VU_GET_INFLIGHT_FD, sizeof in, &r))
    goto out;
  memcpy (&in, r.payload, sizeof in);
  fd = r.fd;
  if (fd < 0)
    fail ("GET_INFLIGHT_FD reply without an fd");
  region = mmap (NULL, in.mmap_size, PROT_READ | PROT_WRITE, MAP_SHARED, fd,
                 0);
  if (region == MAP_FAILED)
    fail ("cannot map the inflight region the server sent: %s",
          strerror (errno));
  if (send_acked (c, VU_SET_INFLIGHT_FD, &in, sizeof in, &fd, 1) != 1 ||
      send_mem_table_1 (c, &g, GUEST_SIZE) != 1)
    goto out;
  /* Now change the region behind the server's back. */
  switch (rn (4)) {
  case 0: {                     /* header_size */
      uint32_t v = 0x40000000u + rn (1000) * 64;
      memcpy (region + 12, &v, 4);
      note ("   (inflight header changed: header_size = 0x%x)", v);
      break;
    }
  case 1: {                     /* queue_stride, ring on queue 1 */
      uint32_t v = 0x10000000u * (1 + rn (15));
      memcpy (region + 20, &v, 4);
      g.qidx = 1;
      note ("   (inflight header changed: queue_stride = 0x%x; ring on "
            "queue 1)", v);
      break;
    }
  case 2: {                     /* num_queues, queue_size */
      uint16_t v[2] = { 0xffff, 0xffff };
      memcpy (region + 16, v, 4);
      note ("   (inflight header changed: num_queues = queue_size = "
            "0xffff)");
      break;
    }
  default: {                    /* the per-queue area, plausible */
      uint8_t *q = region + 64;
      uint16_t v[2] = { 1, 16 };        /* version, desc_num */
      unsigned k;
      fill_random (q, 16 + 16 * 16);
      memcpy (q + 8, v, 4);
      for (k = 0; k < 16; k++)
        q[16 + 16 * k] = chance (30);   /* inflight flags */
      note ("   (inflight queue 0 area filled with random descriptors)");
      break;
    }
  }
  start_ring_default (c, &g, 16);
  if (!c->dead)
    stop_ring (c, &g);
  alive (c);
 out:
  if (region && region != MAP_FAILED)
    munmap (region, in.mmap_size);
  if (fd >= 0)
    close (fd);
  guest_free (&g);
}

/* The call eventfd is at its maximum: the server's next notification
 * write blocks unless the fd is non-blocking. */
static void
sc_call_saturated (struct conn *c)
{
  struct guest g;
  struct virtio_blk_outhdr *h;

  guest_new (&g, GUEST_SIZE, GUEST_SIZE);
  g.call = eventfd (0, EFD_CLOEXEC);     /* blocking, like QEMU's */
  eventfd_write (g.call, UINT64_C (0xfffffffffffffffe));
  note ("   (call eventfd counter preloaded to 0xfffffffffffffffe)");
  if (!negotiate (c, VU_BIT (VU_F_EVENT_IDX), VU_BIT (VU_PF_REPLY_ACK)) ||
      send_mem_table_1 (c, &g, GUEST_SIZE) != 1 ||
      !start_ring_default (c, &g, 16))
    goto out;
  h = (void *) (g.mem + BUF_OFF);
  h->type = VIRTIO_BLK_T_GET_ID;
  put_desc (g_desc (&g), 0, GUEST_GPA + BUF_OFF, 16, VRING_DESC_F_NEXT, 1);
  put_desc (g_desc (&g), 1, GUEST_GPA + BUF_OFF + 512, 21,
            VRING_DESC_F_WRITE, 0);
  post (&g, 0);
  kick (&g);
  wait_used (&g, 1, 200);
  stop_ring (c, &g);
  alive (c);
 out:
  guest_free (&g);
}

/* CPU time (user + system) the server used so far, in clock ticks;
 * -1 without --pid. */
static long
server_cpu_ticks (void)
{
  char path[64], buf[1024], *p;
  unsigned long ut, st_;
  FILE *f;
  size_t n;
  int i;

  if (opt.pid <= 0)
    return -1;
  snprintf (path, sizeof path, "/proc/%ld/stat", opt.pid);
  f = fopen (path, "r");
  if (f == NULL)
    return -1;
  n = fread (buf, 1, sizeof buf - 1, f);
  fclose (f);
  buf[n] = '\0';
  p = strrchr (buf, ')');
  if (p == NULL)
    return -1;
  /* Fields after the command: state is field 3, utime 14, stime 15. */
  for (i = 3; i <= 14 && p; i++)
    p = strchr (p + 1, ' ');
  if (p == NULL || sscanf (p, " %lu %lu", &ut, &st_) != 2)
    return -1;
  return (long) (ut + st_);
}

/* A kick "eventfd" that is a pipe or socket at EOF: always readable,
 * never drained.  The queue thread must not spin on it. */
static void
sc_kick_eof (struct conn *c)
{
  struct guest g;
  int p[2];
  long t0, t1, hz = sysconf (_SC_CLK_TCK);

  guest_new (&g, GUEST_SIZE, GUEST_SIZE);
  if (chance (50)) {
    if (pipe2 (p, O_CLOEXEC) == -1)
      goto out;
    note ("   (kick fd: the read end of a pipe whose write end is closed)");
  }
  else {
    if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, p) == -1)
      goto out;
    note ("   (kick fd: a socket whose peer is closed)");
  }
  close (p[1]);
  g.kick = p[0];
  if (!negotiate (c, 0, VU_BIT (VU_PF_REPLY_ACK)) ||
      send_mem_table_1 (c, &g, GUEST_SIZE) != 1 ||
      !start_ring_default (c, &g, 16))
    goto out;
  t0 = server_cpu_ticks ();
  sleep_ms (500);
  t1 = server_cpu_ticks ();
  if (t0 >= 0 && t1 >= 0 && (t1 - t0) * 1000 / hz > 250)
    fail ("the server used %ld ms of CPU in 500 ms with an idle ring whose"
          " kick fd is at EOF (busy loop)", (t1 - t0) * 1000 / hz);
  stop_ring (c, &g);
  alive (c);
 out:
  guest_free (&g);
}

/* ------------------------------------------------------------------ */

struct scenario {
  const char *name;
  const char *group;
  void (*fn) (struct conn *c);
  const char *what;
};

static const struct scenario scenarios[] = {
  { "random-bytes", "protocol", sc_random_bytes,
    "random bytes, sometimes with fds" },
  { "random-header", "protocol", sc_random_header,
    "headers with random request/flags/size, truncated payloads" },
  { "wrong-size", "protocol", sc_wrong_size,
    "known requests with wrong payload sizes" },
  { "mem-table-fds", "protocol", sc_mem_table_fds,
    "SET_MEM_TABLE with missing/extra fds, bad region counts" },
  { "mem-table-bad", "protocol", sc_mem_table_bad,
    "overlapping, wrapping, huge regions, memfds smaller than the region" },
  { "mem-slots", "protocol", sc_mem_slots,
    "ADD_MEM_REG past the slot limit, bad REM_MEM_REG" },
  { "vring-addr", "protocol", sc_vring_addr,
    "SET_VRING_ADDR outside memory or misaligned, then SET_VRING_KICK" },
  { "vring-num", "protocol", sc_vring_num,
    "SET_VRING_NUM 0/3/65536/..., odd queue indexes" },
  { "stray-fds", "protocol", sc_stray_fds,
    "eventfds/memfds on messages that take none, too many fds" },
  { "vring-fds", "protocol", sc_vring_fds,
    "KICK/CALL/ERR with no-fd bit and fds disagreeing, odd fd kinds" },
  { "config", "protocol", sc_config,
    "GET_CONFIG/SET_CONFIG with offsets past the config space" },
  { "ack-fuzz", "protocol", sc_ack_fuzz,
    "REPLY_ACK negotiated, well-formed messages with random values" },
  { "ring-fuzz", "deep", sc_ring_fuzz,
    "a running ring fed hostile descriptor chains" },
  { "memfd-hole", "deep", sc_memfd_hole,
    "rings or buffers where the region's memfd has no pages (SIGBUS)" },
  { "inflight", "deep", sc_inflight,
    "inflight fd smaller than announced, header changed after SET_INFLIGHT_FD" },
  { "call-saturated", "deep", sc_call_saturated,
    "call eventfd at its maximum count (a blocking notification)" },
  { "kick-eof", "deep", sc_kick_eof,
    "a kick fd that is a pipe/socket at EOF (needs --pid to see a busy loop)" },
  { "shrink", "opt-in", sc_shrink,
    "the memfd truncated after the server mapped it (SIGBUS)" },
};
#define NSCEN (sizeof scenarios / sizeof scenarios[0])

static const struct scenario *chosen[NSCEN];
static unsigned nchosen;

static void
choose (const char *list)
{
  char *copy = strdup (list), *tok, *save = NULL;
  size_t i;

  for (tok = strtok_r (copy, ",", &save); tok;
       tok = strtok_r (NULL, ",", &save)) {
    bool found = false;
    for (i = 0; i < NSCEN; i++)
      if (strcmp (tok, scenarios[i].name) == 0 ||
          strcmp (tok, scenarios[i].group) == 0 ||
          (strcmp (tok, "all") == 0 &&
           strcmp (scenarios[i].group, "opt-in") != 0)) {
        unsigned k;
        found = true;
        for (k = 0; k < nchosen; k++)
          if (chosen[k] == &scenarios[i])
            break;
        if (k == nchosen)
          chosen[nchosen++] = &scenarios[i];
      }
    if (!found) {
      fprintf (stderr, "vu-hostile: unknown scenario or group '%s' "
               "(see --list)\n", tok);
      exit (2);
    }
  }
  free (copy);
}

/* ------------------------------------------------------------------ */
/* The final, proper handshake */

static bool
handshake (void)
{
  struct conn c;
  struct reply r;
  struct vu_config cfg = { .offset = 0, .size = 60, .flags = 0 };
  uint64_t features, pf, queues, want;
  struct virtio_blk_config bc;
  int attempt;

  cur_round = opt.first + opt.rounds;
  cur_scenario = "final-handshake";
  memcpy (prev_transcript, transcript, transcript_len + 1);
  transcript_len = 0;
  transcript[0] = '\0';
  for (attempt = 0; attempt < 3; attempt++) {
    conn_open (&c);
    if (get_u64 (&c, VU_GET_FEATURES, &features))
      break;
    /* Closed before any reply: another front-end still connected? */
    close (c.fd);
    sleep_ms (500);
  }
  if (attempt == 3)
    fail ("GET_FEATURES: the server closes every new connection");
  if (!(features & VU_BIT (VU_F_PROTOCOL_FEATURES)))
    fail ("the server does not offer VHOST_USER_F_PROTOCOL_FEATURES");
  if (!get_u64 (&c, VU_GET_PROTOCOL_FEATURES, &pf))
    fail ("GET_PROTOCOL_FEATURES: connection closed");
  want = pf & (VU_BIT (VU_PF_MQ) | VU_BIT (VU_PF_REPLY_ACK) |
               VU_BIT (VU_PF_CONFIG));
  if (send_msg (&c, VU_SET_PROTOCOL_FEATURES, &want, 8, NULL, 0) == -1)
    fail ("SET_PROTOCOL_FEATURES: connection closed");
  c.ack = want & VU_BIT (VU_PF_REPLY_ACK);
  if (!get_u64 (&c, VU_GET_QUEUE_NUM, &queues))
    fail ("GET_QUEUE_NUM: connection closed (SET_PROTOCOL_FEATURES "
          "refused?)");
  if (queues == 0)
    fail ("GET_QUEUE_NUM says 0 queues");
  switch (send_acked (&c, VU_SET_OWNER, NULL, 0, NULL, 0)) {
  case 0: fail ("SET_OWNER: connection closed");
  case 2: fail ("SET_OWNER: non-zero REPLY_ACK");
  }
  if (send_msg (&c, VU_GET_CONFIG, &cfg, 12 + 60, NULL, 0) == -1 ||
      !expect_reply (&c, VU_GET_CONFIG, 12 + 60, &r))
    fail ("GET_CONFIG: connection closed");
  memcpy (&cfg, r.payload, 12 + 60);
  if (cfg.offset != 0 || cfg.size != 60)
    fail ("GET_CONFIG reply: offset %u size %u", cfg.offset, cfg.size);
  memset (&bc, 0, sizeof bc);
  memcpy (&bc, cfg.data, 60);
  conn_close (&c);
  printf ("vu-hostile: final handshake ok: features 0x%" PRIx64
          ", protocol features 0x%" PRIx64 ", %" PRIu64 " queues, capacity %"
          PRIu64 " sectors, blk_size %u\n", features, pf, queues,
          (uint64_t) bc.capacity, bc.blk_size);
  return true;
}

/* ------------------------------------------------------------------ */

static void
usage (FILE *f)
{
  fprintf (f,
           "Usage: vu-hostile SOCKET [--rounds N] [--seed S] [--first R]\n"
           "                  [--scenarios LIST] [--timeout SECONDS] "
           "[--pid PID] [--verbose]\n"
           "       vu-hostile --list\n");
}

int
main (int argc, char **argv)
{
  static const struct option longopts[] = {
    { "rounds", required_argument, NULL, 'n' },
    { "seed", required_argument, NULL, 's' },
    { "first", required_argument, NULL, 'F' },
    { "scenarios", required_argument, NULL, 'S' },
    { "timeout", required_argument, NULL, 't' },
    { "pid", required_argument, NULL, 'p' },
    { "verbose", no_argument, NULL, 'v' },
    { "list", no_argument, NULL, 'l' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  bool seeded = false;
  unsigned long r, counts[NSCEN] = { 0 };
  int c;
  size_t i;

  while ((c = getopt_long (argc, argv, "n:s:F:S:t:p:vlh", longopts, NULL))
         != -1) {
    char *end;
    switch (c) {
    case 'n':
      opt.rounds = strtoul (optarg, &end, 0);
      if (*end) { usage (stderr); return 2; }
      break;
    case 's':
      opt.seed = strtoull (optarg, &end, 0);
      if (*end) { usage (stderr); return 2; }
      seeded = true;
      break;
    case 'F':
      opt.first = strtoul (optarg, &end, 0);
      if (*end) { usage (stderr); return 2; }
      break;
    case 'S':
      opt.scenarios = optarg;
      break;
    case 't':
      opt.timeout_ms = (int) (strtod (optarg, &end) * 1000);
      if (*end || opt.timeout_ms <= 0) { usage (stderr); return 2; }
      break;
    case 'p':
      opt.pid = strtol (optarg, &end, 0);
      if (*end || opt.pid <= 0) { usage (stderr); return 2; }
      break;
    case 'v':
      opt.verbose = true;
      break;
    case 'l':
      for (i = 0; i < NSCEN; i++)
        printf ("%-16s %-9s %s\n", scenarios[i].name, scenarios[i].group,
                scenarios[i].what);
      return 0;
    case 'h':
      usage (stdout);
      return 0;
    default:
      usage (stderr);
      return 2;
    }
  }
  if (optind != argc - 1) {
    usage (stderr);
    return 2;
  }
  opt.sock = argv[optind];
  if (!seeded)
    opt.seed = (uint64_t) time (NULL) ^ ((uint64_t) getpid () << 32);
  choose (opt.scenarios);
  signal (SIGPIPE, SIG_IGN);
  setvbuf (stdout, NULL, _IOLBF, 0);
  printf ("vu-hostile: %lu rounds against %s, seed %" PRIu64
          ", scenarios %s\n", opt.rounds, opt.sock, opt.seed, opt.scenarios);

  for (r = opt.first; r < opt.first + opt.rounds; r++) {
    const struct scenario *s = chosen[r % nchosen];
    struct conn conn;

    cur_round = r;
    cur_scenario = s->name;
    transcript_len = 0;
    transcript[0] = '\0';
    seed_round (r);
    conn_open (&conn);
    s->fn (&conn);
    if (conn.dead)
      st.closed_by_server++;
    else
      st.kept_open++;
    conn_close (&conn);
    if (!server_alive ())
      fail_died ("the server (pid %ld) died", opt.pid);
    st.rounds++;
    counts[s - scenarios]++;
    memcpy (prev_transcript, transcript, transcript_len + 1);
    prev_scenario = cur_scenario;
  }

  printf ("vu-hostile: %lu rounds, %lu messages (%lu bytes, %lu fds) sent, "
          "%lu replies read, %lu malformed; the server closed %lu "
          "connections and kept %lu open until our EOF\n", st.rounds,
          st.msgs, st.bytes, st.fds, st.replies, st.bad_replies,
          st.closed_by_server, st.kept_open);
  if (opt.verbose)
    for (i = 0; i < NSCEN; i++)
      if (counts[i])
        printf ("vu-hostile:   %-16s %lu rounds\n", scenarios[i].name,
                counts[i]);
  handshake ();
  printf ("vu-hostile: PASS\n");
  return 0;
}
