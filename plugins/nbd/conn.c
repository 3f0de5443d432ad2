/* blkgate nbd plugin: one NBD connection.
 *
 * Thread model: a connection is driven by exactly one thread, its
 * driver.  In per-queue mode the driver is the queue thread that owns
 * it: the queue's get_fd returns the connection's epoll fd and its
 * poll calls conn_dispatch.  In shared mode the driver is a thread
 * started here, one per connection (the only threads this plugin
 * starts), and the queues hand requests over through conn_enqueue and
 * conn_wake.  c->lock guards the request lists and is held by the
 * driver while it runs libnbd, so libnbd's completion callbacks run
 * under it.  Requests are completed by the queue thread that sent them,
 * never under c->lock (see qctx_finished).
 *
 * Connection loss: a dead libnbd handle cannot be revived, so the
 * driver closes it, puts the requests it had sent back among the
 * pending ones in their order of arrival, and opens a new handle after
 * a backoff (50 ms doubling up to 1 s).  Requests wait, and new ones
 * queue up, until the new connection is ready; only when the server
 * has been gone for retry-timeout do they fail, with EIO, and then
 * every new request fails at once until the server is back.
 */

#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/timerfd.h>

#define BLKGATE_API_VERSION 1
#include <blkgate-plugin.h>

#include "nbd.h"

#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000
#define ZERO_CHUNK (1u << 30)   /* bytes per NBD trim or write-zeroes */

enum conn_state { CONN_CONNECTING, CONN_READY, CONN_DOWN };
enum { EV_NBD = 1, EV_WAKE, EV_TIMER };

struct conn {
  struct nbd_export *e;
  unsigned index;
  pthread_mutex_t lock;
  struct nreq_list pending;     /* not sent, in order of arrival */
  struct nreq_list sent;        /* at the server */
  struct nreq_list settled;     /* every command answered, to handle */
  uint64_t next_seq;

  struct nbd_handle *h;
  enum conn_state state;
  int fd;                       /* the handle's socket, in epfd */
  uint32_t fd_events;
  int epfd, wakefd, timerfd;
  int64_t timer_at;             /* ms the timer is armed for; 0: off */
  int64_t down_since;           /* ms; 0 while the server is there */
  int64_t next_attempt;         /* ms, while down */
  unsigned backoff;             /* ms */
  bool failing;                 /* down for longer than retry-timeout */
  bool was_ready;               /* a lost connection, not a first one */

  bool threaded;
  bool stop;
  pthread_t thread;
};

static int64_t
now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Errors that mean the connection, not the request, failed. */
static bool
transient (int err)
{
  return err == ENOTCONN || err == ESHUTDOWN || err == ECONNRESET ||
    err == EPIPE || err == ECONNABORTED || err == ETIMEDOUT ||
    err == ECONNREFUSED;
}

/* libnbd's last error on this thread, or what usually happened. */
static const char *
why (void)
{
  const char *msg = nbd_get_error ();

  return msg ? msg : "the server closed the connection";
}

/* A libnbd handle with the configured TLS settings. */
struct nbd_handle *
nbdp_new_handle (void)
{
  struct nbd_handle *h = nbd_create ();

  if (h == NULL)
    goto err;
  if (nbd_set_uri_allow_local_file (h, true) == -1 ||
      (nbdp_cfg.tls_certificates &&
       nbd_set_tls_certificates (h, nbdp_cfg.tls_certificates) == -1) ||
      (nbdp_cfg.tls_verify >= 0 &&
       nbd_set_tls_verify_peer (h, nbdp_cfg.tls_verify) == -1) ||
      (nbdp_cfg.tls_username &&
       nbd_set_tls_username (h, nbdp_cfg.tls_username) == -1) ||
      (nbdp_cfg.tls_psk && nbd_set_tls_psk_file (h, nbdp_cfg.tls_psk) == -1))
    goto err;
  return h;

 err:
  blkgate_error ("nbd: %s", nbd_get_error ());
  if (h)
    nbd_close (h);
  return NULL;
}

