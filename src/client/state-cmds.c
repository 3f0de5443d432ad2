/* blkgate-io: the state a front-end keeps for the back-end, looked at
 * and damaged on purpose.
 *
 *   inflight-dump, inflight-set, inflight-poke
 *       the INFLIGHT_SHMFD region we hold (as QEMU holds it across
 *       back-end crashes): decode it, or change fields or bytes before
 *       the next 'reconnect' hands it back with SET_INFLIGHT_FD
 *   log-start, log-resize, log-stop, log-clear, log-check, log-dump
 *       dirty page logging as QEMU drives it for a migration, and
 *       checks of exactly which guest pages the back-end logged
 *
 * The inflight commands know blkgate's layout (src/daemon/inflight.h:
 * a 64-byte header, then per queue the split-ring area the vhost-user
 * spec recommends); inflight-poke and inflight-dump --raw need no
 * layout at all. */

#include <config.h>

#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

/* ------------------------------------------------------------------ */
/* The inflight region */

#define BLKG_MAGIC "BLKGINF"    /* and a NUL: 8 bytes */
#define HDR_SIZE 64
#define QHDR_SIZE 16
#define DESC_SIZE 16

static int
need_region (struct session *s)
{
  if (s->c.inflight_addr == NULL) {
    fail ("no inflight region held (INFLIGHT_SHMFD not negotiated, or the "
          "device was not started yet: run a request first)");
    return -1;
  }
  return 0;
}

static uint64_t
get_le (const uint8_t *p, unsigned size)
{
  uint64_t v = 0;
  unsigned i;

  for (i = 0; i < size; i++)
    v |= (uint64_t) p[i] << (8 * i);
  return v;
}

static void
put_le (uint8_t *p, unsigned size, uint64_t v)
{
  unsigned i;

  for (i = 0; i < size; i++)
    p[i] = v >> (8 * i);
}

static void
hexdump_region (const uint8_t *base, uint64_t off, uint64_t len)
{
  uint64_t i, j;

  for (i = 0; i < len; i += 16) {
    printf ("%08" PRIx64 ": ", off + i);
    for (j = i; j < i + 16 && j < len; j++)
      printf (" %02x", base[off + j]);
    putchar ('\n');
  }
}

/* A named field of blkgate's layout: its offset and size in the
 * region.  Queue areas are found with the header's queue_stride as it
 * is now. */
static int
field_at (struct session *s, const char *name, uint64_t *off,
          unsigned *size)
{
  static const struct { const char *name; unsigned off, size; } hdr[] = {
    { "magic", 0, 8 }, { "version", 8, 4 }, { "header_size", 12, 4 },
    { "num_queues", 16, 2 }, { "queue_size", 18, 2 },
    { "queue_stride", 20, 4 },
  }, qf[] = {
    { "features", 0, 8 }, { "version", 8, 2 }, { "desc_num", 10, 2 },
    { "last_batch_head", 12, 2 }, { "used_idx", 14, 2 },
  }, df[] = {
    { "inflight", 0, 1 }, { "next", 6, 2 }, { "counter", 8, 8 },
  };
  const uint8_t *r = s->c.inflight_addr;
  uint64_t stride = get_le (r + 20, 4), base;
  unsigned q, h, i;
  char f[32];
  int n = 0;

  for (i = 0; i < sizeof hdr / sizeof hdr[0]; i++)
    if (strcmp (name, hdr[i].name) == 0) {
      *off = hdr[i].off;
      *size = hdr[i].size;
      return 0;
    }
  if (sscanf (name, "q%u.desc[%u].%31[a-z_]%n", &q, &h, f, &n) == 3 &&
      name[n] == '\0') {
    base = HDR_SIZE + q * stride + QHDR_SIZE + (uint64_t) h * DESC_SIZE;
    for (i = 0; i < sizeof df / sizeof df[0]; i++)
      if (strcmp (f, df[i].name) == 0) {
        *off = base + df[i].off;
        *size = df[i].size;
        goto check;
      }
  }
  else if (sscanf (name, "q%u.%31[a-z_]%n", &q, f, &n) == 2 &&
           name[n] == '\0') {
    base = HDR_SIZE + q * stride;
    for (i = 0; i < sizeof qf / sizeof qf[0]; i++)
      if (strcmp (f, qf[i].name) == 0) {
        *off = base + qf[i].off;
        *size = qf[i].size;
        goto check;
      }
  }
  fail ("unknown field '%s' (magic, version, header_size, num_queues, "
        "queue_size, queue_stride, qN.features, qN.version, qN.desc_num, "
        "qN.last_batch_head, qN.used_idx, qN.desc[H].inflight, "
        "qN.desc[H].next, qN.desc[H].counter)", name);
  return -1;

 check:
  if (*off + *size > s->c.inflight_size) {
    fail ("field %s at offset %" PRIu64 " is outside the region (%" PRIu64
          " bytes; queue_stride is %" PRIu64 ")", name, *off,
          s->c.inflight_size, stride);
    return -1;
  }
  return 0;
}

