/* virtio-blk requests, driver side: one chain per request, header
 * (readable) first, then the data, then the status byte (writable).
 * The status byte starts as 0xff so that a back-end that completes a
 * request without writing a status is caught. */

#include <config.h>

#include <endian.h>
#include <stddef.h>
#include <string.h>

#include "vuc.h"

int
vuc_req_setup (struct vuc_mem *m, struct vuc_req *r, bool push)
{
  uint8_t *p = push ? vuc_mem_push (m, 32, 16) : vuc_mem_alloc (m, 32, 16);

  memset (r, 0, sizeof *r);
  if (p == NULL)
    return -1;
  r->hdr = (struct virtio_blk_outhdr *) p;
  r->status = p + 16;
  return 0;
}

void
vuc_req_rw (struct vuc_req *r, bool write, uint64_t offset, uint64_t gpa,
            uint32_t len)
{
  r->type = write ? VIRTIO_BLK_T_OUT : VIRTIO_BLK_T_IN;
  r->sector = offset / 512;
  r->data[0] = (struct vuc_buf) { gpa, len, !write };
  r->ndata = 1;
}

void
vuc_req_flush (struct vuc_req *r)
{
  r->type = VIRTIO_BLK_T_FLUSH;
  r->sector = 0;
  r->ndata = 0;
}

void
vuc_req_get_id (struct vuc_req *r, uint64_t gpa)
{
  r->type = VIRTIO_BLK_T_GET_ID;
  r->sector = 0;
  r->data[0] = (struct vuc_buf) { gpa, VIRTIO_BLK_ID_BYTES, true };
  r->ndata = 1;
}

void
vuc_req_segments (struct vuc_req *r, uint32_t type, uint64_t gpa,
                  unsigned nseg)
{
  r->type = type;
  r->sector = 0;
  r->data[0] = (struct vuc_buf) {
    gpa, nseg * sizeof (struct virtio_blk_discard_write_zeroes), false
  };
  r->ndata = 1;
}

void
vuc_seg_fill (struct virtio_blk_discard_write_zeroes *s, uint64_t offset,
              uint64_t len, bool unmap)
{
  s->sector = htole64 (offset / 512);
  s->num_sectors = htole32 ((uint32_t) (len / 512));
  s->flags = htole32 (unmap ? VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP : 0);
}

int
vuc_blk_submit (struct vuc_ring *ring, struct vuc_mem *m, struct vuc_req *r)
{
  struct vuc_buf b[VUC_MAX_DATA + 2];
  unsigned i, n = 0;

  if (r->ndata > VUC_MAX_DATA) {
    vuc_set_error ("too many data buffers");
    return -1;
  }
  r->hdr->type = htole32 (r->type);
  r->hdr->ioprio = 0;
  r->hdr->sector = htole64 (r->sector);
  *r->status = VUC_STATUS_NONE;
  b[n++] = (struct vuc_buf) { vuc_gpa (m, r->hdr), 16, false };
  for (i = 0; i < r->ndata; i++)
    b[n++] = r->data[i];
  b[n++] = (struct vuc_buf) { vuc_gpa (m, r->status), 1, true };
  r->done = false;
  r->busy = true;
  r->t_submit = vuc_now_ns ();
  if (vuc_ring_add (ring, m, b, n, r) < 0) {
    r->busy = false;
    return -1;
  }
  return 0;
}

struct vuc_req *
vuc_blk_reap (struct vuc_ring *ring, int *err)
{
  struct vuc_req *r;
  void *token;
  uint32_t len;
  int n = vuc_ring_reap (ring, &token, &len);

  *err = n < 0 ? -1 : 0;
  if (n <= 0)
    return NULL;
  r = token;
  r->used_len = len;
  r->result = __atomic_load_n (r->status, __ATOMIC_RELAXED);
  r->busy = false;
  r->done = true;
  return r;
}

