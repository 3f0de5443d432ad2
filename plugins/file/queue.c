/* blkgate file plugin: the asynchronous data path.
 *
 * Every virtqueue gets its own io_uring (file_queue_open) whose
 * completions are signalled on an eventfd that the core polls
 * (file_get_fd).  Reads and writes go straight between the file and
 * the guest buffers with IORING_OP_READV/WRITEV, flush is
 * IORING_OP_FSYNC, and trim and zero are IORING_OP_FALLOCATE, except
 * discard on a block device, which is a synchronous BLKDISCARD.
 *
 * Each request taken becomes a struct file_op.  Its CQE may show a
 * short transfer, EAGAIN/EINTR, or an error with a fallback; then
 * file_op_done pushes the op again (through the backlog if the SQ is
 * full and the kernel will not take more yet).  Otherwise it ends in
 * file_op_finish, the one place that calls blkgate_complete.
 *
 * Thread model: a queue context (struct file_queue) is used only on
 * its queue's thread, so nothing here takes a lock.
 */

#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <linux/fs.h>   /* BLKDISCARD */
#include <liburing.h>

#define BLKGATE_API_VERSION 1
#include <blkgate-plugin.h>

#include "file.h"

#define FILE_RING_ENTRIES 256 /* SQ size of each queue's io_uring */
#define FILE_INLINE_IOV   8   /* iovecs an op holds without a heap array */

enum file_op_type {
  FILE_OP_READ, FILE_OP_WRITE, FILE_OP_FSYNC, FILE_OP_TRIM, FILE_OP_ZERO
};

/* One request in flight.  Ops are recycled through a per-queue free
 * list, so the data path does not allocate once the queue is warm. */
struct file_op {
  struct file_op *next;       /* free list or backlog */
  struct file_op *all_next;   /* every op of the queue, for queue_close */
  struct blkgate_request *req;
  enum file_op_type type;
  int fd;
  int rw_flags;               /* RWF_DSYNC for FUA writes */
  int mode;                   /* fallocate mode */
  bool mode_retried;          /* zero already switched fallocate mode */
  bool sync_after;            /* FUA trim/zero: fdatasync when done */
  bool in_kernel;             /* an SQE for it is queued or submitted */
  uint64_t offset;
  uint64_t count;             /* fallocate length */
  struct iovec *iov;          /* what is left to transfer, inside iovs */
  int iovcnt;
  struct iovec *iovs;         /* inline_iov or a heap array */
  int iovs_cap;
  struct iovec inline_iov[FILE_INLINE_IOV];
};

struct file_queue {
  struct handle *h;
  struct io_uring ring;
  bool ring_ready;
  int efd;                     /* eventfd registered with the ring */
  bool no_zero_range;          /* ZERO_RANGE said EOPNOTSUPP: punch */
  unsigned inflight;           /* taken and not yet completed */
  struct file_op *free_ops;
  struct file_op *all_ops;
  struct file_op *backlog;     /* waiting for room in the SQ */
  struct file_op **backlog_tail;
};

/* Free every op the queue ever allocated. */
static void
file_queue_free (struct file_queue *q)
{
  while (q->all_ops) {
    struct file_op *op = q->all_ops;

    q->all_ops = op->all_next;
    if (op->iovs != op->inline_iov)
      free (op->iovs);
    free (op);
  }
  if (q->ring_ready)
    io_uring_queue_exit (&q->ring);
  if (q->efd >= 0)
    close (q->efd);
  free (q);
}

/* IORING_SETUP_COOP_TASKRUN (Linux 5.19): a completion from io-wq or
 * an interrupt is posted through task work in the queue thread, and by
 * default the kernel interrupts that thread (an IPI) to run it if it is
 * running in user space.  It never needs to: it enters the kernel every
 * round (epoll_wait, even with a zero timeout while it spins, and
 * io_uring_enter), and task work runs on the way out of any system call;
 * a thread asleep in epoll_wait is still woken.  On a tmpfs file with
 * inline=off this took the queue thread from 290K to 500K writes a second
 * (blkgate-io bench, depth 32).  Older kernels refuse the flag. */
static int
file_ring_init (struct io_uring *ring)
{
  int r = io_uring_queue_init (FILE_RING_ENTRIES, ring,
                               IORING_SETUP_COOP_TASKRUN);

  if (r == -EINVAL)
    r = io_uring_queue_init (FILE_RING_ENTRIES, ring, 0);
  return r;
}