static void
dump_queue (const uint8_t *r, uint64_t size, unsigned q, uint64_t base,
            unsigned num, bool all)
{
  const uint8_t *a = r + base;
  unsigned h, n = 0, desc_num = get_le (a + 10, 2);

  if (get_le (a + 8, 2) == 0 && !all)
    return;                     /* never used */
  printf ("q%u at %" PRIu64 ": version %u desc_num %u last_batch_head %u "
          "used_idx %u features 0x%" PRIx64 "\n", q, base,
          (unsigned) get_le (a + 8, 2), desc_num,
          (unsigned) get_le (a + 12, 2), (unsigned) get_le (a + 14, 2),
          get_le (a, 8));
  if (desc_num > num)
    desc_num = num;
  for (h = 0; h < desc_num; h++) {
    const uint8_t *d = a + QHDR_SIZE + (uint64_t) h * DESC_SIZE;
    if ((uint64_t) (d - r) + DESC_SIZE > size)
      break;
    if (d[0] == 0 && !all)
      continue;
    printf ("  head %u: inflight %u counter %" PRIu64 " next %u\n", h, d[0],
            get_le (d + 8, 8), (unsigned) get_le (d + 6, 2));
    n += d[0] != 0;
  }
  printf ("  %u heads in flight\n", n);
}

static int
cmd_inflight_dump (struct session *s, int argc, char **argv)
{
  static const struct option opts[] = {
    { "raw", no_argument, NULL, 'r' },
    { "all", no_argument, NULL, 'a' },
    { 0 }
  };
  const uint8_t *r;
  uint64_t off = 0, len, stride;
  unsigned nq, qs, q;
  bool raw = false, all = false;
  int o;

  while ((o = getopt_long (argc, argv, "", opts, NULL)) != -1)
    if (o == 'r')
      raw = true;
    else if (o == 'a')
      all = true;
    else
      return -1;
  if (need_region (s) == -1)
    return -1;
  r = s->c.inflight_addr;
  len = s->c.inflight_size;
  if (raw) {
    if (argc - optind > 2 ||
        (argc - optind >= 1 && parse_u64 ("offset", argv[optind], &off)) ||
        (argc - optind == 2 && parse_u64 ("length", argv[optind + 1], &len)))
      return -1;
    if (off > s->c.inflight_size || len > s->c.inflight_size - off) {
      fail ("outside the region (%" PRIu64 " bytes)", s->c.inflight_size);
      return -1;
    }
    hexdump_region (r, off, len);
    return 0;
  }
  if (no_args_left (argc, argv, optind, 0) == -1)
    return -1;
  printf ("inflight region: %" PRIu64 " bytes, %u queues of %u asked\n",
          s->c.inflight_size, s->c.inflight_queues, s->c.queue_size);
  if (memcmp (r, BLKG_MAGIC, 8) != 0) {
    printf ("not blkgate's layout (magic); first bytes:\n");
    hexdump_region (r, 0, len < HDR_SIZE ? len : HDR_SIZE);
    return 0;
  }
  nq = get_le (r + 16, 2);
  qs = get_le (r + 18, 2);
  stride = get_le (r + 20, 4);
  printf ("header: magic %s version %u header_size %u num_queues %u "
          "queue_size %u queue_stride %" PRIu64 "\n", BLKG_MAGIC,
          (unsigned) get_le (r + 8, 4), (unsigned) get_le (r + 12, 4), nq, qs,
          stride);
  for (q = 0; q < nq && q < VUC_MAX_QUEUES; q++) {
    uint64_t base = HDR_SIZE + q * stride;
    if (stride < QHDR_SIZE || base + QHDR_SIZE > len)
      break;
    dump_queue (r, len, q, base, qs, all);
  }
  return 0;
}

