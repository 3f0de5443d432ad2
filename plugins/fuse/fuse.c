/* blkgate fuse plugin: serve an image that lives on a FUSE file system
 * (sshfs, s3fs, nbdfuse, ...) and survive a restart of its daemon.
 *
 * Data path: plain preadv/pwritev2/fdatasync/fallocate on one fd,
 * without O_DIRECT unless direct=on (FUSE file systems often refuse
 * it).  FUSE itself needs no aligned buffers for O_DIRECT, but a file
 * system that is not FUSE, or FUSE in passthrough mode, may: with
 * direct=on a second, buffered fd (h->bfd) serves the reads and writes
 * that O_DIRECT refuses with EINVAL, as in the file plugin.
 *
 * Thread model: PARALLEL.  The core runs the sync calls on its worker
 * threads.  Every call uses the same fd numbers, h->fd and h->bfd, for
 * the life of the handle: a reopen installs the new files under them with
 * dup3, which is atomic, and a call already inside the kernel keeps
 * its reference to the old file until it returns, so nothing is ever
 * closed under a worker.
 *
 * When the daemon dies, the kernel fails calls with ECONNABORTED (those
 * in flight) and ENOTCONN (the others); a remounted or replaced file
 * gives ESTALE or ENODEV.  Such a call is not failed: the worker holds
 * it and it is run again once the file could be opened again.  One
 * worker at a time tries to reopen (h->reopening): at once, then 50 ms
 * later, doubling up to one second apart; the others wait on h->cond.
 * h->gen counts the reopens, so that a worker whose call failed on a
 * file that has already been replaced simply runs it again.  After
 * retry-timeout seconds without the file, the held calls fail with
 * EIO, and so does every new one, at once (after one attempt to
 * reopen, so that the first call after the file system is back works).
 *
 * EIO is ambiguous: it is a loss only when the path no longer leads to
 * the file (stat fails, or finds another device or inode).  Otherwise
 * the file is reopened at once and the call run once more, because a
 * FUSE daemon that reconnects to its server by itself (sshfs -o
 * reconnect) fails the files opened before with EIO; a second EIO goes
 * to the guest.  A flush is never run again after EIO on a live mount:
 * a new file would not see the error of the old one.
 *
 * h->lock guards the recovery state (the fields after "Recovery");
 * the write and flush counters are atomics.  Writes that completed
 * since the last flush are logged at a reopen (the old daemon may have
 * lost them) and, with strict-flush=on, fail the next flush.
 */

#ifdef HAVE_CONFIG_H
#include <config.h>
#endif
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/vfs.h>

#define BLKGATE_API_VERSION 1
#define BLKGATE_THREAD_MODEL BLKGATE_THREAD_MODEL_PARALLEL
#include <blkgate-plugin.h>

#ifndef PACKAGE_VERSION
#define PACKAGE_VERSION "unknown"
#endif

#ifndef FUSE_SUPER_MAGIC
#define FUSE_SUPER_MAGIC 0x65735546
#endif

#define PROBE_LEN      4096
#define BACKOFF_MIN_MS 50
#define BACKOFF_MAX_MS 1000
#define DEFAULT_RETRY_TIMEOUT_S 60

/* Configuration: written only in config/config_complete. */
static char *fuse_path;                     /* file=, made absolute */
static int64_t retry_timeout_ms = DEFAULT_RETRY_TIMEOUT_S * 1000;
static bool fuse_direct;                    /* direct= */
static bool strict_flush;                   /* strict-flush= */

struct handle {
  int fd;                      /* the same number for the handle's life */
  int bfd;                     /* direct=on: buffered fd, else -1 */
  bool readonly;
  bool on_fuse;                /* the file was on FUSE when opened */
  int64_t size;
  bool can_punch, can_zero_range;
  bool no_zero_range;          /* ZERO_RANGE said EOPNOTSUPP later */

