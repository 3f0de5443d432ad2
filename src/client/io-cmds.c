/* blkgate-io's data commands: read, write, verify, flush, discard,
 * zero, id, their asynchronous forms, queue and sleep.
 *
 * Each command runs its requests on the session's current queue, one
 * at a time, in pieces of at most CHUNK bytes; data buffers come from
 * the guest memory's data stack and are released when it ends. */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include "cli.h"

struct vuc_req *
req_get (struct session *s)
{
  unsigned i;

  for (i = 0; i < POOL; i++) {
    struct vuc_req *r = &s->pool[i];
    if (r->busy || r->opaque)   /* opaque: held by an aio until 'wait' */
      continue;
    if (r->hdr == NULL && vuc_req_setup (&s->c.mem, r, false) == -1) {
      fail_vuc ("request header");
      return NULL;
    }
    r->ndata = 0;
    r->done = false;
    r->opaque = NULL;
    return r;
  }
  fail ("all %d request slots are in use", POOL);
  return NULL;
}

/* ------------------------------------------------------------------ */
/* Data patterns */

static uint64_t
splitmix64 (uint64_t x)
{
  x += UINT64_C (0x9e3779b97f4a7c15);
  x = (x ^ (x >> 30)) * UINT64_C (0xbf58476d1ce4e5b9);
  x = (x ^ (x >> 27)) * UINT64_C (0x94d049bb133111eb);
  return x ^ (x >> 31);
}

/* -P BYTE: that byte everywhere.  -S SEED: each 8-byte word of the disk
 * gets its own value from (seed, offset / 8), so data written to the
 * wrong place does not verify. */
void
pattern_fill (uint8_t *buf, uint64_t offset, uint64_t len, int pbyte,
              uint64_t seed)
{
  uint64_t i = 0;

  if (pbyte >= 0) {
    memset (buf, pbyte, len);
    return;
  }
  while (i < len) {
    uint64_t o = offset + i, w = splitmix64 (seed ^ (o / 8));
    unsigned b;
    for (b = o % 8; b < 8 && i < len; b++, i++)
      buf[i] = w >> (8 * b);
  }
}

/* Options shared by write and verify: where the data comes from. */
struct source {
  int pbyte;                    /* -P, or -1 */
  bool seeded;
  uint64_t seed;                /* -S */
  int fd;                       /* -i FILE, or -1 */
};

static int
source_opt (struct source *src, int o, const char *arg)
{
  uint64_t v;

  switch (o) {
  case 'P':
    if (parse_u64 ("pattern", arg, &v) == -1)
      return -1;
    if (v > 255) {
      fail ("pattern byte %s is above 255", arg);
      return -1;
    }
    src->pbyte = v;
    return 0;
  case 'S':
    if (parse_u64 ("seed", arg, &src->seed) == -1)
      return -1;
    src->seeded = true;
    return 0;
  case 'i':
    src->fd = open (arg, O_RDONLY | O_CLOEXEC);
    if (src->fd == -1) {
      fail ("%s: %s", arg, strerror (errno));
      return -1;
    }
    return 0;
  }
  return -1;
}

/* The expected bytes of [offset, offset+len) of the disk; pos is where
 * this piece starts within the command's range (for -i FILE). */
