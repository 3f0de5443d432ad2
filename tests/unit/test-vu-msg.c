/* Unit tests for src/daemon/vu-msg.c: vu_msg_check (shape of every
 * request), vu_msg_recv over a socketpair (fds, truncation, oversized
 * payloads, no fd leaks) and vu_msg_reply framing. */

#include <config.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>

#include "vu-msg.h"
#include "tap.h"

/* ------------------------------------------------------------------ */
/* vu_msg_check */

static struct vu_msg
mk (uint32_t request, uint32_t size, unsigned nfds)
{
  struct vu_msg m;
  unsigned i;

  memset (&m, 0, sizeof m);
  m.hdr.request = request;
  m.hdr.flags = VU_VERSION;
  m.hdr.size = size;
  m.nfds = nfds;
  for (i = 0; i < VU_MAX_FDS; i++)
    m.fds[i] = i < nfds ? 1000 + (int) i : -1;   /* never used as fds */
  return m;
}

static bool
accepted (const struct vu_msg *m)
{
  const char *err = NULL;
  return vu_msg_check (m, &err) == 0;
}

static bool
refused (const struct vu_msg *m)
{
  const char *err = NULL;
  return vu_msg_check (m, &err) == -1 && err != NULL && err[0] != '\0';
}

/* One request with a fixed payload size and fd range. */
struct fixed {
  uint32_t request;
  uint32_t min, max;            /* payload size range */
  unsigned min_fds, max_fds;
};

static const struct fixed fixed[] = {
  { VU_GET_FEATURES, 0, 0, 0, 0 },
  { VU_GET_PROTOCOL_FEATURES, 0, 0, 0, 0 },
  { VU_GET_QUEUE_NUM, 0, 0, 0, 0 },
  { VU_SET_OWNER, 0, 0, 0, 0 },
  { VU_RESET_OWNER, 0, 0, 0, 0 },
  { VU_GET_MAX_MEM_SLOTS, 0, 0, 0, 0 },
  { VU_GET_STATUS, 0, 0, 0, 0 },
  { VU_RESET_DEVICE, 0, 0, 0, 0 },
  { VU_SET_FEATURES, 8, 8, 0, 0 },
  { VU_SET_PROTOCOL_FEATURES, 8, 8, 0, 0 },
  { VU_SET_STATUS, 8, 8, 0, 0 },
  { VU_SET_VRING_NUM, 8, 8, 0, 0 },
  { VU_SET_VRING_BASE, 8, 8, 0, 0 },
  { VU_GET_VRING_BASE, 8, 8, 0, 0 },
  { VU_SET_VRING_ENABLE, 8, 8, 0, 0 },
  { VU_GET_VRING_BASE_SKIP_DRAIN, 8, 8, 0, 0 },
  { VU_SET_VRING_ADDR, 40, 40, 0, 0 },
  { VU_ADD_MEM_REG, 40, 40, 1, 1 },
  { VU_REM_MEM_REG, 40, 40, 0, 1 },
  { VU_SET_LOG_BASE, 16, 16, 1, 1 },
  { VU_SET_LOG_FD, 0, 8, 1, 1 },
  { VU_SET_BACKEND_REQ_FD, 0, 8, 1, 1 },
  { VU_GET_INFLIGHT_FD, 20, 24, 0, 0 },
  { VU_SET_INFLIGHT_FD, 20, 24, 1, 1 },
};

