/* --fuse-export: the disk served as a regular file through libfuse3.
 *
 * The file is a FUSE mount whose root is a regular file: it is mounted
 * over PATH (created when missing, removed at exit).  Every open gets
 * direct_io, so no page cache stands between a reader and the plugin:
 * a read sees every write the guest has had acknowledged.
 *
 * Thread model: FUSE_THREADS loop threads read requests from /dev/fuse
 * (non-blocking, each poll()ing it and the stop eventfd) and run the
 * handlers below.  The handlers never call the plugin: they build a
 * struct request and post it to the mailbox (fx->mail, fx->mail_fd).
 * One export I/O thread owns the export's backend_queue, as a queue
 * thread owns its own (queue.c): it waits in epoll on the mailbox and
 * the plugin's fd, starts posted requests with backend_start and runs
 * their done hook (request.h), which replies to FUSE (libfuse replies
 * may come from any thread) or wakes a handler that waits for a step
 * of a longer operation (read-modify-write, fallocate) on fx->cond.
 * fx->lock guards the mailbox, the in-flight count, the waiters' flags,
 * the file's times and the stop state; rmw_lock serializes unaligned
 * writes.  fuse_export_start and fuse_export_stop run on the main
 * thread. */

#include <config.h>

#define FUSE_USE_VERSION 35

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/statfs.h>
#include <sys/statvfs.h>
#include <sys/wait.h>
#include <linux/falloc.h>
#include <fuse_lowlevel.h>
#include <glib.h>

#include "fuse-export.h"
#include "log.h"

#define FUSE_THREADS 4
/* The export's plugin queue: an index no virtqueue has (main.c allows
 * at most 256 of them). */
#define EXPORT_QUEUE_INDEX 1024
#define BUF_ALIGN 4096
#define ATTR_TIMEOUT 1.0
#define STALE_LAYERS 8

enum reply {
  REPLY_DATA,                   /* fuse_reply_buf of a slice of buf */
  REPLY_WRITE,                  /* fuse_reply_write of count */
  REPLY_STATUS,                 /* fuse_reply_err of the status */
  REPLY_WAKE,                   /* a handler waits for it (finished) */
};

/* One plugin request of the export. */
struct xreq {
  struct request r;
  struct fuse_export *fx;
  fuse_req_t freq;
  enum reply reply;
  char *buf;                    /* owned, aligned; NULL for no data */
  size_t skip, count;           /* the reply's slice of buf */
  struct iovec iov;
  bool finished;                /* REPLY_WAKE: done (under fx->lock) */
  struct xreq *next;            /* in the mailbox */
};

struct fuse_export {
  struct backend *be;
  char *path;
  bool writable, created;
  uid_t uid;
  gid_t gid;
  struct fuse_session *se;
  struct backend_queue bq;
  bool bq_open, io_started;
  pthread_t io_thread;
  pthread_t loops[FUSE_THREADS];
  unsigned nloops;              /* loop threads started */
  int mail_fd, stop_fd, epfd;
  int plugin_fd;
  short plugin_events;
  pthread_mutex_t rmw_lock;

  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct xreq *mail, **mail_tail;
  unsigned inflight;            /* posted and not done */
  unsigned loops_running;
  bool stopping, io_stop;
  struct timespec atime, mtime, ctime;
};

#define XREQ(req) \
  ((struct xreq *) ((char *) (req) - offsetof (struct xreq, r)))

static uint64_t
round_down (uint64_t x, uint64_t bs)
{
  return x / bs * bs;
}

static uint64_t
round_up (uint64_t x, uint64_t bs)
{
  return (x + bs - 1) / bs * bs;
}

/* --- Requests and the mailbox ------------------------------------------ */

static void
xreq_free (struct xreq *x)
{
  free (x->buf);
  free (x);
}

static void xreq_done (struct request *r);

/* A request for [off, off + len); READ and WRITE get an aligned buffer
 * of len bytes.  NULL when out of memory. */
static struct xreq *
xreq_new (struct fuse_export *fx, fuse_req_t freq, enum reply reply,
          enum blk_op op, uint64_t off, uint64_t len)
{
  struct xreq *x = calloc (1, sizeof *x);