static int
source_get (const struct source *src, uint8_t *buf, uint64_t offset,
            uint64_t pos, uint64_t len)
{
  if (src->fd >= 0) {
    ssize_t r = pread (src->fd, buf, len, pos);
    if (r != (ssize_t) len) {
      fail ("input file: %s", r < 0 ? strerror (errno) : "too short");
      return -1;
    }
    return 0;
  }
  pattern_fill (buf, offset, len, src->seeded ? -1 : src->pbyte, src->seed);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Synchronous requests */

static int
check_status (struct vuc_req *r, const char *what, uint64_t offset)
{
  if (r->result == VIRTIO_BLK_S_OK)
    return 0;
  fail ("%s at offset %" PRIu64 ": status %s (%u)", what, offset,
        vuc_status_name (r->result), r->result);
  return -1;
}

unsigned
outstanding (const struct session *s)
{
  unsigned i, n = 0;

  for (i = 0; i < s->c.nqueues; i++)
    n += s->c.rings[i]->outstanding;
  return n;
}

/* Outstanding requests submitted before an aio request that has
 * completed: the back-end completed out of order, and a restart must
 * not lose them although used->idx has moved past their count. */
static unsigned
overtaken (const struct session *s)
{
  uint64_t newest_done = 0;
  unsigned i, n = 0;

  for (i = 0; i < POOL; i++)
    if (s->pool[i].opaque && s->pool[i].done &&
        s->pool[i].t_submit > newest_done)
      newest_done = s->pool[i].t_submit;
  for (i = 0; i < POOL; i++)
    n += s->pool[i].busy && s->pool[i].t_submit < newest_done;
  return n;
}

int
wait_req (struct session *s, struct vuc_ring *ring, struct vuc_req *r,
          int timeout_ms)
{
  unsigned n_out, n_over;
  uint64_t t0;

  for (;;) {
    if (vuc_blk_wait (ring, r, timeout_ms) == 0)
      return 0;
    if (s->auto_reconnect_ms == 0 || !ring->hangup)
      return -1;
    n_out = outstanding (s);
    n_over = overtaken (s);
    t0 = vuc_now_ns ();
    /* A back-end that dies again in the middle of the sequence is tried
     * again, within the same time limit. */
    while (vuc_reconnect (&s->c, s->auto_reconnect_ms -
                          (int) ((vuc_now_ns () - t0) / 1000000)) == -1) {
      if (!s->c.hangup ||
          vuc_now_ns () - t0 >= (uint64_t) s->auto_reconnect_ms * 1000000)
        return -1;
      printf ("auto-reconnect: the back-end went away again while starting "
              "(%s)\n", vuc_error ());
      usleep (20000);
    }
    if (s->kick_on_reconnect) {
      unsigned i;
      for (i = 0; i < s->c.nqueues; i++)
        if (s->c.rings[i]->started)
          eventfd_write (s->c.rings[i]->kick_fd, 1);
    }
    printf ("auto-reconnect: reconnected in %.1f ms (%u requests "
            "outstanding, %u of them overtaken by a later one that "
            "completed)\n", (vuc_now_ns () - t0) / 1e6, n_out, n_over);
  }
}

static void
remember (struct session *s, const struct vuc_req *r)
{
  struct last_req *l = &s->last;

  l->valid = true;
  l->hdr_gpa = vuc_gpa (&s->c.mem, r->hdr);
  l->status_gpa = vuc_gpa (&s->c.mem, r->status);
  l->ndata = r->ndata;
  memcpy (l->data, r->data, sizeof r->data[0] * r->ndata);
}

static int
run (struct session *s, struct vuc_req *r, const char *what, uint64_t offset)
{
  struct vuc_ring *ring = session_ring (s, s->queue);

  if (ring == NULL)
    return -1;
  if (vuc_blk_submit (ring, &s->c.mem, r) == -1 ||
      wait_req (s, ring, r, s->c.timeout_ms) == -1)
    return fail_vuc (what);
  remember (s, r);
  return check_status (r, what, offset);
}

/* One read or write of len <= CHUNK bytes at buf. */
static int
rw_piece (struct session *s, bool write, uint64_t offset, uint8_t *buf,
          uint32_t len)
{
  struct vuc_req *r = req_get (s);
  uint32_t want = write ? 1 : len + 1;

  if (r == NULL)
    return -1;
  vuc_req_rw (r, write, offset, vuc_gpa (&s->c.mem, buf), len);
  if (run (s, r, write ? "write" : "read", offset) == -1)
    return -1;
  if (r->used_len != want)
    fprintf (stderr, "blkgate-io: warning: %s at offset %" PRIu64 ": used "
             "length %u, expected %u\n", write ? "write" : "read", offset,
             r->used_len, want);
  return 0;
}

static int
check_offset (uint64_t offset)
{
  if (offset % 512) {
    fail ("offset %" PRIu64 " is not a multiple of 512 (virtio-blk "
          "addresses sectors)", offset);
    return -1;
  }
  return 0;
}

/* OFF LEN, the positional arguments of most commands. */
static int
off_len (int argc, char **argv, uint64_t *off, uint64_t *len)
{
  if (no_args_left (argc, argv, optind, 2) == -1 ||
      parse_u64 ("offset", argv[optind], off) == -1 ||
      parse_u64 ("length", argv[optind + 1], len) == -1)
    return -1;
  return check_offset (*off);
}

static double
ms_since (uint64_t t0)
{
  return (vuc_now_ns () - t0) / 1e6;
}

static const char *dump_chars =
  "................................ !\"#$%&'()*+,-./0123456789:;<=>?"
  "@ABCDEFGHIJKLMNOPQRSTUVWXYZ[\\]^_`abcdefghijklmnopqrstuvwxyz{|}~.";

/* qemu-io's read -v format. */
static void
hexdump (const uint8_t *buf, uint64_t offset, uint64_t len)
{
  uint64_t i, j;

  for (i = 0; i < len; i += 16) {
    printf ("%08" PRIx64 ":  ", offset + i);
    for (j = i; j < i + 16 && j < len; j++)
      printf ("%02x ", buf[j]);
    for (; j < i + 16; j++)
      printf ("   ");
    printf (" ");
    for (j = i; j < i + 16 && j < len; j++)
      putchar (buf[j] < 128 ? dump_chars[buf[j]] : '.');
    putchar ('\n');
  }
}

static int
write_out (int fd, const uint8_t *buf, uint64_t len)
{
  while (len > 0) {
    ssize_t w = write (fd, buf, len);
    if (w == -1 && errno == EINTR)
      continue;
    if (w <= 0) {
      fail ("output: %s", strerror (errno));
      return -1;
    }
    buf += w;
    len -= w;
  }
  return 0;
}

static int
open_output (const char *path)
{
  int fd;

  if (strcmp (path, "-") == 0) {
    fflush (stdout);
    return dup (STDOUT_FILENO);
  }
  fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd == -1)
    fail ("%s: %s", path, strerror (errno));
  return fd;
}

