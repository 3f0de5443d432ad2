/* blkgate nbd plugin: serve a remote NBD export through libnbd.
 *
 * At start-up the plugin connects once to learn the export's size,
 * block sizes and capabilities, which decide the virtio features the
 * core offers.  Then each virtqueue gets its requests to the server
 * asynchronously (nbd_aio_*):
 *
 *  - per-queue mode, when the server advertises multi-conn or the
 *    export is read-only (and connections= is not given): every queue
 *    has a connection of its own, driven by the queue thread itself
 *    (the queue polls the connection's epoll fd);
 *  - shared mode otherwise: connections= connections (1 when the server
 *    lacks multi-conn, since a flush on one connection would not cover
 *    writes on another), each driven by a thread of its own; every
 *    queue spreads its requests over all of them in turn.
 *
 * conn.c handles a connection, its loss and its replacement.
 */

#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#define BLKGATE_API_VERSION 1
#define BLKGATE_THREAD_MODEL BLKGATE_THREAD_MODEL_PARALLEL
#include <blkgate-plugin.h>

#include "nbd.h"

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

#define DEFAULT_MAX_PAYLOAD (32u << 20)
#define DEFAULT_RETRY_TIMEOUT_MS 60000

struct nbd_config nbdp_cfg = {
  .retry_timeout_ms = DEFAULT_RETRY_TIMEOUT_MS,
  .tls_verify = -1,
};

/* --- Configuration ------------------------------------------------------ */

static void
nbdp_unload (void)
{
  free (nbdp_cfg.uri);
  free (nbdp_cfg.tls_certificates);
  free (nbdp_cfg.tls_username);
  free (nbdp_cfg.tls_psk);
  memset (&nbdp_cfg, 0, sizeof nbdp_cfg);
}

static int
set_string (char **dst, const char *value)
{
  free (*dst);
  *dst = strdup (value);
  if (*dst == NULL) {
    blkgate_error ("nbd: strdup: %m");
    return -1;
  }
  return 0;
}

/* A whole number in [min, max], or -1 after an error. */
static int64_t
parse_number (const char *key, const char *value, int64_t min, int64_t max)
{
  char *end;
  long long n;

  errno = 0;
  n = strtoll (value, &end, 10);
  if (errno || end == value || *end || n < min || n > max) {
    blkgate_error ("nbd: %s=%s: expected a whole number from %" PRId64
                   " to %" PRId64, key, value, min, max);
    return -1;
  }
  return n;
}

static int
nbdp_config (const char *key, const char *value)
{
  int64_t n;

  if (strcmp (key, "uri") == 0)
    return set_string (&nbdp_cfg.uri, value);
  if (strcmp (key, "connections") == 0) {
    if ((n = parse_number (key, value, 1, NBD_MAX_CONNS)) == -1)
      return -1;
    nbdp_cfg.connections = n;
    return 0;
  }
  if (strcmp (key, "retry-timeout") == 0) {
    if ((n = parse_number (key, value, 0, 86400)) == -1)
      return -1;
    nbdp_cfg.retry_timeout_ms = n * 1000;
    return 0;
  }
  if (strcmp (key, "tls-certificates") == 0)
    return set_string (&nbdp_cfg.tls_certificates, value);
  if (strcmp (key, "tls-verify") == 0) {
    if ((n = blkgate_parse_bool (value)) == -1) {
      blkgate_error ("nbd: tls-verify=%s: expected on or off", value);
      return -1;
    }
    nbdp_cfg.tls_verify = n;
    return 0;
  }
  if (strcmp (key, "tls-username") == 0)
    return set_string (&nbdp_cfg.tls_username, value);
  if (strcmp (key, "tls-psk") == 0)
    return set_string (&nbdp_cfg.tls_psk, value);
  blkgate_error ("nbd: unknown parameter '%s' (see --help)", key);
  return -1;
}

static int
nbdp_config_complete (void)
{
  struct nbd_handle *h;
  int ok;

  if (nbdp_cfg.uri == NULL) {
    blkgate_error ("nbd: uri= is required, e.g. nbd://HOST:PORT/EXPORT or "
                   "nbd+unix:///EXPORT?socket=PATH");
    return -1;
  }
  /* Reject a malformed URI now, with libnbd's own words. */
  if ((h = nbd_create ()) == NULL) {
    blkgate_error ("nbd: %s", nbd_get_error ());
    return -1;
  }
  ok = nbd_supports_uri (h);
  nbd_close (h);
  if (!ok) {
    blkgate_error ("nbd: this libnbd was built without URI support");
    return -1;
  }
  return 0;
}

