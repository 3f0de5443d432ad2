/* Listening socket and the front-end connection.
 *
 * One front-end at a time: a vhost-user device has one driver.  A
 * second connection is refused with a log line, and the first keeps
 * working.  A front-end that goes away (QEMU restarting, reconnecting)
 * is normal life: its device state is dropped and we listen on.
 *
 * The main loop never waits for a front-end: messages are read as
 * their bytes arrive, and replies are sent without waiting (one that
 * does not fit means the front-end does not read them: it is dropped).
 * A front-end that sends nothing within STALL_TIMEOUT of connecting, or
 * stops in the middle of a message for that long, is dropped, so it
 * cannot hold the only front-end slot. */

#include <config.h>

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <string.h>
#include <unistd.h>
#include <sys/socket.h>
#include <sys/stat.h>
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
  guint stall_timer;            /* armed while a message is awaited */
  struct vu_rx rx;              /* the message being received */
} srv = { .listen_fd = -1 };

#define STALL_TIMEOUT 10        /* seconds */

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
  if (srv.stall_timer)
    g_source_remove (srv.stall_timer);
  srv.stall_timer = 0;
  vu_rx_reset (&srv.rx);
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
  if (srv.stall_timer)
    g_source_remove (srv.stall_timer);
  srv.stall_timer = 0;
  if (!device_quiesce_for_exit (srv.dev, timeout_ms))
    return false;
  close_connection ();
  return true;
}

static gboolean
on_stall (gpointer data)
{
  if (srv.rx.got > 0)
    blkgate_error ("front-end stopped in the middle of a message for %d s: "
                   "closing the connection", STALL_TIMEOUT);
  else
    blkgate_error ("front-end sent no message within %d s of connecting: "
                   "closing the connection", STALL_TIMEOUT);
  srv.stall_timer = 0;
  g_source_remove (srv.conn_watch);
  close_connection ();
  return G_SOURCE_REMOVE;
}

/* The stall timer runs while a message has begun and not ended, and
 * from the connection until the first message. */
static void
update_stall_timer (void)
{
  bool waiting = srv.rx.got > 0 || !srv.dev->seen_message;

  if (waiting && srv.stall_timer == 0)
    srv.stall_timer = g_timeout_add_seconds (STALL_TIMEOUT, on_stall, NULL);
  else if (!waiting && srv.stall_timer) {
    g_source_remove (srv.stall_timer);
    srv.stall_timer = 0;
  }
}

static gboolean
on_message (gint fd, GIOCondition cond, gpointer data)
{
  const char *err;
  int r = vu_rx_step (fd, &srv.rx, MSG_DONTWAIT, &err);

  if (r == 2) {
    update_stall_timer ();
    return G_SOURCE_CONTINUE;
  }
  if (r == 1) {
    srv.dev->seen_message = true;
    r = device_handle (srv.dev, &srv.rx.msg);
    vu_rx_reset (&srv.rx);
    if (r == 0) {
      update_stall_timer ();
      return G_SOURCE_CONTINUE;
    }
  }
  else if (r == 0)
    blkgate_info ("front-end disconnected");
  else
    blkgate_error ("front-end connection: %s", err);
  close_connection ();
  return G_SOURCE_REMOVE;
}

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
  blkgate_info ("front-end connected");
  srv.conn_watch = g_unix_fd_add (c, G_IO_IN | G_IO_HUP | G_IO_ERR,
                                  on_message, NULL);
  update_stall_timer ();
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
