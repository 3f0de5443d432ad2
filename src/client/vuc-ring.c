/* The driver side of a split virtqueue.
 *
 * We are the guest here.  The free list and the chain links live in
 * our own memory, not in the descriptor table, so a back-end that
 * scribbles on the table cannot corrupt them; everything read back
 * from the used ring is checked against what we handed out, so a
 * back-end that completes a head twice, or one it never got, is
 * reported instead of trusted. */

#include <config.h>

#include <endian.h>
#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/eventfd.h>

#include "vuc.h"

static size_t
avail_bytes (unsigned num)
{
  return 4 + 2 * (size_t) num + 2;      /* flags, idx, ring, used_event */
}

static size_t
used_bytes (unsigned num)
{
  return 4 + 8 * (size_t) num + 2;      /* flags, idx, ring, avail_event */
}

/* Host-side links: next[i] chains a head's descriptors and the free
 * list. */
static uint16_t *
links (struct vuc_ring *r)
{
  return (uint16_t *) (r->ndesc + r->num);
}

static void
init_free_list (struct vuc_ring *r)
{
  uint16_t *next = links (r);
  unsigned i;

  for (i = 0; i < r->num; i++)
    next[i] = i + 1;
  r->free_head = 0;
  r->num_free = r->num;
}

static int
new_eventfd (void)
{
  return eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
}

struct vuc_ring *
vuc_ring_new (struct vuc_mem *m, unsigned index, unsigned num,
              unsigned ind_max)
{
  struct vuc_ring *r;

  if (num == 0 || num > 32768 || (num & (num - 1))) {
    vuc_set_error ("queue size %u is not a power of 2", num);
    return NULL;
  }
  r = calloc (1, sizeof *r);
  if (r == NULL)
    goto nomem;
  r->index = index;
  r->num = num;
  r->ind_max = ind_max;
  r->kick_fd = r->call_fd = r->err_fd = r->masked_fd = r->sock = -1;
  r->token = calloc (num, sizeof *r->token);
  r->ndesc = calloc (2 * num, sizeof *r->ndesc);  /* + links */
  if (r->token == NULL || r->ndesc == NULL)
    goto nomem;
  r->desc = vuc_mem_alloc (m, 16 * (uint64_t) num, 4096);
  r->avail = r->desc ? vuc_mem_alloc (m, avail_bytes (num), 2) : NULL;
  r->used = r->avail ? vuc_mem_alloc (m, used_bytes (num), 4096) : NULL;
  r->ind = r->used ? vuc_mem_alloc (m, 16 * (uint64_t) num * ind_max, 16)
    : NULL;
  if (r->ind == NULL) {
    vuc_ring_free (r);
    return NULL;
  }
  r->kick_fd = new_eventfd ();
  r->call_fd = new_eventfd ();
  r->err_fd = new_eventfd ();
  r->masked_fd = new_eventfd ();
  if (r->kick_fd < 0 || r->call_fd < 0 || r->err_fd < 0 || r->masked_fd < 0) {
    vuc_set_error ("eventfd: %s", strerror (errno));
    vuc_ring_free (r);
    return NULL;
  }
  init_free_list (r);
  return r;

 nomem:
  vuc_set_error ("out of memory");
  vuc_ring_free (r);
  return NULL;
}

static void
close_fd (int *fd)
{
  if (*fd >= 0)
    close (*fd);
  *fd = -1;
}

/* Ring memory itself belongs to the guest memory and is not freed. */
void
vuc_ring_free (struct vuc_ring *r)
{
  if (r == NULL)
    return;
  close_fd (&r->kick_fd);
  close_fd (&r->call_fd);
  close_fd (&r->err_fd);
  close_fd (&r->masked_fd);
  free (r->token);
  free (r->ndesc);
  free (r);
}

void
vuc_ring_reset (struct vuc_ring *r)
{
  eventfd_t v;

  memset (r->desc, 0, 16 * (size_t) r->num);
  memset (r->avail, 0, avail_bytes (r->num));
  memset (r->used, 0, used_bytes (r->num));
  memset (r->ind, 0, 16 * (size_t) r->num * r->ind_max);
  memset (r->token, 0, r->num * sizeof *r->token);
  init_free_list (r);
  r->avail_idx = r->kicked_idx = r->last_used = 0;
  r->outstanding = 0;
  r->base = 0;
  r->base_from_used = false;
  r->err_signalled = false;
  eventfd_read (r->call_fd, &v);
  eventfd_read (r->err_fd, &v);
}