static void
nbdp_dump_plugin (void)
{
  struct nbd_handle *h = nbd_create ();

  if (h == NULL)
    return;
  printf ("libnbd_version=%s\n", nbd_get_version (h));
  printf ("nbd_tls=%s\n", nbd_supports_tls (h) ? "yes" : "no");
  printf ("nbd_uri=%s\n", nbd_supports_uri (h) ? "yes" : "no");
  nbd_close (h);
}

/* --- The export --------------------------------------------------------- */

/* Read what the server offers from a connected probe handle. */
static int
probe (struct nbd_export *e, struct nbd_handle *h, int readonly)
{
  int64_t min, max;

  e->size = nbd_get_size (h);
  if (e->size < 0) {
    blkgate_error ("nbd: %s: %s", nbdp_cfg.uri, nbd_get_error ());
    return -1;
  }
  e->read_only = readonly || nbd_is_read_only (h) == 1;
  e->can_flush = nbd_can_flush (h) == 1;
  e->can_fua = !e->read_only && nbd_can_fua (h) == 1;
  e->can_trim = !e->read_only && nbd_can_trim (h) == 1;
  e->can_zero = !e->read_only && nbd_can_zero (h) == 1;
  e->multi_conn = nbd_can_multi_conn (h) == 1;
  min = nbd_get_block_size (h, LIBNBD_SIZE_MINIMUM);
  max = nbd_get_block_size (h, LIBNBD_SIZE_MAXIMUM);
  e->min_block = min > 0 ? min : 1;
  if (e->min_block > 65536 || (e->min_block & (e->min_block - 1))) {
    blkgate_error ("nbd: %s: minimum block size %" PRIu32 " is not a power "
                   "of two up to 64 KiB", nbdp_cfg.uri, e->min_block);
    return -1;
  }
  e->max_payload = max > 0 && max < DEFAULT_MAX_PAYLOAD ? max
    : DEFAULT_MAX_PAYLOAD;
  e->max_payload -= e->max_payload % e->min_block;
  if (e->max_payload == 0)
    e->max_payload = e->min_block;
  return 0;
}

static void
choose_mode (struct nbd_export *e)
{
  e->per_queue = (e->multi_conn || e->read_only) && nbdp_cfg.connections == 0;
  e->nshared = nbdp_cfg.connections ? nbdp_cfg.connections : 1;
  if (e->nshared > 1 && !e->multi_conn && !e->read_only) {
    blkgate_error ("nbd: %s does not advertise multi-conn: using one "
                   "connection, not %u", nbdp_cfg.uri, e->nshared);
    e->nshared = 1;
  }
  blkgate_debug ("nbd: %s: size %" PRId64 ", block %" PRIu32 "..%" PRIu32
                 ", %s%s%s%s%s%s, %s", nbdp_cfg.uri, e->size, e->min_block,
                 e->max_payload, e->read_only ? "ro" : "rw",
                 e->can_flush ? " flush" : "", e->can_fua ? " fua" : "",
                 e->can_trim ? " trim" : "", e->can_zero ? " zero" : "",
                 e->multi_conn ? " multi-conn" : "",
                 e->per_queue ? "a connection per queue" : "shared");
}

static void *
nbdp_open (int readonly)
{
  struct nbd_export *e = calloc (1, sizeof *e);
  struct nbd_handle *h;

  if (e == NULL) {
    blkgate_error ("nbd: calloc: %m");
    return NULL;
  }
  pthread_mutex_init (&e->lock, NULL);
  if ((h = nbdp_new_handle ()) == NULL)
    goto err;
  if (nbd_connect_uri (h, nbdp_cfg.uri) == -1) {
    blkgate_error ("nbd: cannot connect to %s: %s", nbdp_cfg.uri,
                   nbd_get_error ());
    nbd_close (h);
    goto err;
  }
  if (probe (e, h, readonly) == -1) {
    nbd_close (h);
    goto err;
  }
  nbd_shutdown (h, 0);
  nbd_close (h);
  choose_mode (e);
  return e;

 err:
  pthread_mutex_destroy (&e->lock);
  free (e);
  return NULL;
}

static void
nbdp_close (void *handle)
{
  struct nbd_export *e = handle;
  unsigned i;

  for (i = 0; i < NBD_MAX_CONNS; i++)
    if (e->shared[i])
      conn_close (e->shared[i]);
  pthread_mutex_destroy (&e->lock);
  free (e);
}

static int64_t
nbdp_get_size (void *handle)
{
  return ((struct nbd_export *) handle)->size;
}

