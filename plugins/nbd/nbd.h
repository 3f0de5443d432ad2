/* blkgate nbd plugin: shared definitions.
 *
 * nbd.c holds the configuration, the export (what the server offers)
 * and the plugin callbacks; conn.c holds one NBD connection: its
 * libnbd handle, its requests, loss and reconnection.
 */

#ifndef BLKGATE_NBD_H
#define BLKGATE_NBD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/queue.h>
#include <sys/uio.h>

#include <libnbd.h>

#define NBD_MAX_CONNS 256
#define NBD_MAX_OPEN (2 * NBD_MAX_CONNS) /* queues + other contexts */
#define NREQ_INLINE_IOV 8      /* iovecs a request holds without the heap */

/* Configuration, set in config/config_complete, read-only after. */
struct nbd_config {
  char *uri;
  unsigned connections;         /* 0: one per queue (multi-conn) */
  int64_t retry_timeout_ms;
  char *tls_certificates;
  int tls_verify;               /* -1: libnbd's default */
  char *tls_username;
  char *tls_psk;
};
extern struct nbd_config nbdp_cfg;

/* What the server offered at start-up (the plugin handle). */
struct nbd_export {
  int64_t size;
  uint32_t min_block;           /* the server's minimum block size, >= 1 */
  uint32_t max_payload;         /* bytes per NBD read or write */
  bool read_only;               /* by the server or by -r */
  bool can_flush, can_fua, can_trim, can_zero, multi_conn;
  bool per_queue;               /* one connection per queue, driven by it */
  unsigned nshared;             /* otherwise: this many shared connections */

  /* Writes lost with a connection and not yet replayed, over every
   * connection: a flush waits while this is non-zero. */
  atomic_uint replay_writes;

  pthread_mutex_t lock;         /* guards conns[] */
  struct conn *conns[NBD_MAX_OPEN]; /* every open connection, in any slot */
  struct conn *shared[NBD_MAX_CONNS];
};

enum nreq_type { NREQ_READ, NREQ_WRITE, NREQ_FLUSH, NREQ_TRIM, NREQ_ZERO };

struct qctx;

/* One plugin call.  It lives on exactly one list at a time: its
 * connection's pending or sent list, the settled list while its last
 * command is being handled, its queue's done list, or the queue's free
 * list. */
struct nreq {
  TAILQ_ENTRY (nreq) link;
  struct qctx *q;               /* the queue that completes it */
  struct conn *conn;            /* the connection that sends it */
  struct blkgate_request *req;
  uint64_t seq;                 /* order of arrival on its connection */
  enum nreq_type type;
  uint32_t flags;               /* BLKGATE_FLAG_* */
  struct iovec *iov;            /* a copy: the core's array is not kept */
  int iovcnt;
  uint64_t offset, count;
  void *bounce;                 /* when the iovecs break the alignment */
  unsigned parts;               /* NBD commands still outstanding */
  int err;                      /* first error the server reported */
  bool lost;                    /* a command was lost with the connection */
  bool replay;                  /* counted in replay_writes */
  bool sent;
  /* Kept across reuse: room for the copy of the iovecs. */
  struct iovec inline_iov[NREQ_INLINE_IOV];
  struct iovec *heap_iov;
  int heap_cap;
};
TAILQ_HEAD (nreq_list, nreq);

/* One virtqueue's context. */
struct qctx {
  struct nbd_export *e;
  unsigned index;
  struct conn *conn;            /* per-queue mode: its own, it drives it */
  bool owns_conn;
  unsigned next;                /* shared mode: the next connection to use */
  bool kick[NBD_MAX_CONNS];     /* shared mode: connections to wake */
  int efd;                      /* shared mode: completions are ready */
  pthread_mutex_t lock;         /* guards done */
  struct nreq_list done;
  struct nreq_list free;        /* used by the queue thread only */
};

/* conn.c */
extern struct conn *conn_open (struct nbd_export *e, unsigned index,
                               bool threaded);
extern void conn_close (struct conn *c);
extern int conn_epoll_fd (struct conn *c);
extern void conn_prepare (struct conn *c);
extern void conn_dispatch (struct conn *c);
extern void conn_enqueue (struct conn *c, struct nreq *r);
extern void conn_wake (struct conn *c);
extern int conn_cancel (struct conn *c, struct qctx *q,
                        struct blkgate_request *req);
extern void conn_lock (struct conn *c);
extern void conn_unlock (struct conn *c);
extern struct nbd_handle *nbdp_new_handle (void);

/* nbd.c */
extern void qctx_finished (struct qctx *q, struct nreq *r, bool same_thread);

#endif /* BLKGATE_NBD_H */
