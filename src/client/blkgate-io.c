/* blkgate-io: talk to a vhost-user-blk back-end without a VM.
 *
 *   blkgate-io [OPTIONS] SOCKET [OPTIONS] [COMMAND [ARGS...]]
 *   blkgate-io [OPTIONS] SOCKET -c 'COMMAND ARGS' [-c ...]
 *
 * Like qemu-io, it runs one command from the command line, or several
 * given with -c (in order, then the trailing one), or reads them from
 * standard input when there are none.  It stops at the first failed
 * command (-k goes on) and exits non-zero if any failed.
 *
 * Thread model: single-threaded, except that bench runs one thread per
 * queue (bench.c) while this thread waits. */

#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>

#include "cli.h"
#include "utils.h"

static const char *current_cmd = "blkgate-io";

void
fail (const char *fmt, ...)
{
  va_list ap;

  fprintf (stderr, "blkgate-io: %s: ", current_cmd);
  va_start (ap, fmt);
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fputc ('\n', stderr);
}

int
fail_vuc (const char *what)
{
  fail ("%s: %s", what, vuc_error ());
  return -1;
}

/* Sizes with suffixes (parse_size), or hexadecimal with 0x. */
int
parse_u64 (const char *what, const char *str, uint64_t *v)
{
  const char *err = NULL;
  int64_t n;

  if (str[0] == '0' && (str[1] == 'x' || str[1] == 'X')) {
    char *end;
    errno = 0;
    *v = strtoull (str, &end, 16);
    if (errno == 0 && end != str + 2 && *end == '\0')
      return 0;
    fail ("%s '%s': not a hexadecimal number", what, str);
    return -1;
  }
  n = parse_size (str, &err);

  if (n < 0) {
    fail ("%s '%s': %s", what, str, err ? err : "invalid");
    return -1;
  }
  *v = n;
  return 0;
}

int
parse_uint (const char *what, const char *str, unsigned *v)
{
  uint64_t n;

  if (parse_u64 (what, str, &n) == -1)
    return -1;
  if (n > UINT32_MAX) {
    fail ("%s '%s' is too large", what, str);
    return -1;
  }
  *v = n;
  return 0;
}

int
no_args_left (int argc, char **argv, int ind, int want)
{
  if (argc - ind != want) {
    fail ("expected %d argument%s, got %d (see 'help')", want,
          want == 1 ? "" : "s", argc - ind);
    return -1;
  }
  return 0;
}

int
session_init (struct session *s)
{
  if (vuc_connect (&s->c, s->retry_ms, false) == -1)
    return fail_vuc ("connecting");
  return 0;
}

/* A session whose device was dropped (disconnect, raw messages that
 * made the back-end hang up) comes back here as after a crash. */
int
session_start (struct session *s)
{
  uint64_t end = vuc_now_ns () + (uint64_t) s->auto_reconnect_ms * 1000000;
  int retry = s->retry_ms > s->auto_reconnect_ms ? s->retry_ms
    : s->auto_reconnect_ms;

  /* With --auto-reconnect, a back-end that dies in the middle of the
   * init or start sequence is connected to again, as QEMU would. */
  while (vuc_connect (&s->c, retry, true) == -1) {
    if (s->auto_reconnect_ms == 0 || !s->c.hangup || vuc_now_ns () >= end)
      return fail_vuc ("starting the device");
    printf ("auto-reconnect: the back-end went away while starting "
            "(%s)\n", vuc_error ());
    vuc_close (&s->c);
    usleep (20000);
  }
  if (s->queue >= s->c.nqueues && vuc_add_queue (&s->c, s->queue) == -1)
    return fail_vuc ("starting the queue");
  return 0;
}

struct vuc_ring *
session_ring (struct session *s, unsigned q)
{
  if (q >= s->c.nqueues && vuc_add_queue (&s->c, q) == -1) {
    fail_vuc ("starting the queue");
    return NULL;
  }
  return s->c.rings[q];
}

int
parse_queue (struct session *s, const char *str, unsigned *q)
{
  if (parse_uint ("queue", str, q) == -1)
    return -1;
  if (*q >= VUC_MAX_QUEUES) {
    fail ("queue %u: at most %d queues", *q, VUC_MAX_QUEUES);
    return -1;
  }
  return 0;
}

/* ------------------------------------------------------------------ */

static int cmd_help (struct session *s, int argc, char **argv);

static const struct command misc_commands[] = {
  { "help", cmd_help, "", "list the commands" },
  { 0 }
};

static const struct command *const tables[] = {
  io_commands, fault_commands, state_commands, misc_commands,
};