/* One io_uring per queue, signalling completions on an eventfd. */
void *
file_queue_open (void *handle, unsigned queue_index)
{
  struct file_queue *q = calloc (1, sizeof *q);
  int r;

  if (q == NULL) {
    blkgate_error ("calloc: %m");
    return NULL;
  }
  q->h = handle;
  q->backlog_tail = &q->backlog;
  q->efd = eventfd (0, EFD_CLOEXEC | EFD_NONBLOCK);
  if (q->efd == -1) {
    blkgate_error ("eventfd: %m");
    goto err;
  }
  r = file_ring_init (&q->ring);
  if (r < 0) {
    errno = -r;
    blkgate_error ("io_uring_queue_init: %m");
    goto err;
  }
  q->ring_ready = true;
  /* Not io_uring_register_eventfd_async: completions from io-wq are
   * posted through task work in this thread, which does not count as
   * async, so the eventfd would never fire for them. */
  r = io_uring_register_eventfd (&q->ring, q->efd);
  if (r < 0) {
    errno = -r;
    blkgate_error ("io_uring_register_eventfd: %m");
    goto err;
  }
  return q;

 err:
  file_queue_free (q);
  return NULL;
}

/* The core waits for POLLIN on the eventfd, then calls file_poll. */
int
file_get_fd (void *qctx, short *events)
{
  *events = POLLIN;
  return ((struct file_queue *) qctx)->efd;
}

/* Fill one SQE from an op (a new one or the remainder of an old one). */
static void
file_op_prep (struct io_uring_sqe *sqe, struct file_op *op)
{
  switch (op->type) {
  case FILE_OP_READ:
    io_uring_prep_readv (sqe, op->fd, op->iov, op->iovcnt, op->offset);
    break;
  case FILE_OP_WRITE:
    io_uring_prep_writev (sqe, op->fd, op->iov, op->iovcnt, op->offset);
    sqe->rw_flags = op->rw_flags;
    break;
  case FILE_OP_FSYNC:
    io_uring_prep_fsync (sqe, op->fd, IORING_FSYNC_DATASYNC);
    break;
  case FILE_OP_TRIM:
  case FILE_OP_ZERO:
    io_uring_prep_fallocate (sqe, op->fd, op->mode, op->offset, op->count);
    break;
  }
  io_uring_sqe_set_data (sqe, op);
  op->in_kernel = true;
}

/* Push prepared SQEs to the kernel.  EAGAIN/EBUSY (no memory, or the
 * CQ overflowed) leave them in the SQ: poll submits them again once
 * completions have been reaped. */
static int
file_submit_ring (struct file_queue *q)
{
  int r = io_uring_submit (&q->ring);

  if (r >= 0 || r == -EAGAIN || r == -EBUSY || r == -EINTR)
    return 0;
  errno = -r;
  blkgate_error ("io_uring_submit: %m");
  return -1;
}

/* Get an SQE, submitting the full SQ first if need be.  NULL (with a
 * busy kernel, or older ops still waiting) means: use the backlog. */
static struct io_uring_sqe *
file_get_sqe (struct file_queue *q)
{
  struct io_uring_sqe *sqe;

  if (q->backlog)
    return NULL;
  sqe = io_uring_get_sqe (&q->ring);
  if (sqe == NULL && file_submit_ring (q) == 0)
    sqe = io_uring_get_sqe (&q->ring);
  return sqe;
}

/* Queue an op for the next submit, or in the backlog if the SQ is full. */
static void
file_op_push (struct file_queue *q, struct file_op *op)
{
  struct io_uring_sqe *sqe = file_get_sqe (q);

  if (sqe) {
    file_op_prep (sqe, op);
    return;
  }
  op->next = NULL;
  *q->backlog_tail = op;
  q->backlog_tail = &op->next;
}

/* Move the backlog into the SQ and submit everything prepared. */
static int
file_flush_queue (struct file_queue *q)
{
  while (q->backlog) {
    struct io_uring_sqe *sqe = io_uring_get_sqe (&q->ring);
    struct file_op *op = q->backlog;

    if (sqe == NULL) {
      if (file_submit_ring (q) == -1)
        return -1;
      sqe = io_uring_get_sqe (&q->ring);
      if (sqe == NULL)
        return 0;   /* the kernel is busy: poll retries */
    }
    q->backlog = op->next;
    if (q->backlog == NULL)
      q->backlog_tail = &q->backlog;
    file_op_prep (sqe, op);
  }
  if (io_uring_sq_ready (&q->ring) == 0)
    return 0;
  return file_submit_ring (q);
}

static void file_reap (struct file_queue *q);

