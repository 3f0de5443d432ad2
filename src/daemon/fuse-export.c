/* --fuse-export: the disk served as a regular file through libfuse3.
 *
 * The file is a FUSE mount whose root is a regular file: it is mounted
 * over PATH (created when missing, removed at exit).  Every open gets
 * direct_io, so no page cache stands between a reader and the plugin:
 * a read sees every write the guest has had acknowledged.  This file
 * mounts (after detaching a stale mount a crashed gateway left), runs
 * the FUSE loop threads, and starts and stops the export; the handlers
 * are in fuse-export-ops.c, the plugin side in fuse-export-io.c.
 *
 * Thread model: FUSE_THREADS loop threads read requests from /dev/fuse
 * (non-blocking, each poll()ing it and the stop eventfd) and run the
 * handlers of fuse-export-ops.c.  The handlers never call the plugin:
 * they build a struct xreq and post it to the mailbox (fx->mail,
 * fx->mail_fd).  One export I/O thread (fuse-export-io.c) owns the
 * export's backend_queue, as a queue thread owns its own (queue.c): it
 * waits in epoll on the mailbox and the plugin's fd, starts posted
 * requests with backend_start and runs their done hook (request.h),
 * which replies to FUSE (libfuse replies may come from any thread) or
 * wakes a handler that waits for a step of a longer operation
 * (read-modify-write, fallocate) on fx->cond.  fx->lock guards the
 * mailbox, the in-flight count, the waiters' flags, the file's times
 * and the stop state; rmw_lock serializes unaligned writes.
 * fuse_export_start and fuse_export_stop run on the main thread. */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/wait.h>
#include <glib.h>

#include "fuse-export-int.h"
#include "log.h"

#define STALE_LAYERS 8

/* --- FUSE loop threads -------------------------------------------------- */

/* The connection ended without fuse_export_stop (umount from outside,
 * or an abort through /sys/fs/fuse/connections). */
static void
loop_exited (struct fuse_export *fx)
{
  bool last, unexpected;

  pthread_mutex_lock (&fx->lock);
  last = --fx->loops_running == 0;
  unexpected = !fx->stopping;
  pthread_cond_broadcast (&fx->cond);
  pthread_mutex_unlock (&fx->lock);
  if (last && unexpected)
    blkgate_error ("fuse export: %s was unmounted: no longer exported",
                   fx->path);
}

static void *
loop_thread (void *arg)
{
  struct fuse_export *fx = arg;
  struct fuse_buf buf = { .mem = NULL };
  struct pollfd p[2] = {
    { .fd = fuse_session_fd (fx->se), .events = POLLIN },
    { .fd = fx->stop_fd, .events = POLLIN },
  };
  int r;

  while (!fuse_session_exited (fx->se)) {
    if (poll (p, 2, -1) == -1) {
      if (errno == EINTR)
        continue;
      blkgate_error ("fuse export: poll: %m");
      break;
    }
    if (p[1].revents)
      break;
    r = fuse_session_receive_buf (fx->se, &buf);
    if (r == -EAGAIN || r == -EINTR)
      continue;                 /* another thread took the request */
    if (r <= 0)
      break;
    fuse_session_process_buf (fx->se, &buf);
  }
  free (buf.mem);
  loop_exited (fx);
  return NULL;
}

/* --- Mounting ----------------------------------------------------------- */

static void __attribute__ ((format (printf, 2, 0)))
log_fuse (enum fuse_log_level level, const char *fmt, va_list ap)
{
  g_autofree char *msg = g_strdup_vprintf (fmt, ap);

  g_strchomp (msg);
  if (level <= FUSE_LOG_ERR)
    blkgate_error ("fuse export: %s", msg);
  else
    debug ("fuse export: %s", msg);
}

/* path with its directory resolved (path itself may be a stale mount,
 * which realpath cannot stat), as /proc/self/mountinfo shows it. */
static char *
canonical_path (const char *path)
{
  g_autofree char *clean = g_canonicalize_filename (path, NULL);
  g_autofree char *dir = g_path_get_dirname (clean);
  g_autofree char *base = g_path_get_basename (clean);
  char *real = realpath (dir, NULL);
  char *r;

  if (real == NULL) {
    blkgate_error ("--fuse-export %s: %m", path);
    return NULL;
  }
  r = g_build_filename (real, base, NULL);
  free (real);
  return r;
}

/* Lazily unmounts path: umount2 as root, else fusermount3. */
static int
detach (const char *path)
{
  char *argv[] = { (char *) "fusermount3", (char *) "-u", (char *) "-z",
                   (char *) "--", (char *) path, NULL };
  g_autoptr (GError) error = NULL;
  int status;

  if (umount2 (path, MNT_DETACH) == 0)
    return 0;
  if (errno != EPERM) {
    blkgate_error ("fuse export: cannot unmount %s: %m", path);
    return -1;
  }
  if (!g_spawn_sync (NULL, argv, NULL, G_SPAWN_SEARCH_PATH, NULL, NULL,
                     NULL, NULL, &status, &error)) {
    blkgate_error ("fuse export: fusermount3: %s", error->message);
    return -1;
  }
  if (!WIFEXITED (status) || WEXITSTATUS (status) != 0) {
    blkgate_error ("fuse export: fusermount3 -u -z %s failed", path);
    return -1;
  }
  return 0;
}

