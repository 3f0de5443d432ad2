/* blkgate: serve a vhost-user-blk socket backed by a plugin.
 *
 *   blkgate [OPTIONS] PLUGIN [KEY=VALUE ...]
 *
 * Thread model: this is the main thread.  It parses the command line,
 * loads and opens the plugin, and then runs the glib main loop, which
 * handles the listening socket, the front-end's messages, signals and
 * --run's child.  Queue threads are started by device.c through
 * queue.c; sync plugin workers by backend.c; --fuse-export's threads
 * by fuse-export.c. */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <glib.h>
#include <glib-unix.h>
#include <glib/gstdio.h>

#include "backend.h"
#ifdef HAVE_FUSE_EXPORT
#include "fuse-export.h"
#endif
#include "control.h"
#include "log.h"
#include "stats.h"
#include "filters.h"
#include "plugins.h"
#include "privs.h"
#include "server.h"
#include "utils.h"

#define DEFAULT_QUEUES 64
#define MAX_QUEUES 256
#define SHUTDOWN_TIMEOUT_MS 10000
#define MAX_POLL_US 1000000

static struct {
  char *socket;
  int fd;
  gboolean foreground;
  char *pidfile;
  gboolean readonly;
  int num_queues;
  char *serial;
  gboolean verbose;
  char **debug_flags;
  gboolean print_caps;
  gboolean dump_plugin;
  char **filters;
  char *run;
  gboolean version;
  char *blk_file;
  char *log;
  gboolean inflight_migration;
  char *fuse_export;
  gboolean fuse_export_writable;
  int poll_us;
  char *control;
  struct privs_options privs;   /* --user, --group, --socket-* */
  char **rest;
} opt = { .fd = -1, .num_queues = DEFAULT_QUEUES };

static GMainLoop *loop;
static int exit_status;
static char *run_tmpdir;
static int ready_fd = -1;       /* daemonized: tell the parent we serve */
#ifdef HAVE_FUSE_EXPORT
static struct fuse_export *fuse_export;
#endif