/* --- Finishing requests ------------------------------------------------ */

static void
replay_done (struct conn *c, struct nreq *r)
{
  unsigned i;

  if (!r->replay)
    return;
  r->replay = false;
  if (atomic_fetch_sub (&c->e->replay_writes, 1) != 1)
    return;
  /* The last lost write is back: wake connections holding a flush. */
  pthread_mutex_lock (&c->e->lock);
  for (i = 0; i < NBD_MAX_OPEN; i++)
    if (c->e->conns[i] && c->e->conns[i] != c)
      conn_wake (c->e->conns[i]);
  pthread_mutex_unlock (&c->e->lock);
}

/* Copy a bounced read out to the guest's buffers. */
static void
bounce_out (struct nreq *r)
{
  const char *p = r->bounce;
  int i;

  for (i = 0; i < r->iovcnt; i++) {
    memcpy (r->iov[i].iov_base, p, r->iov[i].iov_len);
    p += r->iov[i].iov_len;
  }
}

/* r is answered for good: hand it to its queue. */
static void
finish (struct conn *c, struct nreq *r, int err)
{
  if (r->bounce) {
    if (err == 0 && r->type == NREQ_READ)
      bounce_out (r);
    free (r->bounce);
    r->bounce = NULL;
  }
  replay_done (c, r);
  r->err = err;
  qctx_finished (r->q, r, !c->threaded);
}

/* Put r back among the pending requests, in order of arrival. */
static void
requeue (struct conn *c, struct nreq *r)
{
  struct nreq *p;

  r->sent = false;
  r->lost = false;
  r->err = 0;
  if (!r->replay && r->type != NREQ_READ && r->type != NREQ_FLUSH) {
    r->replay = true;
    atomic_fetch_add (&c->e->replay_writes, 1);
  }
  TAILQ_FOREACH (p, &c->pending, link)
    if (p->seq > r->seq)
      break;
  if (p)
    TAILQ_INSERT_BEFORE (p, r, link);
  else
    TAILQ_INSERT_TAIL (&c->pending, r, link);
}

static void
handle_settled (struct conn *c)
{
  struct nreq *r;

  while ((r = TAILQ_FIRST (&c->settled)) != NULL) {
    TAILQ_REMOVE (&c->settled, r, link);
    if (r->lost && !c->failing)
      requeue (c, r);
    else
      finish (c, r, r->lost ? EIO : r->err);
  }
}

/* libnbd's completion callback, once per NBD command, under c->lock. */
static int
command_done (void *opaque, int *error)
{
  struct nreq *r = opaque;
  struct conn *c = r->conn;

  if (*error) {
    if (transient (*error))
      r->lost = true;
    else if (r->err == 0)
      r->err = *error;
  }
  if (--r->parts == 0) {
    TAILQ_REMOVE (&c->sent, r, link);
    TAILQ_INSERT_TAIL (&c->settled, r, link);
  }
  return 1;
}

/* --- Sending ------------------------------------------------------------ */

