/* blkgate-ctl: talks to a gateway's control socket (--control PATH).
 *
 *   blkgate-ctl -c PATH stats [--prometheus]
 *   blkgate-ctl -c PATH resize [SIZE]
 *   blkgate-ctl -c PATH reopen | shutdown
 *   blkgate-ctl -c PATH raw 'JSON'
 *
 * One request line, one reply line (see blkgate(8), CONTROL SOCKET).
 * Exit status: 0 when the gateway said ok, 1 when it answered with an
 * error, 2 for usage or connection errors. */

#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <glib.h>
#include <json-glib/json-glib.h>

static char *control_path;
static gboolean prometheus;

static GOptionEntry options[] = {
  { "control", 'c', 0, G_OPTION_ARG_FILENAME, &control_path,
    "The gateway's control socket (default: $BLKGATE_CONTROL)", "PATH" },
  { "prometheus", 0, 0, G_OPTION_ARG_NONE, &prometheus,
    "stats: print the Prometheus text format instead of JSON", NULL },
  { NULL, 0, 0, 0, NULL, NULL, NULL }
};

static int
connect_to (const char *path)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  int fd;

  if (strlen (path) >= sizeof sa.sun_path) {
    fprintf (stderr, "blkgate-ctl: socket path too long: %s\n", path);
    return -1;
  }
  strcpy (sa.sun_path, path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1 || connect (fd, (struct sockaddr *) &sa, sizeof sa) == -1) {
    fprintf (stderr, "blkgate-ctl: %s: %s\n", path, strerror (errno));
    if (fd >= 0)
      close (fd);
    return -1;
  }
  return fd;
}

/* Sends line (without its newline) and reads the reply line. */
static char *
transact (int fd, const char *line)
{
  GString *in = g_string_new (NULL);
  char *req = g_strconcat (line, "\n", NULL);
  size_t off = 0, n = strlen (req);
  char buf[4096];
  ssize_t r;

  while (off < n && (r = write (fd, req + off, n - off)) > 0)
    off += r;
  g_free (req);
  while (!strchr (in->str, '\n') && (r = read (fd, buf, sizeof buf)) > 0)
    g_string_append_len (in, buf, r);
  if (!strchr (in->str, '\n')) {
    fprintf (stderr, "blkgate-ctl: the gateway closed the connection "
             "without a reply\n");
    g_string_free (in, TRUE);
    return NULL;
  }
  *strchr (in->str, '\n') = '\0';
  return g_string_free (in, FALSE);
}

static char *
request_json (int argc, char **argv)
{
  const char *cmd = argv[1];
  g_autoptr (JsonBuilder) b = json_builder_new ();
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autoptr (JsonNode) root = NULL;

  if (strcmp (cmd, "raw") == 0)
    return argc == 3 ? g_strdup (argv[2]) : NULL;
  if (argc > (strcmp (cmd, "resize") == 0 ? 3 : 2))
    return NULL;
  json_builder_begin_object (b);
  json_builder_set_member_name (b, "command");
  json_builder_add_string_value (b, cmd);
  if (argc == 3) {
    json_builder_set_member_name (b, "size");
    json_builder_add_string_value (b, argv[2]);
  }
  json_builder_end_object (b);
  root = json_builder_get_root (b);
  json_generator_set_root (gen, root);
  return json_generator_to_data (gen, NULL);
}

static void
print_pretty (JsonNode *root)
{
  g_autoptr (JsonGenerator) gen = json_generator_new ();
  g_autofree char *text = NULL;

  json_generator_set_pretty (gen, TRUE);
  json_generator_set_root (gen, root);
  text = json_generator_to_data (gen, NULL);
  printf ("%s\n", text);
}

static void
metric (const char *name, const char *type, const char *help)
{
  printf ("# HELP blkgate_%s %s\n# TYPE blkgate_%s %s\n", name, help, name,
          type);
}

/* One counter per queue and label value, from the queue objects. */
static void
per_queue (JsonArray *qs, const char *name, const char *label,
           const char *const *members, const char *const *values)
{
  guint i, j;

  for (i = 0; i < json_array_get_length (qs); i++) {
    JsonObject *q = json_array_get_object_element (qs, i);
    for (j = 0; members[j]; j++) {
      printf ("blkgate_%s{queue=\"%" G_GINT64_FORMAT "\"", name,
              json_object_get_int_member (q, "index"));
      if (label)
        printf (",%s=\"%s\"", label, values[j]);
      printf ("} %" G_GINT64_FORMAT "\n",
              json_object_get_int_member (q, members[j]));
    }
  }
}

static void
print_histograms (JsonArray *qs)
{
  guint i, j;

  metric ("request_duration_seconds", "histogram",
          "Time from taking a request off the ring to its completion.");
  for (i = 0; i < json_array_get_length (qs); i++) {
    JsonObject *q = json_array_get_object_element (qs, i);
    gint64 index = json_object_get_int_member (q, "index");
    JsonArray *h = json_object_get_array_member (q, "latency_us");
    gint64 cum = 0;

    for (j = 0; j < json_array_get_length (h); j++) {
      JsonObject *b = json_array_get_object_element (h, j);
      JsonNode *le = json_object_get_member (b, "le");
      cum += json_object_get_int_member (b, "count");
      if (json_node_get_value_type (le) == G_TYPE_STRING)
        printf ("blkgate_request_duration_seconds_bucket{queue=\"%"
                G_GINT64_FORMAT "\",le=\"+Inf\"} %" G_GINT64_FORMAT "\n",
                index, cum);
      else
        printf ("blkgate_request_duration_seconds_bucket{queue=\"%"
                G_GINT64_FORMAT "\",le=\"%g\"} %" G_GINT64_FORMAT "\n", index,
                json_node_get_int (le) / 1e6, cum);
    }
    printf ("blkgate_request_duration_seconds_sum{queue=\"%" G_GINT64_FORMAT
            "\"} %g\n", index,
            json_object_get_int_member (q, "latency_sum_us") / 1e6);
    printf ("blkgate_request_duration_seconds_count{queue=\"%" G_GINT64_FORMAT
            "\"} %" G_GINT64_FORMAT "\n", index, cum);
  }
}