/* ------------------------------------------------------------------ */
/* read / write / verify */

enum rw_kind { K_READ, K_WRITE, K_VERIFY };

struct rw_args {
  enum rw_kind kind;
  uint64_t off, len;
  struct source src;
  const char *out;              /* read -o */
  bool dump;                    /* read -v */
};

/* Runs the command piece by piece in one data buffer of CHUNK bytes. */
static int
rw_loop (struct session *s, struct rw_args *a, int ofd, uint8_t *buf,
         uint8_t *expect)
{
  uint64_t pos;

  for (pos = 0; pos < a->len; pos += CHUNK) {
    uint32_t n = a->len - pos < CHUNK ? a->len - pos : CHUNK;
    uint64_t off = a->off + pos;

    if (a->kind == K_WRITE && source_get (&a->src, buf, off, pos, n) == -1)
      return -1;
    if (rw_piece (s, a->kind == K_WRITE, off, buf, n) == -1)
      return -1;
    if (a->kind == K_VERIFY) {
      uint32_t i;
      if (source_get (&a->src, expect, off, pos, n) == -1)
        return -1;
      for (i = 0; i < n && buf[i] == expect[i]; i++)
        ;
      if (i < n) {
        fail ("mismatch at offset %" PRIu64 ": read 0x%02x, expected 0x%02x",
              off + i, buf[i], expect[i]);
        return -1;
      }
    }
    if (a->dump)
      hexdump (buf, off, n);
    if (ofd >= 0 && write_out (ofd, buf, n) == -1)
      return -1;
  }
  return 0;
}

static int
rw_run (struct session *s, struct rw_args *a)
{
  uint64_t mark = vuc_mem_mark (&s->c.mem), t0;
  uint32_t bufsize = a->len < CHUNK ? (a->len ? a->len : 1) : CHUNK;
  uint8_t *buf, *expect = NULL;
  int ofd = -1, rc = -1;

  if (session_start (s) == -1)
    return -1;
  buf = vuc_mem_push (&s->c.mem, bufsize, 4096);
  if (a->kind == K_VERIFY)
    expect = malloc (bufsize);
  if (buf == NULL || (a->kind == K_VERIFY && expect == NULL)) {
    fail_vuc ("data buffer");
    goto out;
  }
  if (a->out && (ofd = open_output (a->out)) == -1)
    goto out;
  t0 = vuc_now_ns ();
  rc = rw_loop (s, a, ofd, buf, expect);
  if (rc == 0 && !a->dump && !(a->out && strcmp (a->out, "-") == 0))
    printf ("%s %" PRIu64 " bytes at offset %" PRIu64 " (%.3f ms)\n",
            a->kind == K_READ ? "read" : a->kind == K_WRITE ? "wrote"
            : "verified", a->len, a->off, ms_since (t0));
 out:
  if (ofd >= 0 && close (ofd) == -1 && rc == 0) {
    fail ("output: %s", strerror (errno));
    rc = -1;
  }
  free (expect);
  vuc_mem_release (&s->c.mem, mark);
  return rc;
}

