/* blkgate-io bad-chain: hostile virtio-blk requests in well-formed
 * rings.  bad-chain.c breaks the ring's rules; these kinds keep them
 * and lie in the request instead (sectors past the end, segments,
 * lengths, a status byte or header in odd places), or lay out a good
 * request in a way a correct device must still serve (a header split
 * across descriptors, a buffer across two memory regions), or change
 * the header while the device works on it (header-race). */

#include <config.h>

#include <endian.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>

#include "bad-chain.h"

#define SEED UINT64_C (0xbad)
#define OK_LEN 4096

/* One buffer of a hand-made chain. */
struct piece {
  uint64_t addr;
  uint32_t len;
  bool write;
};

/* Links pieces into one direct chain. */
static int
chain (struct parts *p, const struct piece *pc, unsigned n)
{
  int *d = calloc (n, sizeof *d), rc = -1;
  unsigned i;

  if (d == NULL)
    fail ("bad-chain: out of memory");
  else if (bc_take (p, d, n) == 0) {
    for (i = 0; i < n; i++)
      bc_desc (BC_D (i), pc[i].addr, pc[i].len,
               (pc[i].write ? BC_W : 0) | (i + 1 < n ? BC_N : 0),
               i + 1 < n ? d[i + 1] : 0);
    rc = 0;
  }
  free (d);
  return rc;
}

static void
header (struct parts *p, uint32_t type, uint64_t sector)
{
  p->req->hdr->type = htole32 (type);
  p->req->hdr->ioprio = 0;
  p->req->hdr->sector = htole64 (sector);
}

/* The kind's own data buffer, zeroed. */
static uint64_t
buffer (struct parts *p, uint64_t len)
{
  p->buf = vuc_mem_push (&p->s->c.mem, len, 4096);
  if (p->buf == NULL) {
    fail_vuc ("bad-chain");
    return 0;
  }
  memset (p->buf, 0, len);
  p->buf_len = len;
  return vuc_gpa (&p->s->c.mem, p->buf);
}

/* header, data, status: a request with its data where it should be. */
static int
request (struct parts *p, uint32_t type, uint64_t sector, uint32_t len,
         bool write_data)
{
  uint64_t data = buffer (p, len ? len : 1);
  struct piece pc[3] = {
    { p->hdr, 16, false }, { data, len, write_data }, { p->status, 1, true }
  };

  if (data == 0)
    return -1;
  header (p, type, sector);
  return chain (p, pc, 3);
}

static uint64_t
cap_sectors (const struct parts *p)
{
  return p->capacity / 512;
}

/* Reads and writes with the header's sector past the end, across it,
 * wrapping 2^64 at its end, or so large that sector * 512 wraps. */
static int
rw_at (struct parts *p, bool write, uint64_t sector)
{
  return request (p, write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN, sector,
                  OK_LEN, !write);
}

#define RW_KINDS(name, type, write)                                        \
  static int k_##name##_past_end (struct parts *p)                         \
  { return rw_at (p, write, cap_sectors (p)); }                            \
  static int k_##name##_straddle_end (struct parts *p)                     \
  { return rw_at (p, write, cap_sectors (p) - 1); }                        \
  static int k_##name##_wrap (struct parts *p)                             \
  { return rw_at (p, write, UINT64_MAX / 512); }                           \
  static int k_##name##_sector_wrap (struct parts *p)                      \
  { return rw_at (p, write, UINT64_C (1) << 55); }

RW_KINDS (read, VIRTIO_BLK_T_IN, false)
RW_KINDS (write, VIRTIO_BLK_T_OUT, true)

/* DISCARD and WRITE_ZEROES: n segments (of 16 bytes) in the kind's
 * buffer, the first one at sector for num sectors with flags; len is
 * the data descriptor's length (WHOLE: n segments). */