static void
test_check_fixed (void)
{
  size_t i;

  for (i = 0; i < sizeof fixed / sizeof fixed[0]; i++) {
    const struct fixed *f = &fixed[i];
    const char *name = vu_request_name (f->request);
    struct vu_msg m;
    unsigned n;
    bool all;

    /* Every legal size and fd count. */
    all = true;
    for (n = f->min_fds; n <= f->max_fds; n++) {
      m = mk (f->request, f->min, n);
      all = all && accepted (&m);
      m = mk (f->request, f->max, n);
      all = all && accepted (&m);
    }
    ok (all, "%s: well-formed (size %u..%u, %u..%u fds) accepted", name,
        f->min, f->max, f->min_fds, f->max_fds);

    /* NEED_REPLY does not change the shape. */
    m = mk (f->request, f->min, f->min_fds);
    m.hdr.flags = VU_VERSION | VU_FLAG_NEED_REPLY;
    ok (accepted (&m), "%s: flags 0x9 accepted", name);

    if (f->min > 0) {
      m = mk (f->request, f->min - 1, f->min_fds);
      ok (refused (&m), "%s: size %u (one short) refused", name, f->min - 1);
      m = mk (f->request, 0, f->min_fds);
      ok (refused (&m), "%s: size 0 refused", name);
    }
    m = mk (f->request, f->max + 1, f->min_fds);
    ok (refused (&m), "%s: size %u (one too many) refused", name, f->max + 1);
    m = mk (f->request, sizeof (union vu_payload), f->min_fds);
    ok (refused (&m), "%s: size %zu (the whole union) refused", name,
        sizeof (union vu_payload));
    m = mk (f->request, UINT32_MAX, f->min_fds);
    ok (refused (&m), "%s: size 0xffffffff refused", name);

    if (f->min_fds > 0) {
      m = mk (f->request, f->min, f->min_fds - 1);
      ok (refused (&m), "%s: %u fds (one short) refused", name,
          f->min_fds - 1);
    }
    m = mk (f->request, f->min, f->max_fds + 1);
    ok (refused (&m), "%s: %u fds (one too many, stray fd) refused", name,
        f->max_fds + 1);
    m = mk (f->request, f->min, VU_MAX_FDS);
    ok (refused (&m), "%s: %u fds refused", name, VU_MAX_FDS);

    /* Bad version bits. */
    m = mk (f->request, f->min, f->min_fds);
    m.hdr.flags = 0;
    ok (refused (&m), "%s: flags 0 (version 0) refused", name);
    m.hdr.flags = 2;
    ok (refused (&m), "%s: flags 2 (version 2) refused", name);
    m.hdr.flags = 3 | VU_FLAG_NEED_REPLY;
    ok (refused (&m), "%s: flags 0xb (version 3) refused", name);
  }
}

static void
test_check_unknown (void)
{
  static const uint32_t unknown[] = {
    0, VU_SEND_RARP, VU_NET_SET_MTU, VU_IOTLB_MSG, VU_SET_VRING_ENDIAN,
    26, 27, 28, 29, 30, 33, 35, 41, 42, 43, 44, VU_REQUEST_MAX, 47, 100,
    0x100 | VU_GET_FEATURES, 0x80000001, UINT32_MAX,
  };
  size_t i;
  unsigned size;

  for (i = 0; i < sizeof unknown / sizeof unknown[0]; i++) {
    bool all = true;
    for (size = 0; size <= 16; size += 8) {
      struct vu_msg m = mk (unknown[i], size, 0);
      all = all && refused (&m);
    }
    ok (all, "unknown request %u (0x%x) refused", unknown[i], unknown[i]);
  }
}

static void
set_mem_table (struct vu_msg *m, uint32_t nregions, uint32_t size,
               unsigned nfds)
{
  uint32_t i;

  *m = mk (VU_SET_MEM_TABLE, size, nfds);
  m->payload.memory.nregions = nregions;
  for (i = 0; i < VU_MAX_MEM_REGIONS; i++) {
    m->payload.memory.regions[i].guest_phys_addr = (uint64_t) i << 30;
    m->payload.memory.regions[i].memory_size = 1 << 20;
    m->payload.memory.regions[i].userspace_addr = (uint64_t) (i + 16) << 30;
  }
}