static const GOptionEntry entries[] = {
  { "socket", 's', 0, G_OPTION_ARG_FILENAME, &opt.socket,
    "Listen on this UNIX socket", "PATH" },
  { "socket-path", 0, 0, G_OPTION_ARG_FILENAME, &opt.socket,
    "Same as --socket", "PATH" },
  { "fd", 0, 0, G_OPTION_ARG_INT, &opt.fd,
    "Use this inherited listening socket", "N" },
  { "foreground", 'f', 0, G_OPTION_ARG_NONE, &opt.foreground,
    "Do not daemonize", NULL },
  { "pidfile", 'P', 0, G_OPTION_ARG_FILENAME, &opt.pidfile,
    "Write the PID here once the socket listens", "FILE" },
  { "readonly", 'r', 0, G_OPTION_ARG_NONE, &opt.readonly,
    "Export the disk read-only", NULL },
  { "read-only", 0, 0, G_OPTION_ARG_NONE, &opt.readonly,
    "Same as --readonly", NULL },
  { "num-queues", 0, 0, G_OPTION_ARG_INT, &opt.num_queues,
    "Most virtqueues offered (default 64)", "N" },
  { "serial", 0, 0, G_OPTION_ARG_STRING, &opt.serial,
    "Serial number the guest sees (GET_ID, up to 20 bytes)", "STR" },
  { "verbose", 'v', 0, G_OPTION_ARG_NONE, &opt.verbose,
    "Debug messages", NULL },
  { "debug", 'D', 0, G_OPTION_ARG_STRING_ARRAY, &opt.debug_flags,
    "Set a plugin debug flag", "PLUGIN.FLAG=N" },
  { "print-capabilities", 0, 0, G_OPTION_ARG_NONE, &opt.print_caps,
    "Print the vhost-user back-end capabilities as JSON", NULL },
  { "filter", 0, 0, G_OPTION_ARG_STRING_ARRAY, &opt.filters,
    "Load a filter between the core and the plugin (repeatable; the "
    "first is the outermost)", "NAME" },
  { "dump-plugin", 0, 0, G_OPTION_ARG_NONE, &opt.dump_plugin,
    "Print information about the plugin and exit", NULL },
  { "run", 0, 0, G_OPTION_ARG_STRING, &opt.run,
    "Serve while CMD runs ($socket is set), exit with its status", "CMD" },
  { "version", 'V', 0, G_OPTION_ARG_NONE, &opt.version,
    "Print the version and exit", NULL },
  { "blk-file", 0, 0, G_OPTION_ARG_FILENAME, &opt.blk_file,
    "Same as: file file=PATH (vhost-user back-end convention)", "PATH" },
  { "log", 0, 0, G_OPTION_ARG_STRING, &opt.log,
    "Where messages go: stderr (default) or syslog", "stderr|syslog" },
  { "inflight-migration", 0, 0, G_OPTION_ARG_NONE, &opt.inflight_migration,
    "Offer GET_VRING_BASE_INFLIGHT: requests in flight migrate with the "
    "VM instead of being drained", NULL },
  { "fuse-export", 0, 0, G_OPTION_ARG_FILENAME, &opt.fuse_export,
    "Also expose the disk as a regular file at PATH (FUSE mount)", "PATH" },
  { "fuse-export-writable", 0, 0, G_OPTION_ARG_NONE,
    &opt.fuse_export_writable,
    "Let the --fuse-export file be written (read-only by default)", NULL },
  { "poll-us", 0, 0, G_OPTION_ARG_INT, &opt.poll_us,
    "After activity, poll the ring and plugin up to N microseconds before "
    "sleeping, adapting to the traffic (0 to 1000000, default 0: never; a "
    "CPU per busy queue)", "N" },
  { "control", 0, 0, G_OPTION_ARG_FILENAME, &opt.control,
    "Serve the control socket (JSON lines: stats, resize, reopen, "
    "shutdown; see blkgate-ctl) at PATH", "PATH" },
  { "user", 0, 0, G_OPTION_ARG_STRING, &opt.privs.user,
    "Run as USER once the socket and the plugin are open", "USER" },
  { "group", 0, 0, G_OPTION_ARG_STRING, &opt.privs.group,
    "Run as GROUP (default: USER's group)", "GROUP" },
  { "socket-owner", 0, 0, G_OPTION_ARG_STRING, &opt.privs.socket_owner,
    "Give the socket to USER (QEMU's)", "USER" },
  { "socket-group", 0, 0, G_OPTION_ARG_STRING, &opt.privs.socket_group,
    "Give the socket to GROUP", "GROUP" },
  { "socket-mode", 0, 0, G_OPTION_ARG_STRING, &opt.privs.socket_mode,
    "The socket's mode, in octal (default 0600)", "MODE" },
  { G_OPTION_REMAINING, 0, 0, G_OPTION_ARG_STRING_ARRAY, &opt.rest,
    NULL, "PLUGIN [KEY=VALUE ...]" },
  { NULL, 0, 0, 0, NULL, NULL, NULL }
};

static int
parse_args (int argc, char **argv)
{
  g_autoptr (GOptionContext) ctx =
    g_option_context_new ("- vhost-user-blk storage gateway");
  g_autoptr (GError) error = NULL;

  g_option_context_add_main_entries (ctx, entries, NULL);
  g_option_context_set_strict_posix (ctx, TRUE);
  g_option_context_set_description (ctx,
    "Plugins: file file=PATH, memory size=SIZE, null size=SIZE, or a path\n"
    "to a plugin .so.  'blkgate PLUGIN --help' lists a plugin's parameters.\n"
    "See blkgate(8).");
  if (!g_option_context_parse (ctx, &argc, &argv, &error)) {
    blkgate_error ("%s (try --help)", error->message);
    return -1;
  }
  if (opt.num_queues < 1 || opt.num_queues > MAX_QUEUES) {
    blkgate_error ("--num-queues must be between 1 and %d", MAX_QUEUES);
    return -1;
  }
  if (opt.serial && strlen (opt.serial) > 20) {
    blkgate_error ("--serial is longer than 20 bytes");
    return -1;
  }
  if (opt.log && strcmp (opt.log, "stderr") && strcmp (opt.log, "syslog")) {
    blkgate_error ("--log must be stderr or syslog");
    return -1;
  }
  if (opt.poll_us < 0 || opt.poll_us > MAX_POLL_US) {
    blkgate_error ("--poll-us must be between 0 and %d", MAX_POLL_US);
    return -1;
  }
  if (opt.fuse_export_writable && !opt.fuse_export) {
    blkgate_error ("--fuse-export-writable needs --fuse-export PATH");
    return -1;
  }
  if (opt.fd >= 0 && (opt.privs.socket_owner || opt.privs.socket_group ||
                      opt.privs.socket_mode)) {
    blkgate_error ("--socket-owner, --socket-group and --socket-mode are "
                   "for the socket blkgate creates (-s), not --fd");
    return -1;
  }
  if (privs_init (&opt.privs) == -1)
    return -1;
#ifndef HAVE_FUSE_EXPORT
  if (opt.fuse_export) {
    blkgate_error ("--fuse-export: blkgate was built without FUSE support");
    return -1;
  }
#endif
  return 0;
}

