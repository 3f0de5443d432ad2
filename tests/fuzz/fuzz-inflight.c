/* inflight.c + inflight-packed.c: recovery from an inflight region a
 * front-end hands back (SET_INFLIGHT_FD) after a crash, split and
 * packed, then the requests' life as queue.c leads it.
 *
 * Input: mode bits (packed, raw header, features), ring size, the
 * SET_VRING_BASE value, the region's queue area (its own header and
 * entries: flags, links, counters, kept descriptors), optionally a raw
 * 64-byte region header, then the guest memory image (guest.h) with
 * the ring at offset 0 (split: avail at 0x800, used at 0xa00; packed:
 * event areas at 0x800, 0x810).
 *
 * The region is a real memfd from inflight_create, mapped by
 * inflight_map, so the header checks run too.  Recovered heads are
 * resubmitted one at a time (inflight_walk), then new chains popped,
 * each batch completed and committed, as queue.c does. */

#include <config.h>

#include <unistd.h>

#include "guest.h"
#include "inflight.h"

#define MAXNUM 128

struct state {
  struct ring vr;
  struct inflight_ring ir;
  struct inflight_region region;
  struct guest g;
  struct iovec iov[MAXNUM + 8];
  uint64_t gpa[MAXNUM + 8];
  struct chain c;
  uint16_t heads[VRING_PACKED_MAX];
  bool busy[VRING_PACKED_MAX];
  uint16_t batch[2 * MAXNUM];
  unsigned nbatch;
};

static struct state s;          /* large: not on the stack */

static void
check_chain (void)
{
  unsigned i;

  if (s.c.nout > s.c.niov || s.c.niov > s.c.max || s.c.head >= s.vr.num)
    abort ();
  for (i = 0; i < s.c.niov; i++) {
    const uint8_t *p = s.c.iov[i].iov_base;
    size_t len = s.c.iov[i].iov_len;
    if (len == 0 ||
        !((p >= s.g.m1 && p + len <= s.g.m1 + GUEST_S1) ||
          (p >= s.g.m2 && p + len <= s.g.m2 + GUEST_S2)))
      abort ();
  }
}

/* queue.c's completion: push and link each, publish, clear, commit. */
static void
complete_batch (void)
{
  unsigned i;

  for (i = 0; i < s.nbatch; i++) {
    vring_push (&s.vr, s.batch[i], 1);
    inflight_link (&s.ir, s.batch[i]);
  }
  vring_publish (&s.vr);
  for (i = 0; i < s.nbatch; i++) {
    inflight_done (&s.ir, s.batch[i]);
    s.busy[s.batch[i]] = false;
  }
  inflight_commit (&s.ir, s.vr.used_idx);
  s.nbatch = 0;
}

/* A chain in s.c starts; false when queue.c would mark the ring broken
 * (a head still in flight). */
static bool
start (bool resubmit)
{
  check_chain ();
  if (s.busy[s.c.head])
    return false;
  s.busy[s.c.head] = true;
  if (!resubmit)
    inflight_begin (&s.ir, &s.c);
  s.batch[s.nbatch++] = s.c.head;
  return true;
}

static int
make_region (struct input *in, bool raw_header, unsigned num)
{
  uint64_t size;
  const char *err;
  uint8_t hdr[sizeof (struct inflight_header)];
  uint8_t *area;
  size_t stride;
  int fd, ret = -1;

  if (inflight_create (1, num, &fd, &size, &err) == -1)
    abort ();
  stride = size - sizeof hdr;
  area = malloc (stride);
  if (area == NULL)
    abort ();
  take (in, area, stride);
  if (pwrite (fd, area, stride, sizeof hdr) != (ssize_t) stride)
    abort ();
  if (raw_header) {
    take (in, hdr, sizeof hdr);
    if (pwrite (fd, hdr, sizeof hdr, 0) != sizeof hdr)
      abort ();
  }
  ret = inflight_map (&s.region, fd, size, 0, &err);
  close (fd);
  free (area);
  return ret;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct input in = { data, size };
  uint8_t mode = take_u8 (&in), n8 = take_u8 (&in);
  bool packed = mode & 1;
  unsigned num = packed ? n8 % MAXNUM + 1u : 1u << (n8 % 8), n = 0, i;
  uint32_t base = take_u32 (&in);
  const char *err;
  int r;

  memset (&s, 0, sizeof s);
  s.c = (struct chain) { .iov = s.iov, .gpa = s.gpa, .max = num + 8 };
  if (make_region (&in, mode & 2, num) == -1)
    return 0;
  guest_init (&s.g, &in);
  s.vr.packed = packed;
  s.vr.indirect = mode & 4;
  s.vr.event_idx = mode & 8;
  if (vring_setup (&s.vr, s.g.t, num, U1, U1 + 0x800,
                   U1 + (packed ? 0x810 : 0xa00), &err) == -1 ||
      vring_set_base (&s.vr, packed ? base : base & 0xffffu, &err) == -1 ||
      inflight_ring_start (&s.ir, &s.region, 0, &s.vr, s.heads, &n,
                           &err) == -1)
    goto out;
  if (n > num)
    abort ();
  for (i = 0; i < n; i++) {     /* resubmission, one at a time */
    if (inflight_walk (&s.ir, &s.vr, s.g.t, s.heads[i], &s.c, &err) == -1)
      goto out;
    if (s.c.head != s.heads[i] || !start (true))
      goto out;
    complete_batch ();
  }
  while (s.nbatch < num &&
         (r = vring_pop (&s.vr, s.g.t, &s.c, &err)) == 1)
    if (!start (false))
      break;
  complete_batch ();
 out:
  inflight_unmap (&s.region);
  guest_free (&s.g);
  return 0;
}
