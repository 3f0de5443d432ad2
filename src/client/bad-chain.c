/* blkgate-io bad-chain: a hostile guest.  Writes one malformed
 * descriptor chain (or avail entry) by hand, kicks, watches what the
 * back-end does with it for a while, and then checks that it still
 * serves a new front-end.  A good back-end marks the ring broken or
 * answers IOERR; it must not crash, hang, or touch memory outside the
 * guest's. */

#include <config.h>

#include <endian.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include "bad-chain.h"

void
bc_desc (struct vring_desc *d, uint64_t addr, uint32_t len, uint16_t flags,
         uint16_t next)
{
  d->addr = htole64 (addr);
  d->len = htole32 (len);
  d->flags = htole16 (flags);
  d->next = htole16 (next);
}

int
bc_take (struct parts *p, int *d, unsigned n)
{
  unsigned i;

  for (i = 0; i < n; i++)
    if ((d[i] = vuc_ring_take_desc (p->r)) < 0)
      return fail_vuc ("bad-chain");
  p->head = d[0];
  p->r->ndesc[d[0]] = 0;        /* never returned: the ring is reset after */
  return 0;
}

int
bc_plain_rw (struct parts *p, bool write, uint64_t offset, uint8_t *buf,
             uint32_t len, uint8_t *status)
{
  struct vuc_req *r = req_get (p->s);

  if (r == NULL)
    return -1;
  vuc_req_rw (r, write, offset, vuc_gpa (&p->s->c.mem, buf), len);
  if (vuc_blk_run (p->r, &p->s->c.mem, r, p->s->c.timeout_ms) == -1)
    return fail_vuc (write ? "bad-chain: write" : "bad-chain: read");
  *status = r->result;
  return 0;
}

#define D BC_D
#define W BC_W
#define N BC_N
#define I BC_I

/* A normal read chain except for the data descriptor. */
static int
chain3 (struct parts *p, uint64_t addr, uint32_t len)
{
  int d[3] = { 0 };

  if (bc_take (p, d, 3) == -1)
    return -1;
  bc_desc (D (0), p->hdr, 16, N, d[1]);
  bc_desc (D (1), addr, len, W | N, d[2]);
  bc_desc (D (2), p->status, 1, W, 0);
  return 0;
}

static int
k_loop (struct parts *p)
{
  int d[2] = { 0 };

  if (bc_take (p, d, 2) == -1)
    return -1;
  bc_desc (D (0), p->hdr, 16, N, d[1]);
  bc_desc (D (1), p->data, 512, W | N, d[0]);
  return 0;
}

/* A loop of writable descriptors: no readable-after-writable rule
 * catches it, only the bound on the chain's length. */
static int
k_loop_writable (struct parts *p)
{
  int d[3] = { 0 };

  if (bc_take (p, d, 3) == -1)
    return -1;
  bc_desc (D (0), p->hdr, 16, N, d[1]);
  bc_desc (D (1), p->data, 512, W | N, d[2]);
  bc_desc (D (2), p->data + 512, 512, W | N, d[1]);
  return 0;
}

static int
k_self_loop (struct parts *p)
{
  int d[1] = { 0 };

  if (bc_take (p, d, 1) == -1)
    return -1;
  bc_desc (D (0), p->hdr, 16, N, d[0]);
  return 0;
}

static int
k_head_range (struct parts *p)
{
  p->head = p->r->num + 3;
  return 0;
}

static int
k_next_range (struct parts *p)
{
  int d[1] = { 0 };

  if (bc_take (p, d, 1) == -1)
    return -1;
  bc_desc (D (0), p->hdr, 16, N, p->r->num + 7);
  return 0;
}

static int
k_outside (struct parts *p)
{
  return chain3 (p, p->outside, 4096);
}

static int
k_straddle (struct parts *p)
{
  return chain3 (p, p->outside - 512, 4096);
}

static int
k_overflow (struct parts *p)
{
  return chain3 (p, UINT64_MAX - 511, 4096);
}