/* The vhost-user back-end convention (QEMU's vhost-user.json). */
static void
print_capabilities (void)
{
  printf ("{\n  \"type\": \"block\",\n  \"features\": [\n"
          "    \"read-only\",\n    \"blk-file\"\n  ]\n}\n");
}

/* -D PLUGIN.FLAG=N */
static int
apply_debug_flags (struct plugin *pl)
{
  for (char **d = opt.debug_flags; d && *d; d++) {
    const char *dot = strchr (*d, '.'), *eq = strchr (*d, '=');
    g_autofree char *name = NULL, *flag = NULL;
    char *end;
    long v;

    if (!dot || !eq || eq < dot) {
      blkgate_error ("-D %s: expected PLUGIN.FLAG=N", *d);
      return -1;
    }
    name = g_strndup (*d, dot - *d);
    flag = g_strndup (dot + 1, eq - dot - 1);
    v = strtol (eq + 1, &end, 0);
    if (*end || end == eq + 1) {
      blkgate_error ("-D %s: the value must be a number", *d);
      return -1;
    }
    if (strcmp (name, pl->p.name) != 0) {
      blkgate_error ("-D %s: no plugin named %s is loaded", *d, name);
      return -1;
    }
    if (plugin_set_debug_flag (pl, flag, (int) v) == -1)
      return -1;
  }
  return 0;
}

/* Loads and configures the plugin from the remaining arguments.
 * Returns 1 when the caller should exit 0 (--dump-plugin, help). */
static int
setup_plugin (struct plugin *pl)
{
  char **args = opt.rest;
  g_autofree char *blk_arg = NULL;
  const char *name;

  if (opt.blk_file) {
    name = "file";
    blk_arg = g_strdup_printf ("file=%s", opt.blk_file);
  }
  else if (args && args[0])
    name = *args++;
  else {
    blkgate_error ("no plugin given (try --help)");
    return -1;
  }
  if (plugin_load (pl, name) == -1 || apply_debug_flags (pl) == -1 ||
      filters_load (opt.filters) == -1)
    return -1;
  if (opt.dump_plugin) {
    plugin_dump (pl);
    filters_dump ();
    return 1;
  }
  for (; args && *args; args++) {
    if (strcmp (*args, "--help") == 0 || strcmp (*args, "-h") == 0) {
      plugin_help (pl);
      filters_help ();
      return 1;
    }
    if (filters_config_arg (pl, *args) == -1)
      return -1;
  }
  if (blk_arg && filters_config_arg (pl, blk_arg) == -1)
    return -1;
  return filters_config_complete (pl);
}

static int
write_pidfile (void)
{
  g_autofree char *s = g_strdup_printf ("%d\n", (int) getpid ());
  g_autofree char *tmp = g_strdup_printf ("%s.tmp", opt.pidfile);

  if (!opt.pidfile)
    return 0;
  if (!g_file_set_contents (tmp, s, -1, NULL) || rename (tmp, opt.pidfile)) {
    blkgate_error ("cannot write pidfile %s: %m", opt.pidfile);
    return -1;
  }
  return 0;
}

/* Forks into the background; the parent exits once the child says it
 * is ready (daemon_ready, after its pidfile and --fuse-export mount),
 * so "blkgate ... && use the socket" works.  A child that fails before
 * that makes the parent exit 1. */
static int
daemonize (void)
{
  int pfd[2];
  pid_t pid;
  char c;

  if (pipe2 (pfd, O_CLOEXEC) == -1 || (pid = fork ()) == -1) {
    blkgate_error ("cannot daemonize: %m");
    return -1;
  }
  if (pid > 0) {
    close (pfd[1]);
    _exit (read (pfd[0], &c, 1) == 1 && c == 'y' ? 0 : 1);
  }
  close (pfd[0]);
  setsid ();
  int null = open ("/dev/null", O_RDWR);
  dup2 (null, 0);
  dup2 (null, 1);
  if (null > 2)
    close (null);
  if (chdir ("/") == -1)
    blkgate_error ("chdir /: %m");
  ready_fd = pfd[1];
  return 0;
}

