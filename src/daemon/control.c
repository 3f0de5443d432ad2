/* The control socket: one JSON object per line each way.
 *
 *   {"command": "stats"}                   counters per queue and backend
 *   {"command": "resize"}                  re-read the plugin's size
 *   {"command": "resize", "size": "20G"}   a size up to the plugin's
 *   {"command": "reopen"}                  open the backend again
 *   {"command": "shutdown"}                as SIGTERM
 *
 * Every reply has "ok"; a failed one has "error".  A client that sends
 * something else gets an error reply and stays connected; one that
 * sends a line longer than CONTROL_MAX_LINE is answered and dropped.
 * The socket is created mode 0600, so only its owner may talk to it.
 * Everything runs on the main loop (the thread that also serves
 * vhost-user messages), so commands never race with the front-end. */

#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <glib.h>
#include <glib-unix.h>
#include <json-glib/json-glib.h>

#include "control.h"
#include "device.h"
#include "log.h"
#include "server.h"
#include "stats.h"

#define BLKGATE_API_VERSION 1
#include <blkgate-plugin.h>

#define CONTROL_MAX_LINE 4096
#define CONTROL_MAX_CLIENTS 8

struct client {
  int fd;
  guint watch;
  size_t len;
  char buf[CONTROL_MAX_LINE];
};

static struct {
  int fd;
  guint watch;
  char *path;
  struct backend *be;
  bool fuse_export;
  struct client *clients[CONTROL_MAX_CLIENTS];
} ctl = { .fd = -1 };

static void
add_histogram (JsonBuilder *b, const struct queue_stats *s)
{
  unsigned i;

  json_builder_set_member_name (b, "latency_us");
  json_builder_begin_array (b);
  for (i = 0; i < STATS_LAT_BUCKETS; i++) {
    json_builder_begin_object (b);
    json_builder_set_member_name (b, "le");
    if (i + 1 < STATS_LAT_BUCKETS)
      json_builder_add_int_value (b, INT64_C (1) << i);
    else
      json_builder_add_string_value (b, "+Inf");
    json_builder_set_member_name (b, "count");
    json_builder_add_int_value (b, s->lat[i]);
    json_builder_end_object (b);
  }
  json_builder_end_array (b);
  json_builder_set_member_name (b, "latency_sum_us");
  json_builder_add_int_value (b, s->lat_sum_ns / 1000);
}

static void
member_int (JsonBuilder *b, const char *name, int64_t v)
{
  json_builder_set_member_name (b, name);
  json_builder_add_int_value (b, v);
}

static void
add_queue (JsonBuilder *b, unsigned i, struct device *dev)
{
  struct queue_stats s;
  struct queue *q = dev && i < dev->nqueues ? dev->queues[i] : NULL;
  unsigned n = 0;
  uint64_t oldest = 0;

  stats_read (stats_queue (i), &s);
  if (q)
    queue_inflight_info (q, &n, &oldest);
  json_builder_begin_object (b);
  member_int (b, "index", i);
  json_builder_set_member_name (b, "running");
  json_builder_add_boolean_value (b, q && q->running);
  member_int (b, "reads", s.ops[BLK_OP_READ]);
  member_int (b, "writes", s.ops[BLK_OP_WRITE]);
  member_int (b, "flushes", s.ops[BLK_OP_FLUSH]);
  member_int (b, "discards", s.ops[BLK_OP_DISCARD]);
  member_int (b, "write_zeroes", s.ops[BLK_OP_ZERO]);
  member_int (b, "other", s.ops[BLK_OP_NONE]);
  member_int (b, "bytes_read", s.bytes_read);
  member_int (b, "bytes_written", s.bytes_written);
  member_int (b, "errors", s.errors);
  member_int (b, "in_flight", n);
  member_int (b, "oldest_in_flight_us", oldest / 1000);
  add_histogram (b, &s);
  json_builder_end_object (b);
}

static char *
cmd_stats (JsonObject *in, JsonBuilder *b)
{
  struct stats_named named[STATS_MAX_NAMED];
  struct device *dev = server_device ();
  unsigned i, n = stats_named (named, STATS_MAX_NAMED);

  json_builder_set_member_name (b, "stats");
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "plugin");
  json_builder_add_string_value (b, ctl.be->pl->p.name);
  member_int (b, "size", ctl.be->dev.size);
  json_builder_set_member_name (b, "connected");
  json_builder_add_boolean_value (b, dev != NULL);
  json_builder_set_member_name (b, "queues");
  json_builder_begin_array (b);
  for (i = 0; i < stats_nqueues (); i++)
    add_queue (b, i, dev);
  json_builder_end_array (b);
  json_builder_set_member_name (b, "backend");
  json_builder_begin_object (b);
  for (i = 0; i < n; i++)
    member_int (b, named[i].name, named[i].value);
  json_builder_end_object (b);
  json_builder_end_object (b);
  return NULL;
}