  if (x == NULL)
    return NULL;
  x->fx = fx;
  x->freq = freq;
  x->reply = reply;
  x->r.done = xreq_done;
  x->r.blk.op = op;
  x->r.blk.offset = off;
  x->r.blk.len = len;
  if (op == BLK_OP_READ || op == BLK_OP_WRITE) {
    if (posix_memalign ((void **) &x->buf, BUF_ALIGN, len ? len : 1)) {
      free (x);
      return NULL;
    }
    x->iov = (struct iovec) { .iov_base = x->buf, .iov_len = len };
    x->r.blk.data = &x->iov;
    x->r.blk.ndata = 1;
  }
  return x;
}

/* Hands x to the I/O thread. */
static void
post (struct xreq *x)
{
  struct fuse_export *fx = x->fx;

  x->next = NULL;
  pthread_mutex_lock (&fx->lock);
  *fx->mail_tail = x;
  fx->mail_tail = &x->next;
  fx->inflight++;
  pthread_mutex_unlock (&fx->lock);
  eventfd_write (fx->mail_fd, 1);
}

/* Posts x and waits until it is done: 0 or its errno. */
static int
run_wait (struct xreq *x)
{
  struct fuse_export *fx = x->fx;

  x->reply = REPLY_WAKE;
  x->finished = false;
  post (x);
  pthread_mutex_lock (&fx->lock);
  while (!x->finished)
    pthread_cond_wait (&fx->cond, &fx->lock);
  pthread_mutex_unlock (&fx->lock);
  return x->r.err;
}

static void
reply (struct xreq *x)
{
  int err = x->r.err;

  switch (x->reply) {
  case REPLY_DATA:
    if (err)
      fuse_reply_err (x->freq, err);
    else
      fuse_reply_buf (x->freq, x->buf + x->skip, x->count);
    break;
  case REPLY_WRITE:
    if (err)
      fuse_reply_err (x->freq, err);
    else
      fuse_reply_write (x->freq, x->count);
    break;
  case REPLY_STATUS:
    fuse_reply_err (x->freq, err);
    break;
  case REPLY_WAKE:
    break;
  }
}

/* The done hook (request.h), on the I/O thread: every plugin call of
 * the request has completed. */
static void
xreq_done (struct request *r)
{
  struct xreq *x = XREQ (r);
  struct fuse_export *fx = x->fx;
  bool wake = x->reply == REPLY_WAKE;

  if (r->err)
    debug ("fuse export: request at %llu failed: %s",
           (unsigned long long) r->blk.offset, strerror (r->err));
  reply (x);
  pthread_mutex_lock (&fx->lock);
  fx->inflight--;
  x->finished = true;           /* x may be freed by its waiter now */
  pthread_cond_broadcast (&fx->cond);
  pthread_mutex_unlock (&fx->lock);
  if (!wake)
    xreq_free (x);
}

/* --- The I/O thread ----------------------------------------------------- */

enum { EV_MAIL, EV_PLUGIN };

/* Starts everything posted.  A request may complete inside
 * backend_start and be freed. */
static void
take_mail (struct fuse_export *fx)
{
  struct xreq *x, *next;
  eventfd_t v;

  eventfd_read (fx->mail_fd, &v);
  pthread_mutex_lock (&fx->lock);
  x = fx->mail;
  fx->mail = NULL;
  fx->mail_tail = &fx->mail;
  pthread_mutex_unlock (&fx->lock);
  for (; x; x = next) {
    next = x->next;
    backend_start (&fx->bq, &x->r);
  }
}

/* The plugin's fd and events may change: re-read before every wait,
 * as queue.c does. */
static void
watch_plugin_fd (struct fuse_export *fx)
{
  short events;
  int fd = backend_queue_fd (&fx->bq, &events);
  struct epoll_event ev = { .data.u32 = EV_PLUGIN };

  if (fd == fx->plugin_fd && events == fx->plugin_events)
    return;
  if (fx->plugin_fd >= 0 && fd != fx->plugin_fd)
    epoll_ctl (fx->epfd, EPOLL_CTL_DEL, fx->plugin_fd, NULL);
  ev.events = ((events & POLLIN) ? EPOLLIN : 0) |
    ((events & POLLOUT) ? EPOLLOUT : 0);
  if (fd >= 0 &&
      epoll_ctl (fx->epfd, fd == fx->plugin_fd ? EPOLL_CTL_MOD : EPOLL_CTL_ADD,
                 fd, &ev) == -1)
    blkgate_error ("fuse export: epoll_ctl plugin fd: %m");
  fx->plugin_fd = fd;
  fx->plugin_events = events;
}