static int
cmd_inflight_set (struct session *s, int argc, char **argv)
{
  uint8_t *r;
  uint64_t off, v, old;
  unsigned size;

  if (getopt_long (argc, argv, "", NULL, NULL) != -1 ||
      no_args_left (argc, argv, optind, 2) == -1 || need_region (s) == -1 ||
      field_at (s, argv[optind], &off, &size) == -1)
    return -1;
  r = (uint8_t *) s->c.inflight_addr + off;
  if (strcmp (argv[optind], "magic") == 0) {
    char m[8] = { 0 };
    if (strlen (argv[optind + 1]) > 8) {
      fail ("the magic has 8 bytes");
      return -1;
    }
    memcpy (m, argv[optind + 1], strlen (argv[optind + 1]));
    memcpy (r, m, 8);
    printf ("inflight-set magic = \"%.8s\"\n", m);
    return 0;
  }
  if (parse_u64 ("value", argv[optind + 1], &v) == -1)
    return -1;
  if (size < 8 && v >> (8 * size)) {
    fail ("%s has %u bytes: %s does not fit", argv[optind], size,
          argv[optind + 1]);
    return -1;
  }
  old = get_le (r, size);
  put_le (r, size, v);
  printf ("inflight-set %s (offset %" PRIu64 ", %u bytes) = %" PRIu64
          " (was %" PRIu64 ")\n", argv[optind], off, size, v, old);
  return 0;
}

static int
cmd_inflight_poke (struct session *s, int argc, char **argv)
{
  const char *hex;
  uint8_t *r;
  uint64_t off;
  size_t n, i;

  if (getopt_long (argc, argv, "", NULL, NULL) != -1 ||
      no_args_left (argc, argv, optind, 2) == -1 || need_region (s) == -1 ||
      parse_u64 ("offset", argv[optind], &off) == -1)
    return -1;
  hex = argv[optind + 1];
  n = strlen (hex);
  if (n == 0 || n % 2 || strspn (hex, "0123456789abcdefABCDEF") != n) {
    fail ("'%s' is not an even number of hex digits", hex);
    return -1;
  }
  n /= 2;
  if (off > s->c.inflight_size || n > s->c.inflight_size - off) {
    fail ("%zu bytes at %" PRIu64 " are outside the region (%" PRIu64
          " bytes)", n, off, s->c.inflight_size);
    return -1;
  }
  r = (uint8_t *) s->c.inflight_addr + off;
  printf ("inflight-poke %" PRIu64 ": ", off);
  for (i = 0; i < n; i++)
    printf ("%02x", r[i]);
  printf (" -> %s\n", hex);
  for (i = 0; i < n; i++) {
    unsigned b;
    sscanf (hex + 2 * i, "%2x", &b);
    r[i] = b;
  }
  return 0;
}

/* ------------------------------------------------------------------ */
/* Dirty logging */

static int
need_log (struct session *s)
{
  if (s->c.log_addr == NULL) {
    fail ("no dirty log (log-start first)");
    return -1;
  }
  return 0;
}