static void
test_check_mem_table (void)
{
  const uint32_t R = sizeof (struct vu_mem_region);
  struct vu_msg m;
  unsigned n;
  bool all = true;

  for (n = 1; n <= VU_MAX_MEM_REGIONS; n++) {
    set_mem_table (&m, n, 8 + n * R, n);
    all = all && accepted (&m);
  }
  ok (all, "SET_MEM_TABLE with 1..8 regions, matching size and fds accepted");

  set_mem_table (&m, 0, 8 + R, 1);
  ok (refused (&m), "SET_MEM_TABLE nregions 0 refused");
  set_mem_table (&m, 0, 8, 0);
  ok (refused (&m), "SET_MEM_TABLE nregions 0, size 8, no fds refused");
  set_mem_table (&m, 9, 8 + 8 * R, 8);
  ok (refused (&m), "SET_MEM_TABLE nregions 9 refused");
  set_mem_table (&m, 0x80000001u, 8 + R, 1);
  ok (refused (&m), "SET_MEM_TABLE nregions 0x80000001 refused");
  set_mem_table (&m, UINT32_MAX, 8 + 8 * R, 8);
  ok (refused (&m), "SET_MEM_TABLE nregions 0xffffffff refused");

  set_mem_table (&m, 2, 8 + R, 2);
  ok (refused (&m), "SET_MEM_TABLE 2 regions but size for 1 refused");
  set_mem_table (&m, 1, 8 + 2 * R, 1);
  ok (refused (&m), "SET_MEM_TABLE 1 region but size for 2 refused");
  set_mem_table (&m, 2, 8 + 2 * R + 4, 2);
  ok (refused (&m), "SET_MEM_TABLE size not a whole number of regions refused");
  set_mem_table (&m, 8, 8 + 8 * R + 1, 8);
  ok (refused (&m), "SET_MEM_TABLE size 265 refused");
  set_mem_table (&m, 1, 8 + R - 1, 1);
  ok (refused (&m), "SET_MEM_TABLE size 39 refused");

  set_mem_table (&m, 2, 8 + 2 * R, 1);
  ok (refused (&m), "SET_MEM_TABLE 2 regions, 1 fd refused");
  set_mem_table (&m, 2, 8 + 2 * R, 3);
  ok (refused (&m), "SET_MEM_TABLE 2 regions, 3 fds refused");
  set_mem_table (&m, 1, 8 + R, 0);
  ok (refused (&m), "SET_MEM_TABLE 1 region, no fd refused");
  set_mem_table (&m, 7, 8 + 7 * R, 8);
  ok (refused (&m), "SET_MEM_TABLE 7 regions, 8 fds refused");

  set_mem_table (&m, 2, 8 + 2 * R, 2);
  m.hdr.flags = 0;
  ok (refused (&m), "SET_MEM_TABLE with version 0 refused");
}

static void
set_config (struct vu_msg *m, uint32_t request, uint32_t size,
            uint32_t cfg_size, uint32_t offset)
{
  *m = mk (request, size, 0);
  m->payload.config.offset = offset;
  m->payload.config.size = cfg_size;
}

static void
test_check_config (void)
{
  static const uint32_t reqs[] = { VU_GET_CONFIG, VU_SET_CONFIG };
  size_t i;

  for (i = 0; i < 2; i++) {
    const char *name = vu_request_name (reqs[i]);
    struct vu_msg m;

    set_config (&m, reqs[i], 12 + 60, 60, 0);
    ok (accepted (&m), "%s size 12+60 accepted", name);
    set_config (&m, reqs[i], 12, 0, 0);
    ok (accepted (&m), "%s config size 0 accepted", name);
    set_config (&m, reqs[i], 12 + 1, 1, 32);
    ok (accepted (&m), "%s config size 1 at offset 32 accepted", name);
    set_config (&m, reqs[i], 12 + 256, 256, 0);
    ok (accepted (&m), "%s config size 256 accepted", name);
    /* Offsets are the handler's business, not framing. */
    set_config (&m, reqs[i], 12 + 4, 4, 1000);
    ok (accepted (&m), "%s offset past the space is not a framing error",
        name);

    set_config (&m, reqs[i], 12 + 256, 257, 0);
    ok (refused (&m), "%s config size 257 refused", name);
    set_config (&m, reqs[i], 12 + 257, 257, 0);
    ok (refused (&m), "%s config size 257, size 269 refused", name);
    set_config (&m, reqs[i], 12, UINT32_MAX - 11, 0);
    ok (refused (&m), "%s config size 0xfffffff4 (12 + it wraps to 0) refused",
        name);
    set_config (&m, reqs[i], 12 + 60, 59, 0);
    ok (refused (&m), "%s config size 59 in a 72-byte payload refused", name);
    set_config (&m, reqs[i], 12 + 60, 61, 0);
    ok (refused (&m), "%s config size 61 in a 72-byte payload refused", name);
    set_config (&m, reqs[i], 12 + 60, 0, 0);
    ok (refused (&m), "%s config size 0 in a 72-byte payload refused", name);
    set_config (&m, reqs[i], 11, 0, 0);
    ok (refused (&m), "%s payload shorter than the config header refused",
        name);
    set_config (&m, reqs[i], 0, 0, 0);
    ok (refused (&m), "%s empty payload refused", name);
    set_config (&m, reqs[i], 12 + 60, 60, 0);
    m.nfds = 1;
    ok (refused (&m), "%s with a stray fd refused", name);
  }
}