static bool
io_done (struct fuse_export *fx)
{
  bool done;

  pthread_mutex_lock (&fx->lock);
  done = fx->io_stop && fx->inflight == 0;
  pthread_mutex_unlock (&fx->lock);
  return done;
}

static void *
io_thread (void *arg)
{
  struct fuse_export *fx = arg;
  struct epoll_event ev[16];
  int i, n;

  while (!io_done (fx)) {
    watch_plugin_fd (fx);
    n = epoll_wait (fx->epfd, ev, 16, -1);
    if (n == -1 && errno != EINTR) {
      blkgate_error ("fuse export: epoll_wait: %m");
      break;
    }
    for (i = 0; i < n; i++) {
      if (ev[i].data.u32 == EV_MAIL)
        take_mail (fx);
      else if (fx->be->async)
        backend_queue_poll (&fx->bq);
      else
        backend_queue_reap (&fx->bq);
    }
    backend_queue_submit (&fx->bq);
  }
  return NULL;
}

/* --- Attributes --------------------------------------------------------- */

static mode_t
file_mode (const struct fuse_export *fx)
{
  return fx->writable ? 0600 : 0400;
}

static void
fill_attr (struct fuse_export *fx, struct stat *st)
{
  memset (st, 0, sizeof *st);
  st->st_ino = FUSE_ROOT_ID;
  st->st_mode = S_IFREG | file_mode (fx);
  st->st_nlink = 1;
  st->st_uid = fx->uid;
  st->st_gid = fx->gid;
  st->st_size = fx->be->dev.size;
  st->st_blksize = fx->be->dev.blk_size;
  st->st_blocks = fx->be->dev.size / 512;
  pthread_mutex_lock (&fx->lock);
  st->st_atim = fx->atime;
  st->st_mtim = fx->mtime;
  st->st_ctim = fx->ctime;
  pthread_mutex_unlock (&fx->lock);
}

static void
touch (struct fuse_export *fx)
{
  struct timespec now;

  clock_gettime (CLOCK_REALTIME, &now);
  pthread_mutex_lock (&fx->lock);
  fx->mtime = fx->ctime = now;
  pthread_mutex_unlock (&fx->lock);
}

static void
op_getattr (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct stat st;

  fill_attr (fuse_req_userdata (req), &st);
  fuse_reply_attr (req, &st, ATTR_TIMEOUT);
}

/* The size, mode and owner are fixed: only a change to what they
 * already are is accepted. */
static int
check_setattr (const struct fuse_export *fx, const struct stat *a, int set)
{
  if ((set & FUSE_SET_ATTR_SIZE) && (uint64_t) a->st_size != fx->be->dev.size)
    return EPERM;
  if ((set & FUSE_SET_ATTR_MODE) && (a->st_mode & 07777) != file_mode (fx))
    return EPERM;
  if ((set & FUSE_SET_ATTR_UID) && a->st_uid != fx->uid)
    return EPERM;
  if ((set & FUSE_SET_ATTR_GID) && a->st_gid != fx->gid)
    return EPERM;
  return 0;
}

static void
op_setattr (fuse_req_t req, fuse_ino_t ino, struct stat *a, int set,
            struct fuse_file_info *fi)
{
  struct fuse_export *fx = fuse_req_userdata (req);
  struct timespec now;
  struct stat st;
  int err = check_setattr (fx, a, set);