  /* Non-FUA writes completed, and how many of them the last successful
   * flush covered (atomics). */
  uint64_t writes_done, writes_flushed;

  /* Recovery, under lock. */
  pthread_mutex_t lock;
  pthread_cond_t cond;         /* a reopen attempt ended */
  uint64_t gen;                /* reopens so far (read with atomics) */
  dev_t dev;                   /* the file now behind fd */
  ino_t ino;
  int64_t lost_since;          /* ms; 0 while the file is there */
  int64_t next_attempt;        /* ms */
  int64_t backoff;             /* ms */
  int64_t reopened_at;         /* ms, the last successful reopen */
  bool reopening;              /* a worker is in open(2) */
  bool failing;                /* gone for longer than retry-timeout */
  bool writes_at_risk;         /* strict-flush: fail the next flush */
};

/* CLOCK_MONOTONIC in milliseconds (h->cond uses the same clock). */
static int64_t
now_ms (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Free the configuration at exit. */
static void
fuse_unload (void)
{
  free (fuse_path);
  fuse_path = NULL;
}

/* A whole number of seconds in [min, max]. */
static int64_t
parse_seconds (const char *key, const char *value, int64_t min, int64_t max)
{
  char *end;
  long long n;

  errno = 0;
  n = strtoll (value, &end, 10);
  if (errno || end == value || *end || n < min || n > max) {
    blkgate_error ("fuse: %s=%s: expected a whole number of seconds from %"
                   PRId64 " to %" PRId64, key, value, min, max);
    return -1;
  }
  return n;
}

static int
parse_bool (const char *key, const char *value, bool *out)
{
  int r = blkgate_parse_bool (value);

  if (r == -1) {
    blkgate_error ("fuse: %s=%s: expected on or off", key, value);
    return -1;
  }
  *out = r;
  return 0;
}

/* file= is made absolute, since the daemon may chdir. */
static int
fuse_config (const char *key, const char *value)
{
  int64_t n;

  if (strcmp (key, "file") == 0) {
    if (*value == '\0') {
      blkgate_error ("fuse: file= needs a path");
      return -1;
    }
    free (fuse_path);
    fuse_path = realpath (value, NULL);
    if (fuse_path == NULL) {
      blkgate_error ("fuse: file: %s: %m", value);
      return -1;
    }
    return 0;
  }
  if (strcmp (key, "retry-timeout") == 0) {
    if ((n = parse_seconds (key, value, 0, 86400)) == -1)
      return -1;
    retry_timeout_ms = n * 1000;
    return 0;
  }
  if (strcmp (key, "direct") == 0)
    return parse_bool (key, value, &fuse_direct);
  if (strcmp (key, "strict-flush") == 0)
    return parse_bool (key, value, &strict_flush);
  blkgate_error ("fuse: unknown parameter '%s' (see --help)", key);
  return -1;
}

static int
fuse_config_complete (void)
{
  if (fuse_path == NULL) {
    blkgate_error ("fuse: you must supply the file=PATH parameter");
    return -1;
  }
  return 0;
}

/* What this plugin does, for --dump-plugin. */
static void
fuse_dump_plugin (void)
{
  printf ("fuse_hold_and_reopen=yes\n");
  printf ("fuse_retry_timeout_default=%d\n", DEFAULT_RETRY_TIMEOUT_S);
  printf ("fuse_lost_errors=ENOTCONN,ECONNABORTED,ESTALE,ENODEV,EIO\n");
  printf ("fuse_probes=punch_hole,zero_range\n");
  printf ("fuse_direct=yes\n");
  printf ("fuse_strict_flush=yes\n");
}

static int
open_flags (const struct handle *h, bool direct)
{
  return (h->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC |
    (direct ? O_DIRECT : 0);
}

static bool
is_fuse (int fd)
{
  struct statfs sfs;

  return fstatfs (fd, &sfs) == 0 && sfs.f_type == FUSE_SUPER_MAGIC;
}

/* Find out what trim and zero can use without changing any byte the
 * guest can read, as the file plugin does: a hole punched past the
 * end of the file with KEEP_SIZE changes neither data nor size, but
 * fails with EOPNOTSUPP where the file system (or the FUSE daemon)
 * cannot punch.  ZERO_RANGE is then simply tried on the first zero
 * request, falling back to punching; only when punching is impossible
 * is it probed past the end, which may preallocate a block there.
 * A daemon that ignores KEEP_SIZE and grows the file is caught and the
 * file cut back to its size (nothing of the guest's lies past it). */
static void
fuse_probe (struct handle *h)
{
  off_t beyond = (h->size | (PROBE_LEN - 1)) + 1;
  struct stat st;

  if (h->readonly)
    return;
  h->can_punch = fallocate (h->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                            beyond, PROBE_LEN) == 0;
  h->can_zero_range = h->can_punch ||
    fallocate (h->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
               beyond, PROBE_LEN) == 0;
  if (fstat (h->fd, &st) == 0 && st.st_size != h->size) {
    blkgate_error ("fuse: %s: fallocate with FALLOC_FL_KEEP_SIZE changed the "
                   "size from %" PRId64 " to %" PRId64 " bytes: not using it",
                   fuse_path, h->size, (int64_t) st.st_size);
    if (st.st_size > h->size && ftruncate (h->fd, h->size) == -1)
      blkgate_error ("fuse: %s: ftruncate: %m", fuse_path);
    h->can_punch = h->can_zero_range = false;
  }
}

static void
fuse_close (void *handle)
{
  struct handle *h = handle;

  if (h->bfd >= 0)
    close (h->bfd);
  if (h->fd >= 0)
    close (h->fd);
  pthread_cond_destroy (&h->cond);
  pthread_mutex_destroy (&h->lock);
  free (h);
}

/* Open the file, learn its size and capabilities.  The file must be a
 * regular file; one that is not on FUSE is served all the same. */
static void *
fuse_open (int readonly)
{
  struct handle *h = calloc (1, sizeof *h);
  pthread_condattr_t ca;
  struct stat st;
  int r;

  if (h == NULL) {
    blkgate_error ("calloc: %m");
    return NULL;
  }
  h->readonly = readonly;
  h->backoff = BACKOFF_MIN_MS;
  pthread_mutex_init (&h->lock, NULL);
  pthread_condattr_init (&ca);
  pthread_condattr_setclock (&ca, CLOCK_MONOTONIC);
  pthread_cond_init (&h->cond, &ca);
  pthread_condattr_destroy (&ca);

  h->bfd = -1;
  h->fd = open (fuse_path, open_flags (h, fuse_direct));
  if (h->fd == -1 && !readonly &&
      (errno == EACCES || errno == EPERM || errno == EROFS)) {
    /* As the file plugin: served read-only rather than not at all. */
    blkgate_debug ("fuse: %s: %m, serving it read-only", fuse_path);
    h->readonly = true;
    h->fd = open (fuse_path, open_flags (h, fuse_direct));
  }
  if (h->fd == -1) {
    if (errno == EINVAL && fuse_direct)
      blkgate_error ("fuse: open: %s: the file system refuses O_DIRECT "
                     "(use direct=off): %m", fuse_path);
    else
      blkgate_error ("fuse: open: %s: %m", fuse_path);
    goto err;
  }
  if (fuse_direct &&
      (h->bfd = open (fuse_path, open_flags (h, false))) == -1) {
    blkgate_error ("fuse: open: %s: %m", fuse_path);
    goto err;
  }
  if (fstat (h->fd, &st) == -1) {
    blkgate_error ("fuse: fstat: %s: %m", fuse_path);
    goto err;
  }
  if (!S_ISREG (st.st_mode)) {
    blkgate_error ("fuse: %s: not a regular file", fuse_path);
    goto err;
  }
  h->size = st.st_size;
  h->dev = st.st_dev;
  h->ino = st.st_ino;
  h->on_fuse = is_fuse (h->fd);
  if (!h->on_fuse)
    blkgate_debug ("fuse: %s is not on a FUSE file system; serving it "
                   "all the same", fuse_path);
  fuse_probe (h);
  r = fdatasync (h->fd) == 0 ? 0 : errno;
  blkgate_debug ("fuse: %s: size=%" PRId64 " fuse=%d direct=%d punch=%d "
                 "zero_range=%d fdatasync=%s retry_timeout=%" PRId64 "s",
                 fuse_path, h->size, h->on_fuse, fuse_direct, h->can_punch,
                 h->can_zero_range, r == 0 ? "ok" : strerror (r),
                 retry_timeout_ms / 1000);
  return h;

 err:
  fuse_close (h);
  return NULL;
}

/* Capabilities, fixed at open. */
static int64_t
fuse_get_size (void *handle)
{
  return ((struct handle *) handle)->size;
}

static int
fuse_can_write (void *handle)
{
  return !((struct handle *) handle)->readonly;
}

/* Always: a file system without fsync gets ENOSYS from the kernel as
 * success (see fuse_flush), and a disk without a volatile cache is
 * what the guest would otherwise assume. */
static int
fuse_can_flush (void *handle)
{
  return 1;
}

static int
fuse_can_trim (void *handle)
{
  return ((struct handle *) handle)->can_punch;
}

static int
fuse_can_zero (void *handle)
{
  struct handle *h = handle;

  return h->can_punch || h->can_zero_range;
}

/* Writes carry RWF_DSYNC, trim and zero a trailing fdatasync. */
static int
fuse_can_fua (void *handle)
{
  return BLKGATE_FUA_NATIVE;
}

/* ------------------------------------------------------------------ */
/* One attempt at each call: 0, or -1 with errno. */

enum op_type { OP_READ, OP_WRITE, OP_FLUSH, OP_TRIM, OP_ZERO };

struct op {
  enum op_type type;
  const struct iovec *iov;
  int iovcnt;
  uint64_t offset, count;
  uint32_t flags;
};

static int
do_sync (int fd)
{
  if (fdatasync (fd) == -1 && errno != ENOSYS)
    return -1;
  return 0;
}

/* Read or write all of op's buffers: a short transfer is continued
 * with the rest (in a private copy of the iovecs, the guest's are
 * const); a read that reaches the end of the file gives zeroes for the
 * part past it. */
static int
do_rw (int fd, const struct op *op)
{
  const struct iovec *iov = op->iov;
  struct iovec *copy = NULL, *v;
  int iovcnt = op->iovcnt, rwf = 0, i, saved;
  uint64_t offset = op->offset;
  size_t left = 0;
  ssize_t n;

  for (i = 0; i < iovcnt; i++)
    left += iov[i].iov_len;
  if (op->type == OP_WRITE && (op->flags & BLKGATE_FLAG_FUA))
    rwf = RWF_DSYNC;
  while (left > 0) {
    if (op->type == OP_READ)
      n = preadv (fd, iov, iovcnt, offset);
    else
      n = pwritev2 (fd, iov, iovcnt, offset, rwf);
    if (n == -1) {
      if (errno == EINTR)
        continue;
      goto err;
    }
    if (n == 0) {
      if (op->type == OP_WRITE) {
        errno = EIO;            /* nothing written: would loop forever */
        goto err;
      }
      for (i = 0; i < iovcnt; i++)
        memset (iov[i].iov_base, 0, iov[i].iov_len);
      break;
    }
    left -= n;
    offset += n;
    if (left == 0)
      break;
    if (copy == NULL) {
      copy = malloc (iovcnt * sizeof *copy);
      if (copy == NULL)
        goto err;
      memcpy (copy, iov, iovcnt * sizeof *copy);
      iov = copy;
    }
    /* Skip what was transferred; some bytes are left, so this stops
     * inside the array. */
    v = copy + (iov - copy);
    while ((size_t) n >= v->iov_len) {
      n -= v->iov_len;
      v++;
      iovcnt--;
    }
    v->iov_base = (char *) v->iov_base + n;
    v->iov_len -= n;
    iov = v;
  }
  free (copy);
  return 0;

 err:
  saved = errno;
  free (copy);
  errno = saved;
  return -1;
}

/* Zero: punching when the guest allows unmapping (or when ZERO_RANGE is
 * not available), else ZERO_RANGE, falling back to punching once the
 * file system says EOPNOTSUPP. */
static int
do_zero (struct handle *h, int fd, const struct op *op)
{
  const int keep = FALLOC_FL_KEEP_SIZE;
  bool punch = h->can_punch &&
    ((op->flags & BLKGATE_FLAG_MAY_TRIM) || !h->can_zero_range ||
     __atomic_load_n (&h->no_zero_range, __ATOMIC_RELAXED));

  if (!punch) {
    if (fallocate (fd, FALLOC_FL_ZERO_RANGE | keep, op->offset,
                   op->count) == 0)
      return 0;
    if (errno != EOPNOTSUPP || !h->can_punch)
      return -1;
    __atomic_store_n (&h->no_zero_range, true, __ATOMIC_RELAXED);
  }
  return fallocate (fd, FALLOC_FL_PUNCH_HOLE | keep, op->offset, op->count);
}

static int
do_once (struct handle *h, const struct op *op)
{
  int fd = h->fd;

  switch (op->type) {
  case OP_READ:
  case OP_WRITE:
    if (do_rw (fd, op) == 0)
      return 0;
    if (errno != EINVAL || h->bfd < 0)
      return -1;
    return do_rw (h->bfd, op);  /* O_DIRECT refused these buffers */
  case OP_FLUSH:
    /* A FUSE fsync goes to the daemon with the file it came through. */
    if (h->bfd >= 0 && do_sync (h->bfd) == -1)
      return -1;
    return do_sync (fd);
  case OP_TRIM:
    if (fallocate (fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                   op->offset, op->count) == -1)
      return -1;
    break;
  case OP_ZERO:
    if (do_zero (h, fd, op) == -1)
      return -1;
    break;
  }
  if (op->flags & BLKGATE_FLAG_FUA)
    return do_sync (fd);
  return 0;
}

/* ------------------------------------------------------------------ */
/* Recovery. */

enum verdict { REAL_ERROR, LOST, STALE };

/* What an error says about the file: LOST, the file system is gone
 * (hold the call); STALE, EIO on a live mount (reopen, try once more);
 * REAL_ERROR, the guest's to see. */
static enum verdict
judge (struct handle *h, int err)
{
  struct stat st;
  dev_t dev;
  ino_t ino;

  switch (err) {
  case ENOTCONN: case ECONNABORTED: case ESTALE: case ENODEV:
    return LOST;
  case EIO:
    break;
  default:
    return REAL_ERROR;
  }
  if (fstat (h->fd, &st) == -1 &&
      (errno == ENOTCONN || errno == ECONNABORTED || errno == ENODEV))
    return LOST;
  pthread_mutex_lock (&h->lock);
  dev = h->dev;
  ino = h->ino;
  pthread_mutex_unlock (&h->lock);
  if (stat (fuse_path, &st) == -1 || st.st_dev != dev || st.st_ino != ino)
    return LOST;
  return STALE;
}

/* Open the file again and install it under h->fd (and h->bfd).  Called
 * by the one worker that set h->reopening, without h->lock.  0, or -1
 * with errno. */
static int
reopen (struct handle *h)
{
  struct stat st;
  int fd, bfd = -1, err;

  fd = open (fuse_path, open_flags (h, fuse_direct));
  if (fd == -1)
    return -1;
  if (h->bfd >= 0 && (bfd = open (fuse_path, open_flags (h, false))) == -1)
    goto fail;
  if (fstat (fd, &st) == -1)
    goto fail;
  if (!S_ISREG (st.st_mode)) {
    errno = EINVAL;
    goto fail;
  }
  /* A mount point whose file system is gone shows the directory
   * underneath: a file there is not ours. */
  if (h->on_fuse && !is_fuse (fd)) {
    errno = ENOENT;
    goto fail;
  }
  if (st.st_size != h->size)
    blkgate_error ("fuse: %s: the size changed from %" PRId64 " to %" PRId64
                   " bytes after reopening; the disk keeps its size",
                   fuse_path, h->size, (int64_t) st.st_size);

  pthread_mutex_lock (&h->lock);
  if (dup3 (fd, h->fd, O_CLOEXEC) == -1 ||
      (bfd >= 0 && dup3 (bfd, h->bfd, O_CLOEXEC) == -1)) {
    err = errno;
    pthread_mutex_unlock (&h->lock);
    blkgate_error ("fuse: dup3: %m");
    errno = err;
    goto fail;
  }
  h->dev = st.st_dev;
  h->ino = st.st_ino;
  __atomic_store_n (&h->gen, h->gen + 1, __ATOMIC_RELEASE);
  blkgate_stat_add ("reopens", 1);
  if (h->lost_since)
    blkgate_error ("fuse: %s: reopened after %.1f s%s", fuse_path,
                   (now_ms () - h->lost_since) / 1000.0,
                   h->failing ? "; requests work again" : "");
  if (__atomic_load_n (&h->writes_done, __ATOMIC_ACQUIRE) >
      __atomic_load_n (&h->writes_flushed, __ATOMIC_ACQUIRE)) {
    blkgate_error ("fuse: %s: writes completed since the last flush went "
                   "to the old file: lost if the file system had not "
                   "stored them%s", fuse_path,
                   strict_flush ? "; strict-flush: failing the next flush"
                   : "");
    h->writes_at_risk = strict_flush;
  }
  h->lost_since = 0;
  h->failing = false;
  h->reopened_at = now_ms ();
  pthread_mutex_unlock (&h->lock);
  close (fd);
  if (bfd >= 0)
    close (bfd);
  return 0;

 fail:
  err = errno;
  close (fd);
  if (bfd >= 0)
    close (bfd);
  errno = err;
  return -1;
}

/* Wait, with h->lock held, until h->cond is signalled or the deadline
 * (CLOCK_MONOTONIC ms). */
static void
wait_until (struct handle *h, int64_t deadline)
{
  struct timespec ts = { .tv_sec = deadline / 1000,
                         .tv_nsec = (deadline % 1000) * 1000000 };

  pthread_cond_timedwait (&h->cond, &h->lock, &ts);
}

/* A call failed with err on the file of generation gen: the file
 * system is gone (lost), or the file handle is stale (!lost: reopen at
 * once, and if that fails, take the file system for gone).  *held_since
 * is when the call was first held (0: not yet): a call that keeps
 * failing on files that reopen fine (a file system that comes back
 * broken) is not held for longer than retry-timeout either.  Return 0
 * when the call should run again (the file was reopened, by this worker
 * or another), -1 when it must fail with EIO. */
static int
recover (struct handle *h, uint64_t gen, bool lost, int err,
         int64_t *held_since)
{
  int64_t now, deadline, since;
  bool tried = false;
  int r;

  pthread_mutex_lock (&h->lock);
  for (;;) {
    if (h->gen != gen)
      break;
    now = now_ms ();
    if (*held_since == 0)
      *held_since = now;
    if (lost && h->lost_since == 0) {
      h->lost_since = now;
      /* It may be back already: try at once, unless the last reopen
       * was only just now (then keep backing off). */
      if (now - h->reopened_at >= BACKOFF_MAX_MS) {
        h->backoff = BACKOFF_MIN_MS;
        h->next_attempt = now;
      }
      else {
        h->next_attempt = h->reopened_at + h->backoff;
        h->backoff = h->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
          : h->backoff * 2;
      }
      errno = err;
      blkgate_error ("fuse: %s: lost the file system (%m); holding requests "
                     "and reopening the file", fuse_path);
    }
    /* Stale handles are replaced at once; a lost file system is
     * tried on the backoff schedule, or by every request once they
     * fail (the request would fail anyway, and so the first one after
     * the file system is back works), but only once per request. */
    if (!h->reopening &&
        (!lost || now >= h->next_attempt || (h->failing && !tried))) {
      tried = true;
      h->reopening = true;
      pthread_mutex_unlock (&h->lock);
      r = reopen (h);
      err = errno;
      pthread_mutex_lock (&h->lock);
      h->reopening = false;
      pthread_cond_broadcast (&h->cond);
      if (r == 0)
        break;
      blkgate_debug ("fuse: reopen %s: %s", fuse_path, strerror (err));
      if (lost) {               /* 50 ms, 100 ms, ... 1 s, 1 s, ... */
        h->next_attempt = now_ms () + h->backoff;
        h->backoff = h->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
          : h->backoff * 2;
      }
      lost = true;              /* a stale handle we cannot replace */
      continue;
    }
    if (!lost) {
      /* Another worker is reopening: see what comes of it. */
      wait_until (h, now + BACKOFF_MAX_MS);
      lost = h->lost_since != 0;
      continue;
    }
    since = *held_since < h->lost_since ? *held_since : h->lost_since;
    if (now - since >= retry_timeout_ms) {
      if (now - h->lost_since >= retry_timeout_ms && !h->failing) {
        blkgate_error ("fuse: %s: the file system has been gone for %.1f s "
                       "(retry-timeout): failing requests with EIO until "
                       "it is back", fuse_path,
                       (now - h->lost_since) / 1000.0);
        h->failing = true;
      }
      pthread_mutex_unlock (&h->lock);
      return -1;
    }
    deadline = since + retry_timeout_ms;
    if (!h->reopening && h->next_attempt < deadline)
      deadline = h->next_attempt;
    wait_until (h, deadline);
  }
  pthread_mutex_unlock (&h->lock);
  return 0;
}

/* Run op until it succeeds, fails for a reason the guest must see, or
 * the file system has been gone for retry-timeout. */
static int
run (struct handle *h, const struct op *op)
{
  bool retried_stale = false;
  int64_t held_since = 0;
  uint64_t gen;
  int err;

  for (;;) {
    gen = __atomic_load_n (&h->gen, __ATOMIC_ACQUIRE);
    if (do_once (h, op) == 0)
      return 0;
    err = errno;
    switch (judge (h, err)) {
    case REAL_ERROR:
      break;
    case LOST:
      if (recover (h, gen, true, err, &held_since) == 0)
        continue;
      err = EIO;
      break;
    case STALE:
      if (retried_stale) {
        blkgate_debug ("fuse: %s: EIO again on a freshly opened file: an "
                       "I/O error", fuse_path);
        break;
      }
      retried_stale = true;
      blkgate_error ("fuse: %s: EIO on a live mount: reopening the file%s",
                     fuse_path, op->type == OP_FLUSH ? "; the flush fails"
                     : " to try once more");
      if (recover (h, gen, false, err, &held_since) == 0 &&
          op->type != OP_FLUSH)
        continue;
      break;
    }
    errno = err;
    return -1;
  }
}

/* ------------------------------------------------------------------ */
/* Data calls. */

/* Count a completed write that only a flush makes durable. */
static void
written (struct handle *h, uint32_t flags)
{
  if (!(flags & BLKGATE_FLAG_FUA))
    __atomic_add_fetch (&h->writes_done, 1, __ATOMIC_ACQ_REL);
}

static int
fuse_preadv (void *handle, const struct iovec *iov, int iovcnt,
             uint64_t offset, uint32_t flags)
{
  struct op op = { .type = OP_READ, .iov = iov, .iovcnt = iovcnt,
                   .offset = offset, .flags = flags };

  return run (handle, &op);
}

static int
fuse_pwritev (void *handle, const struct iovec *iov, int iovcnt,
              uint64_t offset, uint32_t flags)
{
  struct op op = { .type = OP_WRITE, .iov = iov, .iovcnt = iovcnt,
                   .offset = offset, .flags = flags };

  if (run (handle, &op) == -1)
    return -1;
  written (handle, flags);
  return 0;
}

/* fdatasync.  A FUSE file system without fsync answers ENOSYS, which
 * the kernel turns into success (as it does for every later call), so
 * ENOSYS is success here too.  With strict-flush, the first flush after
 * a reopen that may have lost completed writes fails with EIO. */
static int
fuse_flush (void *handle, uint32_t flags)
{
  struct handle *h = handle;
  struct op op = { .type = OP_FLUSH, .flags = flags };
  uint64_t covered = __atomic_load_n (&h->writes_done, __ATOMIC_ACQUIRE);
  uint64_t old;
  bool at_risk;

  if (run (h, &op) == -1)
    return -1;
  pthread_mutex_lock (&h->lock);
  at_risk = h->writes_at_risk;
  h->writes_at_risk = false;
  pthread_mutex_unlock (&h->lock);
  if (at_risk) {
    blkgate_error ("fuse: %s: failing a flush: writes acknowledged by the "
                   "lost file system may not have been stored "
                   "(strict-flush)", fuse_path);
    errno = EIO;
    return -1;
  }
  old = __atomic_load_n (&h->writes_flushed, __ATOMIC_ACQUIRE);
  while (old < covered &&
         !__atomic_compare_exchange_n (&h->writes_flushed, &old, covered,
                                       false, __ATOMIC_ACQ_REL,
                                       __ATOMIC_ACQUIRE))
    ;
  return 0;
}

static int
fuse_trim (void *handle, uint64_t offset, uint64_t count, uint32_t flags)
{
  struct op op = { .type = OP_TRIM, .offset = offset, .count = count,
                   .flags = flags };

  if (run (handle, &op) == -1)
    return -1;
  written (handle, flags);
  return 0;
}

static int
fuse_zero (void *handle, uint64_t offset, uint64_t count, uint32_t flags)
{
  struct op op = { .type = OP_ZERO, .offset = offset, .count = count,
                   .flags = flags };

  if (run (handle, &op) == -1)
    return -1;
  written (handle, flags);
  return 0;
}

static struct blkgate_plugin plugin = {
  .name              = "fuse",
  .longname          = "blkgate fuse plugin",
  .version           = PACKAGE_VERSION,
  .description       = "serve an image on a FUSE file system, holding "
                       "requests while its daemon restarts",
  .unload            = fuse_unload,
  .config            = fuse_config,
  .config_complete   = fuse_config_complete,
  .config_help       =
    "[file=]<FILENAME>    (required) The image, a regular file on FUSE.\n"
    "retry-timeout=SECS   Hold requests this long while the file system\n"
    "                     is gone, then fail them (default 60; 0..86400).\n"
    "direct=on|off        Open the file with O_DIRECT (default off).\n"
    "strict-flush=on|off  Fail the first flush after a reopen when writes\n"
    "                     since the last flush may be lost (default off).",
  .magic_config_key  = "file",
  .dump_plugin       = fuse_dump_plugin,
  .open              = fuse_open,
  .close             = fuse_close,
  .get_size          = fuse_get_size,
  .can_write         = fuse_can_write,
  .can_flush         = fuse_can_flush,
  .can_trim          = fuse_can_trim,
  .can_zero          = fuse_can_zero,
  .can_fua           = fuse_can_fua,
  .preadv            = fuse_preadv,
  .pwritev           = fuse_pwritev,
  .flush             = fuse_flush,
  .trim              = fuse_trim,
  .zero              = fuse_zero,
};

BLKGATE_REGISTER_PLUGIN (plugin)