static int
cmd_rw (struct session *s, int argc, char **argv, enum rw_kind kind)
{
  static const struct option opts[] = {
    { "pattern", required_argument, NULL, 'P' },
    { "seed", required_argument, NULL, 'S' },
    { "input", required_argument, NULL, 'i' },
    { "output", required_argument, NULL, 'o' },
    { "verbose", no_argument, NULL, 'v' },
    { 0 }
  };
  struct rw_args a = { .kind = kind, .src = { .pbyte = -1, .fd = -1 } };
  const char *optstring = kind == K_READ ? "o:v" : "P:S:i:";
  int o, rc = -1;

  while ((o = getopt_long (argc, argv, optstring, opts, NULL)) != -1) {
    if (o == 'o')
      a.out = optarg;
    else if (o == 'v')
      a.dump = true;
    else if (o == '?' || source_opt (&a.src, o, optarg) == -1)
      goto out;
  }
  if (off_len (argc, argv, &a.off, &a.len) == -1)
    goto out;
  if (kind == K_WRITE && a.src.pbyte < 0 && !a.src.seeded && a.src.fd < 0)
    a.src.pbyte = 0xcd;         /* qemu-io's default */
  if (kind == K_VERIFY && a.src.pbyte < 0 && !a.src.seeded && a.src.fd < 0) {
    fail ("say what to expect: -P BYTE, -S SEED or -i FILE");
    goto out;
  }
  rc = rw_run (s, &a);
 out:
  if (a.src.fd >= 0)
    close (a.src.fd);
  return rc;
}

static int
cmd_read (struct session *s, int argc, char **argv)
{
  return cmd_rw (s, argc, argv, K_READ);
}

static int
cmd_write (struct session *s, int argc, char **argv)
{
  return cmd_rw (s, argc, argv, K_WRITE);
}

static int
cmd_verify (struct session *s, int argc, char **argv)
{
  return cmd_rw (s, argc, argv, K_VERIFY);
}

/* ------------------------------------------------------------------ */
/* flush, discard, zero, id */

static int
no_options (int argc, char **argv, int want)
{
  if (getopt_long (argc, argv, "", NULL, NULL) != -1)
    return -1;
  return no_args_left (argc, argv, optind, want);
}

static int
cmd_flush (struct session *s, int argc, char **argv)
{
  struct vuc_req *r;
  uint64_t t0 = vuc_now_ns ();

  if (no_options (argc, argv, 0) == -1 || session_start (s) == -1 ||
      (r = req_get (s)) == NULL)
    return -1;
  vuc_req_flush (r);
  if (run (s, r, "flush", 0) == -1)
    return -1;
  printf ("flushed (%.3f ms)\n", ms_since (t0));
  return 0;
}

/* The largest segment the device takes, in whole blocks. */
static uint64_t
max_segment (const struct vuc_blk_info *inf, bool zero)
{
  uint64_t sectors = zero ? inf->max_zero_sectors : inf->max_discard_sectors;
  uint64_t bytes = (sectors ? sectors : UINT32_MAX) * 512;

  bytes -= bytes % inf->blk_size;
  return bytes ? bytes : inf->blk_size;
}

/* Splits [off, off+len) into segments the device accepts (its
 * max_*_sectors and max_*_seg), unless single asks for one segment as
 * given. */
static int
segments (struct session *s, uint32_t type, uint64_t off, uint64_t len,
          bool unmap, bool single)
{
  struct vuc_blk_info inf;
  bool zero = type == VIRTIO_BLK_T_WRITE_ZEROES;
  uint64_t mark = vuc_mem_mark (&s->c.mem), max_bytes, pos = off;
  struct virtio_blk_discard_write_zeroes *seg;
  unsigned max_seg, n;
  int rc = 0;

  vuc_blk_info (&s->c, &inf);
  max_bytes = single ? len : max_segment (&inf, zero);
  max_seg = zero ? inf.max_zero_seg : inf.max_discard_seg;
  if (single || max_seg == 0)
    max_seg = 1;
  if (max_seg > 64)
    max_seg = 64;
  seg = vuc_mem_push (&s->c.mem, max_seg * sizeof *seg, 16);
  if (seg == NULL)
    return fail_vuc ("segment buffer");
  do {
    struct vuc_req *r = req_get (s);
    if (r == NULL) {
      rc = -1;
      break;
    }
    n = 0;
    do {
      uint64_t piece = off + len - pos < max_bytes ? off + len - pos
        : max_bytes;
      vuc_seg_fill (&seg[n++], pos, piece, unmap);
      pos += piece;
    } while (n < max_seg && pos < off + len);
    vuc_req_segments (r, type, vuc_gpa (&s->c.mem, seg), n);
    rc = run (s, r, zero ? "write-zeroes" : "discard", off);
  } while (rc == 0 && pos < off + len);
  vuc_mem_release (&s->c.mem, mark);
  return rc;
}