/* Submits what is prepared and reaps what completed inside the submit
 * (buffered I/O on cached pages), so it is published in this round
 * rather than after another trip through epoll.  Reaping may push ops again (short
 * transfers, retries); a few rounds settle that, and if work is still
 * left the eventfd is written so that file_poll comes back to it. */
static int
file_run (struct file_queue *q)
{
  int i;

  for (i = 0; i < 4; i++) {
    if (file_flush_queue (q) == -1)
      return -1;
    file_reap (q);
    if (q->backlog == NULL && io_uring_sq_ready (&q->ring) == 0)
      return 0;
  }
  eventfd_write (q->efd, 1);
  return 0;
}

/* The core calls this once after a batch of aio_* calls. */
int
file_submit (void *qctx)
{
  return file_run (qctx);
}

/* Take an op off the free list (or allocate one) with room for iovcnt
 * iovecs.  NULL with errno set when out of memory. */
static struct file_op *
file_op_new (struct file_queue *q, enum file_op_type type,
             uint64_t offset, int iovcnt, struct blkgate_request *req)
{
  struct file_op *op = q->free_ops;

  if (op)
    q->free_ops = op->next;
  else {
    op = calloc (1, sizeof *op);
    if (op == NULL)
      return NULL;
    op->iovs = op->inline_iov;
    op->iovs_cap = FILE_INLINE_IOV;
    op->all_next = q->all_ops;
    q->all_ops = op;
  }
  if (iovcnt > op->iovs_cap) {
    struct iovec *iovs = malloc (iovcnt * sizeof *iovs);

    if (iovs == NULL) {
      op->next = q->free_ops;
      q->free_ops = op;
      return NULL;
    }
    if (op->iovs != op->inline_iov)
      free (op->iovs);
    op->iovs = iovs;
    op->iovs_cap = iovcnt;
  }
  op->type = type;
  op->offset = offset;
  op->req = req;
  op->fd = q->h->fd;
  op->rw_flags = 0;
  op->mode_retried = op->sync_after = false;
  q->inflight++;
  return op;
}

/* Recycle the op, then tell the core.  Every taken request ends here
 * exactly once. */
static void
file_op_finish (struct file_queue *q, struct file_op *op, int err)
{
  struct blkgate_request *req = op->req;

  op->next = q->free_ops;
  q->free_ops = op;
  q->inflight--;
  blkgate_complete (req, err);
}

/* Skip the n bytes just transferred; true if some are left. */
static bool
file_iov_advance (struct file_op *op, size_t n)
{
  op->offset += n;
  while (op->iovcnt > 0 && n >= op->iov->iov_len) {
    n -= op->iov->iov_len;
    op->iov++;
    op->iovcnt--;
  }
  if (op->iovcnt > 0) {
    op->iov->iov_base = (char *) op->iov->iov_base + n;
    op->iov->iov_len -= n;
  }
  return op->iovcnt > 0;
}

/* A read that hit end of file: what is left reads as zeroes. */
static void
file_iov_zero (struct file_op *op)
{
  int i;

  for (i = 0; i < op->iovcnt; i++)
    memset (op->iov[i].iov_base, 0, op->iov[i].iov_len);
}

/* Some errors have a second way to the same result: O_DIRECT refusing
 * a buffer goes through the page cache, and zero switches between
 * ZERO_RANGE and punching a hole once.  True if the op was changed
 * and should be submitted again. */
static bool
file_op_fallback (struct file_queue *q, struct file_op *op, int err)
{
  const struct handle *h = q->h;

  if (err == EINVAL && op->fd == h->dfd &&
      (op->type == FILE_OP_READ || op->type == FILE_OP_WRITE)) {
    op->fd = h->fd;
    return true;
  }
  if (err != EOPNOTSUPP || op->type != FILE_OP_ZERO || op->mode_retried)
    return false;
  op->mode_retried = true;
  if ((op->mode & FALLOC_FL_ZERO_RANGE) && h->can_punch) {
    q->no_zero_range = true;
    op->mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
    return true;
  }
  if ((op->mode & FALLOC_FL_PUNCH_HOLE) && h->can_zero_range) {
    op->mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;
    return true;
  }
  return false;
}

/* Handle one result (a CQE's, or a syscall's as -errno): finish the op
 * and return false, or return true when what is left of it must be
 * done again.  A short transfer is never success. */