static void
test_check_vring_fds (void)
{
  static const uint32_t reqs[] = { VU_SET_VRING_KICK, VU_SET_VRING_CALL,
                                   VU_SET_VRING_ERR };
  size_t i;

  for (i = 0; i < 3; i++) {
    const char *name = vu_request_name (reqs[i]);
    struct vu_msg m;

    m = mk (reqs[i], 8, 1);
    m.payload.u64 = 0;
    ok (accepted (&m), "%s queue 0 with an fd accepted", name);
    m = mk (reqs[i], 8, 1);
    m.payload.u64 = 3;
    ok (accepted (&m), "%s queue 3 with an fd accepted", name);
    m = mk (reqs[i], 8, 0);
    m.payload.u64 = VU_VRING_NOFD_MASK;
    ok (accepted (&m), "%s no-fd bit and no fd accepted", name);
    m = mk (reqs[i], 8, 0);
    m.payload.u64 = VU_VRING_NOFD_MASK | 5;
    ok (accepted (&m), "%s queue 5, no-fd bit and no fd accepted", name);

    m = mk (reqs[i], 8, 1);
    m.payload.u64 = VU_VRING_NOFD_MASK;
    ok (refused (&m), "%s no-fd bit but an fd refused", name);
    m = mk (reqs[i], 8, 0);
    m.payload.u64 = 0;
    ok (refused (&m), "%s fd expected but none refused", name);
    m = mk (reqs[i], 8, 2);
    m.payload.u64 = 0;
    ok (refused (&m), "%s two fds refused", name);
    m = mk (reqs[i], 0, 1);
    ok (refused (&m), "%s without payload refused", name);
    m = mk (reqs[i], 4, 1);
    ok (refused (&m), "%s with a 4-byte payload refused", name);
    m = mk (reqs[i], 16, 1);
    ok (refused (&m), "%s with a 16-byte payload refused", name);
  }
}

static void
test_names (void)
{
  is_str (vu_request_name (VU_GET_FEATURES), "GET_FEATURES", "name of 1");
  is_str (vu_request_name (VU_SET_MEM_TABLE), "SET_MEM_TABLE", "name of 5");
  is_str (vu_request_name (VU_GET_VRING_BASE_SKIP_DRAIN),
          "GET_VRING_BASE_SKIP_DRAIN", "name of 45");
  is_str (vu_request_name (0), "UNKNOWN", "name of 0");
  is_str (vu_request_name (VU_SEND_RARP), "SEND_RARP", "name of 19");
  is_str (vu_request_name (33), "UNKNOWN", "name of 33 (unassigned here)");
  is_str (vu_request_name (VU_REQUEST_MAX), "UNKNOWN", "name of 46");
  is_str (vu_request_name (UINT32_MAX), "UNKNOWN", "name of 0xffffffff");
}

/* ------------------------------------------------------------------ */
/* vu_msg_recv */

static unsigned
count_fds (void)
{
  DIR *d = opendir ("/proc/self/fd");
  struct dirent *e;
  unsigned n = 0;

  if (d == NULL)
    return 0;
  while ((e = readdir (d)))
    if (e->d_name[0] != '.')
      n++;
  closedir (d);
  return n - 1;                 /* the directory's own fd */
}

static bool
fd_open (int fd)
{
  return fcntl (fd, F_GETFD) != -1;
}

/* The numbers the kernel will give the next n received fds. */
static void
next_fds (int any, int *out, unsigned n)
{
  unsigned i;

  for (i = 0; i < n; i++)
    out[i] = dup (any);
  for (i = 0; i < n; i++)
    close (out[i]);
}

static int
send_with_fds (int sock, const void *buf, size_t len, const int *fds,
               unsigned nfds)
{
  char control[CMSG_SPACE (16 * sizeof (int))];
  struct iovec iov = { (void *) buf, len };
  struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1 };
  ssize_t r;

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
  r = sendmsg (sock, &mh, MSG_NOSIGNAL);
  return r == (ssize_t) len ? 0 : -1;
}

static bool
same_file (int a, int b)
{
  struct stat sa, sb;

  return fstat (a, &sa) == 0 && fstat (b, &sb) == 0 &&
    sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

static void
pair (int sv[2])
{
  if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
    perror ("socketpair");
    exit (99);
  }
}