  if (err) {
    fuse_reply_err (req, err);
    return;
  }
  clock_gettime (CLOCK_REALTIME, &now);
  pthread_mutex_lock (&fx->lock);
  if (set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_ATIME_NOW))
    fx->atime = (set & FUSE_SET_ATTR_ATIME_NOW) ? now : a->st_atim;
  if (set & (FUSE_SET_ATTR_MTIME | FUSE_SET_ATTR_MTIME_NOW))
    fx->mtime = (set & FUSE_SET_ATTR_MTIME_NOW) ? now : a->st_mtim;
  fx->ctime = now;
  pthread_mutex_unlock (&fx->lock);
  fill_attr (fx, &st);
  fuse_reply_attr (req, &st, ATTR_TIMEOUT);
}

static void
op_statfs (fuse_req_t req, fuse_ino_t ino)
{
  struct fuse_export *fx = fuse_req_userdata (req);
  struct statvfs sv = {
    .f_bsize = fx->be->dev.blk_size,
    .f_frsize = fx->be->dev.blk_size,
    .f_blocks = fx->be->dev.size / fx->be->dev.blk_size,
    .f_files = 1,
    .f_namemax = NAME_MAX,
  };

  fuse_reply_statfs (req, &sv);
}

/* --- Open, read, write -------------------------------------------------- */

/* No page cache (direct_io): every read and write goes to the plugin.
 * fh remembers whether the file was opened for writing. */
static void
op_open (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  struct fuse_export *fx = fuse_req_userdata (req);
  bool wr = (fi->flags & O_ACCMODE) != O_RDONLY;

  if (wr && !fx->writable) {
    fuse_reply_err (req, EROFS);
    return;
  }
  fi->direct_io = 1;
  fi->keep_cache = 0;
  fi->noflush = !wr;
  fi->fh = wr;
  fuse_reply_open (req, fi);
}

static void
op_release (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  fuse_reply_err (req, 0);
}

/* Reads the blocks covering the range and replies with its slice; a
 * read past the end is short. */
static void
op_read (fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
         struct fuse_file_info *fi)
{
  struct fuse_export *fx = fuse_req_userdata (req);
  uint64_t bs = fx->be->dev.blk_size, dsize = fx->be->dev.size;
  uint64_t end, a_off, a_end;
  struct xreq *x;

  if (size == 0 || (uint64_t) off >= dsize) {
    fuse_reply_buf (req, NULL, 0);
    return;
  }
  end = MIN ((uint64_t) off + size, dsize);
  a_off = round_down (off, bs);
  a_end = round_up (end, bs);
  x = xreq_new (fx, req, REPLY_DATA, BLK_OP_READ, a_off, a_end - a_off);
  if (x == NULL) {
    fuse_reply_err (req, ENOMEM);
    return;
  }
  x->skip = off - a_off;
  x->count = end - off;
  post (x);
}

/* Reads the block at off into dst (inside an aligned buffer). */
static int
read_block (struct fuse_export *fx, char *dst, uint64_t off)
{
  struct xreq *x = xreq_new (fx, NULL, REPLY_WAKE, BLK_OP_NONE, off, 0);
  int err;

  if (x == NULL)
    return ENOMEM;
  x->r.blk.op = BLK_OP_READ;
  x->r.blk.len = fx->be->dev.blk_size;
  x->iov = (struct iovec) { .iov_base = dst, .iov_len = x->r.blk.len };
  x->r.blk.data = &x->iov;
  x->r.blk.ndata = 1;
  err = run_wait (x);
  xreq_free (x);
  return err;
}

/* Fills the partial first and last blocks of x's covering range from
 * the disk, around [off, end). */
static int
read_edges (struct fuse_export *fx, struct xreq *x, uint64_t off,
            uint64_t end)
{
  uint64_t bs = fx->be->dev.blk_size, a_off = x->r.blk.offset;
  uint64_t a_end = a_off + x->r.blk.len;
  int err = 0;

  if (off != a_off)
    err = read_block (fx, x->buf, a_off);
  if (!err && end != a_end && (a_end - a_off > bs || off == a_off))
    err = read_block (fx, x->buf + (a_end - a_off - bs), a_end - bs);
  return err;
}

/* Writes data (NULL: zeroes) at an unaligned range: read-modify-write
 * of the blocks that cover it, one such write at a time.  It is not
 * atomic against a guest write to the same blocks in the meantime. */
