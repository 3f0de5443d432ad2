/* plugin-host: the daemon's side of the plugin ABI, for test-plugins.
 * See plugin-host.h. */

#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif

#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "plugin-host.h"

struct blkgate_plugin P;
void *handle;
void *qctx[NQUEUES];
bool is_async, debug_on;
int64_t size;
int bs, can_write, can_flush, can_trim, can_zero, can_fua;

/* Inside an aio_*, submit or poll call, the only places where an
 * async plugin may complete a request; completions elsewhere count as
 * stray. */
static int in_callback, stray;

/* Shared with forked children, so numbering runs on across them. */
static struct { int n, failed; } *tap;

/* Set up the TAP counters. */
bool
tap_init (void)
{
  setvbuf (stdout, NULL, _IOLBF, 0);
  debug_on = getenv ("BLKGATE_TEST_DEBUG") != NULL;
  tap = mmap (NULL, sizeof *tap, PROT_READ | PROT_WRITE,
              MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  return tap != MAP_FAILED;
}

/* The plan goes last, since the number of tests depends on the runs. */
int
tap_finish (void)
{
  printf ("1..%d\n", tap->n);
  return tap->failed ? 1 : 0;
}

/* TAP output.  Returns cond, so callers can stop after a failure. */
bool
ok (bool cond, const char *fmt, ...)
{
  va_list ap;

  printf ("%s %d - ", cond ? "ok" : "not ok", ++tap->n);
  va_start (ap, fmt);
  vprintf (fmt, ap);
  va_end (ap);
  printf ("\n");
  if (!cond)
    tap->failed++;
  return cond;
}

/* A test that does not apply to this plugin or setup. */
void
skip (const char *what, const char *why)
{
  printf ("ok %d - %s # SKIP %s\n", ++tap->n, what, why);
}

/* The functions the daemon exports to plugins.  Errors go to stderr
 * as TAP comments, debug messages to stdout with BLKGATE_TEST_DEBUG. */
void
blkgate_error (const char *fmt, ...)
{
  int e = errno;
  va_list ap;

  fprintf (stderr, "# plugin error: ");
  va_start (ap, fmt);
  errno = e;
  vfprintf (stderr, fmt, ap);
  va_end (ap);
  fprintf (stderr, "\n");
  errno = e;
}

void
blkgate_debug (const char *fmt, ...)
{
  int e = errno;
  va_list ap;

  if (!debug_on)
    return;
  printf ("# debug: ");
  va_start (ap, fmt);
  errno = e;
  vprintf (fmt, ap);
  va_end (ap);
  printf ("\n");
  errno = e;
}

/* Like the daemon's: an optional k/M/G/T suffix, powers of 1024. */
int64_t
blkgate_parse_size (const char *str)
{
  char *end;
  long long n;
  int shift = 0;

  errno = 0;
  n = strtoll (str, &end, 10);
  switch (*end) {
  case 'k': case 'K': shift = 10; end++; break;
  case 'm': case 'M': shift = 20; end++; break;
  case 'g': case 'G': shift = 30; end++; break;
  case 't': case 'T': shift = 40; end++; break;
  }
  if (errno || end == str || *end || n < 0 || n > (INT64_MAX >> shift)) {
    blkgate_error ("invalid size '%s'", str);
    return -1;
  }
  return (int64_t) n << shift;
}

int
blkgate_parse_bool (const char *str)
{
  const char *yes[] = { "on", "yes", "true", "1" };
  const char *no[] = { "off", "no", "false", "0" };
  int i;

  for (i = 0; i < 4; i++) {
    if (strcasecmp (str, yes[i]) == 0)
      return 1;
    if (strcasecmp (str, no[i]) == 0)
      return 0;
  }
  blkgate_error ("invalid boolean '%s'", str);
  return -1;
}

/* Named counters: the host only checks the name is a string. */
void
blkgate_stat_add (const char *name, uint64_t n)
{
  if (name == NULL || name[0] == '\0')
    blkgate_error ("blkgate_stat_add with no name");
}

/* Count completions: run checks each call got exactly one. */
void
blkgate_complete (struct blkgate_request *req, int err)
{
  stray += !in_callback;
  req->done++;
  req->err = err;
}

/* One plugin call, async or sync.  Missing callbacks fail as ENOTSUP. */
#define CALL(fn, ...) ((fn) ? (fn) (__VA_ARGS__) : (errno = ENOTSUP, -1))

/* The aio_* call for io on its queue context. */
static int
call_async (struct io *io)
{
  void *q = qctx[io->q];

  switch (io->type) {
  case 'r':
    return CALL (P.aio_preadv, q, io->iov, io->iovcnt, io->offset,
                 io->flags, &io->req);
  case 'w':
    return CALL (P.aio_pwritev, q, io->iov, io->iovcnt, io->offset,
                 io->flags, &io->req);
  case 'f':
    return CALL (P.aio_flush, q, io->flags, &io->req);
  case 't':
    return CALL (P.aio_trim, q, io->offset, io->count, io->flags, &io->req);
  default:
    return CALL (P.aio_zero, q, io->offset, io->count, io->flags, &io->req);
  }
}

/* The sync call for io; the daemon would run it on a worker thread. */
static int
call_sync (struct io *io)
{
  switch (io->type) {
  case 'r':
    return CALL (P.preadv, handle, io->iov, io->iovcnt, io->offset,
                 io->flags);
  case 'w':
    return CALL (P.pwritev, handle, io->iov, io->iovcnt, io->offset,
                 io->flags);
  case 'f':
    return CALL (P.flush, handle, io->flags);
  case 't':
    return CALL (P.trim, handle, io->offset, io->count, io->flags);
  default:
    return CALL (P.zero, handle, io->offset, io->count, io->flags);
  }
}

/* Hand one request to the plugin.  After an async call returns, the
 * iovec array is scribbled over: the daemon's array belongs to it, so
 * a plugin must copy what it needs (the buffers stay valid). */
int
start (struct io *io)
{
  int r;

  io->req.done = 0;
  io->req.err = 0;
  if (is_async) {
    in_callback++;
    r = call_async (io);
    in_callback--;
    memset (io->iov, 0xa5, sizeof io->iov);
    return r;
  }
  r = call_sync (io);
  io->req.done = 1;
  io->req.err = r == -1 ? errno : 0;
  return 0;
}

/* Call submit or poll on every queue context. */
static bool
each_queue (int (*fn) (void *))
{
  bool good = true;
  int i;

  in_callback++;
  for (i = 0; fn && good && i < NQUEUES; i++)
    good = fn (qctx[i]) != -1;
  in_callback--;
  return good;
}

/* Submit on every queue, then poll(2) the plugin's fds and call its
 * poll until all n requests completed. */
bool
wait_all (struct io *ios, int n)
{
  int i, pending;

  if (is_async && !each_queue (P.submit))
    return false;
  for (;;) {
    struct pollfd pfd[NQUEUES];
    int nfd = 0;

    for (i = pending = 0; i < n; i++)
      pending += ios[i].req.done == 0;
    if (pending == 0)
      return true;
    for (i = 0; i < NQUEUES; i++) {
      short ev = 0;
      int fd = P.get_fd ? P.get_fd (qctx[i], &ev) : -1;

      if (fd >= 0)
        pfd[nfd++] = (struct pollfd) { .fd = fd, .events = ev };
    }
    if (nfd == 0 || poll (pfd, nfd, TIMEOUT_MS) <= 0) {
      printf ("# %d requests still pending (%s)\n", pending,
              nfd ? "timeout" : "no fd to poll");
      return false;
    }
    if (!each_queue (P.poll))
      return false;
  }
}

/* Run n requests as one batch: true if each was completed exactly
 * once, without error. */
bool
run (struct io *ios, int n)
{
  int i;

  for (i = 0; i < n; i++)
    if (start (&ios[i]) == -1) {
      printf ("# request %d (%c) refused: %m\n", i, ios[i].type);
      return false;
    }
  if (!wait_all (ios, n))
    return false;
  if (stray) {
    printf ("# %d completions outside aio_*, submit and poll\n", stray);
    stray = 0;
    return false;
  }
  for (i = 0; i < n; i++) {
    if (ios[i].req.done != 1 || ios[i].req.err) {
      printf ("# request %d (%c at %" PRIu64 "): completed %d times, %s\n",
              i, ios[i].type, ios[i].offset, ios[i].req.done,
              strerror (ios[i].req.err));
      return false;
    }
  }
  return true;
}

/* Open a handle (and queue contexts) and read its capabilities the
 * way the daemon does, defaults included. */
bool
open_all (int readonly)
{
  int i;

  handle = P.open (readonly);
  if (!ok (handle != NULL, "open (readonly=%d)", readonly))
    return false;
  size = P.get_size (handle);
  bs = P.block_size ? P.block_size (handle) : 512;
  can_write = P.can_write ? P.can_write (handle) : P.pwritev || P.aio_pwritev;
  can_flush = P.can_flush ? P.can_flush (handle) : P.flush || P.aio_flush;
  can_trim = P.can_trim ? P.can_trim (handle) : P.trim || P.aio_trim;
  can_zero = P.can_zero ? P.can_zero (handle) : P.zero || P.aio_zero;
  can_fua = P.can_fua ? P.can_fua (handle) : BLKGATE_FUA_NONE;
  printf ("# size=%" PRIi64 " block_size=%d write=%d flush=%d trim=%d "
          "zero=%d fua=%d %s\n", size, bs, can_write, can_flush, can_trim,
          can_zero, can_fua, is_async ? "async" : "sync");
  if (!ok (size >= 0 && bs >= 512 && bs <= 65536 && !(bs & (bs - 1)) &&
           can_write >= 0 && can_flush >= 0 && can_trim >= 0 &&
           can_zero >= 0 && can_fua >= 0, "capabilities are valid"))
    return false;
  for (i = 0; is_async && i < NQUEUES; i++)
    if (!ok ((qctx[i] = P.queue_open (handle, i)) != NULL, "queue_open %d", i))
      return false;
  return true;
}

/* Close queue contexts, then the handle, as the daemon does. */
void
close_all (void)
{
  int i;

  for (i = 0; is_async && i < NQUEUES; i++)
    if (qctx[i] && P.queue_close)
      P.queue_close (qctx[i]);
  if (handle && P.close)
    P.close (handle);
  memset (qctx, 0, sizeof qctx);
  handle = NULL;
}

/* dlopen the plugin and copy its struct as the daemon does: at most
 * _struct_size bytes, the rest zeroed. */
bool
load_plugin (const char *path)
{
  struct blkgate_plugin *(*init) (void), *p = NULL;
  void *dl = dlopen (path, RTLD_NOW | RTLD_LOCAL);

  if (!ok (dl != NULL, "dlopen %s", path)) {
    printf ("# %s\n", dlerror ());
    return false;
  }
  *(void **) &init = dlsym (dl, "plugin_init");
  if (init)
    p = init ();
  if (!ok (p && p->_api_version == BLKGATE_API_VERSION && p->name &&
           p->open && p->get_size && (p->preadv || p->aio_preadv),
           "plugin_init returns a valid plugin"))
    return false;
  memcpy (&P, p, p->_struct_size < sizeof P ? p->_struct_size : sizeof P);
  is_async = P.queue_open != NULL;
  printf ("# plugin %s: %s, %s\n", P.name, P.description ? P.description : "",
          is_async ? "async" : "sync");
  return true;
}