static int
k_no_status (struct parts *p)
{
  int d[1] = { 0 };

  if (bc_take (p, d, 1) == -1)
    return -1;
  bc_desc (D (0), p->hdr, 16, 0, 0);
  return 0;
}

static int
k_short_header (struct parts *p)
{
  int d[2] = { 0 };

  if (bc_take (p, d, 2) == -1)
    return -1;
  bc_desc (D (0), p->hdr, 8, N, d[1]);
  bc_desc (D (1), p->status, 1, W, 0);
  return 0;
}

static int
k_write_then_read (struct parts *p)
{
  int d[3] = { 0 };

  if (bc_take (p, d, 3) == -1)
    return -1;
  bc_desc (D (0), p->hdr, 16, N, d[1]);
  bc_desc (D (1), p->status, 1, W | N, d[2]);
  bc_desc (D (2), p->data, 512, 0, 0);
  return 0;
}

/* Indirect tables live in scratch guest memory. */
static struct vring_desc *
table (struct parts *p, unsigned which)
{
  return (struct vring_desc *) (p->scratch + which * 2048);
}

static uint64_t
table_gpa (struct parts *p, unsigned which)
{
  return vuc_gpa (&p->s->c.mem, table (p, which));
}

/* A good indirect table for a 512-byte read. */
static void
good_table (struct parts *p, struct vring_desc *t)
{
  bc_desc (&t[0], p->hdr, 16, N, 1);
  bc_desc (&t[1], p->data, 512, W | N, 2);
  bc_desc (&t[2], p->status, 1, W, 0);
}

static int
indirect_head (struct parts *p, uint64_t addr, uint32_t len, uint16_t flags,
               uint16_t next)
{
  int d[1] = { 0 };

  if (bc_take (p, d, 1) == -1)
    return -1;
  bc_desc (D (0), addr, len, I | flags, next);
  return 0;
}

static int
k_indirect_nested (struct parts *p)
{
  good_table (p, table (p, 1));
  bc_desc (&table (p, 0)[0], table_gpa (p, 1), 48, I, 0);
  return indirect_head (p, table_gpa (p, 0), 16, 0, 0);
}

static int
k_indirect_next (struct parts *p)
{
  good_table (p, table (p, 0));
  return indirect_head (p, table_gpa (p, 0), 48, N, 0);
}

static int
k_indirect_len (struct parts *p)
{
  good_table (p, table (p, 0));
  return indirect_head (p, table_gpa (p, 0), 40, 0, 0);
}

static int
k_indirect_huge (struct parts *p)
{
  /* One entry more than the ring holds; the rest is zeroes. */
  good_table (p, table (p, 0));
  return indirect_head (p, table_gpa (p, 0), 16 * (p->r->num + 1), 0, 0);
}

static int
k_indirect_outside (struct parts *p)
{
  return indirect_head (p, p->outside, 48, 0, 0);
}

static int
k_indirect_loop (struct parts *p)
{
  struct vring_desc *t = table (p, 0);

  bc_desc (&t[0], p->hdr, 16, N, 1);
  bc_desc (&t[1], p->data, 512, W | N, 0);
  return indirect_head (p, table_gpa (p, 0), 32, 0, 0);
}

static int
k_indirect_in_chain (struct parts *p)
{
  int d[2] = { 0 };

  good_table (p, table (p, 0));
  if (bc_take (p, d, 2) == -1)
    return -1;
  bc_desc (D (0), p->hdr, 16, N, d[1]);
  bc_desc (D (1), table_gpa (p, 0), 48, I, 0);
  return 0;
}

static int
k_avail_jump (struct parts *p)
{
  p->head = -1;
  p->r->avail_idx += p->r->num + 5;
  return 0;
}