static int
cmd_log_start (struct session *s, int argc, char **argv)
{
  static const struct option opts[] = {
    { "size", required_argument, NULL, 's' },
    { "used-log-addr", required_argument, NULL, 'u' },
    { 0 }
  };
  uint64_t size = 0, used = 0;
  struct vuc_ring *ring;
  int o;

  while ((o = getopt_long (argc, argv, "", opts, NULL)) != -1)
    if (o == 's') {
      if (parse_u64 ("--size", optarg, &size) == -1)
        return -1;
    }
    else if (o != 'u' || parse_u64 ("--used-log-addr", optarg, &used) == -1)
      return -1;
  if (no_args_left (argc, argv, optind, 0) == -1 || session_start (s) == -1 ||
      (ring = session_ring (s, s->queue)) == NULL)
    return -1;
  if (s->c.log_on) {
    fail ("dirty logging is on already (log-resize gives a new bitmap)");
    return -1;
  }
  ring->log_gpa = used;
  if (vuc_log_start (&s->c, size) == -1)
    return fail_vuc ("log-start");
  printf ("dirty logging on: %" PRIu64 " bytes of bitmap (GPA 0 to 0x%"
          PRIx64 "), used ring of queue %u logged at GPA 0x%" PRIx64 "\n",
          s->c.log_size, s->c.log_size * 8 * VUC_LOG_PAGE, s->queue,
          ring->log_gpa ? ring->log_gpa : vuc_gpa (&s->c.mem, ring->used));
  return 0;
}

static int
cmd_log_resize (struct session *s, int argc, char **argv)
{
  uint64_t size;

  if (getopt_long (argc, argv, "", NULL, NULL) != -1 ||
      no_args_left (argc, argv, optind, 1) == -1 ||
      parse_u64 ("size", argv[optind], &size) == -1 || need_log (s) == -1)
    return -1;
  if (vuc_log_resize (&s->c, size) == -1)
    return fail_vuc ("log-resize");
  printf ("dirty log resized: %" PRIu64 " bytes\n", s->c.log_size);
  return 0;
}

static int
cmd_log_stop (struct session *s, int argc, char **argv)
{
  static const struct option opts[] = {
    { "features-only", no_argument, NULL, 'f' },
    { "rings-only", no_argument, NULL, 'r' },
    { 0 }
  };
  int o, only = 0;

  while ((o = getopt_long (argc, argv, "", opts, NULL)) != -1)
    if (o == 'f' || o == 'r')
      only = o;
    else
      return -1;
  if (no_args_left (argc, argv, optind, 0) == -1)
    return -1;
  if (only == 'f') {
    if (vuc_log_stop_features (&s->c) == -1)
      return fail_vuc ("log-stop");
    printf ("SET_FEATURES without LOG_ALL; the rings keep F_LOG\n");
    return 0;
  }
  if (only == 'r') {
    if (vuc_log_stop_rings (&s->c) == -1)
      return fail_vuc ("log-stop");
    printf ("SET_VRING_ADDR without F_LOG; LOG_ALL stays\n");
    return 0;
  }
  if (vuc_log_stop (&s->c) == -1)
    return fail_vuc ("log-stop");
  printf ("dirty logging off (the bitmap stays for log-check)\n");
  return 0;
}

static int
cmd_log_clear (struct session *s, int argc, char **argv)
{
  if (getopt_long (argc, argv, "", NULL, NULL) != -1 ||
      no_args_left (argc, argv, optind, 0) == -1 || need_log (s) == -1)
    return -1;
  memset (s->c.log_addr, 0, s->c.log_size);
  return 0;
}

/* Dirty pages as ranges of guest-physical addresses. */
static unsigned
print_dirty (struct session *s, bool print)
{
  uint64_t pages = s->c.log_size * 8, p, start = 0;
  unsigned n = 0;
  bool in = false;

  for (p = 0; p <= pages; p++) {
    bool d = p < pages && vuc_log_test (&s->c, p * VUC_LOG_PAGE) == 1;
    if (d && !in)
      start = p;
    if (!d && in && print)
      printf ("  0x%" PRIx64 "-0x%" PRIx64 " (%" PRIu64 " page%s)\n",
              start * VUC_LOG_PAGE, p * VUC_LOG_PAGE - 1, p - start,
              p - start == 1 ? "" : "s");
    n += d;
    in = d;
  }
  return n;
}

static int
cmd_log_dump (struct session *s, int argc, char **argv)
{
  unsigned n;

  if (getopt_long (argc, argv, "", NULL, NULL) != -1 ||
      no_args_left (argc, argv, optind, 0) == -1 || need_log (s) == -1)
    return -1;
  printf ("dirty pages:\n");
  n = print_dirty (s, true);
  printf ("%u dirty page%s\n", n, n == 1 ? "" : "s");
  return 0;
}