static void
print_prometheus (JsonObject *stats)
{
  static const char *const ops[] = { "reads", "writes", "flushes", "discards",
                                     "write_zeroes", "other", NULL };
  static const char *const op_names[] = { "read", "write", "flush", "discard",
                                          "write_zeroes", "other" };
  static const char *const bytes[] = { "bytes_read", "bytes_written", NULL };
  static const char *const dirs[] = { "read", "write" };
  static const char *const errors[] = { "errors", NULL };
  static const char *const inflight[] = { "in_flight", NULL };
  JsonArray *qs = json_object_get_array_member (stats, "queues");
  JsonObject *be = json_object_get_object_member (stats, "backend");
  GList *names, *l;
  guint i;

  metric ("size_bytes", "gauge", "The disk's size as the guest sees it.");
  printf ("blkgate_size_bytes %" G_GINT64_FORMAT "\n",
          json_object_get_int_member (stats, "size"));
  metric ("requests_total", "counter", "Requests finished, by operation.");
  per_queue (qs, "requests_total", "op", ops, op_names);
  metric ("bytes_total", "counter", "Bytes read and written.");
  per_queue (qs, "bytes_total", "direction", bytes, dirs);
  metric ("errors_total", "counter", "Requests that failed.");
  per_queue (qs, "errors_total", NULL, errors, NULL);
  metric ("in_flight", "gauge", "Requests taken and not yet finished.");
  per_queue (qs, "in_flight", NULL, inflight, NULL);
  metric ("oldest_in_flight_seconds", "gauge",
          "Age of the oldest request in flight.");
  for (i = 0; i < json_array_get_length (qs); i++) {
    JsonObject *q = json_array_get_object_element (qs, i);
    printf ("blkgate_oldest_in_flight_seconds{queue=\"%" G_GINT64_FORMAT
            "\"} %g\n", json_object_get_int_member (q, "index"),
            json_object_get_int_member (q, "oldest_in_flight_us") / 1e6);
  }
  print_histograms (qs);
  metric ("backend_events_total", "counter",
          "Events the plugin counted (reconnects, retries, ...).");
  names = json_object_get_members (be);
  for (l = names; l; l = l->next)
    printf ("blkgate_backend_events_total{event=\"%s\"} %" G_GINT64_FORMAT
            "\n", (char *) l->data,
            json_object_get_int_member (be, l->data));
  g_list_free (names);
}

/* Prints the reply; returns the exit status. */
static int
show (const char *cmd, const char *line)
{
  g_autoptr (JsonParser) p = json_parser_new ();
  JsonObject *o;

  if (!json_parser_load_from_data (p, line, -1, NULL) ||
      !JSON_NODE_HOLDS_OBJECT (json_parser_get_root (p))) {
    fprintf (stderr, "blkgate-ctl: not a JSON object: %s\n", line);
    return 2;
  }
  o = json_node_get_object (json_parser_get_root (p));
  if (!json_object_get_boolean_member_with_default (o, "ok", FALSE)) {
    fprintf (stderr, "blkgate-ctl: %s\n",
             json_object_get_string_member_with_default (o, "error",
                                                         "failed"));
    return 1;
  }
  if (prometheus && strcmp (cmd, "stats") == 0 &&
      json_object_has_member (o, "stats"))
    print_prometheus (json_object_get_object_member (o, "stats"));
  else
    print_pretty (json_parser_get_root (p));
  return 0;
}

int
main (int argc, char **argv)
{
  g_autoptr (GOptionContext) ctx =
    g_option_context_new ("stats|resize [SIZE]|reopen|shutdown|raw JSON");
  g_autoptr (GError) err = NULL;
  g_autofree char *req = NULL, *rep = NULL;
  int fd, status;

  g_option_context_add_main_entries (ctx, options, NULL);
  g_option_context_set_summary (ctx, "Control a running blkgate through "
                                "its --control socket.");
  if (!g_option_context_parse (ctx, &argc, &argv, &err)) {
    fprintf (stderr, "blkgate-ctl: %s\n", err->message);
    return 2;
  }
  if (control_path == NULL && getenv ("BLKGATE_CONTROL"))
    control_path = g_strdup (getenv ("BLKGATE_CONTROL"));
  if (control_path == NULL || argc < 2 ||
      (req = request_json (argc, argv)) == NULL) {
    fprintf (stderr, "usage: blkgate-ctl -c PATH stats [--prometheus] | "
             "resize [SIZE] | reopen | shutdown | raw JSON\n");
    return 2;
  }
  fd = connect_to (control_path);
  if (fd == -1)
    return 2;
  rep = transact (fd, req);
  close (fd);
  if (rep == NULL)
    return 2;
  status = show (argv[1], rep);
  return status;
}