static int
nbdp_block_size (void *handle)
{
  struct nbd_export *e = handle;

  return e->min_block > 512 ? (int) e->min_block : 512;
}

static int
nbdp_can_write (void *handle)
{
  return !((struct nbd_export *) handle)->read_only;
}

static int
nbdp_can_flush (void *handle)
{
  return ((struct nbd_export *) handle)->can_flush;
}

static int
nbdp_can_trim (void *handle)
{
  return ((struct nbd_export *) handle)->can_trim;
}

static int
nbdp_can_zero (void *handle)
{
  return ((struct nbd_export *) handle)->can_zero;
}

static int
nbdp_can_fua (void *handle)
{
  return ((struct nbd_export *) handle)->can_fua ? BLKGATE_FUA_NATIVE
    : BLKGATE_FUA_NONE;
}

/* --- Queues ------------------------------------------------------------- */

/* Put c in the export's list of open connections (under e->lock); -1
 * when it is full. */
static int
register_conn (struct nbd_export *e, struct conn *c)
{
  unsigned i;

  for (i = 0; i < NBD_MAX_OPEN; i++)
    if (e->conns[i] == NULL) {
      e->conns[i] = c;
      return 0;
    }
  blkgate_error ("nbd: more than %d connections", NBD_MAX_OPEN);
  return -1;
}

static void
unregister_conn (struct nbd_export *e, struct conn *c)
{
  unsigned i;

  for (i = 0; i < NBD_MAX_OPEN; i++)
    if (e->conns[i] == c)
      e->conns[i] = NULL;
}

/* Per-queue mode: q's own connection, driven by q's thread.  The queue
 * index is only a name: the core may open contexts beyond the
 * virtqueues (the FUSE export does). */
static int
open_own (struct qctx *q)
{
  int r;

  if ((q->conn = conn_open (q->e, q->index, false)) == NULL)
    return -1;
  q->owns_conn = true;
  pthread_mutex_lock (&q->e->lock);
  r = register_conn (q->e, q->conn);
  pthread_mutex_unlock (&q->e->lock);
  if (r == -1) {
    conn_close (q->conn);
    q->conn = NULL;
  }
  return r;
}

/* Shared mode: every queue spreads its requests over all the shared
 * connections, opened by the first queue; completions come back
 * through q's eventfd. */
static int
open_shared (struct qctx *q)
{
  struct nbd_export *e = q->e;
  unsigned i;
  int r = 0;

  q->next = q->index;
  if ((q->efd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK)) == -1) {
    blkgate_error ("nbd: eventfd: %m");
    return -1;
  }
  pthread_mutex_lock (&e->lock);
  for (i = 0; i < e->nshared && r == 0; i++) {
    if (e->shared[i])
      continue;
    e->shared[i] = conn_open (e, i, true);
    if (e->shared[i] == NULL || register_conn (e, e->shared[i]) == -1)
      r = -1;
  }
  pthread_mutex_unlock (&e->lock);
  return r;
}

static void *
nbdp_queue_open (void *handle, unsigned index)
{
  struct nbd_export *e = handle;
  struct qctx *q = calloc (1, sizeof *q);

  if (q == NULL) {
    blkgate_error ("nbd: calloc: %m");
    return NULL;
  }
  q->e = e;
  q->index = index;
  q->efd = -1;
  pthread_mutex_init (&q->lock, NULL);
  TAILQ_INIT (&q->done);
  TAILQ_INIT (&q->free);
  if (e->per_queue ? open_own (q) == -1 : open_shared (q) == -1) {
    if (q->efd >= 0)
      close (q->efd);
    pthread_mutex_destroy (&q->lock);
    free (q);
    return NULL;
  }
  return q;
}

static void
free_nreq (struct nreq *r)
{
  free (r->heap_iov);
  free (r);
}

static void
nbdp_queue_close (void *qctx)
{
  struct qctx *q = qctx;
  struct nreq *r;

  if (q->owns_conn) {
    pthread_mutex_lock (&q->e->lock);
    unregister_conn (q->e, q->conn);
    pthread_mutex_unlock (&q->e->lock);
    conn_close (q->conn);
  }
  while ((r = TAILQ_FIRST (&q->free)) != NULL) {
    TAILQ_REMOVE (&q->free, r, link);
    free_nreq (r);
  }
  if (q->efd >= 0)
    close (q->efd);
  pthread_mutex_destroy (&q->lock);
  free (q);
}

/* r is finished (conn.c, under its connection's lock).  same_thread:
 * the caller is q's own thread, which drains q->done when it leaves
 * the plugin; otherwise q is woken through its eventfd. */