/* A FUSE mount whose server died answers ENOTCONN (ECONNABORTED after
 * an abort).  statfs always asks the server; stat may answer from the
 * kernel's attribute cache for a while. */
static bool
dead_mount (const char *path)
{
  struct statfs sf;

  return statfs (path, &sf) == -1 &&
    (errno == ENOTCONN || errno == ECONNABORTED);
}

/* Detaches the stale mount a crashed gateway left at path, and any
 * stale mount under it. */
static int
clean_stale (const char *path)
{
  int i;

  for (i = 0; i < STALE_LAYERS; i++) {
    if (!dead_mount (path))
      return 0;
    blkgate_info ("fuse export: %s is a stale mount (%m): detaching it",
                  path);
    if (detach (path) == -1)
      return -1;
  }
  blkgate_error ("fuse export: %s: too many stale mounts", path);
  return -1;
}

/* Undoes the \ooo escapes of /proc/self/mountinfo in place. */
static void
unescape (char *s)
{
  char *d = s;

  for (; *s; s++, d++) {
    if (s[0] == '\\' && s[1] >= '0' && s[1] <= '3' && s[2] >= '0' &&
        s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
      *d = (char) ((s[1] - '0') * 64 + (s[2] - '0') * 8 + (s[3] - '0'));
      s += 3;
    }
    else
      *d = *s;
  }
  *d = '\0';
}

/* One line of /proc/self/mountinfo: is it a FUSE mount at path? */
static bool
fuse_mount_line (char *line, const char *path)
{
  char *save = NULL, *tok, *mnt = NULL;
  int i = 0;

  for (tok = strtok_r (line, " \n", &save); tok;
       tok = strtok_r (NULL, " \n", &save), i++) {
    if (i == 4)
      mnt = tok;
    else if (i > 5 && strcmp (tok, "-") == 0) {
      tok = strtok_r (NULL, " \n", &save);
      if (mnt == NULL || tok == NULL || strncmp (tok, "fuse", 4) != 0)
        return false;
      unescape (mnt);
      return strcmp (mnt, path) == 0;
    }
  }
  return false;
}

/* A live FUSE mount at path (another gateway's export?) is refused. */
static int
check_not_mounted (const char *path)
{
  FILE *f = fopen ("/proc/self/mountinfo", "re");
  char *line = NULL;
  size_t n = 0;
  bool found = false;

  if (f == NULL)
    return 0;
  while (!found && getline (&line, &n, f) != -1)
    found = fuse_mount_line (line, path);
  free (line);
  fclose (f);
  if (found) {
    blkgate_error ("--fuse-export %s: a FUSE file system is already "
                   "mounted there and answers (another blkgate?)", path);
    return -1;
  }
  return 0;
}

/* path must be a regular file, mounted over; a missing one is created,
 * and removed at exit. */
static int
prepare_path (struct fuse_export *fx)
{
  struct stat st;
  int fd;

  if (stat (fx->path, &st) == 0) {
    if (S_ISREG (st.st_mode))
      return 0;
    blkgate_error ("--fuse-export %s: not a regular file (the disk is "
                   "exported as a file, which must be mounted over a "
                   "file, not a %s)", fx->path,
                   S_ISDIR (st.st_mode) ? "directory" : "special file");
    return -1;
  }
  if (errno != ENOENT) {
    blkgate_error ("--fuse-export %s: %m", fx->path);
    return -1;
  }
  fd = open (fx->path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0600);
  if (fd == -1) {
    blkgate_error ("--fuse-export: cannot create %s: %m", fx->path);
    return -1;
  }
  close (fd);
  fx->created = true;
  return 0;
}

static int
mount_session (struct fuse_export *fx)
{
  g_autofree char *opts =
    g_strdup_printf ("fsname=blkgate,subtype=blkgate,default_permissions%s",
                     geteuid () == 0 ? ",allow_other" : "");
  char *argv[] = { (char *) "blkgate", (char *) "-o", opts, NULL };
  struct fuse_args args = FUSE_ARGS_INIT (3, argv);
  int fd, fl;

  fuse_set_log_func (log_fuse);
  fx->se = fuse_session_new (&args, &fuse_export_ops,
                             sizeof fuse_export_ops, fx);
  fuse_opt_free_args (&args);
  if (fx->se == NULL) {
    blkgate_error ("fuse export: cannot create the FUSE session");
    return -1;
  }
  if (fuse_session_mount (fx->se, fx->path) != 0) {
    blkgate_error ("fuse export: cannot mount %s", fx->path);
    return -1;
  }
  fd = fuse_session_fd (fx->se);
  fl = fcntl (fd, F_GETFL);
  if (fl == -1 || fcntl (fd, F_SETFL, fl | O_NONBLOCK) == -1) {
    blkgate_error ("fuse export: fcntl /dev/fuse: %m");
    return -1;
  }
  return 0;
}