static int
cmd_segments (struct session *s, int argc, char **argv, bool zero)
{
  static const struct option opts[] = {
    { "unmap", no_argument, NULL, 'u' },
    { "single", no_argument, NULL, '1' },
    { 0 }
  };
  bool unmap = false, single = false;
  uint64_t off, len, t0 = vuc_now_ns ();
  int o;

  while ((o = getopt_long (argc, argv, zero ? "u1" : "1", opts, NULL)) != -1)
    if (o == 'u')
      unmap = true;
    else if (o == '1')
      single = true;
    else
      return -1;
  if (off_len (argc, argv, &off, &len) == -1)
    return -1;
  if (len == 0 && !single) {
    fail ("length 0 (--single sends an empty segment)");
    return -1;
  }
  if (session_start (s) == -1)
    return -1;
  if (!vuc_has_f (&s->c, zero ? VIRTIO_BLK_F_WRITE_ZEROES
                  : VIRTIO_BLK_F_DISCARD))
    fprintf (stderr, "blkgate-io: warning: the device does not offer %s\n",
             zero ? "VIRTIO_BLK_F_WRITE_ZEROES" : "VIRTIO_BLK_F_DISCARD");
  if (segments (s, zero ? VIRTIO_BLK_T_WRITE_ZEROES : VIRTIO_BLK_T_DISCARD,
                off, len, unmap, single) == -1)
    return -1;
  printf ("%s %" PRIu64 " bytes at offset %" PRIu64 " (%.3f ms)\n",
          zero ? "zeroed" : "discarded", len, off, ms_since (t0));
  return 0;
}

static int
cmd_discard (struct session *s, int argc, char **argv)
{
  return cmd_segments (s, argc, argv, false);
}

static int
cmd_zero (struct session *s, int argc, char **argv)
{
  return cmd_segments (s, argc, argv, true);
}

static int
cmd_id (struct session *s, int argc, char **argv)
{
  uint64_t mark = vuc_mem_mark (&s->c.mem);
  struct vuc_req *r;
  char *id;
  int rc = -1;

  if (no_options (argc, argv, 0) == -1 || session_start (s) == -1 ||
      (r = req_get (s)) == NULL)
    return -1;
  id = vuc_mem_push (&s->c.mem, VIRTIO_BLK_ID_BYTES, 8);
  if (id == NULL)
    return fail_vuc ("id buffer");
  memset (id, 0, VIRTIO_BLK_ID_BYTES);
  vuc_req_get_id (r, vuc_gpa (&s->c.mem, id));
  if (run (s, r, "get-id", 0) == 0) {
    printf ("%.*s\n", (int) strnlen (id, VIRTIO_BLK_ID_BYTES), id);
    rc = 0;
  }
  vuc_mem_release (&s->c.mem, mark);
  return rc;
}

/* ------------------------------------------------------------------ */
/* Asynchronous requests */

static struct aio *
aio_new (struct session *s)
{
  struct aio *a;

  if (s->naio == MAX_AIO) {
    fail ("%d asynchronous requests are outstanding already", MAX_AIO);
    return NULL;
  }
  if (s->naio == 0)
    s->aio_mark = vuc_mem_mark (&s->c.mem);
  a = &s->aio[s->naio];
  memset (a, 0, sizeof *a);
  a->req = req_get (s);
  if (a->req == NULL)
    return NULL;
  a->queue = s->queue;
  a->pbyte = -1;
  return a;
}

static int
aio_submit (struct session *s, struct aio *a)
{
  struct vuc_ring *ring = session_ring (s, a->queue);

  if (ring == NULL)
    return -1;
  if (vuc_blk_submit (ring, &s->c.mem, a->req) == -1)
    return fail_vuc ("submit");
  a->req->opaque = a;           /* held until 'wait' checks it */
  vuc_ring_kick (ring);
  s->naio++;
  printf ("aio #%u submitted on queue %u\n", s->naio, a->queue);
  return 0;
}

