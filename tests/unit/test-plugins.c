/* test-plugins: drive one in-tree plugin .so directly, with
 * plugin-host.c playing the daemon (link with -rdynamic -ldl).
 *
 *   test-plugins PLUGIN.so [KEY=VALUE|VALUE ...]
 *
 * Without parameters it picks its own: size=64M (and a bare 32M) for
 * memory, example-sync and example-async, size=1G for null,
 * and for file temporary files in $TMPDIR (or /tmp) with direct=auto,
 * off and on, plus one in /dev/shm when it exists.  Each set of
 * parameters is run in a child process, so every run starts from a
 * freshly loaded plugin.  Output is TAP, with the plan at the end.
 * Async plugins go through queue_open, the aio_* calls, submit and poll;
 * sync plugins through the sync calls.  BLKGATE_TEST_DEBUG=1 shows the
 * plugin's debug messages.
 */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "plugin-host.h"
#include "common/utils.h"

#define MAX_IOS   1024   /* in flight at once: 512 per queue, more than
                            the file plugin's 256-entry SQ */
#define BLK_P     2200   /* region P, after the batches */
#define ZEROES    (-1)   /* "seed" of a range that must read as zeroes */

static bool data_kept;            /* written data reads back (not null) */
static bool trim_zeroes;          /* trimmed ranges read as zeroes */
static const char *file_arg;      /* file= of the file plugin */
static struct io ios[MAX_IOS];
static unsigned char *wbuf, *rbuf;

/* The byte expected at offset off for a given seed. */
static unsigned char
pattern (uint64_t off, int seed)
{
  if (seed == ZEROES)
    return 0;
  return (unsigned char) (seed * 131 + (off >> 9) * 7 + off % 251 + 1);
}

static void
fill (unsigned char *buf, uint64_t off, size_t len, int seed)
{
  size_t i;

  for (i = 0; i < len; i++)
    buf[i] = pattern (off + i, seed);
}

/* Compare a buffer read from off with the pattern; report the first
 * difference as a TAP comment. */
static bool
same (const unsigned char *buf, uint64_t off, size_t len, int seed)
{
  size_t i;

  if (seed != ZEROES && !data_kept)
    seed = ZEROES;
  for (i = 0; i < len; i++)
    if (buf[i] != pattern (off + i, seed)) {
      printf ("# offset %" PRIu64 ": read 0x%02x, expected 0x%02x\n",
              off + i, buf[i], pattern (off + i, seed));
      return false;
    }
  return true;
}

/* Cut buf into iovecs of the given lengths (0 ends the list).  The
 * last iovec takes what is left, which may be nothing: plugins must
 * cope with zero-length iovecs. */
static void
split (struct io *io, unsigned char *buf, size_t len, const size_t *parts)
{
  io->iovcnt = 0;
  while (len > 0 && io->iovcnt < MAX_IOV - 1 && *parts) {
    size_t n = *parts < len ? *parts : len;

    io->iov[io->iovcnt++] = (struct iovec) { buf, n };
    buf += n;
    len -= n;
    parts++;
  }
  io->iov[io->iovcnt++] = (struct iovec) { buf, len };
}

/* Read or write len bytes at off, cut into iovecs by parts. */
static bool
rw (char type, uint64_t off, unsigned char *buf, size_t len,
    const size_t *parts, uint32_t flags)
{
  ios[0] = (struct io) { .type = type, .offset = off, .flags = flags };
  split (&ios[0], buf, len, parts);
  return run (ios, 1);
}

/* Flush, trim or zero. */
static bool
cmd (char type, uint64_t off, uint64_t count, uint32_t flags)
{
  ios[0] = (struct io) { .type = type, .offset = off, .count = count,
                         .flags = flags };
  return run (ios, 1);
}

/* Write 24 blocks at block blk (at wbuf + wskew, cut by wparts), read
 * them back (cut by rparts) and compare.  The read buffer starts out
 * poisoned, so a read that does not fill it cannot pass. */
static void
test_write_read (const char *what, uint64_t blk, int seed,
                 size_t wskew, const size_t *wparts, const size_t *rparts,
                 uint32_t wflags)
{
  uint64_t off = blk * bs;
  size_t len = 24 * bs;
  unsigned char *w = wbuf + wskew, *r = rbuf + wskew;

  fill (w, off, len, seed);
  memset (r, 0xee, len);
  ok (rw ('w', off, w, len, wparts, wflags) &&
      rw ('r', off, r, len, rparts, 0) && same (r, off, len, seed),
      "%s: write and read back 24 blocks at block %" PRIu64, what, blk);
}

