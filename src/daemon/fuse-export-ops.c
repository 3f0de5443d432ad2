/* --fuse-export: the FUSE low-level handlers of the exported file.
 *
 * The file is the disk: its size, mode and owner are fixed, its times
 * are kept in memory.  getattr, setattr and statfs answer at once;
 * read, write, fsync, flush and fallocate become plugin requests
 * (fuse-export-io.c).  A read or write is widened to whole blocks of
 * the device; an unaligned write is a read-modify-write of the blocks
 * that cover it, one at a time (rmw_lock).  The handlers run on the
 * FUSE loop threads (fuse-export.c) and never call the plugin: they
 * post requests, and either return (the I/O thread replies) or wait
 * for a step of a longer operation (read-modify-write, fallocate). */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <linux/falloc.h>
#include <glib.h>

#include "fuse-export-int.h"

#define ATTR_TIMEOUT 1.0

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
  xreq_post (x);
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
  err = xreq_run_wait (x);
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
    err = xreq_run_wait (x);
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
  xreq_post (x);
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
  xreq_post (x);
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
    err = xreq_run_wait (x);
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

const struct fuse_lowlevel_ops fuse_export_ops = {
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