/* One NBD command for a part of r.  Returns -1 when libnbd refused it. */
static int
command (struct conn *c, struct nreq *r, void *buf, uint64_t len,
         uint64_t off)
{
  nbd_completion_callback cb = { .callback = command_done, .user_data = r };
  uint32_t fl = 0;
  int64_t cookie = -1;

  /* Counted before the call: once a command is queued libnbd returns its
   * cookie even if the connection dies right then, and that death runs
   * command_done inside the call.  Counted after, that early callback
   * took send_one's hold and settled r while it was still being sent
   * (seen as a request completed twice when qemu-nbd was killed). */
  r->parts++;
  switch (r->type) {
  case NREQ_READ:
    cookie = nbd_aio_pread (c->h, buf, len, off, cb, 0);
    break;
  case NREQ_WRITE:
    if (r->flags & BLKGATE_FLAG_FUA)
      fl |= LIBNBD_CMD_FLAG_FUA;
    cookie = nbd_aio_pwrite (c->h, buf, len, off, cb, fl);
    break;
  case NREQ_FLUSH:
    cookie = nbd_aio_flush (c->h, cb, 0);
    break;
  case NREQ_TRIM:
    cookie = nbd_aio_trim (c->h, len, off, cb, 0);
    break;
  case NREQ_ZERO:
    if (!(r->flags & BLKGATE_FLAG_MAY_TRIM))
      fl |= LIBNBD_CMD_FLAG_NO_HOLE;
    cookie = nbd_aio_zero (c->h, len, off, cb, fl);
    break;
  }
  if (cookie == -1) {
    r->parts--;                 /* not queued: no callback will come */
    return -1;
  }
  return 0;
}

/* Split r into NBD commands: each guest buffer (or the bounce buffer)
 * in pieces of at most max_payload; trim and zero in ZERO_CHUNK. */
static int
commands (struct conn *c, struct nreq *r)
{
  uint64_t off = r->offset, step;
  int i;

  switch (r->type) {
  case NREQ_FLUSH:
    return command (c, r, NULL, 0, 0);
  case NREQ_TRIM:
  case NREQ_ZERO:
    for (; off < r->offset + r->count; off += step) {
      step = r->offset + r->count - off;
      if (step > ZERO_CHUNK)
        step = ZERO_CHUNK;
      if (command (c, r, NULL, step, off) == -1)
        return -1;
    }
    return 0;
  default:
    break;
  }
  for (i = 0; i < (r->bounce ? 1 : r->iovcnt); i++) {
    char *base = r->bounce ? r->bounce : r->iov[i].iov_base;
    uint64_t len = r->bounce ? r->count : r->iov[i].iov_len, done;

    for (done = 0; done < len; done += step, off += step) {
      step = len - done;
      if (step > c->e->max_payload)
        step = c->e->max_payload;
      if (command (c, r, base + done, step, off) == -1)
        return -1;
    }
  }
  return 0;
}

static void
send_one (struct conn *c, struct nreq *r)
{
  TAILQ_REMOVE (&c->pending, r, link);
  TAILQ_INSERT_TAIL (&c->sent, r, link);
  r->sent = true;
  r->parts = 1;                 /* held while the commands are issued */
  if (commands (c, r) == -1) {
    int err = nbd_get_errno ();

    if (nbd_aio_is_dead (c->h) || nbd_aio_is_closed (c->h) || transient (err))
      r->lost = true;
    else if (r->err == 0)
      r->err = err ? err : EIO;
  }
  if (--r->parts == 0) {
    TAILQ_REMOVE (&c->sent, r, link);
    TAILQ_INSERT_TAIL (&c->settled, r, link);
  }
}

/* Send the pending requests.  A flush waits while writes lost with a
 * connection are not yet written again: it must not report them
 * durable. */
static void
send_pending (struct conn *c)
{
  struct nreq *r, *next;

  for (r = TAILQ_FIRST (&c->pending); r && c->state == CONN_READY; r = next) {
    next = TAILQ_NEXT (r, link);
    if (r->type == NREQ_FLUSH && atomic_load (&c->e->replay_writes) > 0)
      continue;
    send_one (c, r);
  }
}

/* --- Connection life ---------------------------------------------------- */

static void
unwatch_fd (struct conn *c)
{
  if (c->fd >= 0)
    epoll_ctl (c->epfd, EPOLL_CTL_DEL, c->fd, NULL);
  c->fd = -1;
  c->fd_events = 0;
}

/* The handle is dead or failed to connect (reason: what libnbd said,
 * when it just said it): close it and take back what it had sent. */