static void
list_commands (FILE *f)
{
  size_t t;
  const struct command *c;

  for (t = 0; t < sizeof tables / sizeof tables[0]; t++)
    for (c = tables[t]; c->name; c++)
      fprintf (f, "  %s%s%s\n      %s\n", c->name, *c->args ? " " : "",
               c->args, c->help);
  fprintf (f, "  bench [--rw MODE] [--bs N] [--iodepth N] [--queues N] "
           "[--time S] [--poll]\n      measure IOPS, bandwidth and "
           "latency (see blkgate-io(1))\n");
  fprintf (f, "  soak [--time S] [--queues N] [--depth N] [--size BYTES] "
           "[--seed N]\n       [--max-blocks N] [--read-pct N] "
           "[--control FIFO] [--image FILE]\n      write and verify "
           "through crashes and migrations (see blkgate-io(1))\n");
}

static int
cmd_help (struct session *s, int argc, char **argv)
{
  list_commands (stdout);
  return 0;
}

static const struct command *
find_command (const char *name)
{
  static const struct command bench = { "bench", cmd_bench, "", "" };
  static const struct command soak = { "soak", cmd_soak, "", "" };
  size_t t;
  const struct command *c;

  if (strcmp (name, "bench") == 0)
    return &bench;
  if (strcmp (name, "soak") == 0)
    return &soak;
  for (t = 0; t < sizeof tables / sizeof tables[0]; t++)
    for (c = tables[t]; c->name; c++)
      if (strcmp (c->name, name) == 0)
        return c;
  return NULL;
}

static int
run_argv (struct session *s, int argc, char **argv)
{
  const struct command *c;

  if (argc == 0)
    return 0;
  current_cmd = argv[0];
  c = find_command (argv[0]);
  if (c == NULL) {
    fail ("unknown command (try 'help')");
    return -1;
  }
  optind = 0;                   /* glibc: restart getopt for this argv */
  return c->fn (s, argc, argv);
}

static int
run_line (struct session *s, const char *line)
{
  g_autoptr (GError) err = NULL;
  g_auto (GStrv) argv = NULL;
  int argc;

  while (*line == ' ' || *line == '\t')
    line++;
  if (*line == '\0' || *line == '#' || *line == '\n')
    return 0;
  if (!g_shell_parse_argv (line, &argc, &argv, &err)) {
    current_cmd = "blkgate-io";
    fail ("cannot parse '%s': %s", line, err->message);
    return -1;
  }
  return run_argv (s, argc, argv);
}

/* ------------------------------------------------------------------ */
/* Options */

enum {
  OPT_REGIONS = 256, OPT_GPA, OPT_QSIZE, OPT_NO_EVENT_IDX, OPT_NO_INDIRECT,
  OPT_NO_REPLY_ACK, OPT_NO_INFLIGHT, OPT_NO_MEM_SLOTS, OPT_INFLIGHT_MIG,
  OPT_PF_MASK, OPT_POLL, OPT_RETRY, OPT_FORCE, OPT_AUTO_RECONNECT,
  OPT_KICK_ON_RECONNECT,
};

static const struct option long_opts[] = {
  { "cmd", required_argument, NULL, 'c' },
  { "memory", required_argument, NULL, 'm' },
  { "regions", required_argument, NULL, OPT_REGIONS },
  { "gpa-base", required_argument, NULL, OPT_GPA },
  { "num-queues", required_argument, NULL, 'Q' },
  { "queue-size", required_argument, NULL, OPT_QSIZE },
  { "no-event-idx", no_argument, NULL, OPT_NO_EVENT_IDX },
  { "no-indirect", no_argument, NULL, OPT_NO_INDIRECT },
  { "no-reply-ack", no_argument, NULL, OPT_NO_REPLY_ACK },
  { "no-inflight", no_argument, NULL, OPT_NO_INFLIGHT },
  { "no-mem-slots", no_argument, NULL, OPT_NO_MEM_SLOTS },
  { "inflight-migration", no_argument, NULL, OPT_INFLIGHT_MIG },
  { "protocol-features", required_argument, NULL, OPT_PF_MASK },
  { "poll", no_argument, NULL, OPT_POLL },
  { "timeout", required_argument, NULL, 't' },
  { "retry", required_argument, NULL, OPT_RETRY },
  { "auto-reconnect", required_argument, NULL, OPT_AUTO_RECONNECT },
  { "kick-on-reconnect", no_argument, NULL, OPT_KICK_ON_RECONNECT },
  { "force", no_argument, NULL, OPT_FORCE },
  { "keep-going", no_argument, NULL, 'k' },
  { "verbose", no_argument, NULL, 'v' },
  { "help", no_argument, NULL, 'h' },
  { "version", no_argument, NULL, 'V' },
  { 0 }
};

