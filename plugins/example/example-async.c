/* blkgate example-async plugin: a RAM disk served by a worker thread
 * per queue, as a template for asynchronous plugins.
 *
 * An asynchronous plugin sets .queue_open.  Each virtqueue then has
 * its own thread in the daemon, which calls the plugin's aio_*
 * callbacks with a request token; the callback only starts the work
 * and returns at once, and the plugin reports the result later with
 * blkgate_complete (req, err).
 *
 * The one rule that shapes this file: blkgate_complete is called on
 * the queue's thread, from inside one of the plugin's callbacks for
 * that queue (an aio_* call, submit or poll).  So work finished by
 * another thread has to be handed back.  The mechanism the ABI gives
 * for that is .get_fd: the queue thread watches the descriptor it
 * returns and calls .poll when it is ready.  Here:
 *
 *   aio_*    (queue thread)  queue a job on the queue's batch list
 *   submit   (queue thread)  hand the batch to the worker, wake it
 *   worker   (own thread)    do the memcpy, move the job to the done
 *                            list, write 1 to the eventfd
 *   get_fd   (queue thread)  the eventfd, POLLIN
 *   poll     (queue thread)  drain the eventfd, blkgate_complete
 *                            every done job
 *
 * A real plugin replaces the worker with its I/O engine (io_uring,
 * libnbd, a socket): the shape stays the same.  See blkgate-plugin(3),
 * THREADS.
 */

#ifdef HAVE_CONFIG_H
#include <config.h>
#endif

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#define BLKGATE_API_VERSION 1
/* Async plugins are called on the queue threads whatever the model
 * says; it must still be one of the two. */
#define BLKGATE_THREAD_MODEL BLKGATE_THREAD_MODEL_PARALLEL
#include <blkgate-plugin.h>

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "1.0"
#endif

enum op { OP_READ, OP_WRITE, OP_ZERO };

/* One operation between its aio_* call and its blkgate_complete. */
struct job {
  struct job *next;
  enum op op;
  uint64_t offset, count;
  struct blkgate_request *req;
  int iovcnt;
  /* A copy of the iovec array: the daemon's array is only valid during
   * the aio_* call.  The guest buffers it points to stay valid until
   * blkgate_complete. */
  struct iovec iov[];
};

/* A list with a tail, so jobs are done in the order they came. */
struct list {
  struct job *head, **tail;
};

/* A queue context: one per started virtqueue. */
struct queue {
  struct list batch;         /* queue thread only: not yet submitted */
  pthread_mutex_t lock;      /* protects todo, done and stop */
  pthread_cond_t cond;       /* todo has jobs, or stop */
  struct list todo, done;
  bool stop;
  pthread_t worker;
  int efd;                   /* eventfd: done has jobs */
};

static int64_t size = -1;    /* size= */
static char *disk;           /* shared by all queues: see do_job */

static void
list_init (struct list *l)
{
  l->head = NULL;
  l->tail = &l->head;
}

/* Append all of src to dst, leaving src empty. */
static void
list_move (struct list *dst, struct list *src)
{
  if (src->head) {
    *dst->tail = src->head;
    dst->tail = src->tail;
  }
  list_init (src);
}

static int
example_async_config (const char *key, const char *value)
{
  if (strcmp (key, "size") == 0) {
    size = blkgate_parse_size (value);
    return size == -1 ? -1 : 0;
  }
  blkgate_error ("unknown parameter '%s'", key);
  return -1;
}

static int
example_async_config_complete (void)
{
  if (size == -1) {
    blkgate_error ("you must supply the size=SIZE parameter");
    return -1;
  }
  disk = calloc (1, size > 0 ? size : 1);
  if (disk == NULL) {
    blkgate_error ("cannot allocate %lld bytes: %m", (long long) size);
    return -1;
  }
  return 0;
}

static void
example_async_unload (void)
{
  free (disk);
}

static void *
example_async_open (int readonly)
{
  return disk;
}

static int64_t
example_async_get_size (void *handle)
{
  return size;
}

/* The actual I/O, on the worker.  Queues share the disk, but requests
 * in flight touch disjoint bytes, so no lock is needed. */
static void
do_job (const struct job *j)
{
  uint64_t off = j->offset;
  int i;

  for (i = 0; i < j->iovcnt; i++) {
    if (j->op == OP_READ)
      memcpy (j->iov[i].iov_base, disk + off, j->iov[i].iov_len);
    else
      memcpy (disk + off, j->iov[i].iov_base, j->iov[i].iov_len);
    off += j->iov[i].iov_len;
  }
  if (j->op == OP_ZERO)
    memset (disk + j->offset, 0, j->count);
}

/* The worker: take what submit handed over, do it, pass it back. */
static void *
worker (void *arg)
{
  struct queue *q = arg;
  struct list work;
  const uint64_t one = 1;

  pthread_mutex_lock (&q->lock);
  while (!q->stop) {
    if (q->todo.head == NULL) {
      pthread_cond_wait (&q->cond, &q->lock);
      continue;
    }
    list_init (&work);
    list_move (&work, &q->todo);
    pthread_mutex_unlock (&q->lock);
    for (struct job *j = work.head; j; j = j->next)
      do_job (j);
    pthread_mutex_lock (&q->lock);
    list_move (&q->done, &work);
    /* Wake the queue thread.  The counter cannot overflow in practice:
     * poll resets it every time. */
    if (write (q->efd, &one, sizeof one) != sizeof one)
      abort ();
  }
  pthread_mutex_unlock (&q->lock);
  return NULL;
}

/* Main thread, when the guest starts a virtqueue.  Threads are
 * started here rather than in open: in daemon mode the process forks
 * after open, and threads do not survive a fork. */