/* After trim/zero of blocks 1..20 of a 24-block region: zeroes inside,
 * the old data around. */
static bool
check_hole (uint64_t blk, int seed, bool hole_is_zero)
{
  uint64_t off = blk * bs;
  static const size_t parts[] = { 0 };

  memset (rbuf, 0xee, 24 * bs);
  return rw ('r', off, rbuf, 24 * bs, parts, 0) &&
    same (rbuf, off, bs, seed) &&
    (!hole_is_zero || same (rbuf + bs, off + bs, 20 * bs, ZEROES)) &&
    same (rbuf + 21 * bs, off + 21 * bs, 3 * bs, seed);
}

/* Trim and zero (with and without MAY_TRIM), when supported. */
static void
test_discard (uint64_t blk_a, uint64_t blk_b, uint64_t blk_c)
{
  if (!can_trim)
    skip ("trim", "can_trim is false");
  else
    ok (cmd ('t', (blk_a + 1) * bs, 20 * bs, 0) &&
        check_hole (blk_a, 1, trim_zeroes), "trim 20 blocks%s",
        trim_zeroes ? ", reads zeroes" : "");
  if (!can_zero) {
    skip ("zero", "can_zero is false");
    return;
  }
  ok (cmd ('z', (blk_b + 1) * bs, 20 * bs, 0) && check_hole (blk_b, 2, true),
      "zero 20 blocks, reads zeroes");
  ok (cmd ('z', (blk_c + 1) * bs, 20 * bs, BLKGATE_FLAG_MAY_TRIM) &&
      check_hole (blk_c, 3, true), "zero 20 blocks with MAY_TRIM");
}

/* n two-block writes spread over the queues, all in flight at once,
 * then n reads the same way. */
static void
test_batch (uint64_t blk, int n)
{
  size_t len = 2 * bs, parts[] = { (size_t) bs, 0 };
  uint64_t base = blk * bs;
  bool good;
  int i;

  for (i = 0; i < n; i++) {
    ios[i] = (struct io) { .type = 'w', .q = i % NQUEUES,
                           .offset = base + i * len };
    fill (wbuf + i * len, base + i * len, len, 100 + i);
    split (&ios[i], wbuf + i * len, len, parts);
  }
  good = run (ios, n);
  memset (rbuf, 0xee, n * len);
  for (i = 0; i < n; i++) {
    ios[i] = (struct io) { .type = 'r', .q = (i + 1) % NQUEUES,
                           .offset = base + i * len };
    split (&ios[i], rbuf + i * len, len, parts);
  }
  good = good && run (ios, n);
  for (i = 0; good && i < n; i++)
    good = same (rbuf + i * len, base + i * len, len, 100 + i);
  ok (good, "%d writes then %d reads in flight at once", n, n);
}

/* Edges of the file plugin on a regular file.  A read past the end of
 * a file that shrank (at an unaligned size) gives zeroes after the
 * data.  A write cut short (by RLIMIT_FSIZE here) is not a success:
 * the plugin goes on with the rest, which then fails with EFBIG. */
static void
test_file_edges (uint64_t blk)
{
  uint64_t off = blk * bs, eof = off + 10 * bs + 100;
  static const size_t parts[] = { 0 };
  struct rlimit old, lim;
  struct stat st;
  bool good;

  if (!file_arg || stat (file_arg, &st) == -1 || !S_ISREG (st.st_mode)) {
    skip ("file edges", "not the file plugin on a regular file");
    return;
  }
  memset (rbuf, 0xee, 24 * bs);
  ok (truncate (file_arg, eof) == 0 &&
      rw ('r', off, rbuf, 24 * bs, parts, 0) &&
      same (rbuf, off, eof - off, 4) &&
      same (rbuf + (eof - off), eof, off + 24 * bs - eof, ZEROES) &&
      truncate (file_arg, st.st_size) == 0,
      "read past a shrunk end of file gives data, then zeroes");
  signal (SIGXFSZ, SIG_IGN);
  getrlimit (RLIMIT_FSIZE, &old);
  lim = old;
  lim.rlim_cur = eof;
  ios[0] = (struct io) { .type = 'w', .offset = off };
  split (&ios[0], wbuf, 24 * bs, parts);
  good = setrlimit (RLIMIT_FSIZE, &lim) == 0 && start (&ios[0]) == 0 &&
    wait_all (ios, 1);
  setrlimit (RLIMIT_FSIZE, &old);
  if (good && ios[0].req.err != EFBIG)
    printf ("# the write ended with: %s\n", strerror (ios[0].req.err));
  ok (good && ios[0].req.done == 1 && ios[0].req.err == EFBIG,
      "a short write is continued, and then fails with EFBIG");
}