/* "size": bytes as a number, or a string such as "20G". */
static int64_t
wanted_size (JsonObject *in, int64_t have, char **why)
{
  JsonNode *n = json_object_get_member (in, "size");
  int64_t want;

  if (n == NULL)
    return have;
  if (JSON_NODE_HOLDS_VALUE (n) &&
      json_node_get_value_type (n) == G_TYPE_INT64)
    want = json_node_get_int (n);
  else if (JSON_NODE_HOLDS_VALUE (n) &&
           json_node_get_value_type (n) == G_TYPE_STRING)
    want = blkgate_parse_size (json_node_get_string (n));
  else
    want = -1;
  if (want < 0)
    *why = g_strdup ("\"size\" must be a number of bytes or a size such "
                     "as \"20G\"");
  else if (want > have)
    *why = g_strdup_printf ("size %" G_GINT64_FORMAT " is larger than the "
                            "backend (%" G_GINT64_FORMAT " bytes)", want, have);
  else if (want % ctl.be->dev.blk_size)
    *why = g_strdup_printf ("size %" G_GINT64_FORMAT " is not a multiple of "
                            "the block size %u", want, ctl.be->dev.blk_size);
  else
    return want;
  return -1;
}

/* The new size goes to the queues and, through the back-end request
 * channel, to the front-end. */
static void
apply_size (JsonBuilder *b, uint64_t size)
{
  struct device *dev = server_device ();
  bool told = false;

  if (size != ctl.be->dev.size)
    blkgate_info ("size changed from %" PRIu64 " to %" PRIu64 " bytes",
                  ctl.be->dev.size, size);
  ctl.be->dev.size = size;
  if (dev)
    told = device_set_size (dev, size);
  member_int (b, "size", size);
  json_builder_set_member_name (b, "front_end_told");
  json_builder_add_boolean_value (b, told);
}

static char *
cmd_resize (JsonObject *in, JsonBuilder *b)
{
  int64_t have = backend_current_size (ctl.be), want;
  char *why = NULL;

  if (have < 0)
    return g_strdup ("the plugin could not tell its size (see the log)");
  want = wanted_size (in, have, &why);
  if (want < 0)
    return why;
  apply_size (b, want);
  return NULL;
}

static char *
cmd_reopen (JsonObject *in, JsonBuilder *b)
{
  struct device *dev = server_device ();
  const char *err = NULL;
  uint64_t size;
  void *h, *old;

  if (ctl.fuse_export)
    return g_strdup ("reopen is not supported with --fuse-export");
  h = backend_open_again (ctl.be, &size, &err);
  if (h == NULL)
    return g_strdup (err);
  if (dev)
    old = device_swap_backend (dev, h, &err);
  else {
    old = ctl.be->handle;
    ctl.be->handle = h;
  }
  backend_close_handle (ctl.be, old);
  blkgate_info ("backend reopened");
  if (err)
    return g_strdup (err);
  apply_size (b, size);
  return NULL;
}

static char *
cmd_shutdown (JsonObject *in, JsonBuilder *b)
{
  blkgate_info ("shutdown asked on the control socket");
  kill (getpid (), SIGTERM);   /* the same clean path as a signal */
  return NULL;
}

static char *
run_command (const char *command, JsonObject *in, JsonBuilder *b)
{
  if (strcmp (command, "stats") == 0)
    return cmd_stats (in, b);
  if (strcmp (command, "resize") == 0)
    return cmd_resize (in, b);
  if (strcmp (command, "reopen") == 0)
    return cmd_reopen (in, b);
  if (strcmp (command, "shutdown") == 0)
    return cmd_shutdown (in, b);
  return g_strdup_printf ("unknown command \"%s\" (stats, resize, reopen, "
                          "shutdown)", command);
}

/* Parses one line; the reply is built into b after "ok". */
static char *
handle_line (const char *line, size_t len, JsonBuilder *b)
{
  g_autoptr (JsonParser) p = json_parser_new ();
  g_autoptr (GError) gerr = NULL;
  JsonNode *root;
  JsonObject *o;
  const char *command;

  if (!json_parser_load_from_data (p, line, len, &gerr))
    return g_strdup_printf ("not JSON: %s", gerr->message);
  root = json_parser_get_root (p);
  if (root == NULL || !JSON_NODE_HOLDS_OBJECT (root))
    return g_strdup ("expected a JSON object");
  o = json_node_get_object (root);
  command = json_object_has_member (o, "command") ?
    json_object_get_string_member_with_default (o, "command", NULL) : NULL;
  if (command == NULL)
    return g_strdup ("expected a string member \"command\"");
  return run_command (command, o, b);
}