uint16_t
vuc_ring_used_idx (const struct vuc_ring *r)
{
  return le16toh (__atomic_load_n (&r->used->idx, __ATOMIC_ACQUIRE));
}

int
vuc_ring_take_desc (struct vuc_ring *r)
{
  uint16_t d = r->free_head;

  if (r->num_free == 0) {
    vuc_set_error ("queue %u: no free descriptor", r->index);
    return -1;
  }
  r->free_head = links (r)[d];
  r->num_free--;
  return d;
}

static void
put_desc (struct vring_desc *d, const struct vuc_buf *b, uint16_t flags,
          uint16_t next)
{
  d->addr = htole64 (b->gpa);
  d->len = htole32 (b->len);
  d->flags = htole16 (flags | (b->write ? VRING_DESC_F_WRITE : 0));
  d->next = htole16 (next);
}

/* One descriptor pointing at the head's own indirect table. */
static int
add_indirect (struct vuc_ring *r, const struct vuc_mem *m,
              const struct vuc_buf *b, unsigned n)
{
  struct vring_desc *table;
  struct vuc_buf t;
  unsigned i;
  int head = vuc_ring_take_desc (r);

  if (head < 0)
    return -1;
  table = r->ind + (size_t) head * r->ind_max;
  for (i = 0; i < n; i++)
    put_desc (&table[i], &b[i], i + 1 < n ? VRING_DESC_F_NEXT : 0, i + 1);
  t = (struct vuc_buf) { vuc_gpa (m, table), 16 * n, false };
  put_desc (&r->desc[head], &t, VRING_DESC_F_INDIRECT, 0);
  r->ndesc[head] = 1;
  return head;
}

/* Descriptors come off the free list in link order, so the host-side
 * links already chain them. */
static int
add_direct (struct vuc_ring *r, const struct vuc_buf *b, unsigned n)
{
  int head = r->free_head, d;
  unsigned i;

  for (i = 0; i < n; i++) {
    d = vuc_ring_take_desc (r);
    put_desc (&r->desc[d], &b[i], i + 1 < n ? VRING_DESC_F_NEXT : 0,
              r->free_head);
  }
  r->ndesc[head] = n;
  return head;
}

int
vuc_ring_add (struct vuc_ring *r, const struct vuc_mem *m,
              const struct vuc_buf *b, unsigned n, void *token)
{
  bool ind = r->indirect && n > 1;
  int head;

  if (n == 0 || n > r->ind_max) {
    vuc_set_error ("queue %u: %u buffers in one request", r->index, n);
    return -1;
  }
  if (r->num_free < (ind ? 1 : n)) {
    vuc_set_error ("queue %u: ring full", r->index);
    return -1;
  }
  head = ind ? add_indirect (r, m, b, n) : add_direct (r, b, n);
  if (head < 0)
    return -1;
  vuc_ring_publish_head (r, head, token);
  return head;
}

void
vuc_ring_publish_head (struct vuc_ring *r, uint16_t head, void *token)
{
  uint16_t *slot = &r->avail->ring[r->avail_idx & (r->num - 1)];

  if (head < r->num) {
    r->token[head] = token;
    r->outstanding++;
  }
  __atomic_store_n (slot, htole16 (head), __ATOMIC_RELAXED);
  r->avail_idx++;
}

/* Makes new entries visible, then asks whether the device wants a
 * kick: avail_event with EVENT_IDX, else the NO_NOTIFY flag. */
void
vuc_ring_kick (struct vuc_ring *r)
{
  uint16_t old = r->kicked_idx, now = r->avail_idx;
  bool need;

  if (old == now)
    return;
  __atomic_store_n (&r->avail->idx, htole16 (now), __ATOMIC_RELEASE);
  r->kicked_idx = now;
  __atomic_thread_fence (__ATOMIC_SEQ_CST);
  if (r->event_idx) {
    uint16_t *ev = (uint16_t *) &r->used->ring[r->num];
    need = vring_need_event (le16toh (__atomic_load_n (ev, __ATOMIC_RELAXED)),
                             now, old);
  }
  else
    need = !(le16toh (__atomic_load_n (&r->used->flags, __ATOMIC_RELAXED))
             & VRING_USED_F_NO_NOTIFY);
  if (need) {
    eventfd_write (r->kick_fd, 1);
    r->kicks++;
  }
}