/* --- Start and stop ----------------------------------------------------- */

static int
start_loops (struct fuse_export *fx)
{
  fx->stop_fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (fx->stop_fd == -1) {
    blkgate_error ("fuse export: %m");
    return -1;
  }
  for (; fx->nloops < FUSE_THREADS; fx->nloops++) {
    pthread_mutex_lock (&fx->lock);
    fx->loops_running++;
    pthread_mutex_unlock (&fx->lock);
    if (pthread_create (&fx->loops[fx->nloops], NULL, loop_thread, fx)) {
      blkgate_error ("fuse export: cannot start the FUSE threads");
      pthread_mutex_lock (&fx->lock);
      fx->loops_running--;
      pthread_mutex_unlock (&fx->lock);
      return -1;
    }
  }
  return 0;
}

/* Undoes what was started; nothing may be left in the plugin. */
static void
teardown (struct fuse_export *fx)
{
  unsigned i;

  pthread_mutex_lock (&fx->lock);
  fx->stopping = true;
  pthread_mutex_unlock (&fx->lock);
  if (fx->stop_fd >= 0)
    eventfd_write (fx->stop_fd, 1);
  for (i = 0; i < fx->nloops; i++)
    pthread_join (fx->loops[i], NULL);
  fuse_export_io_stop (fx);
  if (fx->se) {
    fuse_session_unmount (fx->se);
    fuse_session_destroy (fx->se);
  }
  if (fx->created && unlink (fx->path) == -1)
    blkgate_error ("fuse export: cannot remove %s: %m", fx->path);
  if (fx->stop_fd >= 0)
    close (fx->stop_fd);
  pthread_mutex_destroy (&fx->rmw_lock);
  pthread_mutex_destroy (&fx->lock);
  pthread_cond_destroy (&fx->cond);
  g_free (fx->path);
  free (fx);
}

static struct fuse_export *
fx_new (struct backend *be, bool writable)
{
  struct fuse_export *fx = calloc (1, sizeof *fx);

  if (fx == NULL) {
    blkgate_error ("calloc: %m");
    return NULL;
  }
  fx->be = be;
  fx->writable = writable;
  fx->uid = geteuid ();
  fx->gid = getegid ();
  fx->mail_fd = fx->stop_fd = fx->epfd = fx->plugin_fd = -1;
  fx->mail_tail = &fx->mail;
  pthread_mutex_init (&fx->lock, NULL);
  pthread_mutex_init (&fx->rmw_lock, NULL);
  pthread_cond_init (&fx->cond, NULL);
  clock_gettime (CLOCK_REALTIME, &fx->mtime);
  fx->atime = fx->ctime = fx->mtime;
  return fx;
}

struct fuse_export *
fuse_export_start (struct backend *be, const char *path, bool writable)
{
  struct fuse_export *fx = fx_new (be, writable);

  if (fx == NULL)
    return NULL;
  fx->path = canonical_path (path);
  if (fx->path == NULL || clean_stale (fx->path) == -1 ||
      check_not_mounted (fx->path) == -1 || prepare_path (fx) == -1 ||
      mount_session (fx) == -1 || fuse_export_io_start (fx) == -1 ||
      start_loops (fx) == -1) {
    teardown (fx);
    return NULL;
  }
  blkgate_info ("fuse export: %s (%s, %llu bytes)", fx->path,
                writable ? "writable" : "read-only",
                (unsigned long long) be->dev.size);
  return fx;
}

/* Waits until the loop threads are gone and nothing is in the plugin. */
static bool
wait_idle (struct fuse_export *fx, int timeout_ms)
{
  struct timespec deadline;
  bool idle;

  clock_gettime (CLOCK_REALTIME, &deadline);
  deadline.tv_sec += timeout_ms / 1000;
  deadline.tv_nsec += (long) (timeout_ms % 1000) * 1000000;
  if (deadline.tv_nsec >= 1000000000) {
    deadline.tv_sec++;
    deadline.tv_nsec -= 1000000000;
  }
  pthread_mutex_lock (&fx->lock);
  while ((fx->loops_running > 0 || fx->inflight > 0) &&
         pthread_cond_timedwait (&fx->cond, &fx->lock, &deadline) == 0)
    ;
  idle = fx->loops_running == 0 && fx->inflight == 0;
  pthread_mutex_unlock (&fx->lock);
  return idle;
}

bool
fuse_export_stop (struct fuse_export *fx, int timeout_ms)
{
  if (fx == NULL)
    return true;
  pthread_mutex_lock (&fx->lock);
  fx->stopping = true;
  pthread_mutex_unlock (&fx->lock);
  eventfd_write (fx->stop_fd, 1);
  if (!wait_idle (fx, timeout_ms)) {
    blkgate_error ("fuse export: requests still in flight after %d ms: "
                   "detaching %s", timeout_ms, fx->path);
    detach (fx->path);
    if (fx->created)
      unlink (fx->path);
    return false;
  }
  debug ("fuse export: unmounting %s", fx->path);
  teardown (fx);
  return true;
}