static bool
file_op_step (struct file_queue *q, struct file_op *op, int res)
{
  bool rw = op->type == FILE_OP_READ || op->type == FILE_OP_WRITE;
  int err = 0;

  if (res == -EAGAIN || res == -EINTR)
    goto again;
  if (res < 0) {
    if (file_op_fallback (q, op, -res))
      goto again;
    err = -res;
  }
  else if (rw && res == 0) {
    if (op->type == FILE_OP_READ)
      file_iov_zero (op);
    else if (file_iov_advance (op, 0))
      err = EIO;   /* a write that makes no progress never will */
  }
  else if (rw && file_iov_advance (op, res))
    goto again;
  else if (op->sync_after) {
    op->sync_after = false;
    op->type = FILE_OP_FSYNC;
    goto again;
  }
  file_op_finish (q, op, err);
  return false;

 again:
  return true;
}

static void
file_op_done (struct file_queue *q, struct file_op *op, int res)
{
  if (file_op_step (q, op, res))
    file_op_push (q, op);
}

/* inline_rw (file_want_inline): the read or write is done now, with
 * preadv2/pwritev2, and completed before this returns.  Only a FUA
 * write's fallback could turn it into something else, which then goes
 * through io_uring as usual. */
static void
file_op_run_inline (struct file_queue *q, struct file_op *op)
{
  for (;;) {
    ssize_t r;

    if (op->type == FILE_OP_READ)
      r = preadv2 (op->fd, op->iov, op->iovcnt, op->offset, op->rw_flags);
    else if (op->type == FILE_OP_WRITE)
      r = pwritev2 (op->fd, op->iov, op->iovcnt, op->offset, op->rw_flags);
    else {
      file_op_push (q, op);
      return;
    }
    if (!file_op_step (q, op, r == -1 ? -errno : (int) r))
      return;
  }
}

/* Reap every CQE.  io_uring_peek_cqe also flushes an overflowed CQ. */
static void
file_reap (struct file_queue *q)
{
  struct io_uring_cqe *cqe;

  while (io_uring_peek_cqe (&q->ring, &cqe) == 0) {
    struct file_op *op = io_uring_cqe_get_data (cqe);
    int res = cqe->res;

    io_uring_cqe_seen (&q->ring, cqe);
    if (op == NULL)             /* the answer to a cancel SQE */
      continue;
    op->in_kernel = false;
    file_op_done (q, op, res);
  }
}

/* The eventfd fired.  Clear it before reaping, so that a CQE posted
 * meanwhile fires it again rather than being missed. */
int
file_poll (void *qctx)
{
  struct file_queue *q = qctx;
  eventfd_t v;

  if (eventfd_read (q->efd, &v) == -1 && errno != EAGAIN) {
    blkgate_error ("eventfd_read: %m");
    return -1;
  }
  file_reap (q);
  return file_run (q);
}

/* Takes the ops of req out of the backlog and finishes them. */
static void
file_cancel_backlog (struct file_queue *q, struct blkgate_request *req)
{
  struct file_op **pp = &q->backlog, *op;

  while ((op = *pp) != NULL) {
    if (op->req == req) {
      *pp = op->next;
      file_op_finish (q, op, ECANCELED);
    }
    else
      pp = &op->next;
  }
  q->backlog_tail = &q->backlog;
  while (*q->backlog_tail)
    q->backlog_tail = &(*q->backlog_tail)->next;
}

/* Best effort.  Ops still in the backlog never reached the kernel and
 * finish at once; ops in the kernel get an IORING_OP_ASYNC_CANCEL,
 * which succeeds only while the I/O waits in io-wq (the op then
 * completes with -ECANCELED); one already running completes normally,
 * so a write that has started is never cut loose. */
int
file_aio_cancel (void *qctx, struct blkgate_request *req)
{
  struct file_queue *q = qctx;
  struct file_op *op;

  file_cancel_backlog (q, req);
  for (op = q->all_ops; op; op = op->all_next) {
    struct io_uring_sqe *sqe;

    if (op->req != req || !op->in_kernel)
      continue;
    sqe = file_get_sqe (q);
    if (sqe == NULL)
      return 0;                 /* no room: it will just complete */
    io_uring_prep_cancel (sqe, op, 0);
    io_uring_sqe_set_data (sqe, NULL);
  }
  return 0;
}

/* The core should close a queue only once its requests completed.  If
 * some are still in flight, wait for them (and complete them) here:
 * otherwise the kernel could write into guest memory after we return. */
void
file_queue_close (void *qctx)
{
  struct file_queue *q = qctx;
  struct io_uring_cqe *cqe;

  while (q->inflight > 0) {
    if (file_flush_queue (q) == -1 ||
        io_uring_wait_cqe (&q->ring, &cqe) < 0)
      break;
    file_reap (q);
  }
  file_queue_free (q);
}

/* O_DIRECT takes a request only if the offset and every buffer and
 * length are aligned; anything else goes through the page cache. */