static const struct kind kinds[] = {
  BC_KIND ("loop", k_loop, "two descriptors pointing at each other"),
  BC_KIND ("loop-writable", k_loop_writable,
           "writable descriptors pointing at each other"),
  BC_KIND ("self-loop", k_self_loop, "a descriptor whose next is itself"),
  BC_KIND ("head-range", k_head_range, "an avail entry beyond the ring size"),
  BC_KIND ("next-range", k_next_range, "a next index beyond the ring size"),
  BC_KIND ("outside", k_outside, "a data buffer beyond guest memory"),
  BC_KIND ("straddle", k_straddle, "a data buffer crossing the end of memory"),
  BC_KIND ("overflow", k_overflow, "a data buffer whose end wraps 2^64"),
  BC_KIND ("no-status", k_no_status, "only a readable header, no status byte"),
  BC_KIND ("short-header", k_short_header, "an 8-byte header, then a status"),
  BC_KIND ("write-then-read", k_write_then_read,
           "a readable descriptor after a writable one"),
  BC_KIND ("indirect-nested", k_indirect_nested,
           "an indirect table in a table"),
  BC_KIND ("indirect-next", k_indirect_next, "INDIRECT together with NEXT"),
  BC_KIND ("indirect-len", k_indirect_len,
           "a table length not a multiple of 16"),
  BC_KIND ("indirect-huge", k_indirect_huge, "a table longer than the ring"),
  BC_KIND ("indirect-outside", k_indirect_outside,
           "a table beyond guest memory"),
  BC_KIND ("indirect-loop", k_indirect_loop, "a loop inside an indirect table"),
  BC_KIND ("indirect-in-chain", k_indirect_in_chain,
           "an indirect descriptor after a direct one"),
  BC_KIND ("avail-jump", k_avail_jump,
           "avail->idx moved further than the ring"),
  { 0 }
};

/* ------------------------------------------------------------------ */

/* Watches for wait_ms: the outcome's name. */
static const char *
observe (struct parts *p, int wait_ms)
{
  struct vuc_ring *r = p->r;
  uint64_t deadline = vuc_now_ns () + (uint64_t) wait_ms * 1000000;
  static char buf[64];
  void *token;
  uint32_t len;
  int w = vuc_ring_wait (r, deadline), n;

  if (w == 0)
    return "no-completion";
  if (w < 0)
    return r->err_signalled ? "ring-error" : "closed";
  n = vuc_ring_reap (r, &token, &len);
  if (n < 0)
    return "bogus-used";
  switch (*p->req->status) {
  case VIRTIO_BLK_S_OK: return "completed-ok";
  case VIRTIO_BLK_S_IOERR: return "completed-ioerr";
  case VIRTIO_BLK_S_UNSUPP: return "completed-unsupp";
  case VUC_STATUS_NONE: return "completed-nostatus";
  }
  snprintf (buf, sizeof buf, "completed-status-%u", *p->req->status);
  return buf;
}

static bool
expected (const char *outcome, const char *list)
{
  size_t n = strlen (outcome);
  const char *p = list;

  while ((p = strstr (p, outcome)) != NULL) {
    if ((p == list || p[-1] == ',') && (p[n] == ',' || p[n] == '\0'))
      return true;
    p += n;
  }
  return false;
}

static int
setup_parts (struct session *s, struct parts *p)
{
  struct vuc_blk_info info;

  memset (p, 0, sizeof *p);
  p->s = s;
  p->r = session_ring (s, s->queue);
  p->req = p->r ? req_get (s) : NULL;
  p->scratch = vuc_mem_push (&s->c.mem, 8192, 4096);
  if (p->r == NULL || p->req == NULL || p->scratch == NULL)
    return p->scratch ? -1 : fail_vuc ("bad-chain");
  memset (p->scratch, 0, 8192);
  p->req->hdr->type = htole32 (VIRTIO_BLK_T_IN);
  p->req->hdr->sector = 0;
  *p->req->status = VUC_STATUS_NONE;
  p->hdr = vuc_gpa (&s->c.mem, p->req->hdr);
  p->status = vuc_gpa (&s->c.mem, p->req->status);
  p->data = vuc_gpa (&s->c.mem, p->scratch + 4096);
  p->outside = s->c.mem.gpa + s->c.mem.size;
  vuc_blk_info (&s->c, &info);
  p->capacity = info.capacity;
  p->head = -1;
  p->req->busy = true;          /* free again after the alive check */
  return 0;
}

static const struct kind *const tables[] = { kinds, req_kinds, packed_kinds };