/* Returns a head's descriptors to the free list. */
static void
free_chain (struct vuc_ring *r, uint16_t head)
{
  uint16_t *next = links (r);
  uint16_t last = head;
  unsigned i;

  for (i = 1; i < r->ndesc[head]; i++)
    last = next[last];
  next[last] = r->free_head;
  r->free_head = head;
  r->num_free += r->ndesc[head];
  r->token[head] = NULL;
  r->outstanding--;
}

int
vuc_ring_reap (struct vuc_ring *r, void **token, uint32_t *len)
{
  uint16_t idx = vuc_ring_used_idx (r);
  struct vring_used_elem e;

  if (idx == r->last_used)
    return 0;
  if ((uint16_t) (idx - r->last_used) > r->num) {
    vuc_set_error ("queue %u: used index jumped from %u to %u", r->index,
                   r->last_used, idx);
    return -1;
  }
  memcpy (&e, &r->used->ring[r->last_used & (r->num - 1)], sizeof e);
  r->last_used++;
  e.id = le32toh (e.id);
  if (e.id >= r->num || r->token[e.id] == NULL) {
    vuc_set_error ("queue %u: used entry %u: id %u is not an outstanding "
                   "head", r->index, (uint16_t) (r->last_used - 1), e.id);
    return -1;
  }
  *token = r->token[e.id];
  *len = le32toh (e.len);
  if (r->ndesc[e.id])
    free_chain (r, e.id);
  else {                        /* hand-made chain: descriptors stay taken */
    r->token[e.id] = NULL;
    r->outstanding--;
  }
  if (r->poll && r->event_idx)  /* keep the interrupt point far away */
    __atomic_store_n (&r->avail->ring[r->num],
                      htole16 (r->last_used + 0x8000), __ATOMIC_RELAXED);
  return 1;
}

static bool
has_used (const struct vuc_ring *r)
{
  return vuc_ring_used_idx (r) != r->last_used;
}

/* Asks for an interrupt at the next used entry. */
static void
arm (struct vuc_ring *r)
{
  if (r->event_idx)
    __atomic_store_n (&r->avail->ring[r->num], htole16 (r->last_used),
                      __ATOMIC_RELAXED);
  else
    __atomic_store_n (&r->avail->flags, 0, __ATOMIC_RELAXED);
  __atomic_thread_fence (__ATOMIC_SEQ_CST);
}

static int
wait_poll (struct vuc_ring *r, uint64_t deadline)
{
  unsigned spin = 0;

  if (!r->event_idx)
    r->avail->flags = htole16 (VRING_AVAIL_F_NO_INTERRUPT);
  while (!has_used (r))
    if ((++spin & 1023) == 0 && vuc_now_ns () >= deadline)
      return 0;
  return 1;
}

int
vuc_ring_wait (struct vuc_ring *r, uint64_t deadline)
{
  struct pollfd p[3];
  eventfd_t v;
  uint64_t now;

  if (r->poll)
    return wait_poll (r, deadline);
  for (;;) {
    if (has_used (r))
      return 1;
    arm (r);
    if (has_used (r))
      return 1;
    now = vuc_now_ns ();
    if (now >= deadline)
      return 0;
    p[0] = (struct pollfd) { .fd = r->call_fd, .events = POLLIN };
    p[1] = (struct pollfd) { .fd = r->err_fd, .events = POLLIN };
    p[2] = (struct pollfd) { .fd = r->sock, .events = POLLRDHUP };
    if (poll (p, r->sock >= 0 ? 3 : 2,
              (int) ((deadline - now + 999999) / 1000000)) == -1) {
      if (errno == EINTR)
        continue;
      vuc_set_error ("poll: %s", strerror (errno));
      return -1;
    }
    r->waits++;
    if (p[0].revents & POLLIN)
      eventfd_read (r->call_fd, &v);
    if (p[1].revents & POLLIN) {
      eventfd_read (r->err_fd, &v);
      r->err_signalled = true;
      vuc_set_error ("queue %u: the back-end signalled the ring's error "
                     "eventfd", r->index);
      return -1;
    }
    if (r->sock >= 0 && (p[2].revents & (POLLRDHUP | POLLHUP | POLLERR))
        && !has_used (r)) {
      r->hangup = true;
      vuc_set_error ("queue %u: the back-end closed the connection",
                     r->index);
      return -1;
    }
  }
}

uint64_t
vuc_ring_desc_gpa (const struct vuc_ring *r, const struct vuc_mem *m)
{
  return vuc_gpa (m, r->desc);
}