static int
cmd_aio_rw (struct session *s, int argc, char **argv, bool write)
{
  struct source src = { .pbyte = -1, .fd = -1 };
  struct aio *a;
  uint64_t off, len;
  int o;

  while ((o = getopt_long (argc, argv, "P:S:", NULL, NULL)) != -1)
    if (o == '?' || source_opt (&src, o, optarg) == -1)
      return -1;
  if (off_len (argc, argv, &off, &len) == -1)
    return -1;
  if (len == 0 || len > CHUNK) {
    fail ("length: 1 to %u bytes", CHUNK);
    return -1;
  }
  if (write && src.pbyte < 0 && !src.seeded)
    src.pbyte = 0xcd;
  if (session_start (s) == -1 || (a = aio_new (s)) == NULL)
    return -1;
  a->buf = vuc_mem_push (&s->c.mem, len, 4096);
  if (a->buf == NULL)
    return fail_vuc ("data buffer");
  a->offset = off;
  a->len = len;
  a->pbyte = src.pbyte;
  a->seed = src.seed;
  a->seeded = src.seeded;
  if (write)
    pattern_fill (a->buf, off, len, src.seeded ? -1 : src.pbyte, src.seed);
  else
    memset (a->buf, 0, len);
  vuc_req_rw (a->req, write, off, vuc_gpa (&s->c.mem, a->buf), len);
  return aio_submit (s, a);
}

static int
cmd_aio_read (struct session *s, int argc, char **argv)
{
  return cmd_aio_rw (s, argc, argv, false);
}

static int
cmd_aio_write (struct session *s, int argc, char **argv)
{
  return cmd_aio_rw (s, argc, argv, true);
}

static int
cmd_aio_flush (struct session *s, int argc, char **argv)
{
  struct aio *a;

  if (no_options (argc, argv, 0) == -1 || session_start (s) == -1 ||
      (a = aio_new (s)) == NULL)
    return -1;
  vuc_req_flush (a->req);
  return aio_submit (s, a);
}

/* Checks one completed aio request: status, and the pattern of a read
 * that asked for one. */
static int
aio_check (struct session *s, unsigned n, struct aio *a)
{
  const char *what = a->req->type == VIRTIO_BLK_T_IN ? "read"
    : a->req->type == VIRTIO_BLK_T_OUT ? "write" : "flush";
  uint64_t i;

  if (check_status (a->req, what, a->offset) == -1)
    return -1;
  if (a->req->type == VIRTIO_BLK_T_IN && (a->pbyte >= 0 || a->seeded)) {
    uint8_t *expect = malloc (a->len);
    if (expect == NULL)
      return -1;
    pattern_fill (expect, a->offset, a->len, a->seeded ? -1 : a->pbyte,
                  a->seed);
    for (i = 0; i < a->len && a->buf[i] == expect[i]; i++)
      ;
    if (i < a->len)
      fail ("aio #%u: mismatch at offset %" PRIu64 ": read 0x%02x, "
            "expected 0x%02x", n, a->offset + i, a->buf[i], expect[i]);
    free (expect);
    if (i < a->len)
      return -1;
  }
  printf ("aio #%u %s %" PRIu64 " bytes at offset %" PRIu64 ": OK\n", n,
          what, a->len, a->offset);
  return 0;
}

/* Waits for aio #n (1-based) without checking or releasing it. */
static int
aio_wait_one (struct session *s, unsigned n, int timeout_ms)
{
  struct aio *a = &s->aio[n - 1];

  if (!a->req->done &&
      wait_req (s, s->c.rings[a->queue], a->req, timeout_ms) == -1) {
    fail ("aio #%u: %s", n, vuc_error ());
    return -1;
  }
  return 0;
}

int
aio_wait_all (struct session *s, int timeout_ms)
{
  unsigned i;
  int rc = 0;

  for (i = 0; i < s->naio; i++)
    if (aio_wait_one (s, i + 1, timeout_ms) == -1)
      return -1;                /* still outstanding: keep them all */
  for (i = 0; i < s->naio; i++) {
    if (aio_check (s, i + 1, &s->aio[i]) == -1)
      rc = -1;
    s->aio[i].req->opaque = NULL;
  }
  s->naio = 0;
  vuc_mem_release (&s->c.mem, s->aio_mark);
  return rc;
}