int
vuc_blk_wait (struct vuc_ring *ring, struct vuc_req *r, int timeout_ms)
{
  uint64_t deadline = vuc_now_ns () + (uint64_t) timeout_ms * 1000000;
  int err, w;

  vuc_ring_kick (ring);
  while (!r->done) {
    while (vuc_blk_reap (ring, &err) != NULL)
      ;
    if (err)
      return -1;
    if (r->done)
      break;
    w = vuc_ring_wait (ring, deadline);
    if (w == 0) {
      vuc_set_error ("queue %u: no completion within %d ms (%u requests "
                     "outstanding)", ring->index, timeout_ms,
                     ring->outstanding);
      return -1;
    }
    if (w < 0)
      return -1;
  }
  return 0;
}

int
vuc_blk_run (struct vuc_ring *ring, struct vuc_mem *m, struct vuc_req *r,
             int timeout_ms)
{
  if (vuc_blk_submit (ring, m, r) == -1)
    return -1;
  return vuc_blk_wait (ring, r, timeout_ms);
}

const char *
vuc_status_name (uint8_t status)
{
  switch (status) {
  case VIRTIO_BLK_S_OK: return "OK";
  case VIRTIO_BLK_S_IOERR: return "IOERR";
  case VIRTIO_BLK_S_UNSUPP: return "UNSUPP";
  case VUC_STATUS_NONE: return "none written";
  default: return "invalid";
  }
}

static uint32_t
le32_at (const uint8_t *p, size_t off)
{
  uint32_t v;
  memcpy (&v, p + off, sizeof v);
  return le32toh (v);
}

void
vuc_blk_info (const struct vuc_conn *c, struct vuc_blk_info *i)
{
  const uint8_t *p = c->config;
  uint64_t cap;
  uint16_t nq;

  memset (i, 0, sizeof *i);
  memcpy (&cap, p, sizeof cap);
  i->capacity = le64toh (cap) * 512;
  i->blk_size = vuc_has_f (c, VIRTIO_BLK_F_BLK_SIZE)
    ? le32_at (p, offsetof (struct virtio_blk_config, blk_size)) : 512;
  if (i->blk_size < 512)
    i->blk_size = 512;
  if (vuc_has_f (c, VIRTIO_BLK_F_SEG_MAX))
    i->seg_max = le32_at (p, offsetof (struct virtio_blk_config, seg_max));
  if (vuc_has_f (c, VIRTIO_BLK_F_SIZE_MAX))
    i->size_max = le32_at (p, offsetof (struct virtio_blk_config, size_max));
  memcpy (&nq, p + offsetof (struct virtio_blk_config, num_queues), 2);
  i->num_queues = vuc_has_f (c, VIRTIO_BLK_F_MQ) ? le16toh (nq) : 1;
  if (vuc_has_f (c, VIRTIO_BLK_F_DISCARD)) {
    i->max_discard_sectors =
      le32_at (p, offsetof (struct virtio_blk_config, max_discard_sectors));
    i->max_discard_seg =
      le32_at (p, offsetof (struct virtio_blk_config, max_discard_seg));
    i->discard_align =
      le32_at (p, offsetof (struct virtio_blk_config, discard_sector_alignment));
  }
  if (vuc_has_f (c, VIRTIO_BLK_F_WRITE_ZEROES)) {
    i->max_zero_sectors =
      le32_at (p, offsetof (struct virtio_blk_config, max_write_zeroes_sectors));
    i->max_zero_seg =
      le32_at (p, offsetof (struct virtio_blk_config, max_write_zeroes_seg));
    i->zero_may_unmap =
      p[offsetof (struct virtio_blk_config, write_zeroes_may_unmap)];
  }
  i->wce = vuc_has_f (c, VIRTIO_BLK_F_CONFIG_WCE) &&
    p[offsetof (struct virtio_blk_config, wce)];
  i->readonly = vuc_has_f (c, VIRTIO_BLK_F_RO);
}