/* A normal SET_MEM_TABLE with two regions and two memfds. */
static void
test_recv_normal (void)
{
  struct {
    struct vu_header hdr;
    struct vu_mem_table t;
  } __attribute__ ((packed)) out;
  const size_t size = 8 + 2 * sizeof (struct vu_mem_region);
  struct vu_msg m;
  const char *err = NULL;
  int sv[2], fds[2], before, r;

  pair (sv);
  fds[0] = memfd_create ("region0", MFD_CLOEXEC);
  fds[1] = memfd_create ("region1", MFD_CLOEXEC);
  memset (&out, 0, sizeof out);
  out.hdr.request = VU_SET_MEM_TABLE;
  out.hdr.flags = VU_VERSION | VU_FLAG_NEED_REPLY;
  out.hdr.size = size;
  out.t.nregions = 2;
  out.t.regions[0] = (struct vu_mem_region) { 0, 1 << 20, 0x7f0000000000, 0 };
  out.t.regions[1] = (struct vu_mem_region) { 1 << 20, 2 << 20,
                                              0x7f1000000000, 4096 };
  before = count_fds ();
  ok (send_with_fds (sv[0], &out, sizeof out.hdr + size, fds, 2) == 0,
      "sent SET_MEM_TABLE with 2 fds");
  memset (&m, 0xaa, sizeof m);
  r = vu_msg_recv (sv[1], &m, &err);
  is_int (r, 1, "vu_msg_recv returns 1 (%s)", r == 1 ? "ok" : err);
  is_int (m.hdr.request, VU_SET_MEM_TABLE, "request id");
  is_int (m.hdr.flags, 0x9, "flags");
  is_int (m.hdr.size, size, "size");
  is_int (m.nfds, 2, "2 fds received");
  ok (m.nfds == 2 && same_file (m.fds[0], fds[0]) &&
      same_file (m.fds[1], fds[1]), "the fds are the memfds, in order");
  ok (m.nfds == 2 && (fcntl (m.fds[0], F_GETFD) & FD_CLOEXEC),
      "received fds are close-on-exec");
  ok (memcmp (&m.payload.memory, &out.t, size) == 0, "payload intact");
  ok (vu_msg_check (&m, &err) == 0, "and it passes vu_msg_check");
  is_int (count_fds (), before + 2, "2 more fds open");
  {
    int a = m.fds[0], b = m.fds[1];
    vu_msg_close_fds (&m);
    ok (!fd_open (a) && !fd_open (b), "vu_msg_close_fds closes them");
    ok (m.nfds == 0 && m.fds[0] == -1 && m.fds[1] == -1,
        "and resets the message's fd slots");
  }
  is_int (count_fds (), before, "no fd leaked");

  /* A message without payload right after one with payload. */
  out.hdr.request = VU_GET_FEATURES;
  out.hdr.flags = VU_VERSION;
  out.hdr.size = 0;
  ok (write (sv[0], &out.hdr, sizeof out.hdr) == sizeof out.hdr,
      "sent GET_FEATURES");
  r = vu_msg_recv (sv[1], &m, &err);
  ok (r == 1 && m.hdr.request == VU_GET_FEATURES && m.hdr.size == 0 &&
      m.nfds == 0, "GET_FEATURES received, no fds");

  /* A header written in two pieces, payload in a third. */
  {
    struct vu_header h = { VU_SET_FEATURES, VU_VERSION, 8 };
    uint64_t v = 0x123456789abcdef0ull;
    ok (write (sv[0], &h, 5) == 5 && write (sv[0], (char *) &h + 5, 7) == 7
        && write (sv[0], &v, 8) == 8, "sent a header in two pieces");
    r = vu_msg_recv (sv[1], &m, &err);
    ok (r == 1 && m.hdr.request == VU_SET_FEATURES && m.hdr.size == 8 &&
        m.payload.u64 == v, "split header reassembled");
  }

  /* The largest payload the union holds is accepted. */
  {
    struct {
      struct vu_header hdr;
      uint8_t p[sizeof (union vu_payload)];
    } __attribute__ ((packed)) big;
    memset (&big, 0x5a, sizeof big);
    big.hdr = (struct vu_header) { VU_SET_CONFIG, VU_VERSION,
                                   sizeof (union vu_payload) };
    ok (write (sv[0], &big, sizeof big) == sizeof big,
        "sent a payload exactly the union's size");
    r = vu_msg_recv (sv[1], &m, &err);
    ok (r == 1 && m.hdr.size == sizeof (union vu_payload) &&
        ((uint8_t *) &m.payload)[sizeof (union vu_payload) - 1] == 0x5a,
        "a payload of exactly sizeof (union vu_payload) is read");
  }

  /* Clean EOF before a header. */
  shutdown (sv[0], SHUT_WR);
  r = vu_msg_recv (sv[1], &m, &err);
  is_int (r, 0, "EOF before a header returns 0");
  close (sv[0]);
  close (sv[1]);
  close (fds[0]);
  close (fds[1]);
}

