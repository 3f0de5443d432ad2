/* blkgate-io's fault scripting: what QEMU does when a back-end dies,
 * stops, migrates or resets, and raw messages.
 *
 *   reconnect, disconnect      back-end crash as QEMU sees it
 *   stop-queue, start-queue    VM stop / cont, one queue or all
 *   migrate SOCKET             switch-over to a destination back-end
 *   reset                      guest reset (RESET_DEVICE)
 *   alive                      does the back-end still serve a new guest?
 *   raw                        any message, well-formed or not
 *
 * bad-chain (malformed descriptor chains) is in bad-chain.c. */

#include <config.h>

#include <ctype.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mman.h>

#include "cli.h"

#define DEFAULT_RETRY_MS 10000

static int
retry_opt (const char *arg, int *ms)
{
  uint64_t v;

  if (parse_u64 ("--retry", arg, &v) == -1)
    return -1;
  *ms = v > 86400 ? 86400000 : (int) v * 1000;
  return 0;
}

static int
cmd_reconnect (struct session *s, int argc, char **argv)
{
  static const struct option opts[] = {
    { "retry", required_argument, NULL, 'r' },
    { 0 }
  };
  int o, retry = s->retry_ms > DEFAULT_RETRY_MS ? s->retry_ms
    : DEFAULT_RETRY_MS;
  uint64_t t0 = vuc_now_ns ();

  while ((o = getopt_long (argc, argv, "r:", opts, NULL)) != -1)
    if (o != 'r' || retry_opt (optarg, &retry) == -1)
      return -1;
  if (no_args_left (argc, argv, optind, 0) == -1)
    return -1;
  if (vuc_reconnect (&s->c, retry) == -1)
    return fail_vuc ("reconnect");
  printf ("reconnected in %.1f ms (%u requests outstanding)\n",
          (vuc_now_ns () - t0) / 1e6, outstanding (s));
  return 0;
}

static int
cmd_disconnect (struct session *s, int argc, char **argv)
{
  if (getopt_long (argc, argv, "", NULL, NULL) != -1 ||
      no_args_left (argc, argv, optind, 0) == -1)
    return -1;
  vuc_close (&s->c);
  return 0;
}

/* ------------------------------------------------------------------ */
/* stop-queue / start-queue / migrate */

static int
stop_mode_opt (struct session *s, int o, enum vuc_stop_mode *mode)
{
  unsigned bit = o == 's' ? VU_PF_GET_VRING_BASE_INFLIGHT
    : VU_PF_GET_VRING_BASE_SKIP_DRAIN;

  *mode = o == 's' ? VUC_STOP_SKIP_DRAIN : VUC_STOP_MSG45;
  if (s->c.inited && !vuc_has_pf (&s->c, bit) && !s->force) {
    fail ("protocol feature %u is not negotiated (--inflight-migration; "
          "--force sends it anyway)", bit);
    return -1;
  }
  return 0;
}

/* A stopped ring belongs to the front-end again: the back-end must not
 * publish anything more in it (vhost-user.rst, GET_VRING_BASE). */
static int
watch_used (struct session *s, unsigned q, uint16_t used, unsigned watch_ms)
{
  struct vuc_ring *r = s->c.rings[q];
  uint64_t end = vuc_now_ns () + (uint64_t) watch_ms * 1000000;

  do {
    if (vuc_ring_used_idx (r) != used) {
      fail ("queue %u: the back-end wrote the used ring after replying to "
            "GET_VRING_BASE (used_idx %u -> %u)", q, used,
            vuc_ring_used_idx (r));
      return -1;
    }
    usleep (1000);
  } while (vuc_now_ns () < end);
  return 0;
}

/* Stops one queue and reports what the back-end returned, then checks
 * that it leaves the used ring alone afterwards. */
static int
stop_one (struct session *s, unsigned q, enum vuc_stop_mode mode,
          unsigned watch_ms)
{
  struct vuc_ring *r = s->c.rings[q];
  uint16_t base, used;
  uint64_t us;

  if (vuc_stop_queue (&s->c, q, mode, &base, &us) == -1)
    return fail_vuc ("stop");
  used = vuc_ring_used_idx (r);
  printf ("stop-queue queue=%u msg=%s index=%u reply_us=%" PRIu64
          " used_idx=%u avail_idx=%u outstanding=%u drained=%s\n", q,
          mode == VUC_STOP_MSG45 ? "GET_VRING_BASE_SKIP_DRAIN"
          : mode == VUC_STOP_SKIP_DRAIN ? "GET_VRING_BASE(skip_drain=1)"
          : "GET_VRING_BASE", base, us, used, r->avail_idx, r->outstanding,
          used == base ? "yes" : "no");
  return watch_used (s, q, used, watch_ms);
}