void
qctx_finished (struct qctx *q, struct nreq *r, bool same_thread)
{
  bool was_empty;

  pthread_mutex_lock (&q->lock);
  was_empty = TAILQ_EMPTY (&q->done);
  TAILQ_INSERT_TAIL (&q->done, r, link);
  pthread_mutex_unlock (&q->lock);
  if (!same_thread && was_empty && eventfd_write (q->efd, 1) == -1)
    blkgate_error ("nbd: eventfd: %m");
}

/* Complete q's finished requests (on q's thread, outside any lock). */
static void
drain (struct qctx *q)
{
  struct nreq_list done;
  struct nreq *r;

  TAILQ_INIT (&done);
  pthread_mutex_lock (&q->lock);
  TAILQ_CONCAT (&done, &q->done, link);
  pthread_mutex_unlock (&q->lock);
  while ((r = TAILQ_FIRST (&done)) != NULL) {
    struct blkgate_request *req = r->req;
    int err = r->err;

    TAILQ_REMOVE (&done, r, link);
    TAILQ_INSERT_HEAD (&q->free, r, link);
    blkgate_complete (req, err);
  }
}

static int
nbdp_get_fd (void *qctx, short *events)
{
  struct qctx *q = qctx;

  *events = POLLIN;
  if (!q->owns_conn)
    return q->efd;
  conn_lock (q->conn);
  conn_prepare (q->conn);
  conn_unlock (q->conn);
  return conn_epoll_fd (q->conn);
}

static int
nbdp_poll (void *qctx)
{
  struct qctx *q = qctx;
  eventfd_t v;

  if (q->owns_conn) {
    conn_lock (q->conn);
    conn_dispatch (q->conn);
    conn_unlock (q->conn);
  }
  else
    eventfd_read (q->efd, &v);
  drain (q);
  return 0;
}

static int
nbdp_submit (void *qctx)
{
  struct qctx *q = qctx;
  unsigned i;

  for (i = 0; !q->owns_conn && i < q->e->nshared; i++)
    if (q->kick[i]) {
      q->kick[i] = false;
      conn_wake (q->e->shared[i]);
    }
  return 0;
}

/* --- Requests ----------------------------------------------------------- */

/* A request from q's free list (or a new one) holding a copy of the
 * iovecs, which the core does not keep for us.  NULL when out of
 * memory. */
static struct nreq *
get_nreq (struct qctx *q, const struct iovec *iov, int iovcnt)
{
  struct nreq *r = TAILQ_FIRST (&q->free);

  if (r)
    TAILQ_REMOVE (&q->free, r, link);
  else if ((r = calloc (1, sizeof *r)) == NULL)
    return NULL;
  r->iov = r->inline_iov;
  if (iovcnt > NREQ_INLINE_IOV) {
    if (iovcnt > r->heap_cap) {
      struct iovec *a = realloc (r->heap_iov, iovcnt * sizeof *a);

      if (a == NULL) {
        TAILQ_INSERT_HEAD (&q->free, r, link);
        return NULL;
      }
      r->heap_iov = a;
      r->heap_cap = iovcnt;
    }
    r->iov = r->heap_iov;
  }
  if (iovcnt)
    memcpy (r->iov, iov, iovcnt * sizeof *iov);
  r->iovcnt = iovcnt;
  r->q = q;
  r->bounce = NULL;
  r->parts = 0;
  r->err = 0;
  r->lost = r->replay = r->sent = false;
  return r;
}

/* The server needs whole blocks: a guest buffer that is not a multiple
 * of them (the guest aligns only the request) goes through a bounce
 * buffer. */
static int
need_bounce (struct nreq *r)
{
  uint32_t mb = r->q->e->min_block;
  char *p;
  int i;

  if (mb == 1)
    return 0;
  for (i = 0; i < r->iovcnt; i++)
    if (r->iov[i].iov_len % mb)
      break;
  if (i == r->iovcnt)
    return 0;
  if ((r->bounce = malloc (r->count ? r->count : 1)) == NULL)
    return -1;
  if (r->type == NREQ_WRITE)
    for (p = r->bounce, i = 0; i < r->iovcnt; p += r->iov[i++].iov_len)
      memcpy (p, r->iov[i].iov_base, r->iov[i].iov_len);
  return 0;
}

static int
start (struct qctx *q, enum nreq_type type, const struct iovec *iov,
       int iovcnt, uint64_t offset, uint64_t count, uint32_t flags,
       struct blkgate_request *req)
{
  struct nreq *r = get_nreq (q, iov, iovcnt);
  struct conn *c;
  unsigned slot;
  int i;