#define WHOLE UINT32_MAX
static int
segments (struct parts *p, bool zero, uint64_t sector, uint32_t num,
          uint32_t flags, unsigned n, uint32_t len)
{
  struct virtio_blk_discard_write_zeroes *seg;
  uint64_t data = buffer (p, 4096);
  unsigned i;

  if (data == 0)
    return -1;
  seg = (struct virtio_blk_discard_write_zeroes *) p->buf;
  for (i = 0; i < n; i++) {
    seg[i].sector = htole64 (i == 0 ? sector : 8 * i);
    seg[i].num_sectors = htole32 (i == 0 ? num : 8);
    seg[i].flags = htole32 (i == 0 ? flags : 0);
  }
  {
    struct piece pc[3] = {
      { p->hdr, 16, false },
      { data, len == WHOLE ? n * sizeof *seg : len, false },
      { p->status, 1, true }
    };
    header (p, zero ? VIRTIO_BLK_T_WRITE_ZEROES : VIRTIO_BLK_T_DISCARD, 0);
    return chain (p, pc, 3);
  }
}

static uint32_t
max_sectors (const struct parts *p, bool zero)
{
  struct vuc_blk_info info;

  vuc_blk_info (&p->s->c, &info);
  return zero ? info.max_zero_sectors : info.max_discard_sectors;
}

#define SEG_KINDS(name, zero)                                              \
  static int k_##name##_past_end (struct parts *p)                         \
  { return segments (p, zero, cap_sectors (p), 8, 0, 1, WHOLE); }          \
  static int k_##name##_straddle_end (struct parts *p)                     \
  { return segments (p, zero, cap_sectors (p) - 1, 8, 0, 1, WHOLE); }      \
  static int k_##name##_wrap (struct parts *p)                             \
  { return segments (p, zero, UINT64_MAX / 512, 8, 0, 1, WHOLE); }         \
  static int k_##name##_sector_wrap (struct parts *p)                      \
  { return segments (p, zero, UINT64_C (1) << 55, 8, 0, 1, WHOLE); }       \
  static int k_##name##_too_many (struct parts *p)                         \
  { return segments (p, zero, 0, 8, 0, 33, WHOLE); }                       \
  static int k_##name##_too_long (struct parts *p)                         \
  { return segments (p, zero, 0, max_sectors (p, zero) + 8, 0, 1, WHOLE); } \
  static int k_##name##_flags (struct parts *p)                            \
  { return segments (p, zero, 0, 8, zero ? 2 : 1, 1, WHOLE); }             \
  static int k_##name##_empty (struct parts *p)                            \
  { return segments (p, zero, 0, 8, 0, 1, 0); }                            \
  static int k_##name##_no_sectors (struct parts *p)                       \
  { return segments (p, zero, 8, 0, 0, 1, WHOLE); }                        \
  static int k_##name##_partial (struct parts *p)                          \
  { return segments (p, zero, 0, 8, 0, 2, 20); }

SEG_KINDS (discard, false)
SEG_KINDS (zero, true)

/* ------------------------------------------------------------------ */
/* Lengths and the status byte */

static int
k_odd_read (struct parts *p)
{
  return request (p, VIRTIO_BLK_T_IN, 0, 511, true);
}

static int
k_odd_write (struct parts *p)
{
  return request (p, VIRTIO_BLK_T_OUT, 0, 513, false);
}

static int
k_bad_type (struct parts *p)
{
  return request (p, 99, 0, 512, true);
}

static int
k_zero_header (struct parts *p)
{
  struct piece pc[3] = {
    { p->hdr, 0, false }, { p->data, 512, true }, { p->status, 1, true }
  };
  return chain (p, pc, 3);
}

static int
k_zero_data (struct parts *p)
{
  struct piece pc[3] = {
    { p->hdr, 16, false }, { p->data, 0, true }, { p->status, 1, true }
  };
  return chain (p, pc, 3);
}

/* The status byte has length 0: the last writable byte is the data's
 * last, and a device that frames by bytes (as the spec asks) writes the
 * status there.  The 511 bytes before it are not a whole sector. */
static int
k_zero_status (struct parts *p)
{
  struct piece pc[3] = {
    { p->hdr, 16, false }, { p->data, 512, true }, { p->status, 0, true }
  };
  return chain (p, pc, 3);
}

static const char *
c_zero_status (struct parts *p, const char *outcome)
{
  uint8_t last = p->scratch[4096 + 511];

  if (strcmp (outcome, "completed-nostatus") != 0)
    return outcome;
  return last == VIRTIO_BLK_S_IOERR ? "status-in-data-ioerr"
    : last == VIRTIO_BLK_S_OK ? "status-in-data-ok" : outcome;
}