/* wait: every aio request, checked and released.  wait N...: only
 * those (aio #N as 'submitted' numbered them), which stay numbered
 * until a plain wait; a guest that orders dependent writes waits so. */
static int
cmd_wait (struct session *s, int argc, char **argv)
{
  unsigned n;
  int i;

  if (getopt_long (argc, argv, "", NULL, NULL) != -1)
    return -1;
  if (optind == argc)
    return aio_wait_all (s, s->c.timeout_ms);
  for (i = optind; i < argc; i++) {
    const char *arg = argv[i][0] == '#' ? argv[i] + 1 : argv[i];
    if (parse_uint ("aio number", arg, &n) == -1)
      return -1;
    if (n == 0 || n > s->naio) {
      fail ("there is no aio #%u (%u outstanding since the last plain "
            "wait)", n, s->naio);
      return -1;
    }
    if (aio_wait_one (s, n, s->c.timeout_ms) == -1)
      return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------ */

static int
cmd_queue (struct session *s, int argc, char **argv)
{
  unsigned q;

  if (no_options (argc, argv, 1) == -1 ||
      parse_queue (s, argv[optind], &q) == -1)
    return -1;
  if (s->c.inited && q >= s->c.queue_num) {
    fail ("the back-end offers %" PRIu64 " queues", s->c.queue_num);
    return -1;
  }
  s->queue = q;
  return 0;
}

static int
cmd_sleep (struct session *s, int argc, char **argv)
{
  char *end;
  double secs;

  if (no_options (argc, argv, 1) == -1)
    return -1;
  secs = strtod (argv[optind], &end);
  if (*end || secs < 0 || secs > 86400) {
    fail ("'%s' is not a number of seconds", argv[optind]);
    return -1;
  }
  usleep ((useconds_t) (secs * 1e6));
  return 0;
}

/* For scripts that time things against other processes: the wall
 * clock, which they can read too (bash's $EPOCHREALTIME). */
static int
cmd_stamp (struct session *s, int argc, char **argv)
{
  struct timespec ts;
  int i;

  if (getopt_long (argc, argv, "", NULL, NULL) != -1)
    return -1;
  clock_gettime (CLOCK_REALTIME, &ts);
  printf ("stamp");
  for (i = optind; i < argc; i++)
    printf (" %s", argv[i]);
  printf (" %lld.%06ld\n", (long long) ts.tv_sec, ts.tv_nsec / 1000);
  return 0;
}

int cmd_info (struct session *s, int argc, char **argv);

const struct command io_commands[] = {
  { "info", cmd_info, "",
    "features, protocol features, queues, decoded config space" },
  { "id", cmd_id, "", "print the disk's serial (GET_ID)" },
  { "read", cmd_read, "OFF LEN [-o FILE|-v]",
    "read; -o writes the data to FILE (- for stdout), -v dumps it" },
  { "write", cmd_write, "OFF LEN [-P BYTE|-S SEED|-i FILE]",
    "write a byte (default 0xcd), a seeded pattern or a file" },
  { "verify", cmd_verify, "OFF LEN -P BYTE|-S SEED|-i FILE",
    "read and compare; fails at the first difference" },
  { "flush", cmd_flush, "", "VIRTIO_BLK_T_FLUSH" },
  { "discard", cmd_discard, "OFF LEN [--single]",
    "VIRTIO_BLK_T_DISCARD (split to the device's limits unless --single)" },
  { "zero", cmd_zero, "OFF LEN [--unmap] [--single]",
    "VIRTIO_BLK_T_WRITE_ZEROES" },
  { "aio-read", cmd_aio_read, "OFF LEN [-P BYTE|-S SEED]",
    "submit a read and go on; 'wait' completes (and checks) it" },
  { "aio-write", cmd_aio_write, "OFF LEN [-P BYTE|-S SEED]",
    "submit a write and go on" },
  { "aio-flush", cmd_aio_flush, "", "submit a flush and go on" },
  { "wait", cmd_wait, "[N...]",
    "wait for every aio request and check it; with N, only for aio #N" },
  { "queue", cmd_queue, "N", "use queue N for the following commands" },
  { "sleep", cmd_sleep, "SECONDS", "pause" },
  { "stamp", cmd_stamp, "[TEXT...]",
    "print TEXT and the wall-clock time (seconds since the epoch)" },
  { 0 }
};