  if (r == NULL)
    return -1;
  r->type = type;
  r->req = req;
  r->offset = offset;
  r->flags = flags;
  r->count = count;
  for (i = 0; i < iovcnt; i++)
    r->count += iov[i].iov_len;
  if (iovcnt && need_bounce (r) == -1) {
    TAILQ_INSERT_HEAD (&q->free, r, link);
    return -1;
  }
  slot = q->owns_conn ? 0 : q->next++ % q->e->nshared;
  c = q->owns_conn ? q->conn : q->e->shared[slot];
  conn_lock (c);
  conn_enqueue (c, r);
  conn_unlock (c);
  if (q->owns_conn)
    drain (q);                  /* it may have failed at once */
  else
    q->kick[slot] = true;
  return 0;
}

static int
nbdp_aio_preadv (void *qctx, const struct iovec *iov, int iovcnt,
                uint64_t offset, uint32_t flags, struct blkgate_request *req)
{
  return start (qctx, NREQ_READ, iov, iovcnt, offset, 0, flags, req);
}

static int
nbdp_aio_pwritev (void *qctx, const struct iovec *iov, int iovcnt,
                 uint64_t offset, uint32_t flags, struct blkgate_request *req)
{
  return start (qctx, NREQ_WRITE, iov, iovcnt, offset, 0, flags, req);
}

static int
nbdp_aio_flush (void *qctx, uint32_t flags, struct blkgate_request *req)
{
  return start (qctx, NREQ_FLUSH, NULL, 0, 0, 0, flags, req);
}

static int
nbdp_aio_trim (void *qctx, uint64_t offset, uint64_t count, uint32_t flags,
                 struct blkgate_request *req)
{
  return start (qctx, NREQ_TRIM, NULL, 0, offset, count, flags, req);
}

static int
nbdp_aio_zero (void *qctx, uint64_t offset, uint64_t count, uint32_t flags,
                 struct blkgate_request *req)
{
  return start (qctx, NREQ_ZERO, NULL, 0, offset, count, flags, req);
}

static int
nbdp_aio_cancel (void *qctx, struct blkgate_request *req)
{
  struct qctx *q = qctx;
  unsigned i, n = q->owns_conn ? 1 : q->e->nshared;

  for (i = 0; i < n; i++) {
    struct conn *c = q->owns_conn ? q->conn : q->e->shared[i];

    conn_lock (c);
    conn_cancel (c, q, req);
    conn_unlock (c);
  }
  drain (q);
  return 0;
}

static struct blkgate_plugin plugin = {
  .name = "nbd",
  .longname = "blkgate nbd plugin",
  .version = PACKAGE_VERSION,
  .description = "Serve a remote NBD export (libnbd), surviving server "
                 "restarts",
  .unload = nbdp_unload,
  .config = nbdp_config,
  .config_complete = nbdp_config_complete,
  .config_help =
    "[uri=]URI             nbd://HOST[:PORT]/EXPORT, nbd+unix:///EXPORT"
    "?socket=PATH,\n"
    "                      nbds://... (TLS): any URI libnbd accepts\n"
    "connections=N         N shared connections (default: one per queue\n"
    "                      with multi-conn, else 1)\n"
    "retry-timeout=SECS    fail requests after the server has been gone\n"
    "                      this long (default 60)\n"
    "tls-certificates=DIR  X.509 certificates for nbds://\n"
    "tls-verify=BOOL       verify the server's certificate (default on)\n"
    "tls-username=NAME     TLS user name\n"
    "tls-psk=FILE          TLS pre-shared keys file",
  .magic_config_key = "uri",
  .dump_plugin = nbdp_dump_plugin,
  .open = nbdp_open,
  .close = nbdp_close,
  .get_size = nbdp_get_size,
  .block_size = nbdp_block_size,
  .can_write = nbdp_can_write,
  .can_flush = nbdp_can_flush,
  .can_trim = nbdp_can_trim,
  .can_zero = nbdp_can_zero,
  .can_fua = nbdp_can_fua,
  .queue_open = nbdp_queue_open,
  .queue_close = nbdp_queue_close,
  .get_fd = nbdp_get_fd,
  .poll = nbdp_poll,
  .submit = nbdp_submit,
  .aio_preadv = nbdp_aio_preadv,
  .aio_pwritev = nbdp_aio_pwritev,
  .aio_flush = nbdp_aio_flush,
  .aio_trim = nbdp_aio_trim,
  .aio_zero = nbdp_aio_zero,
  .aio_cancel = nbdp_aio_cancel,
};

BLKGATE_REGISTER_PLUGIN (plugin)