/* The data tests on an open, writable handle.  Regions (in blocks, 24
 * blocks each): A 0, B 32, C 64, D the last 24, P BLK_P; the batches
 * use 128 .. 128 + 2 * MAX_IOS.  True if P was written. */
static bool
test_data (void)
{
  uint64_t blk_d = size / bs - 24;
  size_t aligned_w[] = { 5 * bs, 11 * bs, 0 };
  size_t aligned_r[] = { 2 * bs, 7 * bs, 3 * bs, 12 * bs, 0 }; /* + 0 */
  static const size_t odd_w[] = { 1, 511, 1000, 3000, 0 };
  static const size_t odd_r[] = { 4103, 333, 0 };
  uint32_t fua = can_fua == BLKGATE_FUA_NATIVE ? BLKGATE_FLAG_FUA : 0;

  if (!can_write || size / bs < BLK_P + 100) {
    skip ("data tests", can_write ? "disk too small" : "read-only");
    return false;
  }
  test_write_read ("aligned iovecs", 0, 1, 0, aligned_w, aligned_r, 0);
  test_write_read ("unaligned iovecs", 32, 2, 1, odd_w, odd_r, 0);
  test_write_read (fua ? "FUA" : "no FUA", 64, 3, 0, aligned_w, odd_r, fua);
  test_write_read ("end of disk", blk_d, 4, 0, odd_w, aligned_r, 0);
  test_write_read ("region P", BLK_P, 5, 0, aligned_w, aligned_r, 0);
  if (can_flush)
    ok (cmd ('f', 0, 0, 0), "flush");
  else
    skip ("flush", "can_flush is false");
  test_discard (0, 32, 64);
  test_batch (128, 64);
  test_batch (128, MAX_IOS);
  test_file_edges (blk_d);
  return true;
}

/* Data outlives a connection, and a read-only open still reads it. */
static void
test_reopen (void)
{
  static const size_t parts[] = { 0 };
  uint64_t off = BLK_P * bs;
  int ro;

  for (ro = 0; ro <= 1; ro++) {
    if (!open_all (ro))
      break;
    if (ro && strcmp (P.name, "file") == 0)
      ok (can_write == 0, "read-only open: can_write is false");
    memset (rbuf, 0xee, 24 * bs);
    ok (rw ('r', off, rbuf, 24 * bs, parts, 0) &&
        same (rbuf, off, 24 * bs, 5), "data is still there after reopening"
        "%s", ro ? " read-only" : "");
    close_all ();
  }
}

/* KEY=VALUE, or a bare VALUE for the magic key, as on the command line. */
static bool
configure (const char *arg)
{
  const char *eq = strchr (arg, '='), *key = P.magic_config_key;
  const char *value = eq ? eq + 1 : arg;
  char k[64];

  if (eq && !is_config_key (arg, eq - arg))
    eq = NULL, value = arg;
  if (eq) {
    snprintf (k, sizeof k, "%.*s", (int) (eq - arg), arg);
    key = k;
  }
  if (key && strcmp (key, "file") == 0)
    file_arg = value;
  return ok (key && P.config (key, value) == 0, "config %s=%s",
             key ? key : "(no magic key)", value);
}

/* One run: load, configure, open, test, close, unload. */
static void
run_tests (char **args, int nargs)
{
  struct stat st;
  size_t len;
  int i;

  if (P.load)
    P.load ();
  for (i = 0; i < nargs; i++)
    if (!configure (args[i]))
      return;
  ok (P.config ("no_such_key", "1") == -1, "config rejects an unknown key");
  if (!ok (!P.config_complete || P.config_complete () == 0,
           "config_complete") || !open_all (0))
    return;
  data_kept = strcmp (P.name, "null") != 0;
  trim_zeroes = strcmp (P.name, "file") != 0 ||
    (stat (file_arg, &st) == 0 && S_ISREG (st.st_mode));
  len = (size_t) 2 * MAX_IOS * bs + 4096;
  if (posix_memalign ((void **) &wbuf, 4096, len) ||
      posix_memalign ((void **) &rbuf, 4096, len)) {
    ok (false, "posix_memalign");
    return;
  }
  i = test_data ();
  close_all ();
  if (i)
    test_reopen ();
  free (wbuf);
  free (rbuf);
  if (P.unload)
    P.unload ();
}