/* QEMU disables every ring before it asks for any base. */
static int
stop_queues (struct session *s, unsigned first, unsigned last,
             enum vuc_stop_mode mode, unsigned watch_ms)
{
  unsigned q;

  for (q = first; q <= last; q++) {
    struct vuc_ring *r = s->c.rings[q];
    if (r->started && r->enabled) {
      if (vuc_set_state (&s->c, VU_SET_VRING_ENABLE, q, 0) == -1)
        return fail_vuc ("SET_VRING_ENABLE");
      r->enabled = false;
    }
  }
  for (q = first; q <= last; q++)
    if (s->c.rings[q]->started && stop_one (s, q, mode, watch_ms) == -1)
      return -1;
  return 0;
}

/* "N" or "all" -> [first, last] of the rings set up. */
static int
queue_range (struct session *s, const char *arg, unsigned *first,
             unsigned *last)
{
  if (strcmp (arg, "all") == 0) {
    *first = 0;
    *last = s->c.nqueues - 1;
    return 0;
  }
  if (parse_queue (s, arg, first) == -1)
    return -1;
  if (*first >= s->c.nqueues) {
    fail ("queue %u was never started", *first);
    return -1;
  }
  *last = *first;
  return 0;
}

static const struct option stop_opts[] = {
  { "skip-drain", no_argument, NULL, 's' },
  { "msg45", no_argument, NULL, '4' },
  { "watch", required_argument, NULL, 'w' },
  { "fresh-inflight", no_argument, NULL, 'f' },
  { 0 }
};

static int
cmd_stop_queue (struct session *s, int argc, char **argv)
{
  enum vuc_stop_mode mode = VUC_STOP_DRAIN;
  unsigned first, last, watch = 20;
  int o;

  while ((o = getopt_long (argc, argv, "", stop_opts, NULL)) != -1)
    if (o == 'w') {
      if (parse_uint ("--watch", optarg, &watch) == -1)
        return -1;
    }
    else if ((o != 's' && o != '4') || stop_mode_opt (s, o, &mode) == -1)
      return -1;
  if (no_args_left (argc, argv, optind, 1) == -1 ||
      session_start (s) == -1 ||
      queue_range (s, argv[optind], &first, &last) == -1)
    return -1;
  if (first == last && !s->c.rings[first]->started) {
    fail ("queue %u is not running", first);
    return -1;
  }
  return stop_queues (s, first, last, mode, watch);
}

static int
cmd_start_queue (struct session *s, int argc, char **argv)
{
  unsigned first, last, q;

  if (getopt_long (argc, argv, "", NULL, NULL) != -1 ||
      no_args_left (argc, argv, optind, 1) == -1 ||
      queue_range (s, argv[optind], &first, &last) == -1)
    return -1;
  for (q = first; q <= last; q++) {
    if (!s->c.rings[q]->stopped)
      continue;
    if (vuc_restart_queue (&s->c, q) == -1)
      return fail_vuc ("start");
    printf ("start-queue queue=%u base=%u\n", q, s->c.rings[q]->base);
  }
  return 0;
}

static int
cmd_migrate (struct session *s, int argc, char **argv)
{
  enum vuc_stop_mode mode = VUC_STOP_DRAIN;
  unsigned watch = 20;
  bool fresh = false;
  uint64_t t0;
  int o;

  while ((o = getopt_long (argc, argv, "", stop_opts, NULL)) != -1)
    if (o == 'f')
      fresh = true;
    else if (o == 'w') {
      if (parse_uint ("--watch", optarg, &watch) == -1)
        return -1;
    }
    else if (o == '?' || stop_mode_opt (s, o, &mode) == -1)
      return -1;
  if (no_args_left (argc, argv, optind, 1) == -1 || session_start (s) == -1 ||
      stop_queues (s, 0, s->c.nqueues - 1, mode, watch) == -1)
    return -1;
  t0 = vuc_now_ns ();
  if (vuc_migrate (&s->c, argv[optind], !fresh) == -1)
    return fail_vuc ("migrate");
  printf ("migrated to %s in %.1f ms: inflight region %s\n", argv[optind],
          (vuc_now_ns () - t0) / 1e6,
          s->c.inflight_fd < 0 ? "none"
          : fresh ? "fresh (GET_INFLIGHT_FD)" : "handed over");
  return 0;
}

/* ------------------------------------------------------------------ */
/* reset / alive */

/* After the rings were zeroed nothing outstanding can complete. */
static void
abandon_requests (struct session *s)
{
  unsigned i, n = 0;

  for (i = 0; i < POOL; i++) {
    if (s->pool[i].busy) {
      s->pool[i].busy = false;
      n++;
    }
    s->pool[i].opaque = NULL;
  }
  if (s->naio)
    vuc_mem_release (&s->c.mem, s->aio_mark);
  s->naio = 0;
  if (n)
    printf ("abandoned %u outstanding requests\n", n);
}