static int
k_zero_status_only (struct parts *p)
{
  struct piece pc[2] = { { p->hdr, 16, false }, { p->status, 0, true } };

  header (p, VIRTIO_BLK_T_FLUSH, 0);
  return chain (p, pc, 2);
}

static int
k_status_readable (struct parts *p)
{
  struct piece pc[3] = {
    { p->hdr, 16, false }, { p->data, 512, true }, { p->status, 1, false }
  };
  return chain (p, pc, 3);
}

static int
k_status_readable_only (struct parts *p)
{
  struct piece pc[2] = { { p->hdr, 16, false }, { p->status, 1, false } };

  header (p, VIRTIO_BLK_T_FLUSH, 0);
  return chain (p, pc, 2);
}

/* ------------------------------------------------------------------ */
/* Good requests in unusual shapes: the data must land right. */

/* Compares the kind's buffer with the pattern of the disk at offset. */
static const char *
compare (struct parts *p, const uint8_t *got, uint64_t offset, uint64_t len)
{
  uint8_t *want = malloc (len);
  bool same;

  if (want == NULL)
    return "completed-ok-unchecked";
  pattern_fill (want, offset, len, -1, SEED);
  same = memcmp (got, want, len) == 0;
  free (want);
  return same ? "completed-ok" : "completed-ok-wrong-data";
}

/* Reads offset..+len back with a plain request and compares. */
static const char *
read_back (struct parts *p, uint64_t offset, uint64_t len)
{
  uint8_t *b = vuc_mem_push (&p->s->c.mem, len, 4096);
  uint8_t status;

  if (b == NULL || bc_plain_rw (p, false, offset, b, len, &status) == -1)
    return "completed-ok-unchecked";
  if (status != VIRTIO_BLK_S_OK)
    return "completed-ok-readback-failed";
  return compare (p, b, offset, len);
}

/* Writes the pattern at offset with a plain request. */
static int
prewrite (struct parts *p, uint64_t offset, uint64_t len)
{
  uint8_t *b = vuc_mem_push (&p->s->c.mem, len, 4096);
  uint8_t status;

  if (b == NULL)
    return fail_vuc ("bad-chain");
  pattern_fill (b, offset, len, -1, SEED);
  if (bc_plain_rw (p, true, offset, b, len, &status) == -1)
    return -1;
  if (status != VIRTIO_BLK_S_OK) {
    fail ("bad-chain: setting up: write: status %s", vuc_status_name (status));
    return -1;
  }
  return 0;
}

#define SPLIT2_OFF (64 * 1024)
#define SPLIT3_OFF (128 * 1024)
#define MERGED_OFF (192 * 1024)
#define SPAN_OFF (256 * 1024)
#define LONG_OFF (1024 * 1024)

/* A write whose header is two 8-byte descriptors. */
static int
k_split_header_2 (struct parts *p)
{
  uint64_t data = buffer (p, OK_LEN);
  struct piece pc[4] = {
    { p->hdr, 8, false }, { p->hdr + 8, 8, false }, { data, OK_LEN, false },
    { p->status, 1, true }
  };

  if (data == 0)
    return -1;
  pattern_fill (p->buf, SPLIT2_OFF, OK_LEN, -1, SEED);
  header (p, VIRTIO_BLK_T_OUT, SPLIT2_OFF / 512);
  return chain (p, pc, 4);
}

static const char *
c_split_header_2 (struct parts *p, const char *outcome)
{
  if (strcmp (outcome, "completed-ok") != 0)
    return outcome;
  return read_back (p, SPLIT2_OFF, OK_LEN);
}

/* A read whose header is three descriptors (4, 4 and 8 bytes). */
static int
k_split_header_3 (struct parts *p)
{
  uint64_t data;

  if (prewrite (p, SPLIT3_OFF, OK_LEN) == -1 ||
      (data = buffer (p, OK_LEN)) == 0)
    return -1;
  {
    struct piece pc[5] = {
      { p->hdr, 4, false }, { p->hdr + 4, 4, false },
      { p->hdr + 8, 8, false }, { data, OK_LEN, true },
      { p->status, 1, true }
    };
    header (p, VIRTIO_BLK_T_IN, SPLIT3_OFF / 512);
    return chain (p, pc, 5);
  }
}