/* Builds, kicks and observes (or runs) one kind: its outcome. */
static const char *
run_kind (const struct kind *k, struct parts *p, int wait_ms)
{
  const char *outcome;

  if (k->run)
    return k->run (p);
  if (k->build (p) == -1)
    return NULL;
  if (p->head >= 0)
    vuc_ring_publish_head (p->r, p->head, p->req);
  vuc_ring_kick (p->r);
  outcome = observe (p, wait_ms);
  if (k->check)
    outcome = k->check (p, outcome);
  return outcome;
}

static void
list_kinds (void)
{
  const struct kind *k;
  unsigned t;

  for (t = 0; t < sizeof tables / sizeof tables[0]; t++)
    for (k = tables[t]; k->name; k++)
      printf ("%-18s %s\n", k->name, k->what);
}

struct bad_opts {
  int wait_ms;
  const char *expect;
  bool check;
};

static int
parse_bad_opts (int argc, char **argv, struct bad_opts *o)
{
  static const struct option opts[] = {
    { "wait", required_argument, NULL, 'w' },
    { "expect", required_argument, NULL, 'e' },
    { "no-check", no_argument, NULL, 'n' },
    { 0 }
  };
  unsigned ms;
  int c;

  while ((c = getopt_long (argc, argv, "", opts, NULL)) != -1)
    if (c == 'w' && parse_uint ("--wait", optarg, &ms) == 0)
      o->wait_ms = ms;
    else if (c == 'e')
      o->expect = optarg;
    else if (c == 'n')
      o->check = false;
    else
      return -1;
  return no_args_left (argc, argv, optind, 1);
}

static const struct kind *
find_kind (const char *name)
{
  const struct kind *k;
  unsigned t;

  for (t = 0; t < sizeof tables / sizeof tables[0]; t++)
    for (k = tables[t]; k->name; k++)
      if (strcmp (k->name, name) == 0)
        return k;
  fail ("unknown kind '%s' (bad-chain list)", name);
  return NULL;
}

int
cmd_bad_chain (struct session *s, int argc, char **argv)
{
  struct bad_opts o = { .wait_ms = 1000, .check = true };
  const struct kind *k;
  const char *outcome;
  struct parts p;
  uint64_t features, mark = vuc_mem_mark (&s->c.mem);
  bool control, alive = true, skip_reset = true;
  int reset = 0;

  if (parse_bad_opts (argc, argv, &o) == -1)
    return -1;
  if (strcmp (argv[optind], "list") == 0) {
    list_kinds ();
    return 0;
  }
  if ((k = find_kind (argv[optind])) == NULL || session_start (s) == -1 ||
      setup_parts (s, &p) == -1 || (outcome = run_kind (k, &p, o.wait_ms))
      == NULL) {
    vuc_mem_release (&s->c.mem, mark);
    return -1;
  }
  control = vuc_get_u64 (&s->c, VU_GET_FEATURES, &features) == 0;
  if (o.check) {
    /* What a guest does after a broken ring: reset the device.  Its
     * stop drains the requests still in flight, which would otherwise
     * complete into the rings the alive check clears.  (libvuclient
     * cannot stop a packed ring; the packed kinds leave nothing in
     * flight.) */
    skip_reset = !control || vuc_has_f (&s->c, VU_F_RING_PACKED);
    if (!skip_reset && (reset = vuc_reset_device (&s->c)) == -1)
      fail_vuc ("device reset");
    alive = alive_check (s, 5000) == 0;
    vuc_mem_release (&s->c.mem, mark);
  }
  printf ("bad-chain %s: outcome=%s control=%s reset=%s alive=%s\n", k->name,
          outcome, control ? "ok" : "closed",
          !o.check || skip_reset ? "skipped" : reset == 0 ? "ok" : "failed",
          o.check ? (alive ? "yes" : "no") : "unchecked");
  if (!alive || reset == -1)
    return -1;
  if (o.expect && !expected (outcome, o.expect)) {
    fail ("outcome %s is not one of %s", outcome, o.expect);
    return -1;
  }
  return 0;
}