static bool
file_use_direct (const struct handle *h, const struct iovec *iov,
                 int iovcnt, uint64_t offset)
{
  int i;

  if (h->dfd == -1 || offset % h->off_align)
    return false;
  for (i = 0; i < iovcnt; i++)
    if ((uintptr_t) iov[i].iov_base % h->mem_align ||
        iov[i].iov_len % h->off_align)
      return false;
  return true;
}

/* Reads and writes work on the guest buffers themselves; only the
 * iovec array is copied, since the remainder of a short transfer must
 * be resubmitted after the core's array is gone. */
static int
file_aio_rw (struct file_queue *q, enum file_op_type type,
             const struct iovec *iov, int iovcnt, uint64_t offset,
             int rw_flags, struct blkgate_request *req)
{
  struct file_op *op = file_op_new (q, type, offset, iovcnt, req);

  if (op == NULL)
    return -1;
  memcpy (op->iovs, iov, iovcnt * sizeof *iov);
  op->iov = op->iovs;
  op->iovcnt = iovcnt;
  op->rw_flags = rw_flags;
  if (file_use_direct (q->h, iov, iovcnt, offset))
    op->fd = q->h->dfd;
  if (q->h->inline_rw)
    file_op_run_inline (q, op);
  else
    file_op_push (q, op);
  return 0;
}

/* Reads never carry flags. */
int
file_aio_preadv (void *qctx, const struct iovec *iov, int iovcnt,
                 uint64_t offset, uint32_t flags,
                 struct blkgate_request *req)
{
  return file_aio_rw (qctx, FILE_OP_READ, iov, iovcnt, offset, 0, req);
}

/* FUA becomes RWF_DSYNC on this one write, not a flush of the file. */
int
file_aio_pwritev (void *qctx, const struct iovec *iov, int iovcnt,
                  uint64_t offset, uint32_t flags,
                  struct blkgate_request *req)
{
  int rw_flags = (flags & BLKGATE_FLAG_FUA) ? RWF_DSYNC : 0;

  return file_aio_rw (qctx, FILE_OP_WRITE, iov, iovcnt, offset, rw_flags,
                      req);
}

/* fdatasync on either fd flushes the whole file. */
int
file_aio_flush (void *qctx, uint32_t flags, struct blkgate_request *req)
{
  struct file_op *op = file_op_new (qctx, FILE_OP_FSYNC, 0, 0, req);

  if (op == NULL)
    return -1;
  file_op_push (qctx, op);
  return 0;
}

/* Trim and zero both become an fallocate (plus fdatasync for FUA). */
static int
file_aio_fallocate (struct file_queue *q, enum file_op_type type, int mode,
                    uint64_t offset, uint64_t count, uint32_t flags,
                    struct blkgate_request *req)
{
  struct file_op *op = file_op_new (q, type, offset, 0, req);

  if (op == NULL)
    return -1;
  op->mode = mode;
  op->count = count;
  op->sync_after = (flags & BLKGATE_FLAG_FUA) != 0;
  file_op_push (q, op);
  return 0;
}

/* Regular files punch a hole.  Block devices have no async discard in
 * liburing 2.3, so BLKDISCARD runs synchronously here and blocks this
 * queue while it runs; discard is rare and the kernel splits it. */
int
file_aio_trim (void *qctx, uint64_t offset, uint64_t count, uint32_t flags,
               struct blkgate_request *req)
{
  struct file_queue *q = qctx;

  if (q->h->is_bdev) {
    uint64_t range[2] = { offset, count };
    int err = ioctl (q->h->fd, BLKDISCARD, range) == -1 ? errno : 0;

    blkgate_complete (req, err);
    return 0;
  }
  return file_aio_fallocate (q, FILE_OP_TRIM,
                             FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                             offset, count, flags, req);
}

/* ZERO_RANGE keeps the blocks allocated; punching is used when the
 * guest allows unmapping or ZERO_RANGE is unavailable (tmpfs).  On a
 * block device both run blkdev_issue_zeroout in the kernel. */
int
file_aio_zero (void *qctx, uint64_t offset, uint64_t count, uint32_t flags,
               struct blkgate_request *req)
{
  struct file_queue *q = qctx;
  const struct handle *h = q->h;
  int mode = FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE;

  if (h->can_punch &&
      ((flags & BLKGATE_FLAG_MAY_TRIM) || q->no_zero_range ||
       !h->can_zero_range))
    mode = FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE;
  return file_aio_fallocate (q, FILE_OP_ZERO, mode, offset, count, flags,
                             req);
}