static void *
example_async_queue_open (void *handle, unsigned queue_index)
{
  struct queue *q = calloc (1, sizeof *q);
  int err;

  if (q == NULL) {
    blkgate_error ("calloc: %m");
    return NULL;
  }
  list_init (&q->batch);
  list_init (&q->todo);
  list_init (&q->done);
  pthread_mutex_init (&q->lock, NULL);
  pthread_cond_init (&q->cond, NULL);
  q->efd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (q->efd == -1)
    blkgate_error ("eventfd: %m");
  else if ((err = pthread_create (&q->worker, NULL, worker, q)) != 0) {
    errno = err;
    blkgate_error ("pthread_create: %m");
    close (q->efd);
    q->efd = -1;
  }
  if (q->efd == -1) {
    free (q);
    return NULL;   /* the ring fails to start */
  }
  blkgate_debug ("example-async: queue %u open", queue_index);
  return q;
}

/* Main thread, after the queue thread ended and every request taken on
 * this context completed: the lists are empty, only the worker is left
 * to stop. */
static void
example_async_queue_close (void *qctx)
{
  struct queue *q = qctx;

  pthread_mutex_lock (&q->lock);
  q->stop = true;
  pthread_cond_signal (&q->cond);
  pthread_mutex_unlock (&q->lock);
  pthread_join (q->worker, NULL);
  close (q->efd);
  pthread_mutex_destroy (&q->lock);
  pthread_cond_destroy (&q->cond);
  free (q);
}

/* Queue thread, before every wait: watch the eventfd for POLLIN. */
static int
example_async_get_fd (void *qctx, short *events)
{
  struct queue *q = qctx;

  *events = POLLIN;
  return q->efd;
}

/* Queue thread, after a batch of aio_* calls: one wake-up for all. */
static int
example_async_submit (void *qctx)
{
  struct queue *q = qctx;

  if (q->batch.head == NULL)
    return 0;
  pthread_mutex_lock (&q->lock);
  list_move (&q->todo, &q->batch);
  pthread_cond_signal (&q->cond);
  pthread_mutex_unlock (&q->lock);
  return 0;
}

/* Queue thread, when the eventfd is readable: complete what is done.
 * This is where blkgate_complete may be called for work finished on
 * another thread. */
static int
example_async_poll (void *qctx)
{
  struct queue *q = qctx;
  struct list done;
  uint64_t n;
  struct job *j;

  if (read (q->efd, &n, sizeof n) == -1 && errno != EAGAIN)
    blkgate_error ("example-async: eventfd: %m");
  list_init (&done);
  pthread_mutex_lock (&q->lock);
  list_move (&done, &q->done);
  pthread_mutex_unlock (&q->lock);
  while ((j = done.head) != NULL) {
    done.head = j->next;
    blkgate_complete (j->req, 0);   /* or a positive errno */
    free (j);
  }
  return 0;
}

/* Queue thread: take an operation.  Never block here.  Return -1 with
 * errno if it cannot be taken (then it must not be completed). */
static int
queue_job (void *qctx, enum op op, const struct iovec *iov, int iovcnt,
           uint64_t offset, uint64_t count, struct blkgate_request *req)
{
  struct queue *q = qctx;
  struct job *j = malloc (sizeof *j + iovcnt * sizeof *iov);

  if (j == NULL)
    return -1;   /* errno is ENOMEM: the guest sees an I/O error */
  j->next = NULL;
  j->op = op;
  j->offset = offset;
  j->count = count;
  j->req = req;
  j->iovcnt = iovcnt;
  if (iovcnt > 0)
    memcpy (j->iov, iov, iovcnt * sizeof *iov);
  *q->batch.tail = j;
  q->batch.tail = &j->next;
  return 0;
}

static int
example_async_aio_preadv (void *qctx, const struct iovec *iov, int iovcnt,
                          uint64_t offset, uint32_t flags,
                          struct blkgate_request *req)
{
  return queue_job (qctx, OP_READ, iov, iovcnt, offset, 0, req);
}

static int
example_async_aio_pwritev (void *qctx, const struct iovec *iov, int iovcnt,
                           uint64_t offset, uint32_t flags,
                           struct blkgate_request *req)
{
  return queue_job (qctx, OP_WRITE, iov, iovcnt, offset, 0, req);
}

static int
example_async_aio_zero (void *qctx, uint64_t offset, uint64_t count,
                        uint32_t flags, struct blkgate_request *req)
{
  return queue_job (qctx, OP_ZERO, NULL, 0, offset, count, req);
}

/* No .aio_flush: RAM has no write cache to flush, and without it the
 * guest is offered none.  No .aio_cancel: a migration waits for the
 * (short) jobs under way instead. */
static struct blkgate_plugin plugin = {
  .name              = "example-async",
  .longname          = "blkgate example asynchronous plugin",
  .version           = PACKAGE_VERSION,
  .description       = "a RAM disk served by a worker thread per queue: "
                       "the template for asynchronous plugins",
  .config            = example_async_config,
  .config_complete   = example_async_config_complete,
  .config_help       = "size=<SIZE>  (required) Size of the disk.",
  .magic_config_key  = "size",
  .unload            = example_async_unload,
  .open              = example_async_open,
  .get_size          = example_async_get_size,
  .queue_open        = example_async_queue_open,
  .queue_close       = example_async_queue_close,
  .get_fd            = example_async_get_fd,
  .poll              = example_async_poll,
  .submit            = example_async_submit,
  .aio_preadv        = example_async_aio_preadv,
  .aio_pwritev       = example_async_aio_pwritev,
  .aio_zero          = example_async_aio_zero,
};

BLKGATE_REGISTER_PLUGIN (plugin)