static int
cmd_reset (struct session *s, int argc, char **argv)
{
  if (getopt_long (argc, argv, "", NULL, NULL) != -1 ||
      no_args_left (argc, argv, optind, 0) == -1 || session_start (s) == -1)
    return -1;
  if (vuc_reset_device (&s->c) == -1)
    return fail_vuc ("reset");
  abandon_requests (s);
  if (session_start (s) == -1)
    return -1;
  printf ("reset%s\n", vuc_has_pf (&s->c, VU_PF_RESET_DEVICE)
          ? " (RESET_DEVICE)" : "");
  return 0;
}

int
alive_check (struct session *s, int retry_ms)
{
  uint64_t mark = vuc_mem_mark (&s->c.mem);
  struct vuc_ring *ring;
  struct vuc_req *r;
  uint8_t *buf;
  int rc = -1;

  abandon_requests (s);
  vuc_reset_guest (&s->c);
  if (vuc_connect (&s->c, retry_ms, true) == -1)
    return fail_vuc ("alive: a new front-end");
  ring = session_ring (s, s->queue);
  buf = vuc_mem_push (&s->c.mem, 4096, 4096);
  if (ring == NULL || buf == NULL || (r = req_get (s)) == NULL)
    goto out;
  vuc_req_get_id (r, vuc_gpa (&s->c.mem, buf));
  if (vuc_blk_run (ring, &s->c.mem, r, s->c.timeout_ms) == -1) {
    fail_vuc ("alive: GET_ID");
    goto out;
  }
  vuc_req_rw (r, false, 0, vuc_gpa (&s->c.mem, buf), 4096);
  if (vuc_blk_run (ring, &s->c.mem, r, s->c.timeout_ms) == -1) {
    fail_vuc ("alive: read");
    goto out;
  }
  if (r->result != VIRTIO_BLK_S_OK) {
    fail ("alive: read: status %s", vuc_status_name (r->result));
    goto out;
  }
  rc = 0;
 out:
  vuc_mem_release (&s->c.mem, mark);
  return rc;
}

static int
cmd_alive (struct session *s, int argc, char **argv)
{
  int retry = 5000, o;

  while ((o = getopt_long (argc, argv, "r:", NULL, NULL)) != -1)
    if (o != 'r' || retry_opt (optarg, &retry) == -1)
      return -1;
  if (no_args_left (argc, argv, optind, 0) == -1 ||
      alive_check (s, retry) == -1)
    return -1;
  printf ("alive: a new front-end got GET_ID and a read served\n");
  return 0;
}

/* ------------------------------------------------------------------ */
/* raw */

static int
parse_request (const char *arg, uint32_t *req)
{
  uint32_t i;
  char *end;
  unsigned long v;

  for (i = 1; i < VU_REQUEST_MAX; i++)
    if (strcasecmp (arg, vu_request_name (i)) == 0) {
      *req = i;
      return 0;
    }
  v = strtoul (arg, &end, 0);
  if (*arg == '\0' || *end || v > UINT32_MAX) {
    fail ("'%s' is neither a request name nor a number", arg);
    return -1;
  }
  *req = v;
  return 0;
}

static int
parse_hex (const char *hex, uint8_t **out, uint32_t *len)
{
  size_t n = strlen (hex), i;

  if (n % 2) {
    fail ("hex payload has an odd number of digits");
    return -1;
  }
  *out = malloc (n / 2 + 1);
  if (*out == NULL)
    return -1;
  for (i = 0; i < n; i += 2) {
    unsigned b;
    if (!isxdigit ((unsigned char) hex[i]) ||
        !isxdigit ((unsigned char) hex[i + 1]) ||
        sscanf (hex + i, "%2x", &b) != 1) {
      fail ("'%s' is not a hex payload", hex);
      free (*out);
      return -1;
    }
    (*out)[i / 2] = b;
  }
  *len = n / 2;
  return 0;
}

/* --fd eventfd|memfd: a descriptor to attach. */
static int
make_fd (const char *kind)
{
  int fd = -1;

  if (strcmp (kind, "eventfd") == 0)
    fd = eventfd (0, EFD_CLOEXEC);
  else if (strcmp (kind, "memfd") == 0) {
    fd = memfd_create ("blkgate-io-raw", MFD_CLOEXEC);
    if (fd >= 0 && ftruncate (fd, 1 << 20) == -1) {
      close (fd);
      fd = -1;
    }
  }
  else
    fail ("--fd %s: eventfd or memfd", kind);
  return fd;
}