char *
control_reply (const char *line, size_t len)
{
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = NULL;
  g_autofree char *why = NULL, *text = NULL;

  json_builder_begin_object (b);
  why = handle_line (line, len, b);
  json_builder_set_member_name (b, "ok");
  json_builder_add_boolean_value (b, why == NULL);
  if (why) {
    json_builder_set_member_name (b, "error");
    json_builder_add_string_value (b, why);
  }
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  text = json_generator_to_data (gen, NULL);
  return g_strconcat (text, "\n", NULL);
}

static void
reply (struct client *c, const char *line, size_t len)
{
  g_autofree char *out = control_reply (line, len);
  size_t off = 0, n = strlen (out);

  while (off < n) {
    ssize_t w = write (c->fd, out + off, n - off);
    if (w <= 0)
      break;                  /* gone or stuck (SO_SNDTIMEO): dropped on read */
    off += w;
  }
}

static void
drop_client (struct client *c)
{
  unsigned i;

  for (i = 0; i < CONTROL_MAX_CLIENTS; i++)
    if (ctl.clients[i] == c)
      ctl.clients[i] = NULL;
  if (c->watch)
    g_source_remove (c->watch);
  close (c->fd);
  g_free (c);
}

static gboolean
on_client (gint fd, GIOCondition cond, gpointer data)
{
  struct client *c = data;
  ssize_t r = read (fd, c->buf + c->len, sizeof c->buf - c->len);
  char *nl;

  if (r <= 0) {
    c->watch = 0;
    drop_client (c);
    return G_SOURCE_REMOVE;
  }
  c->len += r;
  while ((nl = memchr (c->buf, '\n', c->len)) != NULL) {
    size_t line = nl - c->buf;
    if (line > 0)
      reply (c, c->buf, line);
    memmove (c->buf, nl + 1, c->len - line - 1);
    c->len -= line + 1;
  }
  if (c->len == sizeof c->buf) {
    static const char msg[] =
      "{\"ok\":false,\"error\":\"line too long (4096 bytes at most)\"}\n";
    char junk[512];
    if (write (fd, msg, sizeof msg - 1) < 0)
      debug ("control: write: %m");
    /* Closing with unread input would reset the connection and could
     * lose the reply: read what is there first. */
    shutdown (fd, SHUT_WR);
    while (recv (fd, junk, sizeof junk, MSG_DONTWAIT) > 0)
      ;
    c->watch = 0;
    drop_client (c);
    return G_SOURCE_REMOVE;
  }
  return G_SOURCE_CONTINUE;
}

static const struct timeval send_timeout = { .tv_sec = 2 };

static gboolean
on_accept (gint fd, GIOCondition cond, gpointer data)
{
  static const char busy[] =
    "{\"ok\":false,\"error\":\"too many control clients\"}\n";
  int s = accept4 (fd, NULL, NULL, SOCK_CLOEXEC);
  struct client *c;
  unsigned i;

  if (s == -1)
    return G_SOURCE_CONTINUE;
  for (i = 0; i < CONTROL_MAX_CLIENTS && ctl.clients[i]; i++)
    ;
  if (i == CONTROL_MAX_CLIENTS) {
    blkgate_error ("control: refusing a client: %d already connected",
                   CONTROL_MAX_CLIENTS);
    if (write (s, busy, sizeof busy - 1) < 0)
      debug ("control: write: %m");
    close (s);
    return G_SOURCE_CONTINUE;
  }
  setsockopt (s, SOL_SOCKET, SO_SNDTIMEO, &send_timeout, sizeof send_timeout);
  c = g_new0 (struct client, 1);
  c->fd = s;
  c->watch = g_unix_fd_add (s, G_IO_IN | G_IO_HUP | G_IO_ERR, on_client, c);
  ctl.clients[i] = c;
  return G_SOURCE_CONTINUE;
}

int
control_listen (const char *path)
{
  ctl.fd = server_listen_path (path);
  if (ctl.fd == -1)
    return -1;
  ctl.path = g_strdup (path);
  return 0;
}

void
control_serve (struct backend *be, bool fuse_export)
{
  ctl.be = be;
  ctl.fuse_export = fuse_export;
  if (ctl.fd < 0)
    return;
  ctl.watch = g_unix_fd_add (ctl.fd, G_IO_IN, on_accept, NULL);
}

void
control_stop (void)
{
  unsigned i;

  if (ctl.fd < 0)
    return;
  for (i = 0; i < CONTROL_MAX_CLIENTS; i++)
    if (ctl.clients[i])
      drop_client (ctl.clients[i]);
  if (ctl.watch)
    g_source_remove (ctl.watch);
  ctl.watch = 0;
  close (ctl.fd);
  ctl.fd = -1;
  unlink (ctl.path);
  g_free (ctl.path);
  ctl.path = NULL;
}