/* Start-up went well: the parent of a daemon may exit 0. */
static void
daemon_ready (void)
{
  char c = 'y';

  if (ready_fd < 0)
    return;
  if (write (ready_fd, &c, 1) != 1)
    blkgate_error ("cannot tell the parent we are ready: %m");
  close (ready_fd);
  ready_fd = -1;
}

/* --fuse-export: mounted in the process that serves it, before the
 * pidfile says we are ready. */
static int
start_fuse_export (struct backend *be)
{
#ifdef HAVE_FUSE_EXPORT
  if (opt.fuse_export) {
    fuse_export = fuse_export_start (be, opt.fuse_export,
                                     opt.fuse_export_writable);
    if (fuse_export == NULL)
      return -1;
  }
#endif
  return 0;
}

/* False if its requests are stuck in the plugin: see serve. */
static bool
stop_fuse_export (void)
{
#ifdef HAVE_FUSE_EXPORT
  bool ok = fuse_export_stop (fuse_export, SHUTDOWN_TIMEOUT_MS);

  fuse_export = NULL;
  return ok;
#else
  return true;
#endif
}

static gboolean
on_signal (gpointer data)
{
  blkgate_info ("%s received, shutting down", (const char *) data);
  g_main_loop_quit (loop);
  return G_SOURCE_CONTINUE;
}

static void
on_child_exit (GPid pid, gint status, gpointer data)
{
  exit_status = WIFEXITED (status) ? WEXITSTATUS (status)
    : 128 + WTERMSIG (status);
  g_spawn_close_pid (pid);
  g_main_loop_quit (loop);
}

static int
start_run (const char *socket)
{
  g_auto (GStrv) env = g_environ_setenv (g_get_environ (), "socket",
                                         socket, TRUE);
  char *argv[] = { "/bin/sh", "-c", opt.run, NULL };
  g_autoptr (GError) error = NULL;
  GPid pid;

  if (!g_spawn_async (NULL, argv, env, G_SPAWN_DO_NOT_REAP_CHILD, NULL, NULL,
                      &pid, &error)) {
    blkgate_error ("--run: %s", error->message);
    return -1;
  }
  g_child_watch_add (pid, on_child_exit, NULL);
  return 0;
}

/* The path of an inherited socket, for --run's $socket. */
static void
socket_path_of_fd (int fd)
{
  struct sockaddr_un sa;
  socklen_t len = sizeof sa;

  if (opt.socket == NULL &&
      getsockname (fd, (struct sockaddr *) &sa, &len) == 0 &&
      sa.sun_family == AF_UNIX && len > sizeof sa.sun_family &&
      sa.sun_path[0])
    opt.socket = g_strndup (sa.sun_path, len - sizeof sa.sun_family);
}

/* The socket: inherited (--fd), a path (-s), or for --run alone a
 * private one in a temporary directory. */
static int
open_socket (void)
{
  if (opt.fd >= 0) {
    int type;
    socklen_t len = sizeof type;
    if (getsockopt (opt.fd, SOL_SOCKET, SO_TYPE, &type, &len) == -1 ||
        type != SOCK_STREAM) {
      blkgate_error ("--fd %d is not a stream socket", opt.fd);
      return -1;
    }
    socket_path_of_fd (opt.fd);
    return opt.fd;
  }
  if (opt.socket == NULL && opt.run) {
    run_tmpdir = g_dir_make_tmp ("blkgate-XXXXXX", NULL);
    if (run_tmpdir)
      opt.socket = g_build_filename (run_tmpdir, "sock", NULL);
  }
  if (opt.socket == NULL) {
    blkgate_error ("no socket given: use -s PATH or --fd N");
    return -1;
  }
  int fd = server_listen_path (opt.socket);

  if (fd >= 0 && privs_socket (opt.socket) == -1) {
    close (fd);
    unlink (opt.socket);
    return -1;
  }
  return fd;
}

/* After --user the directories may not let us: the files are then
 * left, which is harmless (the next blkgate replaces a stale socket and
 * rewrites the pid file), but worth a line. */
static void
remove_file (const char *path)
{
  if (unlink (path) == -1 && errno != ENOENT)
    blkgate_info ("cannot remove %s: %m", path);
}

static void
cleanup_files (void)
{
  if (opt.socket && opt.fd < 0)
    remove_file (opt.socket);
  if (opt.pidfile)
    remove_file (opt.pidfile);
  if (run_tmpdir)
    g_rmdir (run_tmpdir);
}