static void
usage (FILE *f)
{
  fprintf (f,
"Usage: blkgate-io [OPTIONS] SOCKET [OPTIONS] [COMMAND [ARGS...]]\n"
"       blkgate-io [OPTIONS] SOCKET -c 'COMMAND ARGS' [-c ...]\n"
"A vhost-user-blk front-end: plays QEMU's part towards the back-end\n"
"listening on SOCKET and runs the commands (from standard input, one\n"
"per line, when there are none on the command line).\n\n"
"Options:\n"
"  -c, --cmd CMD            run CMD (repeatable; in order)\n"
"  -m, --memory SIZE        guest memory (default 64M)\n"
"      --regions N          announce guest memory as N regions (1)\n"
"      --gpa-base ADDR      guest-physical address of guest memory (1G)\n"
"  -Q, --num-queues N       queues started at first (default 1)\n"
"      --queue-size N       ring size (default 256)\n"
"      --no-event-idx       do not negotiate VIRTIO_RING_F_EVENT_IDX\n"
"      --no-indirect        do not negotiate VIRTIO_RING_F_INDIRECT_DESC\n"
"      --no-reply-ack       do not negotiate PROTOCOL_F_REPLY_ACK\n"
"      --no-inflight        do not negotiate PROTOCOL_F_INFLIGHT_SHMFD\n"
"      --no-mem-slots       do not negotiate CONFIGURE_MEM_SLOTS\n"
"      --inflight-migration negotiate GET_VRING_BASE_INFLIGHT (20) and\n"
"                           GET_VRING_BASE_SKIP_DRAIN (23) when offered\n"
"      --protocol-features MASK  ack at most these protocol features\n"
"      --poll               poll the used rings instead of waiting for\n"
"                           call eventfds\n"
"  -t, --timeout SECONDS    per reply and per request (default 30)\n"
"      --retry SECONDS      keep trying to connect this long (default 0)\n"
"      --auto-reconnect SECONDS  when the back-end goes away during a\n"
"                           wait, reconnect as QEMU does with\n"
"                           reconnect=1 (trying this long) and go on\n"
"      --kick-on-reconnect  kick every ring after such a reconnect (QEMU\n"
"                           7.2 does not; cloud-hypervisor does)\n"
"      --force              send skip-drain requests not negotiated\n"
"  -k, --keep-going         go on after a failed command\n"
"  -v, --verbose            trace vhost-user messages on stderr\n"
"  -h, --help, -V, --version\n\n"
"Commands:\n");
  list_commands (f);
  fprintf (f, "\nOffsets and lengths take suffixes (4k, 1M, 1G).  "
           "See blkgate-io(1).\n");
}

struct cmdline {
  char **cmds;
  unsigned ncmds;
  uint64_t mem, gpa;
  unsigned regions, queues;
  bool keep_going;
};

static int
parse_pf_mask (struct session *s, const char *arg)
{
  char *end;
  unsigned long long v;

  errno = 0;
  v = strtoull (arg, &end, 0);
  if (errno || *end) {
    fail ("--protocol-features '%s': not a number", arg);
    return -1;
  }
  s->c.protocol_mask &= v;
  return 0;
}