static void
lost (struct conn *c, const char *reason)
{
  struct nreq *r;
  unsigned n = 0;

  if (c->state == CONN_READY)
    blkgate_error ("nbd: connection %u lost: %s; holding requests and "
                   "reconnecting", c->index, reason);
  else
    blkgate_debug ("nbd: connection %u: connect failed: %s", c->index,
                   reason);
  unwatch_fd (c);
  if (c->h)
    nbd_close (c->h);           /* may run completion callbacks */
  c->h = NULL;
  while ((r = TAILQ_FIRST (&c->sent)) != NULL) {
    TAILQ_REMOVE (&c->sent, r, link);
    r->lost = true;
    r->parts = 0;
    TAILQ_INSERT_TAIL (&c->settled, r, link);
  }
  TAILQ_FOREACH (r, &c->settled, link)
    n++;
  if (n)
    blkgate_debug ("nbd: connection %u: %u requests to resend", c->index, n);
  c->state = CONN_DOWN;
  if (c->down_since == 0)
    c->down_since = now_ms ();
  c->next_attempt = now_ms () + c->backoff;
  c->backoff = c->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : c->backoff * 2;
}

/* A ready connection whose handle died (in any libnbd call: libnbd
 * then closes the socket itself, so no event would ever tell us). */
static void
check_alive (struct conn *c)
{
  if (c->state == CONN_READY &&
      (nbd_aio_is_dead (c->h) || nbd_aio_is_closed (c->h)))
    lost (c, "the connection died");
}

static void
start_connect (struct conn *c)
{
  c->h = nbdp_new_handle ();
  c->state = CONN_CONNECTING;
  if (c->h == NULL || nbd_aio_connect_uri (c->h, nbdp_cfg.uri) == -1)
    lost (c, why ());
}

static void
ready (struct conn *c)
{
  int64_t size = nbd_get_size (c->h);
  unsigned n = 0;
  struct nreq *r;

  c->state = CONN_READY;
  TAILQ_FOREACH (r, &c->pending, link)
    n++;
  if (c->down_since && c->was_ready)
    blkgate_stat_add ("reconnects", 1);
  if (c->down_since && n)
    blkgate_stat_add ("requests_resent", n);
  if (c->down_since)
    blkgate_error ("nbd: connection %u %s after %.1f s; resending "
                   "%u requests", c->index,
                   c->was_ready ? "reconnected" : "connected",
                   (now_ms () - c->down_since) / 1000.0, n);
  else
    blkgate_debug ("nbd: connection %u ready", c->index);
  if (size >= 0 && size != c->e->size)
    blkgate_error ("nbd: connection %u: the export size changed from %"
                   PRId64 " to %" PRId64 " bytes; the disk keeps its size",
                   c->index, c->e->size, size);
  c->was_ready = true;
  c->down_since = 0;
  c->failing = false;
  c->backoff = BACKOFF_MIN_MS;
}

/* Fail what waits once the server has been gone for retry-timeout. */
static void
check_timeout (struct conn *c, int64_t now)
{
  struct nreq *r;

  if (c->state == CONN_READY || c->down_since == 0 ||
      now - c->down_since < nbdp_cfg.retry_timeout_ms)
    return;
  if (!c->failing)
    blkgate_error ("nbd: connection %u: the server has been gone for %.1f s "
                   "(retry-timeout): failing requests with EIO until it is "
                   "back", c->index, (now - c->down_since) / 1000.0);
  c->failing = true;
  while ((r = TAILQ_FIRST (&c->pending)) != NULL) {
    TAILQ_REMOVE (&c->pending, r, link);
    finish (c, r, EIO);
  }
}

/* Move the state machine on after events; called with c->lock held. */
static void
step (struct conn *c)
{
  int64_t now = now_ms ();

  if (c->state == CONN_DOWN && now >= c->next_attempt)
    start_connect (c);
  if (c->state == CONN_CONNECTING) {
    if (nbd_aio_is_ready (c->h))
      ready (c);
    else if (!nbd_aio_is_connecting (c->h))
      lost (c, "the handshake failed");
  }
  check_alive (c);
  handle_settled (c);
  if (c->state == CONN_READY) {
    send_pending (c);
    check_alive (c);
    handle_settled (c);
  }
  check_timeout (c, now);
}