/* One thing named on log-check's command line: guest-physical ranges. */
struct target {
  const char *name;
  uint64_t gpa[VUC_MAX_DATA], len[VUC_MAX_DATA];
  unsigned n;
};

static int
resolve (struct session *s, const char *what, struct target *t)
{
  const struct last_req *l = &s->last;
  struct vuc_ring *r = s->queue < s->c.nqueues ? s->c.rings[s->queue] : NULL;
  unsigned i;

  t->name = what;
  t->n = 0;
  if (strncmp (what, "gpa:", 4) == 0) {
    char *plus = strchr (what + 4, '+'), a[64];
    size_t k = plus ? (size_t) (plus - what - 4) : strlen (what + 4);
    if (k >= sizeof a) {
      fail ("'%s': gpa:ADDR[+LEN]", what);
      return -1;
    }
    memcpy (a, what + 4, k);
    a[k] = '\0';
    t->len[0] = 1;
    if (parse_u64 ("address", a, &t->gpa[0]) == -1 ||
        (plus && parse_u64 ("length", plus + 1, &t->len[0]) == -1))
      return -1;
    t->n = 1;
    return 0;
  }
  if (strcmp (what, "data") == 0 || strcmp (what, "status") == 0 ||
      strcmp (what, "header") == 0) {
    if (!l->valid) {
      fail ("'%s': no request has completed yet", what);
      return -1;
    }
    if (what[0] == 'd') {
      for (i = 0; i < l->ndata; i++) {
        t->gpa[i] = l->data[i].gpa;
        t->len[i] = l->data[i].len;
      }
      t->n = l->ndata;
    }
    else {
      t->gpa[0] = what[0] == 's' ? l->status_gpa : l->hdr_gpa;
      t->len[0] = what[0] == 's' ? 1 : 16;
      t->n = 1;
    }
    return 0;
  }
  if (r == NULL) {
    fail ("'%s': queue %u was never started", what, s->queue);
    return -1;
  }
  if (strcmp (what, "used") == 0) {
    t->gpa[0] = r->log_gpa ? r->log_gpa : vuc_gpa (&s->c.mem, r->used);
    t->len[0] = 4 + 8 * (uint64_t) r->num + 2;
  }
  else if (strcmp (what, "used-ring") == 0) {
    t->gpa[0] = vuc_gpa (&s->c.mem, r->used);
    t->len[0] = 4 + 8 * (uint64_t) r->num + 2;
  }
  else if (strcmp (what, "avail") == 0) {
    t->gpa[0] = vuc_gpa (&s->c.mem, r->avail);
    t->len[0] = 4 + 2 * (uint64_t) r->num + 2;
  }
  else if (strcmp (what, "desc") == 0) {
    t->gpa[0] = vuc_gpa (&s->c.mem, r->desc);
    t->len[0] = 16 * (uint64_t) r->num;
  }
  else {
    fail ("'%s': data, status, header, used, used-ring, avail, desc or "
          "gpa:ADDR[+LEN] (! in front: must be clean)", what);
    return -1;
  }
  t->n = 1;
  return 0;
}

/* Marks the pages of t in set (one bit per page, like the log). */
static int
mark_pages (struct session *s, const struct target *t, uint8_t *set)
{
  unsigned i;

  for (i = 0; i < t->n; i++) {
    uint64_t p, first = t->gpa[i] / VUC_LOG_PAGE,
      last = (t->gpa[i] + (t->len[i] ? t->len[i] : 1) - 1) / VUC_LOG_PAGE;
    for (p = first; p <= last; p++) {
      if (p / 8 >= s->c.log_size) {
        fail ("%s: GPA 0x%" PRIx64 " is beyond the log (%" PRIu64 " bytes)",
              t->name, p * VUC_LOG_PAGE, s->c.log_size);
        return -1;
      }
      set[p / 8] |= 1u << (p % 8);
    }
  }
  return 0;
}