/* Each run in its own child: the plugin it sees was never configured. */
static void
fork_run (char **args, int nargs)
{
  int i, status;
  pid_t pid;

  printf ("# run:");
  for (i = 0; i < nargs; i++)
    printf (" %s", args[i]);
  printf ("\n");
  fflush (stdout);
  pid = fork ();
  if (pid == 0) {
    run_tests (args, nargs);
    exit (0);
  }
  if (pid == -1 || waitpid (pid, &status, 0) == -1)
    ok (false, "fork/waitpid: %m");
  else if (!WIFEXITED (status) || WEXITSTATUS (status) != 0)
    ok (false, "the run died (wait status 0x%x)", status);
}

/* A sparse 64 MiB file in dir; NULL if that fails. */
static char *
temp_file (const char *dir)
{
  char *path;
  int fd;

  if (asprintf (&path, "%s/test-plugins.XXXXXX", dir) == -1)
    return NULL;
  fd = mkstemp (path);
  if (fd == -1 || ftruncate (fd, 64 << 20) == -1) {
    printf ("# %s: %m\n", path);
    if (fd >= 0)
      unlink (path);
    free (path);
    return NULL;
  }
  close (fd);
  return path;
}

/* The file plugin: $TMPDIR with each direct= mode and with reads and
 * writes done inline, then /dev/shm (named by a bare path, through the
 * magic key), where inline=auto does them inline, and with inline=off
 * through io_uring. */
static void
file_runs (void)
{
  const char *dir = getenv ("TMPDIR");
  const char *modes[] = { "direct=auto", "direct=off", "direct=on",
                          "inline=on" };
  char *path, farg[4096], marg[16], inline_off[] = "inline=off";
  struct stat st;
  int i, fd;

  if (dir == NULL || *dir == '\0')
    dir = "/tmp";
  if (!ok ((path = temp_file (dir)) != NULL, "temporary file in %s", dir))
    return;
  snprintf (farg, sizeof farg, "file=%s", path);
  for (i = 0; i < 4; i++) {
    char *args[] = { farg, marg };

    snprintf (marg, sizeof marg, "%s", modes[i]);
    fd = i == 2 ? open (path, O_RDONLY | O_DIRECT) : 0;
    if (fd == -1)
      skip ("direct=on", "no O_DIRECT in $TMPDIR");
    else
      fork_run (args, 2);
    if (i == 2 && fd >= 0)
      close (fd);
  }
  unlink (path);
  free (path);
  if (stat ("/dev/shm", &st) == 0 && S_ISDIR (st.st_mode) &&
      (path = temp_file ("/dev/shm")) != NULL) {
    char *args[] = { path, inline_off };

    fork_run (args, 1);
    fork_run (args, 2);
    unlink (path);
    free (path);
  }
}

int
main (int argc, char **argv)
{
  char memory_args[][16] = { "size=64M", "32M" }, null_arg[] = "size=1G";
  char *a[] = { memory_args[0], memory_args[1], null_arg };

  if (argc < 2 || !tap_init ()) {
    fprintf (stderr, "usage: %s PLUGIN.so [KEY=VALUE ...]\n", argv[0]);
    return 2;
  }
  if (load_plugin (argv[1])) {
    if (argc > 2)
      fork_run (argv + 2, argc - 2);
    else if (strcmp (P.name, "file") == 0)
      file_runs ();
    else if (strcmp (P.name, "memory") == 0 ||
             strcmp (P.name, "example-sync") == 0 ||
             strcmp (P.name, "example-async") == 0) {
      fork_run (&a[0], 1);
      fork_run (&a[1], 1);
    }
    else if (strcmp (P.name, "null") == 0)
      fork_run (&a[2], 1);
    else
      skip ("tests", "no default parameters for this plugin");
  }
  return tap_finish ();
}