/* --num-queues, capped by what the plugin can serve. */
static unsigned
queue_count (const struct backend *be)
{
  unsigned n = opt.num_queues;

  if (be->max_queues && be->max_queues < n) {
    blkgate_info ("%s serves at most %u queues: offering %u",
                  be->pl->p.name, be->max_queues, be->max_queues);
    n = be->max_queues;
  }
  return n;
}

static void
make_absolute (char **path)
{
  char *p;

  if (*path && !g_path_is_absolute (*path)) {
    p = g_canonicalize_filename (*path, NULL);
    g_free (*path);
    *path = p;
  }
}

/* Paths are used again after daemonizing (chdir /): make them
 * absolute first. */
static void
absolute_paths (void)
{
  make_absolute (&opt.socket);
  make_absolute (&opt.pidfile);
  make_absolute (&opt.fuse_export);
  make_absolute (&opt.control);
}

static int
serve (struct backend *be)
{
  int fd = open_socket ();
  bool stuck, to_syslog = opt.log && strcmp (opt.log, "syslog") == 0;

  if (fd == -1)
    return 1;
  if (opt.control && control_listen (opt.control) == -1) {
    cleanup_files ();
    return 1;
  }
  if (!opt.foreground && !opt.run && daemonize () == -1)
    return 1;
  if (to_syslog)
    log_open_syslog ();
  /* Once all that needs root is open (socket, plugin, mount, pid
   * file), drop it; before telling the parent we are ready, so that a
   * failure is the command's exit status. */
  if (start_fuse_export (be) == -1 || write_pidfile () == -1 ||
      privs_drop () == -1) {
    stop_fuse_export ();
    control_stop ();
    cleanup_files ();
    return 1;
  }
  daemon_ready ();
  log_to_syslog (to_syslog);
  blkgate_info ("serving the %s plugin on %s", be->pl->p.name,
                opt.socket ? opt.socket : "an inherited socket");
  loop = g_main_loop_new (NULL, FALSE);
  g_unix_signal_add (SIGTERM, on_signal, "SIGTERM");
  g_unix_signal_add (SIGINT, on_signal, "SIGINT");
  static struct device_config cfg;

  cfg.nqueues = queue_count (be);
  cfg.inflight_migration = opt.inflight_migration;
  cfg.poll_us = opt.poll_us;
  if (stats_init (cfg.nqueues) == -1) {
    blkgate_error ("out of memory");
    return 1;
  }
  control_serve (be, opt.fuse_export != NULL);
  server_start (fd, be, &cfg);
  if (opt.run && start_run (opt.socket ? opt.socket : "") == -1)
    exit_status = 1;
  else
    g_main_loop_run (loop);
  control_stop ();
  /* Stuck requests leave the plugin open: exit without closing it. */
  stuck = !stop_fuse_export ();
  if (!server_stop (SHUTDOWN_TIMEOUT_MS) || stuck) {
    cleanup_files ();
    _exit (exit_status ? exit_status : 1);
  }
  cleanup_files ();
  return exit_status;
}

/* The filters, outermost first, then the plugin. */
static void
unload (struct plugin *pl)
{
  filters_unload ();
  plugin_unload (pl);
}

int
main (int argc, char **argv)
{
  struct plugin pl;
  struct backend be;
  int r;

  signal (SIGPIPE, SIG_IGN);
  if (parse_args (argc, argv) == -1)
    return 1;
  verbose = opt.verbose;
  if (opt.version) {
    printf ("blkgate %s\n", PACKAGE_VERSION);
    return 0;
  }
  if (opt.print_caps) {
    print_capabilities ();
    return 0;
  }
  absolute_paths ();
  r = setup_plugin (&pl);
  if (r != 0) {
    unload (&pl);
    return r == 1 ? 0 : 1;
  }
  if (backend_open (&be, filters_wrap (&pl), opt.readonly, opt.serial) == -1) {
    blkgate_error ("cannot open the %s plugin", pl.p.name);
    unload (&pl);
    return 1;
  }
  if (opt.fuse_export_writable && be.dev.readonly) {
    blkgate_error ("--fuse-export-writable: the disk is read-only (%s)",
                   opt.readonly ? "-r" : "the plugin cannot write");
    backend_close (&be);
    unload (&pl);
    return 1;
  }
  r = serve (&be);
  backend_close (&be);
  unload (&pl);
  return r;
}