/* Sends buf (with nfds eventfds on it), closes the sending side, and
 * checks that vu_msg_recv refuses it and leaks nothing. */
static void
recv_refused (const char *what, const void *buf, size_t len, unsigned nfds,
              bool close_writer)
{
  int sv[2], fds[16], expect[16], before, r;
  struct vu_msg m;
  const char *err = NULL;
  unsigned i;
  bool closed = true;

  pair (sv);
  for (i = 0; i < nfds; i++)
    fds[i] = eventfd (0, EFD_CLOEXEC);
  if (send_with_fds (sv[0], buf, len, fds, nfds) == -1) {
    ok (false, "%s: could not send (%s)", what, strerror (errno));
    goto out;
  }
  for (i = 0; i < nfds; i++)
    close (fds[i]);             /* only the in-flight copies remain */
  if (close_writer)
    shutdown (sv[0], SHUT_WR);
  before = count_fds ();
  next_fds (sv[1], expect, nfds < 16 ? nfds : 16);
  memset (&m, 0, sizeof m);
  r = vu_msg_recv (sv[1], &m, &err);
  ok (r == -1 && err != NULL, "%s: refused (%s)", what,
      r == -1 ? err : "accepted");
  for (i = 0; i < nfds && i < 16; i++)
    closed = closed && !fd_open (expect[i]);
  if (nfds)
    ok (closed, "%s: the %u received fds were closed", what, nfds);
  is_int (count_fds (), before, "%s: no fd leaked", what);
  ok (m.nfds == 0, "%s: the message holds no fds", what);

 out:
  close (sv[0]);
  close (sv[1]);
}

static void
test_recv_refused (void)
{
  struct {
    struct vu_header hdr;
    uint8_t p[512];
  } __attribute__ ((packed)) b;

  memset (&b, 0, sizeof b);

  b.hdr = (struct vu_header) { VU_GET_FEATURES, VU_VERSION, 0 };
  recv_refused ("truncated header (6 bytes)", &b, 6, 0, true);
  recv_refused ("truncated header (6 bytes) with 2 fds", &b, 6, 2, true);
  recv_refused ("truncated header (1 byte) with 1 fd", &b, 1, 1, true);
  recv_refused ("truncated header (11 bytes) with 8 fds", &b, 11, 8, true);

  b.hdr = (struct vu_header) { VU_SET_CONFIG, VU_VERSION,
                               sizeof (union vu_payload) + 1 };
  recv_refused ("payload one byte larger than the union", &b,
                sizeof b.hdr + sizeof (union vu_payload) + 1, 0, false);
  recv_refused ("payload larger than the union, with 3 fds", &b,
                sizeof b.hdr + sizeof (union vu_payload) + 1, 3, false);
  b.hdr.size = UINT32_MAX;
  recv_refused ("payload size 0xffffffff with 1 fd", &b, sizeof b.hdr, 1,
                false);
  b.hdr.size = 1 << 20;
  recv_refused ("payload size 1 MiB", &b, sizeof b.hdr + 64, 0, false);

  b.hdr = (struct vu_header) { VU_SET_VRING_ADDR, VU_VERSION, 40 };
  recv_refused ("truncated payload (20 of 40 bytes) then EOF", &b,
                sizeof b.hdr + 20, 0, true);
  recv_refused ("truncated payload then EOF, with 2 fds", &b,
                sizeof b.hdr + 20, 2, true);
  b.hdr = (struct vu_header) { VU_SET_MEM_TABLE, VU_VERSION, 264 };
  recv_refused ("header only, payload announced, then EOF, with 8 fds", &b,
                sizeof b.hdr, 8, true);

  /* More fds than the control buffer holds: MSG_CTRUNC. */
  b.hdr = (struct vu_header) { VU_SET_MEM_TABLE, VU_VERSION, 0 };
  recv_refused ("10 fds on one message (control data truncated)", &b,
                sizeof b.hdr, 10, false);
  recv_refused ("16 fds on one message", &b, sizeof b.hdr, 16, false);
}