static int
cmd_log_check (struct session *s, int argc, char **argv)
{
  static const struct option opts[] = {
    { "exactly", no_argument, NULL, 'x' },
    { 0 }
  };
  uint8_t *dirty = NULL, *clean = NULL;
  uint64_t p, pages;
  unsigned bad = 0, ndirty = 0;
  bool exactly = false;
  int o, i, rc = -1;

  while ((o = getopt_long (argc, argv, "", opts, NULL)) != -1)
    if (o == 'x')
      exactly = true;
    else
      return -1;
  if (need_log (s) == -1)
    return -1;
  if (optind == argc && !exactly) {
    fail ("say which pages: data, status, header, used, used-ring, avail, "
          "desc, gpa:ADDR[+LEN]; !WHAT for clean ones; --exactly");
    return -1;
  }
  pages = s->c.log_size * 8;
  dirty = calloc (1, s->c.log_size);
  clean = calloc (1, s->c.log_size);
  if (dirty == NULL || clean == NULL)
    goto out;
  for (i = optind; i < argc; i++) {
    struct target t;
    bool neg = argv[i][0] == '!';
    if (resolve (s, argv[i] + neg, &t) == -1 ||
        mark_pages (s, &t, neg ? clean : dirty) == -1)
      goto out;
  }
  for (p = 0; p < pages; p++) {
    bool want_dirty = dirty[p / 8] >> (p % 8) & 1;
    bool want_clean = (clean[p / 8] >> (p % 8) & 1) ||
      (exactly && !want_dirty);
    int d = vuc_log_test (&s->c, p * VUC_LOG_PAGE);
    ndirty += d == 1;
    if (want_dirty && want_clean) {
      fail ("page 0x%" PRIx64 " is named both dirty and clean",
            p * VUC_LOG_PAGE);
      goto out;
    }
    if ((want_dirty && d != 1) || (want_clean && d == 1)) {
      if (bad++ < 16)
        fail ("page 0x%" PRIx64 " is %s, expected %s", p * VUC_LOG_PAGE,
              d == 1 ? "dirty" : "clean", want_dirty ? "dirty" : "clean");
    }
  }
  if (bad) {
    fail ("%u page%s wrong; the dirty pages are:", bad, bad == 1 ? "" : "s");
    print_dirty (s, true);
    goto out;
  }
  printf ("log-check: as expected (%u dirty page%s)\n", ndirty,
          ndirty == 1 ? "" : "s");
  rc = 0;
 out:
  free (dirty);
  free (clean);
  return rc;
}

const struct command state_commands[] = {
  { "inflight-dump", cmd_inflight_dump, "[--all] | --raw [OFF [LEN]]",
    "decode the inflight region we hold (blkgate's layout), or dump its "
    "bytes" },
  { "inflight-set", cmd_inflight_set, "FIELD VALUE",
    "change a field of the inflight region (e.g. magic, queue_stride, "
    "q0.used_idx, q0.desc[3].inflight) before the next reconnect" },
  { "inflight-poke", cmd_inflight_poke, "OFFSET HEXBYTES",
    "write bytes into the inflight region" },
  { "log-start", cmd_log_start, "[--size BYTES] [--used-log-addr GPA]",
    "start dirty logging as QEMU does for migration: SET_LOG_BASE, "
    "SET_FEATURES(+LOG_ALL), SET_VRING_ADDR(F_LOG)" },
  { "log-resize", cmd_log_resize, "BYTES",
    "hand over a new bitmap (SET_LOG_BASE) while logging; 0: the default "
    "size" },
  { "log-stop", cmd_log_stop, "[--features-only|--rings-only]",
    "SET_FEATURES(-LOG_ALL), SET_VRING_ADDR without F_LOG (or only one)" },
  { "log-clear", cmd_log_clear, "", "clear every bit of the dirty log" },
  { "log-check", cmd_log_check, "[--exactly] [!]WHAT...",
    "check that the pages of WHAT (data, status, header, used, used-ring, "
    "avail, desc, gpa:ADDR[+LEN]) are dirty (!: clean); --exactly: and no "
    "others" },
  { "log-dump", cmd_log_dump, "", "list the dirty pages" },
  { 0 }
};
