/* The layered plugin (src/daemon/filter-layer.c) with a fake async
 * plugin and a fake filter, no dlopen: the filter's fd and the plugin's
 * are watched together, also when the plugin's fd changes, goes away
 * and comes back under a reused number; poll reaches the side whose fd
 * fired; blkgate_request_wrap tokens; a handle the plugin returns to
 * every open is closed once. */

#include <config.h>

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <unistd.h>

#include "filters.h"
#include "tap.h"

struct filter filter_stack[MAX_FILTERS];
unsigned filter_count;

/* The core's side, which the layer never calls here. */
void
blkgate_complete (struct blkgate_request *req, int err)
{
  abort ();
}

/* Fake plugin: one queue, whose fd the test switches. */
static int plugin_fd = -1;
static unsigned plugin_polls, plugin_closes;
static char plugin_handle, plugin_queue;

static void *p_open (int ro) { return &plugin_handle; }
static void p_close (void *h) { plugin_closes++; }
static int64_t p_size (void *h) { return 1 << 20; }
static void *p_qopen (void *h, unsigned i) { return &plugin_queue; }
static int p_get_fd (void *q, short *ev) { *ev = POLLIN; return plugin_fd; }
static int p_poll (void *q) { plugin_polls++; return 0; }
static int p_aio_preadv (void *q, const struct iovec *iov, int n,
                         uint64_t off, uint32_t fl,
                         struct blkgate_request *req) { return 0; }

/* Fake filter: its own fd. */
static int filter_fd = -1;
static unsigned filter_polls;
static int f_get_fd (void *q, short *ev) { *ev = POLLIN; return filter_fd; }
static int
f_poll (const struct blkgate_next_ops *next, void *nxdata, void *q)
{
  filter_polls++;
  return 0;
}

/* A pipe; its read end.  *w gets the write end. */
static int
mkpipe (int *w)
{
  int p[2];

  if (pipe (p) == -1)
    abort ();
  *w = p[1];
  return p[0];
}

static bool
readable (int fd)
{
  struct pollfd pfd = { .fd = fd, .events = POLLIN };

  return poll (&pfd, 1, 0) == 1;
}

static void
drain (int fd)
{
  char buf[16];

  while (readable (fd) && read (fd, buf, sizeof buf) > 0)
    ;
}

/* Fires fd (a write to w), polls the layered queue, drains. */
static void
fire (const struct blkgate_plugin *p, void *q, int watched, int r, int w)
{
  if (write (w, "x", 1) != 1)
    abort ();
  ok (readable (watched), "the watched fd is readable");
  p->poll (q);
  drain (r);
}

static int done_err = -1;
static void done (void *opaque, int err) { done_err = err + *(int *) opaque; }

int
main (void)
{
  struct plugin pl = { 0 };
  struct plugin *top;
  const struct blkgate_plugin *p;
  void *h, *h2, *q;
  int pw, fw, pr2, pw2, fd, one = 1;
  short ev;
  struct blkgate_request *tok;

  pl.p = (struct blkgate_plugin) {
    .name = "fake", .open = p_open, .close = p_close, .get_size = p_size,
    .queue_open = p_qopen, .get_fd = p_get_fd, .poll = p_poll,
    .aio_preadv = p_aio_preadv,
  };
  filter_stack[0].f = (struct blkgate_filter) {
    .name = "fake", .get_fd = f_get_fd, .poll = f_poll,
  };
  filter_count = 1;
  top = filters_wrap (&pl);
  p = &top->p;
  ok (top != &pl && p->queue_open && p->aio_preadv && !p->aio_pwritev,
      "the layered plugin is async with the plugin's data calls");
  is_int (p->get_size (h = p->open (0)), 1 << 20, "get_size passes through");
  q = p->queue_open (h, 0);

  plugin_fd = mkpipe (&pw);
  filter_fd = mkpipe (&fw);
  fd = p->get_fd (q, &ev);
  ok (fd >= 0 && fd != plugin_fd && fd != filter_fd && ev == POLLIN,
      "both fds: the core gets an epoll fd of the layer");
  fire (p, q, fd, plugin_fd, pw);
  is_int (plugin_polls, 1, "the plugin's fd fired: the plugin is polled");
  is_int (filter_polls, 0, "and not the filter");
  fire (p, q, fd, filter_fd, fw);
  is_int (filter_polls, 1, "the filter's fd fired: the filter is polled");
  is_int (plugin_polls, 1, "and not the plugin");

  /* A new plugin fd while the old one is open (another number). */
  pr2 = mkpipe (&pw2);
  close (plugin_fd);
  close (pw);
  plugin_fd = pr2;
  pw = pw2;
  is_int (p->get_fd (q, &ev), fd, "a new plugin fd: the same epoll fd");
  fire (p, q, fd, plugin_fd, pw);
  is_int (plugin_polls, 2, "the new plugin fd is watched");

  /* The plugin's fd goes: the filter's is handed over as it is. */
  close (plugin_fd);
  close (pw);
  plugin_fd = -1;
  is_int (p->get_fd (q, &ev), filter_fd, "no plugin fd: the filter's");
  fire (p, q, filter_fd, filter_fd, fw);
  is_int (filter_polls, 2, "the filter is polled");

  /* It comes back, maybe under the number it had. */
  plugin_fd = mkpipe (&pw);
  is_int (p->get_fd (q, &ev), fd, "the plugin fd is back: the epoll fd");
  fire (p, q, fd, plugin_fd, pw);
  is_int (plugin_polls, 3, "the returning plugin fd is watched");
  fire (p, q, fd, filter_fd, fw);
  is_int (filter_polls, 3, "and the filter's still");
  p->queue_close (q);

  /* Tokens. */
  tok = blkgate_request_wrap (done, &one);
  ok (tok != NULL && ((uintptr_t) tok & 1), "a token is tagged");
  ok (filter_token_complete (tok, 4), "a token completes through done");
  is_int (done_err, 5, "done got its opaque and err");
  ok (!filter_token_complete ((struct blkgate_request *) &pl, 0),
      "an aligned pointer (a core request) is not a token");

  /* The plugin returns one handle to every open: closed once, last. */
  h2 = p->open (0);
  p->close (h);
  is_int (plugin_closes, 0, "a handle still held by another layer stays open");
  p->close (h2);
  is_int (plugin_closes, 1, "the last close closes it");
  return done_testing ();
}