/* fds attached to the payload's bytes, not the header's, are dropped by
 * the payload read() and must not pile up. */
static void
test_recv_fds_on_payload (void)
{
  struct vu_header h = { VU_SET_FEATURES, VU_VERSION, 8 };
  uint64_t v = 1;
  struct vu_msg m;
  const char *err = NULL;
  int sv[2], efd, before, r;

  pair (sv);
  efd = eventfd (0, EFD_CLOEXEC);
  before = count_fds ();
  ok (write (sv[0], &h, sizeof h) == sizeof h &&
      send_with_fds (sv[0], &v, sizeof v, &efd, 1) == 0,
      "sent a header, then a payload carrying an fd");
  close (efd);
  r = vu_msg_recv (sv[1], &m, &err);
  ok (r == 1 && m.nfds == 0 && m.payload.u64 == 1,
      "message read; the payload's fd is not attached to it");
  is_int (count_fds (), before - 1, "and it was not leaked");
  close (sv[0]);
  close (sv[1]);
}

/* vu_rx_step with MSG_DONTWAIT: a message that arrives in pieces (the
 * header's first bytes carrying an fd) is assembled across calls that
 * return 2 while it is incomplete, and never block. */
static void
test_rx_pieces (void)
{
  struct vu_header h = { VU_SET_VRING_CALL, VU_VERSION, 8 };
  uint64_t v = 0;
  struct vu_rx rx;
  const char *err = NULL;
  int sv[2], efd, before, r;

  pair (sv);
  rx.msg.nfds = 0;
  vu_rx_reset (&rx);
  efd = eventfd (0, EFD_CLOEXEC);
  before = count_fds ();
  is_int (vu_rx_step (sv[1], &rx, MSG_DONTWAIT, &err), 2,
          "nothing sent: 2, without blocking");
  ok (send_with_fds (sv[0], &h, 5, &efd, 1) == 0, "sent 5 header bytes with an fd");
  is_int (vu_rx_step (sv[1], &rx, MSG_DONTWAIT, &err), 2, "5 bytes: 2");
  is_int (rx.msg.nfds, 1, "the fd is held meanwhile");
  ok (write (sv[0], (char *) &h + 5, 7) == 7 && write (sv[0], &v, 3) == 3,
      "sent the rest of the header and 3 payload bytes");
  is_int (vu_rx_step (sv[1], &rx, MSG_DONTWAIT, &err), 2, "15 bytes: 2");
  ok (write (sv[0], (char *) &v + 3, 5) == 5, "sent the rest");
  r = vu_rx_step (sv[1], &rx, MSG_DONTWAIT, &err);
  is_int (r, 1, "complete: 1 (%s)", r == 1 ? "ok" : err);
  ok (rx.msg.hdr.request == VU_SET_VRING_CALL && rx.msg.nfds == 1 &&
      vu_msg_check (&rx.msg, &err) == 0, "the message and its fd");
  vu_rx_reset (&rx);
  is_int (count_fds (), before, "vu_rx_reset closed the fd");
  is_int (vu_rx_step (sv[1], &rx, MSG_DONTWAIT, &err), 2, "then 2 again");
  /* EOF in the middle of a header: an error, and the fd closed. */
  ok (send_with_fds (sv[0], &h, 4, &efd, 1) == 0, "4 header bytes with an fd");
  is_int (vu_rx_step (sv[1], &rx, MSG_DONTWAIT, &err), 2, "4 bytes: 2");
  close (sv[0]);
  r = vu_rx_step (sv[1], &rx, MSG_DONTWAIT, &err);
  ok (r == -1 && strcmp (err, "truncated message header") == 0,
      "EOF: truncated message header (%s)", r == -1 ? err : "accepted");
  is_int (count_fds (), before - 1, "and the fd was closed");
  close (sv[1]);
  close (efd);
}

/* ------------------------------------------------------------------ */
/* vu_msg_reply */