static const char *
c_split_header_3 (struct parts *p, const char *outcome)
{
  if (strcmp (outcome, "completed-ok") != 0)
    return outcome;
  return compare (p, p->buf, SPLIT3_OFF, OK_LEN);
}

/* A write whose header and data share one descriptor. */
static int
k_merged_header (struct parts *p)
{
  uint64_t data = buffer (p, 16 + OK_LEN);
  struct virtio_blk_outhdr h = {
    htole32 (VIRTIO_BLK_T_OUT), 0, htole64 (MERGED_OFF / 512)
  };
  struct piece pc[2] = { { data, 16 + OK_LEN, false }, { p->status, 1, true } };

  if (data == 0)
    return -1;
  memcpy (p->buf, &h, sizeof h);
  pattern_fill (p->buf + 16, MERGED_OFF, OK_LEN, -1, SEED);
  return chain (p, pc, 2);
}

static const char *
c_merged_header (struct parts *p, const char *outcome)
{
  if (strcmp (outcome, "completed-ok") != 0)
    return outcome;
  return read_back (p, MERGED_OFF, OK_LEN);
}

/* A write whose data buffer crosses from one memory region into the
 * next (--regions 2 or more).  Guest memory is contiguous in
 * guest-physical addresses, so this is a good request. */
static int
k_region_span (struct parts *p)
{
  struct vuc_mem *m = &p->s->c.mem;
  uint64_t edge = m->gpa + m->size / m->nregions, gpa = edge - OK_LEN / 2;
  uint8_t *host;

  if (m->nregions < 2) {
    fail ("region-span: needs --regions 2 or more");
    return -1;
  }
  if (gpa - m->gpa < m->low || gpa + OK_LEN - m->gpa > m->high) {
    fail ("region-span: the memory at the region edge is in use");
    return -1;
  }
  host = vuc_ptr (m, gpa, OK_LEN);
  pattern_fill (host, SPAN_OFF, OK_LEN, -1, SEED);
  {
    struct piece pc[3] = {
      { p->hdr, 16, false }, { gpa, OK_LEN, false }, { p->status, 1, true }
    };
    header (p, VIRTIO_BLK_T_OUT, SPAN_OFF / 512);
    return chain (p, pc, 3);
  }
}

static const char *
c_region_span (struct parts *p, const char *outcome)
{
  if (strcmp (outcome, "completed-ok") != 0)
    return outcome;
  return read_back (p, SPAN_OFF, OK_LEN);
}

/* The longest chain without a loop: every descriptor of the ring, a
 * header, num - 2 sectors of data and the status byte. */
static int
k_long_chain (struct parts *p)
{
  unsigned num = p->r->num, n;
  uint64_t len = (uint64_t) (num - 2) * 512, data;
  struct piece *pc;
  int rc;

  if (num < 4 || prewrite (p, LONG_OFF, len) == -1 ||
      (data = buffer (p, len)) == 0)
    return -1;
  if ((pc = calloc (num, sizeof *pc)) == NULL)
    return fail_vuc ("bad-chain");
  pc[0] = (struct piece) { p->hdr, 16, false };
  for (n = 1; n < num - 1; n++)
    pc[n] = (struct piece) { data + (n - 1) * 512, 512, true };
  pc[n] = (struct piece) { p->status, 1, true };
  header (p, VIRTIO_BLK_T_IN, LONG_OFF / 512);
  rc = chain (p, pc, num);
  free (pc);
  return rc;
}

static const char *
c_long_chain (struct parts *p, const char *outcome)
{
  if (strcmp (outcome, "completed-ok") != 0)
    return outcome;
  return compare (p, p->buf, LONG_OFF, p->buf_len);
}

/* ------------------------------------------------------------------ */
/* Requests that turn on the ring */

/* A good read whose head is made available twice in a row.  With a
 * back-end that completes at once both are served; with one that is
 * still working on the first, the second reuses a head in flight. */
static int
k_head_twice (struct parts *p)
{
  if (request (p, VIRTIO_BLK_T_IN, 0, 512, true) == -1)
    return -1;
  vuc_ring_publish_head (p->r, p->head, p->req);
  return 0;
}

