/* Listening socket and the front-end connection.
 *
 * One front-end at a time: a vhost-user device has one driver.  A
 * second connection is refused with a log line, and the first keeps
 * working.  A front-end that goes away (QEMU restarting, reconnecting)
 * is normal life: its device state is dropped and we listen on. */

#include <config.h>

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <glib.h>
#include <glib-unix.h>

#include "device.h"
#include "log.h"
#include "server.h"
#include "vu-msg.h"

static struct {
  int listen_fd;
  guint listen_watch;
  struct backend *be;
  const struct device_config *cfg;
  struct device *dev;
  guint conn_watch;
} srv = { .listen_fd = -1 };

static int
fill_addr (struct sockaddr_un *sa, const char *path)
{
  memset (sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  if (strlen (path) >= sizeof sa->sun_path) {
    blkgate_error ("socket path too long (max %zu bytes): %s",
                   sizeof sa->sun_path - 1, path);
    return -1;
  }
  strcpy (sa->sun_path, path);
  return 0;
}

/* A socket file nobody listens on is stale and may be replaced;
 * anything else at the path is left alone. */
static int
remove_stale (const struct sockaddr_un *sa, const char *path)
{
  struct stat st;
  int fd, r;

  if (lstat (path, &st) == -1)
    return errno == ENOENT ? 0 : -1;
  if (!S_ISSOCK (st.st_mode)) {
    blkgate_error ("%s exists and is not a socket", path);
    return -1;
  }
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  r = connect (fd, (const struct sockaddr *) sa, sizeof *sa);
  close (fd);
  if (r == 0) {
    blkgate_error ("%s: another server is listening on this socket", path);
    return -1;
  }
  debug ("replacing stale socket %s", path);
  return unlink (path);
}

int
server_listen_path (const char *path)
{
  struct sockaddr_un sa;
  mode_t old;
  int fd, r;

  if (fill_addr (&sa, path) == -1 || remove_stale (&sa, path) == -1)
    return -1;
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1) {
    blkgate_error ("socket: %m");
    return -1;
  }
  old = umask (0177);
  r = bind (fd, (struct sockaddr *) &sa, sizeof sa);
  umask (old);
  if (r == -1 || listen (fd, 16) == -1) {
    blkgate_error ("%s: %m", path);
    close (fd);
    return -1;
  }
  return fd;
}

/* Stops the device's queues (draining them) and forgets it; the
 * caller has removed the watch. */
static void
close_connection (void)
{
  srv.conn_watch = 0;
  close (srv.dev->sock);
  device_free (srv.dev);
  srv.dev = NULL;
}

static bool
drop_connection (int timeout_ms)
{
  if (srv.dev == NULL)
    return true;
  g_source_remove (srv.conn_watch);
  if (!device_quiesce_for_exit (srv.dev, timeout_ms))
    return false;
  close_connection ();
  return true;
}

static gboolean
on_message (gint fd, GIOCondition cond, gpointer data)
{
  struct vu_msg msg;
  const char *err;
  int r = vu_msg_recv (fd, &msg, &err);

  if (r == 1 && device_handle (srv.dev, &msg) == 0)
    return G_SOURCE_CONTINUE;
  if (r == 0)
    blkgate_info ("front-end disconnected");
  else if (r == -1)
    blkgate_error ("front-end connection: %s", err);
  close_connection ();
  return G_SOURCE_REMOVE;
}

static const struct timeval msg_timeout = { .tv_sec = 10 };

/* True when the peer has closed its end (and sent nothing we have not
 * read yet that we would still have to act on). */
static bool
peer_gone (int sock)
{
  struct pollfd p = { .fd = sock, .events = POLLIN | POLLRDHUP };

  return poll (&p, 1, 0) == 1 && (p.revents & (POLLHUP | POLLRDHUP | POLLERR));
}

static gboolean
on_accept (gint fd, GIOCondition cond, gpointer data)
{
  int c = accept4 (fd, NULL, NULL, SOCK_CLOEXEC);

  if (c == -1) {
    if (errno != EAGAIN && errno != EINTR)
      blkgate_error ("accept: %m");
    return G_SOURCE_CONTINUE;
  }
  /* A front-end that closed its connection and reconnected at once
   * (QEMU after a hiccup) may reach us before its hang-up is handled:
   * finish with the old connection first. */
  if (srv.dev && peer_gone (srv.dev->sock)) {
    blkgate_info ("front-end disconnected");
    g_source_remove (srv.conn_watch);
    close_connection ();
  }
  if (srv.dev) {
    blkgate_error ("refusing a second front-end: one is already connected");
    close (c);
    return G_SOURCE_CONTINUE;
  }
  srv.dev = device_new (srv.be, c, srv.cfg);
  if (srv.dev == NULL) {
    blkgate_error ("out of memory for a new front-end");
    close (c);
    return G_SOURCE_CONTINUE;
  }
  /* A front-end that stalls mid-message must not stall the main loop. */
  setsockopt (c, SOL_SOCKET, SO_RCVTIMEO, &msg_timeout, sizeof msg_timeout);
  setsockopt (c, SOL_SOCKET, SO_SNDTIMEO, &msg_timeout, sizeof msg_timeout);
  blkgate_info ("front-end connected");
  srv.conn_watch = g_unix_fd_add (c, G_IO_IN | G_IO_HUP | G_IO_ERR,
                                  on_message, NULL);
  return G_SOURCE_CONTINUE;
}

void
server_start (int listen_fd, struct backend *be,
              const struct device_config *cfg)
{
  srv.listen_fd = listen_fd;
  srv.be = be;
  srv.cfg = cfg;
  srv.listen_watch = g_unix_fd_add (listen_fd, G_IO_IN, on_accept, NULL);
}

bool
server_stop (int timeout_ms)
{
  if (srv.listen_watch)
    g_source_remove (srv.listen_watch);
  srv.listen_watch = 0;
  if (srv.listen_fd >= 0)
    close (srv.listen_fd);
  srv.listen_fd = -1;
  return drop_connection (timeout_ms);
}

struct device *
server_device (void)
{
  return srv.dev;
}