static void
print_reply (const struct vu_msg *m)
{
  uint32_t i, n = m->hdr.size < sizeof m->payload ? m->hdr.size
    : sizeof m->payload;

  printf ("reply request=%u (%s) flags=0x%x size=%u fds=%u payload=",
          m->hdr.request, vu_request_name (m->hdr.request), m->hdr.flags,
          m->hdr.size, m->nfds);
  for (i = 0; i < n; i++)
    printf ("%02x", ((const uint8_t *) &m->payload)[i]);
  putchar ('\n');
}

/* After the message: a reply, silence, or a hang-up. */
static void
raw_outcome (struct session *s, int wait_ms)
{
  struct vu_msg m;
  unsigned i;
  int r = vuc_recv (&s->c, &m, wait_ms);

  if (r == 1) {
    print_reply (&m);
    for (i = 0; i < m.nfds; i++)
      close (m.fds[i]);
  }
  else if (r == 0)
    printf ("no reply within %d ms\n", wait_ms);
  else {
    printf ("connection: %s\n", vuc_error ());
    vuc_close (&s->c);          /* the next command connects again */
  }
}

static int
cmd_raw (struct session *s, int argc, char **argv)
{
  static const struct option opts[] = {
    { "fd", required_argument, NULL, 'f' },
    { "wait", required_argument, NULL, 'w' },
    { 0 }
  };
  int fds[VU_MAX_FDS], o, rc = -1;
  unsigned nfds = 0, wait_ms = 1000, flags, size;
  uint32_t req;
  struct vu_header h;
  uint8_t *body = NULL;
  uint32_t len = 0;

  while ((o = getopt_long (argc, argv, "", opts, NULL)) != -1) {
    if (o == 'f' && nfds < VU_MAX_FDS) {
      if ((fds[nfds] = make_fd (optarg)) == -1)
        goto out;
      nfds++;
    }
    else if (o != 'w' || parse_uint ("--wait", optarg, &wait_ms) == -1)
      goto out;
  }
  if (argc - optind < 3 || argc - optind > 4) {
    fail ("usage: raw REQUEST FLAGS SIZE [HEXPAYLOAD]");
    goto out;
  }
  if (parse_request (argv[optind], &req) == -1 ||
      parse_uint ("flags", argv[optind + 1], &flags) == -1 ||
      parse_uint ("size", argv[optind + 2], &size) == -1)
    goto out;
  h.request = req;
  h.flags = flags;
  h.size = size;
  if (argc - optind == 4) {
    if (parse_hex (argv[optind + 3], &body, &len) == -1)
      goto out;
  }
  else if (size <= 4096) {      /* no payload given: size zero bytes */
    body = calloc (1, size + 1);
    len = size;
  }
  if (vuc_open (&s->c, s->retry_ms) == -1 ||
      vuc_send_raw (&s->c, &h, body, len, fds, nfds) == -1) {
    fail_vuc ("raw");
    goto out;
  }
  raw_outcome (s, wait_ms);
  rc = 0;
 out:
  while (nfds > 0)
    close (fds[--nfds]);
  free (body);
  return rc;
}

const struct command fault_commands[] = {
  { "reconnect", cmd_reconnect, "[--retry SECONDS]",
    "drop the connection as after a back-end crash, connect again and "
    "restart from used->idx with the same memory and inflight region" },
  { "disconnect", cmd_disconnect, "",
    "drop the connection (the next command reconnects)" },
  { "stop-queue", cmd_stop_queue, "N|all [--skip-drain|--msg45] [--watch MS]",
    "SET_VRING_ENABLE(0) + GET_VRING_BASE; prints index and reply time" },
  { "start-queue", cmd_start_queue, "N|all",
    "restart stopped queues from the index GET_VRING_BASE returned" },
  { "migrate", cmd_migrate,
    "SOCKET [--skip-drain|--msg45] [--watch MS] [--fresh-inflight]",
    "stop every queue, then start on the back-end at SOCKET with the same "
    "memory, the returned indexes and the inflight region" },
  { "reset", cmd_reset, "", "guest reset: stop, RESET_DEVICE, start afresh" },
  { "alive", cmd_alive, "[--retry SECONDS]",
    "connect afresh and check GET_ID and a read" },
  { "raw", cmd_raw, "REQ FLAGS SIZE [HEX] [--fd eventfd|memfd] [--wait MS]",
    "send any message (REQ: name or number) and print what comes back" },
  { "bad-chain", cmd_bad_chain, "KIND [--wait MS] [--expect LIST] "
    "[--no-check]", "submit a malformed descriptor chain (KIND 'list' "
    "lists them), then check that the back-end is alive" },
  { 0 }
};