#define AVAIL_OFF (320 * 1024)

/* A good read whose data buffer is the ring's own avail ring: the disk
 * holds the pattern, so avail->idx becomes garbage once it lands. */
static int
k_read_into_avail (struct parts *p)
{
  struct piece pc[3] = {
    { p->hdr, 16, false },
    { vuc_gpa (&p->s->c.mem, p->r->avail), 512, true },
    { p->status, 1, true }
  };

  if (prewrite (p, AVAIL_OFF, 512) == -1)
    return -1;
  header (p, VIRTIO_BLK_T_IN, AVAIL_OFF / 512);
  return chain (p, pc, 3);
}

/* The data must be in the avail ring; kicked again, the back-end finds
 * avail->idx garbage and should stop the ring. */
static const char *
c_read_into_avail (struct parts *p, const char *outcome)
{
  uint64_t deadline = vuc_now_ns () + UINT64_C (2000000000);

  if (strcmp (outcome, "completed-ok") != 0)
    return outcome;
  outcome = compare (p, (const uint8_t *) p->r->avail, AVAIL_OFF, 512);
  if (strcmp (outcome, "completed-ok") != 0)
    return outcome;
  eventfd_write (p->r->kick_fd, 1);
  if (vuc_ring_wait (p->r, deadline) < 0 && p->r->err_signalled)
    return "completed-ok-then-ring-error";
  return "completed-ok-then-no-error";
}

/* ------------------------------------------------------------------ */
/* header-race: the guest rewrites headers while the device works */

#define RACE_REQS 32
#define RACE_ROUNDS 40

struct race {
  struct vuc_req *req[RACE_REQS];
  uint64_t good, bad;           /* sectors: the last block, the end */
  bool stop;
  uint64_t flips;
};

/* Flips every header between a good write of the disk's last block and
 * a read or write at the end of the disk, as fast as it can. */
static void *
flipper (void *arg)
{
  struct race *rc = arg;
  unsigned i, turn = 0;

  while (!__atomic_load_n (&rc->stop, __ATOMIC_RELAXED)) {
    for (i = 0; i < RACE_REQS; i++) {
      struct virtio_blk_outhdr *h = rc->req[i]->hdr;
      bool odd = (turn + i) & 1;
      __atomic_store_n (&h->sector, htole64 (odd ? rc->bad : rc->good),
                        __ATOMIC_RELAXED);
      __atomic_store_n (&h->type, htole32 ((turn + i) & 2 ? VIRTIO_BLK_T_IN
                                           : VIRTIO_BLK_T_OUT),
                        __ATOMIC_RELAXED);
    }
    turn++;
    rc->flips++;
  }
  return NULL;
}

/* Rounds of RACE_REQS writes of the last block while the flipper runs.
 * What can be seen from here: every request completes with OK or IOERR,
 * the ring stays up, and (in the test) the image does not grow. */
static const char *
r_header_race (struct parts *p)
{
  static char out[128];
  struct race rc = { .good = cap_sectors (p) - 8, .bad = cap_sectors (p) };
  uint64_t n_ok = 0, n_ioerr = 0, n_other = 0, gpa = buffer (p, OK_LEN);
  unsigned i, round;
  pthread_t t;
  int err = 0;

  if (gpa == 0)
    return NULL;
  for (i = 0; i < RACE_REQS; i++) {
    if ((rc.req[i] = req_get (p->s)) == NULL)
      return NULL;
    rc.req[i]->busy = true;     /* req_get must not hand it out again */
  }
  for (i = 0; i < RACE_REQS; i++)
    rc.req[i]->busy = false;
  if (pthread_create (&t, NULL, flipper, &rc) != 0) {
    fail ("bad-chain header-race: cannot start a thread");
    return NULL;
  }
  for (round = 0; round < RACE_ROUNDS && !err; round++) {
    for (i = 0; i < RACE_REQS && !err; i++) {
      vuc_req_rw (rc.req[i], true, rc.good * 512, gpa, OK_LEN);
      err = vuc_blk_submit (p->r, &p->s->c.mem, rc.req[i]);
    }
    for (i = 0; i < RACE_REQS && !err; i++) {
      err = vuc_blk_wait (p->r, rc.req[i], p->s->c.timeout_ms);
      if (err == 0) {
        uint8_t st = rc.req[i]->result;
        n_ok += st == VIRTIO_BLK_S_OK;
        n_ioerr += st == VIRTIO_BLK_S_IOERR;
        n_other += st != VIRTIO_BLK_S_OK && st != VIRTIO_BLK_S_IOERR;
      }
    }
  }
  __atomic_store_n (&rc.stop, true, __ATOMIC_RELAXED);
  pthread_join (t, NULL);
  printf ("bad-chain header-race: %" PRIu64 " ok, %" PRIu64 " ioerr, %"
          PRIu64 " other, %" PRIu64 " flips\n", n_ok, n_ioerr, n_other,
          rc.flips);
  if (err)
    return p->r->err_signalled ? "ring-error" : "closed";
  snprintf (out, sizeof out, "%s", n_other ? "completed-bad-status"
            : "completed-ok-or-ioerr");
  return out;
}