static int
write_rmw (struct fuse_export *fx, const char *data, uint64_t off,
           uint64_t len)
{
  uint64_t bs = fx->be->dev.blk_size;
  uint64_t a_off = round_down (off, bs), a_end = round_up (off + len, bs);
  struct xreq *x = xreq_new (fx, NULL, REPLY_WAKE, BLK_OP_WRITE, a_off,
                             a_end - a_off);
  int err;

  if (x == NULL)
    return ENOMEM;
  pthread_mutex_lock (&fx->rmw_lock);
  err = read_edges (fx, x, off, off + len);
  if (!err) {
    if (data)
      memcpy (x->buf + (off - a_off), data, len);
    else
      memset (x->buf + (off - a_off), 0, len);
    err = run_wait (x);
  }
  pthread_mutex_unlock (&fx->rmw_lock);
  xreq_free (x);
  return err;
}

/* A write past the end is short; one at the end fails with ENOSPC,
 * like a block device's. */
static void
op_write (fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size,
          off_t off, struct fuse_file_info *fi)
{
  struct fuse_export *fx = fuse_req_userdata (req);
  uint64_t bs = fx->be->dev.blk_size, dsize = fx->be->dev.size;
  struct xreq *x;
  int err;

  if (!fx->writable) {
    fuse_reply_err (req, EROFS);
    return;
  }
  if (size == 0) {
    fuse_reply_write (req, 0);
    return;
  }
  if ((uint64_t) off >= dsize) {
    fuse_reply_err (req, ENOSPC);
    return;
  }
  size = MIN (size, dsize - off);
  touch (fx);
  if (off % bs || size % bs) {
    err = write_rmw (fx, buf, off, size);
    if (err)
      fuse_reply_err (req, err);
    else
      fuse_reply_write (req, size);
    return;
  }
  x = xreq_new (fx, req, REPLY_WRITE, BLK_OP_WRITE, off, size);
  if (x == NULL) {
    fuse_reply_err (req, ENOMEM);
    return;
  }
  memcpy (x->buf, buf, size);
  x->count = size;
  post (x);
}

/* --- Flush, fallocate --------------------------------------------------- */

static void
flush_disk (fuse_req_t req, struct fuse_export *fx)
{
  struct xreq *x;

  if (!fx->writable || !fx->be->dev.can_flush) {
    fuse_reply_err (req, 0);
    return;
  }
  x = xreq_new (fx, req, REPLY_STATUS, BLK_OP_FLUSH, 0, 0);
  if (x == NULL) {
    fuse_reply_err (req, ENOMEM);
    return;
  }
  post (x);
}

/* close() of a file opened for writing, and fsync, flush the disk. */
static void
op_flush (fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
  if (fi->fh)
    flush_disk (req, fuse_req_userdata (req));
  else
    fuse_reply_err (req, 0);
}

static void
op_fsync (fuse_req_t req, fuse_ino_t ino, int datasync,
          struct fuse_file_info *fi)
{
  flush_disk (req, fuse_req_userdata (req));
}

/* Zeroes an aligned range, in requests of up to BLK_MAX_SEGMENTS
 * segments of the device's largest write-zeroes. */
static int
zero_aligned (struct fuse_export *fx, uint64_t off, uint64_t len, bool unmap)
{
  uint64_t seg_max = (uint64_t) fx->be->dev.max_zero_sectors * BLK_SECTOR;
  struct xreq *x;
  unsigned n;
  int err;

  while (len > 0) {
    x = xreq_new (fx, NULL, REPLY_WAKE, BLK_OP_ZERO, off, 0);
    if (x == NULL)
      return ENOMEM;
    for (n = 0; n < BLK_MAX_SEGMENTS && len > 0; n++) {
      uint64_t l = MIN (len, seg_max);
      x->r.blk.seg[n] = (struct blk_seg) { .offset = off, .len = l,
                                           .unmap = unmap };
      off += l;
      len -= l;
    }
    x->r.blk.nseg = n;
    err = run_wait (x);
    xreq_free (x);
    if (err)
      return err;
  }
  return 0;
}

