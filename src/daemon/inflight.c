/* Inflight tracking.
 *
 * The region is allocated by us (GET_INFLIGHT_FD), kept by the front-end
 * across our crashes and handed back (SET_INFLIGHT_FD) to the next
 * process, or, after a migration, to another gateway.  It is shared
 * memory we did not necessarily write, so everything read from it is
 * checked before it is trusted: our magic and version, sizes, head
 * indexes, flags.
 *
 * Layout: our 64-byte header, then one area per queue of queue_stride
 * bytes, each sized for the larger of the split and packed layouts so
 * packed rings can use the same region.  This file has the region and
 * split rings; inflight-packed.c has packed rings. */

#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "inflight.h"
#include "utils.h"

static uint32_t
queue_stride (uint16_t queue_size)
{
  size_t split = sizeof (struct inflight_split_queue) +
    sizeof (struct inflight_split_desc) * (size_t) queue_size;
  size_t packed = sizeof (struct inflight_packed_queue) +
    sizeof (struct inflight_packed_desc) * (size_t) queue_size;
  size_t s = split > packed ? split : packed;

  return (s + 63) & ~(size_t) 63;
}

int
inflight_create (uint16_t num_queues, uint16_t queue_size, int *fdp,
                 uint64_t *sizep, const char **err)
{
  struct inflight_header *h;
  uint64_t size;
  int fd;

  if (num_queues == 0 || queue_size == 0 || queue_size > 1024) {
    *err = "invalid queue count or size for the inflight region";
    return -1;
  }
  size = sizeof *h + (uint64_t) num_queues * queue_stride (queue_size);
  fd = memfd_create ("blkgate-inflight", MFD_CLOEXEC | MFD_ALLOW_SEALING);
  if (fd == -1 || ftruncate (fd, size) == -1) {
    *err = "cannot create the inflight memfd";
    goto fail;
  }
  h = mmap (NULL, sizeof *h, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (h == MAP_FAILED) {
    *err = "cannot map the inflight memfd";
    goto fail;
  }
  memcpy (h->magic, INFLIGHT_MAGIC, sizeof h->magic);
  h->version = INFLIGHT_VERSION;
  h->header_size = sizeof *h;
  h->num_queues = num_queues;
  h->queue_size = queue_size;
  h->queue_stride = queue_stride (queue_size);
  munmap (h, sizeof *h);
  if (fcntl (fd, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL)) {
    *err = "cannot seal the inflight memfd";
    goto fail;
  }
  *fdp = fd;
  *sizep = size;
  return 0;

 fail:
  if (fd >= 0)
    close (fd);
  return -1;
}

static int
check_header (const struct inflight_header *h, size_t size, const char **err)
{
  if (memcmp (h->magic, INFLIGHT_MAGIC, sizeof h->magic) != 0) {
    *err = "inflight region was not written by blkgate (bad magic)";
    return -1;
  }
  if (h->version != INFLIGHT_VERSION || h->header_size != sizeof *h) {
    *err = "inflight region has an unknown layout version";
    return -1;
  }
  if (h->num_queues == 0 || h->queue_size == 0 || h->queue_size > 1024 ||
      h->queue_stride != queue_stride (h->queue_size) ||
      size < h->header_size +
      (uint64_t) h->num_queues * h->queue_stride) {
    *err = "inflight region sizes are inconsistent";
    return -1;
  }
  return 0;
}

int
inflight_map (struct inflight_region *r, int fd, uint64_t size,
              uint64_t offset, const char **err)
{
  struct inflight_header h;
  struct stat st;
  void *p;

  if (size < sizeof h || size > (1u << 30) ||
      !range_ok (offset, size, INT64_MAX) || offset % 4096) {
    *err = "inflight region size or offset out of range";
    return -1;
  }
  if (fstat (fd, &st) == -1 || !S_ISREG (st.st_mode) ||
      (uint64_t) st.st_size < offset + size) {
    *err = "inflight region is larger than its file";
    return -1;
  }
  p = mmap (NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);
  if (p == MAP_FAILED) {
    *err = "cannot map the inflight region";
    return -1;
  }
  memcpy (&h, p, sizeof h);
  if (check_header (&h, size, err) == -1) {
    munmap (p, size);
    return -1;
  }
  inflight_unmap (r);
  r->addr = p;
  r->size = size;
  r->header_size = h.header_size;
  r->num_queues = h.num_queues;
  r->queue_size = h.queue_size;
  r->queue_stride = h.queue_stride;
  return 0;
}

void
inflight_unmap (struct inflight_region *r)
{
  if (r->addr)
    munmap (r->addr, r->size);
  memset (r, 0, sizeof *r);
}

/* The last batch reached the used ring but its flags were not all
 * cleared: walk the batch list back from last_batch_head. */
static int
repair_last_batch (struct inflight_split_queue *q, unsigned num,
                   uint16_t used_idx, const char **err)
{
  uint16_t n = used_idx - q->used_idx, head = q->last_batch_head;

  if (n > num) {
    *err = "inflight region's used index is further off than the ring size";
    return -1;
  }
  while (n--) {
    if (head >= num) {
      *err = "inflight region's batch list leaves the ring";
      return -1;
    }
    q->desc[head].inflight = 0;
    head = q->desc[head].next;
  }
  q->used_idx = used_idx;
  return 0;
}

struct pending {
  uint64_t counter;
  uint16_t head;
};

/* Submission order, tolerant of counter wrap-around. */
static int
by_counter (const void *a, const void *b)
{
  int64_t d = (int64_t) (((const struct pending *) a)->counter -
                         ((const struct pending *) b)->counter);
  return d < 0 ? -1 : d > 0;
}

/* Copies the in-flight entries out of the shared region before sorting
 * them: the front-end could change the region under a sort. */
static int
collect (struct inflight_ring *ir, uint16_t *heads, unsigned *n,
         const char **err)
{
  struct inflight_split_queue *q = ir->q;
  struct pending *p = malloc (sizeof *p * ir->num);
  unsigned i, k = 0;

  if (p == NULL) {
    *err = "out of memory";
    return -1;
  }
  for (i = 0; i < ir->num; i++) {
    uint8_t flag = q->desc[i].inflight;
    if (flag > 1) {
      *err = "inflight region holds an invalid flag";
      free (p);
      return -1;
    }
    if (flag)
      p[k++] = (struct pending) { q->desc[i].counter, i };
  }
  qsort (p, k, sizeof *p, by_counter);
  for (i = 0; i < k; i++)
    heads[i] = p[i].head;
  ir->counter = k ? p[k - 1].counter + 1 : 0;
  *n = k;
  free (p);
  return 0;
}

/* Split: the position comes from the region: everything up to
 * used->idx is done, and the in-flight heads were fetched after it,
 * whatever SET_VRING_BASE said (after a crash QEMU sends the used
 * index). */
static int
split_start (struct inflight_ring *ir, struct inflight_split_queue *q,
             struct ring *vr, uint16_t *heads, unsigned *n, const char **err)
{
  unsigned num = vr->num;
  uint16_t used_idx = vring_used_idx (vr);

  ir->q = q;
  ir->num = num;
  if (q->version == 0) {        /* fresh: nothing to recover */
    memset (q->desc, 0, sizeof q->desc[0] * num);
    q->features = 0;
    q->desc_num = num;
    q->last_batch_head = 0;
    q->used_idx = used_idx;
    __atomic_store_n (&q->version, 1, __ATOMIC_RELEASE);
  }
  else if (q->version != 1 || q->desc_num != num || q->features != 0) {
    *err = "inflight region's queue area does not match this ring";
    ir->q = NULL;
    return -1;
  }
  else if ((q->used_idx != used_idx &&
            repair_last_batch (q, num, used_idx, err) == -1) ||
           collect (ir, heads, n, err) == -1) {
    ir->q = NULL;
    return -1;
  }
  vr->last_avail_idx = used_idx + *n;
  return 0;
}

int
inflight_ring_start (struct inflight_ring *ir, struct inflight_region *r,
                     unsigned index, struct ring *vr, uint16_t *heads,
                     unsigned *n, const char **err)
{
  void *area;

  *n = 0;
  memset (ir, 0, sizeof *ir);
  if (r->addr == NULL)
    return 0;
  if (index >= r->num_queues || vr->num > r->queue_size) {
    *err = "ring does not fit the inflight region";
    return -1;
  }
  area = (char *) r->addr + r->header_size + (size_t) index * r->queue_stride;
  if (vr->packed)
    return inflight_packed_start (ir, area, vr, heads, n, err);
  return split_start (ir, area, vr, heads, n, err);
}

int
inflight_walk (struct inflight_ring *ir, struct ring *vr,
               const struct memtable *mem, uint16_t head, struct chain *c,
               const char **err)
{
  if (ir->pq)
    return inflight_packed_walk (ir, vr, mem, head, c, err);
  return vring_walk (vr, mem, head, c, err);
}