/* Watch the handle's socket for what libnbd waits for, and arm the
 * timer for the next reconnection or the retry-timeout. */
void
conn_prepare (struct conn *c)
{
  struct itimerspec its = { 0 };
  int64_t when = 0;
  uint32_t ev = 0;
  int fd = c->h ? nbd_aio_get_fd (c->h) : -1;

  if (fd != c->fd)
    unwatch_fd (c);
  if (fd >= 0) {
    unsigned dir = nbd_aio_get_direction (c->h);

    ev = ((dir & LIBNBD_AIO_DIRECTION_READ) ? EPOLLIN : 0) |
      ((dir & LIBNBD_AIO_DIRECTION_WRITE) ? EPOLLOUT : 0);
    if (fd != c->fd || ev != c->fd_events) {
      struct epoll_event e = { .events = ev, .data.u32 = EV_NBD };

      epoll_ctl (c->epfd, fd == c->fd ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, fd, &e);
      c->fd = fd;
      c->fd_events = ev;
    }
  }
  if (c->state == CONN_DOWN)
    when = c->next_attempt;
  if (c->state != CONN_READY && c->down_since && !c->failing) {
    int64_t t = c->down_since + nbdp_cfg.retry_timeout_ms;

    if (when == 0 || t < when)
      when = t;
  }
  if (when == c->timer_at)
    return;
  c->timer_at = when;
  if (when) {
    its.it_value.tv_sec = when / 1000;
    its.it_value.tv_nsec = (when % 1000) * 1000000 + 1;
  }
  timerfd_settime (c->timerfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* Handle what is ready on the connection's fds. */
void
conn_dispatch (struct conn *c)
{
  struct epoll_event ev[4];
  uint64_t v;
  int i, n = epoll_wait (c->epfd, ev, 4, 0);

  for (i = 0; i < n; i++) {
    switch (ev[i].data.u32) {
    case EV_WAKE:
      if (read (c->wakefd, &v, sizeof v) == -1 && errno != EAGAIN)
        blkgate_error ("nbd: eventfd: %m");
      break;
    case EV_TIMER:
      if (read (c->timerfd, &v, sizeof v) == -1 && errno != EAGAIN)
        blkgate_error ("nbd: timerfd: %m");
      break;
    case EV_NBD:
      if (c->h == NULL)
        break;
      if ((ev[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR)) &&
          nbd_aio_notify_read (c->h) == -1 && c->state == CONN_READY)
        lost (c, why ());
      else if ((ev[i].events & EPOLLOUT) && c->h &&
               nbd_aio_notify_write (c->h) == -1 && c->state == CONN_READY)
        lost (c, why ());
      break;
    }
  }
  step (c);
}

/* Queue r on c (any thread); the driver sends it. */
void
conn_enqueue (struct conn *c, struct nreq *r)
{
  r->conn = c;
  r->seq = c->next_seq++;
  if (c->failing) {
    finish (c, r, EIO);
    return;
  }
  TAILQ_INSERT_TAIL (&c->pending, r, link);
  if (!c->threaded && c->state == CONN_READY) {
    send_one (c, r);
    check_alive (c);            /* libnbd may find the server gone here */
    handle_settled (c);
  }
}

void
conn_wake (struct conn *c)
{
  if (eventfd_write (c->wakefd, 1) == -1)
    blkgate_error ("nbd: eventfd: %m");
}

/* Cancel q's plugin calls for req that are not sent yet. */
int
conn_cancel (struct conn *c, struct qctx *q, struct blkgate_request *req)
{
  struct nreq *r, *next;

  for (r = TAILQ_FIRST (&c->pending); r; r = next) {
    next = TAILQ_NEXT (r, link);
    if (r->q == q && r->req == req) {
      TAILQ_REMOVE (&c->pending, r, link);
      finish (c, r, ECANCELED);
    }
  }
  return 0;
}

int
conn_epoll_fd (struct conn *c)
{
  return c->epfd;
}

static void *
conn_thread (void *arg)
{
  struct conn *c = arg;
  struct epoll_event ev;

  pthread_mutex_lock (&c->lock);
  while (!c->stop) {
    conn_prepare (c);
    pthread_mutex_unlock (&c->lock);
    if (epoll_wait (c->epfd, &ev, 1, -1) == -1 && errno != EINTR)
      blkgate_error ("nbd: epoll_wait: %m");
    pthread_mutex_lock (&c->lock);
    conn_dispatch (c);
  }
  pthread_mutex_unlock (&c->lock);
  return NULL;
}

static int
watch (int epfd, int fd, uint32_t tag)
{
  struct epoll_event ev = { .events = EPOLLIN, .data.u32 = tag };

  return epoll_ctl (epfd, EPOLL_CTL_ADD, fd, &ev);
}

/* A new connection; it connects in the background.  threaded: it gets
 * a driver thread of its own (shared mode). */
struct conn *
conn_open (struct nbd_export *e, unsigned index, bool threaded)
{
  struct conn *c = calloc (1, sizeof *c);

  if (c == NULL) {
    blkgate_error ("nbd: calloc: %m");
    return NULL;
  }
  c->e = e;
  c->index = index;
  c->fd = c->epfd = c->wakefd = c->timerfd = -1;
  c->backoff = BACKOFF_MIN_MS;
  c->state = CONN_DOWN;         /* step connects at once */
  c->threaded = threaded;
  TAILQ_INIT (&c->pending);
  TAILQ_INIT (&c->sent);
  TAILQ_INIT (&c->settled);
  pthread_mutex_init (&c->lock, NULL);
  c->epfd = epoll_create1 (EPOLL_CLOEXEC);
  c->wakefd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  c->timerfd = timerfd_create (CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK);
  if (c->epfd == -1 || c->wakefd == -1 || c->timerfd == -1 ||
      watch (c->epfd, c->wakefd, EV_WAKE) == -1 ||
      watch (c->epfd, c->timerfd, EV_TIMER) == -1) {
    blkgate_error ("nbd: connection %u: %m", index);
    goto err;
  }
  pthread_mutex_lock (&c->lock);
  step (c);                     /* a UNIX socket may be ready at once */
  conn_prepare (c);
  pthread_mutex_unlock (&c->lock);
  if (threaded && pthread_create (&c->thread, NULL, conn_thread, c) != 0) {
    blkgate_error ("nbd: connection %u: pthread_create failed", index);
    goto err;
  }
  return c;

 err:
  c->threaded = false;
  conn_close (c);
  return NULL;
}

/* Close c.  Its queues are stopped, so nothing is left on it. */
void
conn_close (struct conn *c)
{
  if (c->threaded) {
    pthread_mutex_lock (&c->lock);
    c->stop = true;
    pthread_mutex_unlock (&c->lock);
    conn_wake (c);
    pthread_join (c->thread, NULL);
  }
  unwatch_fd (c);
  if (c->h) {
    nbd_shutdown (c->h, 0);
    nbd_close (c->h);
  }
  if (c->epfd >= 0)
    close (c->epfd);
  if (c->wakefd >= 0)
    close (c->wakefd);
  if (c->timerfd >= 0)
    close (c->timerfd);
  pthread_mutex_destroy (&c->lock);
  free (c);
}

void
conn_lock (struct conn *c)
{
  pthread_mutex_lock (&c->lock);
}

void
conn_unlock (struct conn *c)
{
  pthread_mutex_unlock (&c->lock);
}