/* Zeroes [off, end): partial blocks by read-modify-write. */
static int
zero_range (struct fuse_export *fx, uint64_t off, uint64_t end, bool unmap)
{
  uint64_t bs = fx->be->dev.blk_size;
  uint64_t a = round_up (off, bs), b = round_down (end, bs);
  int err = 0;

  if (a >= b)
    return write_rmw (fx, NULL, off, end - off);
  if (off < a)
    err = write_rmw (fx, NULL, off, a - off);
  if (!err)
    err = zero_aligned (fx, a, b - a, unmap);
  if (!err && b < end)
    err = write_rmw (fx, NULL, b, end - b);
  return err;
}

/* PUNCH_HOLE|KEEP_SIZE: write-zeroes that may unmap (a plugin's trim
 * alone need not read back as zeroes); ZERO_RANGE: write-zeroes.  The
 * file cannot grow. */
static void
op_fallocate (fuse_req_t req, fuse_ino_t ino, int mode, off_t off,
              off_t len, struct fuse_file_info *fi)
{
  struct fuse_export *fx = fuse_req_userdata (req);
  uint64_t dsize = fx->be->dev.size, end = (uint64_t) off + len;
  bool punch = mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE);
  bool zero = (mode & ~FALLOC_FL_KEEP_SIZE) == FALLOC_FL_ZERO_RANGE;

  if (!fx->writable) {
    fuse_reply_err (req, EROFS);
    return;
  }
  if (!(punch || zero) || !fx->be->dev.can_zero) {
    fuse_reply_err (req, EOPNOTSUPP);
    return;
  }
  if (end > dsize && !(mode & FALLOC_FL_KEEP_SIZE)) {
    fuse_reply_err (req, ENOSPC);
    return;
  }
  end = MIN (end, dsize);
  if ((uint64_t) off >= end) {
    fuse_reply_err (req, 0);
    return;
  }
  touch (fx);
  fuse_reply_err (req, zero_range (fx, off, end, punch));
}

static const struct fuse_lowlevel_ops ops = {
  .getattr = op_getattr,
  .setattr = op_setattr,
  .open = op_open,
  .read = op_read,
  .write = op_write,
  .flush = op_flush,
  .release = op_release,
  .fsync = op_fsync,
  .statfs = op_statfs,
  .fallocate = op_fallocate,
};

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
  fx->se = fuse_session_new (&args, &ops, sizeof ops, fx);
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
start_io (struct fuse_export *fx)
{
  struct epoll_event ev = { .events = EPOLLIN, .data.u32 = EV_MAIL };

  fx->mail_fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
  fx->stop_fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
  fx->epfd = epoll_create1 (EPOLL_CLOEXEC);
  if (fx->mail_fd == -1 || fx->stop_fd == -1 || fx->epfd == -1 ||
      epoll_ctl (fx->epfd, EPOLL_CTL_ADD, fx->mail_fd, &ev) == -1) {
    blkgate_error ("fuse export: %m");
    return -1;
  }
  if (backend_queue_open (&fx->bq, fx->be, EXPORT_QUEUE_INDEX) == -1) {
    blkgate_error ("fuse export: cannot open a plugin queue");
    return -1;
  }
  fx->bq_open = true;
  if (pthread_create (&fx->io_thread, NULL, io_thread, fx) != 0) {
    blkgate_error ("fuse export: cannot start the I/O thread");
    return -1;
  }
  fx->io_started = true;
  return 0;
}

static int
start_loops (struct fuse_export *fx)
{
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

static void
close_fd (int fd)
{
  if (fd >= 0)
    close (fd);
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
  if (fx->io_started) {
    pthread_mutex_lock (&fx->lock);
    fx->io_stop = true;
    pthread_mutex_unlock (&fx->lock);
    eventfd_write (fx->mail_fd, 1);
    pthread_join (fx->io_thread, NULL);
  }
  if (fx->bq_open)
    backend_queue_close (&fx->bq);
  if (fx->se) {
    fuse_session_unmount (fx->se);
    fuse_session_destroy (fx->se);
  }
  if (fx->created && unlink (fx->path) == -1)
    blkgate_error ("fuse export: cannot remove %s: %m", fx->path);
  close_fd (fx->mail_fd);
  close_fd (fx->stop_fd);
  close_fd (fx->epfd);
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
      mount_session (fx) == -1 || start_io (fx) == -1 ||
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