static int
parse_one (struct session *s, struct cmdline *cl, int o, const char *arg)
{
  uint64_t v;

  switch (o) {
  case 'c': cl->cmds[cl->ncmds++] = (char *) arg; return 0;
  case 'm': return parse_u64 ("--memory", arg, &cl->mem);
  case OPT_REGIONS: return parse_uint ("--regions", arg, &cl->regions);
  case OPT_GPA: return parse_u64 ("--gpa-base", arg, &cl->gpa);
  case 'Q': return parse_uint ("--num-queues", arg, &cl->queues);
  case OPT_QSIZE: return parse_uint ("--queue-size", arg, &s->c.queue_size);
  case OPT_NO_EVENT_IDX:
    s->c.feature_mask &= ~VU_BIT (VU_F_EVENT_IDX); return 0;
  case OPT_NO_INDIRECT:
    s->c.feature_mask &= ~VU_BIT (VU_F_INDIRECT_DESC); return 0;
  case OPT_NO_REPLY_ACK:
    s->c.protocol_mask &= ~VU_BIT (VU_PF_REPLY_ACK); return 0;
  case OPT_NO_INFLIGHT:
    s->c.protocol_mask &= ~VU_BIT (VU_PF_INFLIGHT_SHMFD); return 0;
  case OPT_NO_MEM_SLOTS:
    s->c.protocol_mask &= ~VU_BIT (VU_PF_CONFIGURE_MEM_SLOTS); return 0;
  case OPT_INFLIGHT_MIG:
    s->c.protocol_mask |= VU_BIT (VU_PF_GET_VRING_BASE_INFLIGHT) |
      VU_BIT (VU_PF_GET_VRING_BASE_SKIP_DRAIN);
    return 0;
  case OPT_PF_MASK: return parse_pf_mask (s, arg);
  case OPT_POLL: s->c.poll = true; return 0;
  case 't':
    if (parse_u64 ("--timeout", arg, &v) == -1)
      return -1;
    s->c.timeout_ms = v > 86400 ? 86400000 : (int) v * 1000;
    return 0;
  case OPT_RETRY:
    if (parse_u64 ("--retry", arg, &v) == -1)
      return -1;
    s->retry_ms = v > 86400 ? 86400000 : (int) v * 1000;
    return 0;
  case OPT_FORCE: s->force = true; return 0;
  case OPT_KICK_ON_RECONNECT: s->kick_on_reconnect = true; return 0;
  case OPT_AUTO_RECONNECT:
    if (parse_u64 ("--auto-reconnect", arg, &v) == -1)
      return -1;
    s->auto_reconnect_ms = v > 86400 ? 86400000 : (int) v * 1000;
    return 0;
  case 'k': cl->keep_going = true; return 0;
  case 'v': s->c.verbose++; return 0;
  case 'h': usage (stdout); exit (EXIT_SUCCESS);
  case 'V': printf ("blkgate-io %s\n", PACKAGE_VERSION); exit (EXIT_SUCCESS);
  default: usage (stderr); exit (2);
  }
}

static int
run_stdin (struct session *s, bool keep_going)
{
  char *line = NULL;
  size_t cap = 0;
  int rc = 0;

  while (getline (&line, &cap, stdin) != -1) {
    line[strcspn (line, "\n")] = '\0';
    if (run_line (s, line) == -1) {
      rc = -1;
      if (!keep_going)
        break;
    }
  }
  free (line);
  return rc;
}

static int
run_all (struct session *s, struct cmdline *cl, int argc, char **argv)
{
  unsigned i;
  int rc = 0;

  for (i = 0; i < cl->ncmds; i++)
    if (run_line (s, cl->cmds[i]) == -1) {
      rc = -1;
      if (!cl->keep_going)
        return rc;
    }
  if (argc > 0) {
    if (run_argv (s, argc, argv) == -1)
      rc = -1;
  }
  else if (cl->ncmds == 0)
    rc = run_stdin (s, cl->keep_going);
  return rc;
}

int
main (int argc, char **argv)
{
  static struct session s;
  struct cmdline cl = {
    .mem = VUC_DEFAULT_MEM, .gpa = VUC_DEFAULT_GPA, .regions = 1,
    .queues = 1,
  };
  int o, rc;

  setvbuf (stdout, NULL, _IOLBF, 0);
  cl.cmds = calloc (argc, sizeof *cl.cmds);
  if (cl.cmds == NULL)
    return EXIT_FAILURE;
  vuc_conn_init (&s.c, "");
  /* Options before and after SOCKET; the command's own come after it. */
  while ((o = getopt_long (argc, argv, "+c:m:Q:t:kvhV", long_opts, NULL))
         != -1)
    if (parse_one (&s, &cl, o, optarg) == -1)
      return 2;
  if (optind >= argc) {
    usage (stderr);
    return 2;
  }
  free (s.c.path);
  s.c.path = strdup (argv[optind++]);
  while ((o = getopt_long (argc, argv, "+c:m:Q:t:kvhV", long_opts, NULL))
         != -1)
    if (parse_one (&s, &cl, o, optarg) == -1)
      return 2;
  if (cl.queues == 0 || cl.queues > VUC_MAX_QUEUES) {
    fail ("--num-queues: 1 to %d", VUC_MAX_QUEUES);
    return 2;
  }
  if (vuc_conn_setup (&s.c, cl.mem, cl.gpa, cl.regions, cl.queues) == -1) {
    fail_vuc ("guest memory");
    return EXIT_FAILURE;
  }
  rc = run_all (&s, &cl, argc - optind, argv + optind);
  vuc_conn_free (&s.c);
  free (cl.cmds);
  return rc == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