static void
test_reply (void)
{
  struct vu_msg req;
  struct {
    struct vu_header hdr;
    uint8_t p[300];
  } __attribute__ ((packed)) in;
  uint64_t v = 0x0102030405060708ull;
  struct vu_config cfg;
  int sv[2];
  ssize_t n;

  pair (sv);
  req = mk (VU_GET_FEATURES, 0, 0);
  req.hdr.flags = VU_VERSION | VU_FLAG_NEED_REPLY;
  ok (vu_msg_reply (sv[0], &req, &v, sizeof v, -1) == 0, "reply sent");
  n = read (sv[1], &in, sizeof in);
  is_int (n, 20, "reply is 12 + 8 bytes");
  is_int (in.hdr.flags, 0x5, "reply flags are exactly 0x5 (request had 0x9)");
  is_int (in.hdr.request, VU_GET_FEATURES, "request id echoed");
  is_int (in.hdr.size, 8, "reply size 8");
  ok (memcmp (in.p, &v, 8) == 0, "reply payload");

  /* Whatever the request's flags, the reply's are 0x5. */
  req = mk (VU_GET_QUEUE_NUM, 0, 0);
  req.hdr.flags = 0xfffffffd;
  ok (vu_msg_reply (sv[0], &req, &v, sizeof v, -1) == 0, "second reply sent");
  n = read (sv[1], &in, sizeof in);
  ok (n == 20 && in.hdr.flags == 0x5 && in.hdr.request == VU_GET_QUEUE_NUM,
      "flags 0x5 even for a request with every flag bit set");

  /* Header only. */
  req = mk (VU_SET_OWNER, 0, 0);
  ok (vu_msg_reply (sv[0], &req, NULL, 0, -1) == 0, "empty reply sent");
  n = read (sv[1], &in, sizeof in);
  ok (n == 12 && in.hdr.flags == 0x5 && in.hdr.size == 0 &&
      in.hdr.request == VU_SET_OWNER, "empty reply is a bare header");

  /* Config reply of 12 + 60. */
  memset (&cfg, 0, sizeof cfg);
  cfg.size = 60;
  memset (cfg.data, 0x77, 60);
  req = mk (VU_GET_CONFIG, 72, 0);
  ok (vu_msg_reply (sv[0], &req, &cfg, 72, -1) == 0, "config reply sent");
  n = read (sv[1], &in, sizeof in);
  ok (n == 84 && in.hdr.size == 72 && in.hdr.request == VU_GET_CONFIG &&
      in.hdr.flags == 0x5 && in.p[12] == 0x77 && in.p[71] == 0x77,
      "config reply framing");

  /* With an fd. */
  {
    char control[CMSG_SPACE (4 * sizeof (int))];
    struct iovec iov = { &in, sizeof in };
    struct msghdr mh = { .msg_iov = &iov, .msg_iovlen = 1,
                         .msg_control = control,
                         .msg_controllen = sizeof control };
    struct cmsghdr *cm;
    struct vu_inflight inf = { 4096, 0, 1, 128 };
    int efd = eventfd (0, EFD_CLOEXEC), got = -1;

    req = mk (VU_GET_INFLIGHT_FD, 24, 0);
    ok (vu_msg_reply (sv[0], &req, &inf, sizeof inf, efd) == 0,
        "reply with an fd sent");
    n = recvmsg (sv[1], &mh, MSG_CMSG_CLOEXEC);
    cm = CMSG_FIRSTHDR (&mh);
    if (cm && cm->cmsg_type == SCM_RIGHTS &&
        cm->cmsg_len == CMSG_LEN (sizeof (int)))
      memcpy (&got, CMSG_DATA (cm), sizeof got);
    ok (n == 36 && in.hdr.flags == 0x5 && in.hdr.size == 24 &&
        in.hdr.request == VU_GET_INFLIGHT_FD, "reply with fd framing");
    ok (got >= 0 && same_file (got, efd), "the fd arrived with the reply");
    ok (fd_open (efd), "vu_msg_reply does not close the caller's fd");
    if (got >= 0)
      close (got);
    close (efd);
  }

  /* A dead peer is an error, not a SIGPIPE. */
  close (sv[1]);
  req = mk (VU_GET_FEATURES, 0, 0);
  ok (vu_msg_reply (sv[0], &req, &v, sizeof v, -1) == -1,
      "reply to a closed peer fails (and does not raise SIGPIPE)");
  close (sv[0]);
}

int
main (void)
{
  test_check_fixed ();
  test_check_unknown ();
  test_check_mem_table ();
  test_check_config ();
  test_check_vring_fds ();
  test_names ();
  test_recv_normal ();
  test_recv_refused ();
  test_recv_fds_on_payload ();
  test_rx_pieces ();
  test_reply ();
  return done_testing ();
}
