/* slowfs: a FUSE filesystem with one file, "disk", passed through to a
 * backing file, where every read and write first sleeps a random time.
 * Served by several threads, so requests complete out of order: the
 * condition under which a gateway restart without inflight tracking
 * loses or misplaces requests (see tests/test-restart-*.bats).
 *
 *   slowfs BACKING MOUNTPOINT [MAX_DELAY_US|=DELAY_US] [-- fuse options]
 *
 * MAX_DELAY_US: each request sleeps a random 0..MAX µs (default 2000);
 * =DELAY_US: each sleeps exactly that long (a uniformly slow disk).
 *
 * Three switches for tests of error handling (tests/test-fuse-plugin.bats);
 * without them slowfs behaves as above:
 *   SLOWFS_EIO=OFFSET:LENGTH  reads and writes that touch these bytes fail
 *                             with EIO (a bad region of a live file system)
 *   SLOWFS_FALLOCATE=1        pass fallocate through to the backing file
 *                             (otherwise the kernel says EOPNOTSUPP)
 *   SIGUSR1                   files open until now fail every request with
 *                             EIO; opening again works (what sshfs -o
 *                             reconnect does to files opened before it
 *                             reconnects)
 *
 * Thread model: libfuse's multithreaded loop calls the handlers below
 * from several threads; they share only the read-only backing fd and
 * the handle generation (atomic). */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE   /* fallocate */
#endif
#define FUSE_USE_VERSION 31

#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <fcntl.h>
#include <fuse.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>

static int backing_fd = -1;
static unsigned max_delay_us = 2000;
static bool fixed_delay;
static off_t eio_start = -1, eio_end = -1;   /* SLOWFS_EIO: [start, end) */
static volatile sig_atomic_t handle_gen;     /* bumped by SIGUSR1 */

static void
usr1 (int sig)
{
  handle_gen++;
}

/* SLOWFS_EIO or a handle from before the last SIGUSR1. */
static bool
fails (off_t off, size_t size, struct fuse_file_info *fi)
{
  if (fi && fi->fh != (uint64_t) handle_gen)
    return true;
  return eio_start >= 0 && off < eio_end && off + (off_t) size > eio_start;
}

static void
random_sleep (void)
{
  static __thread unsigned seed;
  struct timespec ts;
  unsigned delay;

  if (seed == 0)
    seed = (unsigned) (uintptr_t) &seed ^ (unsigned) time (NULL);
  if (max_delay_us == 0)
    return;
  delay = fixed_delay ? max_delay_us : rand_r (&seed) % max_delay_us;
  ts.tv_sec = delay / 1000000;
  ts.tv_nsec = (long) (delay % 1000000) * 1000;
  nanosleep (&ts, NULL);
}

static int
sfs_getattr (const char *path, struct stat *st, struct fuse_file_info *fi)
{
  memset (st, 0, sizeof *st);
  if (strcmp (path, "/") == 0) {
    st->st_mode = S_IFDIR | 0755;
    st->st_nlink = 2;
    return 0;
  }
  if (strcmp (path, "/disk") != 0)
    return -ENOENT;
  if (fstat (backing_fd, st) == -1)
    return -errno;
  st->st_mode = S_IFREG | 0600;
  return 0;
}

static int
sfs_readdir (const char *path, void *buf, fuse_fill_dir_t fill, off_t off,
             struct fuse_file_info *fi, enum fuse_readdir_flags flags)
{
  if (strcmp (path, "/") != 0)
    return -ENOENT;
  fill (buf, ".", NULL, 0, 0);
  fill (buf, "..", NULL, 0, 0);
  fill (buf, "disk", NULL, 0, 0);
  return 0;
}

/* A uniformly slow disk bypasses the page cache, so that requests reach
 * us, and wait, concurrently. */
static int
sfs_open (const char *path, struct fuse_file_info *fi)
{
  if (strcmp (path, "/disk") != 0)
    return -ENOENT;
  fi->direct_io = fixed_delay;
  fi->fh = handle_gen;
  return 0;
}

static int
sfs_read (const char *path, char *buf, size_t size, off_t off,
          struct fuse_file_info *fi)
{
  ssize_t r;

  random_sleep ();
  if (fails (off, size, fi))
    return -EIO;
  r = pread (backing_fd, buf, size, off);
  return r == -1 ? -errno : (int) r;
}

static int
sfs_write (const char *path, const char *buf, size_t size, off_t off,
           struct fuse_file_info *fi)
{
  ssize_t r;

  random_sleep ();
  if (fails (off, size, fi))
    return -EIO;
  r = pwrite (backing_fd, buf, size, off);
  return r == -1 ? -errno : (int) r;
}

static int
sfs_fsync (const char *path, int datasync, struct fuse_file_info *fi)
{
  if (fails (0, 0, fi))
    return -EIO;
  return fdatasync (backing_fd) == -1 ? -errno : 0;
}

/* Only with SLOWFS_FALLOCATE=1 (main clears it otherwise). */
static int
sfs_fallocate (const char *path, int mode, off_t off, off_t len,
               struct fuse_file_info *fi)
{
  if (fails (off, len, fi))
    return -EIO;
  return fallocate (backing_fd, mode, off, len) == -1 ? -errno : 0;
}

static struct fuse_operations ops = {
  .getattr = sfs_getattr,
  .readdir = sfs_readdir,
  .open = sfs_open,
  .read = sfs_read,
  .write = sfs_write,
  .fsync = sfs_fsync,
  .fallocate = sfs_fallocate,
};

int
main (int argc, char **argv)
{
  char *fargv[16];
  int fargc = 0, i;
  const char *e;

  if (argc < 3) {
    fprintf (stderr, "usage: slowfs BACKING MOUNTPOINT [MAX_DELAY_US] "
             "[-- fuse options]\n");
    return 2;
  }
  backing_fd = open (argv[1], O_RDWR | O_CLOEXEC);
  if (backing_fd == -1) {
    perror (argv[1]);
    return 1;
  }
  if (argc > 3 && strcmp (argv[3], "--") != 0) {
    fixed_delay = argv[3][0] == '=';
    max_delay_us = strtoul (argv[3] + fixed_delay, NULL, 10);
  }
  e = getenv ("SLOWFS_EIO");
  if (e && *e) {
    unsigned long long start, len;

    if (sscanf (e, "%llu:%llu", &start, &len) != 2) {
      fprintf (stderr, "slowfs: SLOWFS_EIO=%s: expected OFFSET:LENGTH\n", e);
      return 2;
    }
    eio_start = start;
    eio_end = start + len;
  }
  e = getenv ("SLOWFS_FALLOCATE");
  if (!e || strcmp (e, "1") != 0)
    ops.fallocate = NULL;
  signal (SIGUSR1, usr1);
  fargv[fargc++] = argv[0];
  fargv[fargc++] = argv[2];
  fargv[fargc++] = "-f";
  fargv[fargc++] = "-o";
  fargv[fargc++] = "max_threads=256";
  for (i = 3; i < argc && fargc < 15; i++)
    if (strcmp (argv[i], "--") == 0)
      while (++i < argc && fargc < 15)
        fargv[fargc++] = argv[i];
  fargv[fargc] = NULL;
  return fuse_main (fargc, fargv, &ops, NULL);
}