/* ------------------------------------------------------------------ */

/* A kind built, kicked and observed; one with a check too. */
#define K BC_KIND
#define KC(name, fn, what) { name, k_##fn, what, c_##fn, NULL }

#define RW_ENTRIES(name, what)                                             \
  K (#name "-past-end", k_##name##_past_end,                               \
     "a " what " starting at the disk's end"),                             \
  K (#name "-straddle-end", k_##name##_straddle_end,                       \
     "a " what " across the disk's end"),                                  \
  K (#name "-wrap", k_##name##_wrap,                                       \
     "a " what " whose end wraps 2^64 bytes"),                             \
  K (#name "-sector-wrap", k_##name##_sector_wrap,                         \
     "a " what " at sector 2^55 (sector * 512 wraps)")

#define SEG_ENTRIES(name, what)                                            \
  RW_ENTRIES (name, what),                                                 \
  K (#name "-too-many", k_##name##_too_many,                               \
     "33 " what " segments (the maximum is 32)"),                          \
  K (#name "-too-long", k_##name##_too_long,                               \
     "a " what " segment longer than the maximum"),                        \
  K (#name "-flags", k_##name##_flags,                                     \
     "a " what " segment with a flag not defined for it"),                 \
  K (#name "-empty", k_##name##_empty, "a " what " without segments"),     \
  K (#name "-no-sectors", k_##name##_no_sectors,                           \
     "a " what " segment of 0 sectors"),                                   \
  K (#name "-partial", k_##name##_partial,                                 \
     "a " what " of 20 bytes (not whole segments)")

const struct kind req_kinds[] = {
  RW_ENTRIES (read, "read"),
  RW_ENTRIES (write, "write"),
  SEG_ENTRIES (discard, "discard"),
  SEG_ENTRIES (zero, "write-zeroes"),
  K ("odd-read", k_odd_read, "a read of 511 bytes"),
  K ("odd-write", k_odd_write, "a write of 513 bytes"),
  K ("bad-type", k_bad_type, "request type 99"),
  K ("zero-header", k_zero_header, "a header descriptor of length 0"),
  K ("zero-data", k_zero_data, "a read with a data descriptor of length 0"),
  KC ("zero-status", zero_status,
      "a status descriptor of length 0 after 512 bytes of data"),
  K ("zero-status-only", k_zero_status_only,
     "a flush whose only writable descriptor has length 0"),
  K ("status-readable", k_status_readable,
     "a read whose status descriptor is device-readable"),
  K ("status-readable-only", k_status_readable_only,
     "a flush without any writable descriptor"),
  KC ("split-header-2", split_header_2,
      "a good write, its header in two descriptors"),
  KC ("split-header-3", split_header_3,
      "a good read, its header in three descriptors"),
  KC ("merged-header", merged_header,
      "a good write, header and data in one descriptor"),
  KC ("region-span", region_span,
      "a good write, its data across two memory regions (--regions 2)"),
  KC ("long-chain", long_chain,
      "a good read chaining every descriptor of the ring"),
  K ("head-twice", k_head_twice,
     "a good read whose head is made available twice"),
  KC ("read-into-avail", read_into_avail,
      "a good read into the ring's own avail ring, then a kick"),
  { "header-race", NULL,
    "writes whose headers another thread keeps rewriting", NULL,
    r_header_race },
  { 0 }
};
