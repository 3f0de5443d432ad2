/* libvuclient: a vhost-user-blk front-end ("vuc" = vhost-user client).
 *
 * It plays QEMU's part towards a vhost-user-blk back-end: guest memory
 * in one memfd, feature and protocol-feature negotiation, the message
 * sequences QEMU sends at init, start, stop and after a back-end crash,
 * the driver side of split virtqueues and asynchronous virtio-blk
 * requests.  blkgate-io is built on it; tests can link it too.
 *
 * Thread model: a struct vuc_conn and its messages belong to one thread
 * (the control thread).  Each ring may be handed to another thread for
 * its data path (submit, reap, wait) while the control thread sends no
 * message about that ring.  Nothing here takes a lock.
 *
 * Errors: functions return -1 (or NULL) and leave a message for
 * vuc_error (), which is per thread. */

#ifndef BLKGATE_VUC_H
#define BLKGATE_VUC_H

#include <stdbool.h>
#include <stdint.h>
#include <linux/virtio_blk.h>
#include <linux/virtio_ring.h>

#include "vhost-user-proto.h"

#define VUC_MAX_QUEUES     64
#define VUC_MAX_REGIONS     8
#define VUC_MAX_DATA       16   /* data buffers in one request */
#define VUC_DEFAULT_MEM    (64u << 20)
#define VUC_DEFAULT_QSIZE  256
#define VUC_DEFAULT_GPA    UINT64_C(0x40000000) /* 1 GiB: GPA 0 is a bug */
#define VUC_CONFIG_LEN     60   /* what QEMU 7.2 asks with all features */

/* ------------------------------------------------------------------ */
/* Errors and time */

const char *vuc_error (void);
void vuc_set_error (const char *fmt, ...)
  __attribute__ ((format (printf, 1, 2)));
uint64_t vuc_now_ns (void);         /* CLOCK_MONOTONIC */

/* ------------------------------------------------------------------ */
/* Guest memory (vuc-mem.c)
 *
 * One memfd mapped MAP_SHARED at base.  Guest-physical addresses start
 * at gpa.  The back-end is told our real mapping address as the
 * "userspace address", as QEMU does.  Rings are carved from the bottom
 * and kept for the life of the memory (they survive reconnects); data
 * buffers come from the top in stack order (mark, push, release). */

struct vuc_mem {
  int fd;
  uint8_t *base;
  uint64_t size;
  uint64_t gpa;
  unsigned nregions;            /* the memfd is announced as this many */
  uint64_t low;                 /* next free byte for rings */
  uint64_t high;                /* data stack grows down from here */
};

int vuc_mem_init (struct vuc_mem *m, uint64_t size, uint64_t gpa,
                  unsigned nregions);
void vuc_mem_free (struct vuc_mem *m);
void *vuc_mem_alloc (struct vuc_mem *m, uint64_t size, uint64_t align);
void *vuc_mem_push (struct vuc_mem *m, uint64_t size, uint64_t align);
uint64_t vuc_mem_mark (const struct vuc_mem *m);
void vuc_mem_release (struct vuc_mem *m, uint64_t mark);
uint64_t vuc_gpa (const struct vuc_mem *m, const void *p);
void *vuc_ptr (const struct vuc_mem *m, uint64_t gpa, uint64_t len);
/* The region table as SET_MEM_TABLE / ADD_MEM_REG describe it. */
unsigned vuc_mem_regions (const struct vuc_mem *m, struct vu_mem_region *r);

/* ------------------------------------------------------------------ */
/* Split virtqueue, driver side (vuc-ring.c) */

struct vuc_buf {
  uint64_t gpa;
  uint32_t len;
  bool write;                   /* device-writable */
};

struct vuc_ring {
  unsigned index;
  unsigned num;                 /* ring size (power of 2) */
  struct vring_desc *desc;
  struct vring_avail *avail;
  struct vring_used *used;
  struct vring_desc *ind;       /* one indirect table per head */
  unsigned ind_max;             /* entries in each table */
  void **token;                 /* per head; NULL = free */
  uint16_t *ndesc;              /* descriptors each head holds */
  uint16_t free_head;
  unsigned num_free;
  uint16_t avail_idx;           /* shadow of avail->idx */
  uint16_t kicked_idx;          /* avail->idx at the last kick check */
  uint16_t last_used;           /* next used entry we will reap */
  unsigned outstanding;         /* heads handed to the device */
  bool event_idx;               /* VIRTIO_RING_F_EVENT_IDX negotiated */
  bool indirect;                /* use indirect tables */
  bool poll;                    /* wait by polling, interrupts off */
  int kick_fd, call_fd, err_fd;
  int masked_fd;                /* "masked notifier" sent at init */
  int sock;                     /* the connection, watched for hang-ups */
  /* vhost state */
  bool started;                 /* SET_VRING_KICK sent on this connection */
  bool enabled;
  bool stopped;                 /* stopped by vuc_stop_queue */
  bool base_from_used;          /* next start: base = used->idx (crash) */
  uint16_t base;                /* next start otherwise (GET_VRING_BASE) */
  bool err_signalled;           /* the back-end wrote err_fd */
  bool hangup;                  /* a wait saw the connection close */
  uint64_t log_gpa;             /* SET_VRING_ADDR log_guest_addr (0: the
                                   used ring's GPA, as QEMU sends) */
  uint64_t kicks, waits;        /* statistics */
};

struct vuc_ring *vuc_ring_new (struct vuc_mem *m, unsigned index,
                               unsigned num, unsigned ind_max);
void vuc_ring_free (struct vuc_ring *r);
/* Forgets every request and zeroes the ring (as a guest driver reset). */
void vuc_ring_reset (struct vuc_ring *r);
uint64_t vuc_ring_desc_gpa (const struct vuc_ring *r, const struct vuc_mem *m);
/* Adds a chain (all readable buffers first).  Returns the head, or -1
 * when the ring has no room (vuc_error says so). */
int vuc_ring_add (struct vuc_ring *r, const struct vuc_mem *m,
                  const struct vuc_buf *b, unsigned n, void *token);
/* Publishes the added heads and kicks if the device wants a kick. */
void vuc_ring_kick (struct vuc_ring *r);
/* Makes one head available without building it (fault injection). */
void vuc_ring_publish_head (struct vuc_ring *r, uint16_t head, void *token);
/* Takes one used element: 1 with *token and *len, 0 if none, -1 if the
 * device returned something that is not an outstanding head. */
int vuc_ring_reap (struct vuc_ring *r, void **token, uint32_t *len);
/* Waits until a used element is there: 1, 0 on timeout, -1 on error
 * (err eventfd signalled, connection closed). */
int vuc_ring_wait (struct vuc_ring *r, uint64_t deadline_ns);
/* Takes free descriptors off the free list, for hand-made chains. */
int vuc_ring_take_desc (struct vuc_ring *r);
uint16_t vuc_ring_used_idx (const struct vuc_ring *r);

/* ------------------------------------------------------------------ */
/* Connection (vuc-msg.c: framing; vuc-conn.c: sequences) */

enum vuc_stop_mode {
  VUC_STOP_DRAIN,               /* GET_VRING_BASE, num = 0 */
  VUC_STOP_SKIP_DRAIN,          /* GET_VRING_BASE, num = 1 (bit 20) */
  VUC_STOP_MSG45,               /* GET_VRING_BASE_SKIP_DRAIN (bit 23) */
};

struct vuc_conn {
  /* Settings, before the first vuc_open. */
  char *path;
  int timeout_ms;               /* reply (and I/O) timeout */
  unsigned queue_size;
  uint64_t feature_mask;        /* features we may ack */
  uint64_t protocol_mask;       /* protocol features we may ack */
  bool poll;                    /* rings wait by polling */
  int verbose;                  /* trace messages on stderr */

  /* The connection. */
  int sock;
  bool hangup;                  /* the back-end closed the connection */
  unsigned replies;             /* received on this connection */
  bool inited;                  /* init sequence done */
  bool started;                 /* start sequence done */
  bool realized;                /* GET_CONFIG done (first init only) */
  bool mem_added;               /* ADD_MEM_REG done on this connection */
  uint64_t features;            /* offered by the back-end */
  uint64_t protocol_features;
  uint64_t acked_features;
  uint64_t acked_protocol;
  uint64_t queue_num;           /* GET_QUEUE_NUM, or 1 */
  uint64_t max_mem_slots;
  uint8_t config[VU_MAX_CONFIG_SIZE];
  uint32_t config_len;

  /* Guest state: kept across reconnects. */
  struct vuc_mem mem;
  unsigned nqueues;             /* rings set up */
  struct vuc_ring *rings[VUC_MAX_QUEUES];
  int inflight_fd;              /* INFLIGHT_SHMFD region, -1 if none */
  void *inflight_addr;
  uint64_t inflight_size;
  uint64_t inflight_offset;
  uint16_t inflight_queues;
  /* Dirty log (migration): kept across reconnects, as QEMU keeps it. */
  int log_fd;                   /* -1: none */
  uint8_t *log_addr;
  uint64_t log_size;            /* bytes of bitmap (SET_LOG_BASE mmap_size) */
  bool log_on;                  /* LOG_ALL acked, F_LOG on every ring */
};

/* vuc-msg.c */
int vuc_send (struct vuc_conn *c, uint32_t req, uint32_t flags,
              const void *payload, uint32_t size, const int *fds,
              unsigned nfds);
/* Raw send: header fields as given, body bytes as given. */
int vuc_send_raw (struct vuc_conn *c, const struct vu_header *h,
                  const void *body, uint32_t body_len, const int *fds,
                  unsigned nfds);
/* Receives one message within timeout_ms: 1, 0 on timeout, -1 on
 * error or end of file (vuc_error says which). */
int vuc_recv (struct vuc_conn *c, struct vu_msg *msg, int timeout_ms);
/* A request whose reply carries a payload: checks flags, id, size. */
int vuc_call (struct vuc_conn *c, uint32_t req, const void *payload,
              uint32_t size, const int *fds, unsigned nfds,
              void *reply, uint32_t reply_size, int *reply_fd);
/* A request without its own reply: asks for an ack when REPLY_ACK is
 * negotiated and checks it. */
int vuc_set (struct vuc_conn *c, uint32_t req, const void *payload,
             uint32_t size, const int *fds, unsigned nfds);
int vuc_get_u64 (struct vuc_conn *c, uint32_t req, uint64_t *v);
int vuc_set_u64 (struct vuc_conn *c, uint32_t req, uint64_t v);
int vuc_set_state (struct vuc_conn *c, uint32_t req, uint32_t index,
                   uint32_t num);
int vuc_set_vring_fd (struct vuc_conn *c, uint32_t req, uint32_t index,
                      int fd);

/* vuc-conn.c */
void vuc_conn_init (struct vuc_conn *c, const char *path);
/* Allocates guest memory and the first rings (before vuc_open). */
int vuc_conn_setup (struct vuc_conn *c, uint64_t mem_size, uint64_t gpa,
                    unsigned nregions, unsigned nqueues);
void vuc_conn_free (struct vuc_conn *c);
/* Connects, retrying for retry_ms while nobody listens. */
int vuc_open (struct vuc_conn *c, int retry_ms);
void vuc_close (struct vuc_conn *c);
/* QEMU's init sequence (and GET_CONFIG the first time). */
int vuc_init (struct vuc_conn *c);
/* QEMU's start sequence for every ring set up. */
int vuc_start (struct vuc_conn *c);
/* Sets up and starts ring i on a running device. */
int vuc_add_queue (struct vuc_conn *c, unsigned i);
/* SET_VRING_ENABLE(0) (unless already sent) then GET_VRING_BASE (or its skip-drain forms).
 * *base is the returned index, *us the GET_VRING_BASE round trip. */
int vuc_stop_queue (struct vuc_conn *c, unsigned i, enum vuc_stop_mode mode,
                    uint16_t *base, uint64_t *us);
/* Restarts ring i with the base GET_VRING_BASE returned. */
int vuc_restart_queue (struct vuc_conn *c, unsigned i);
/* Connects (retrying for retry_ms while nobody listens) and runs init,
 * and start if asked.  A back-end that hangs up before its first reply
 * (one still busy with our previous connection refuses a second one) is
 * tried again for at least 2 s, as QEMU's reconnect timer would. */
int vuc_connect (struct vuc_conn *c, int retry_ms, bool start);
/* What QEMU does when the back-end went away: drop the connection
 * without GET_VRING_BASE, connect again, init and start with
 * SET_VRING_BASE = used->idx and the same memory and inflight region. */
int vuc_reconnect (struct vuc_conn *c, int retry_ms);
/* Migration: the caller stopped every ring; connect to a new back-end
 * and start there with the stopped bases.  With keep_inflight the
 * inflight region is copied into a fresh memfd and handed over (as a
 * destination QEMU does with inflight migration). */
int vuc_migrate (struct vuc_conn *c, const char *path, bool keep_inflight);
/* Guest reset on the live connection: drain and stop every ring,
 * RESET_DEVICE if negotiated, rings zeroed, inflight region dropped. */
int vuc_reset_device (struct vuc_conn *c);
/* Forgets everything guest-side: rings zeroed, inflight region dropped
 * (a guest reset), connection closed. */
void vuc_reset_guest (struct vuc_conn *c);
bool vuc_has_pf (const struct vuc_conn *c, unsigned bit);
bool vuc_has_f (const struct vuc_conn *c, unsigned bit);

/* Dirty logging as QEMU drives it for migration (hw/virtio/vhost.c):
 * the log is a memfd bitmap, one bit per 4 KiB guest-physical page from
 * GPA 0 to the end of guest memory.
 *   start:  SET_LOG_BASE (+fd; with LOG_SHMFD the back-end replies a
 *           u64), SET_FEATURES(+LOG_ALL) + barrier, per started ring
 *           SET_VRING_ADDR(F_LOG) + barrier
 *   resize: SET_LOG_BASE of a new bitmap; the old bits are carried over
 *   stop:   SET_FEATURES(-LOG_ALL) + barrier, per ring SET_VRING_ADDR(0)
 *           + barrier; the bitmap stays mapped for inspection
 * size 0 means QEMU's size for our memory (vuc_log_default_size). */
#define VUC_LOG_PAGE 4096
uint64_t vuc_log_default_size (const struct vuc_conn *c);
int vuc_log_start (struct vuc_conn *c, uint64_t size);
int vuc_log_resize (struct vuc_conn *c, uint64_t size);
int vuc_log_stop (struct vuc_conn *c);
/* Half a stop, for tests: only SET_FEATURES(-LOG_ALL) (rings keep
 * F_LOG), or only SET_VRING_ADDR without F_LOG (LOG_ALL stays). */
int vuc_log_stop_features (struct vuc_conn *c);
int vuc_log_stop_rings (struct vuc_conn *c);
void vuc_log_free (struct vuc_conn *c);
/* The log's bit for the page of gpa: 1, 0, or -1 beyond the bitmap. */
int vuc_log_test (const struct vuc_conn *c, uint64_t gpa);

/* ------------------------------------------------------------------ */
/* virtio-blk requests (vuc-blk.c) */

#define VUC_STATUS_NONE 0xff    /* the back-end wrote no status byte */

struct vuc_req {
  uint32_t type;                /* VIRTIO_BLK_T_* */
  uint64_t sector;
  struct vuc_buf data[VUC_MAX_DATA];
  unsigned ndata;
  /* Guest memory for the header and status byte (vuc_req_setup). */
  struct virtio_blk_outhdr *hdr;
  uint8_t *status;
  /* Completion. */
  bool busy;
  bool done;
  uint8_t result;               /* status byte */
  uint32_t used_len;
  uint64_t t_submit;            /* ns */
  void *opaque;
};

/* Carves the header and status byte for r: permanent or pushed. */
int vuc_req_setup (struct vuc_mem *m, struct vuc_req *r, bool push);
/* Fills a request; data buffers are GPA ranges in guest memory. */
void vuc_req_rw (struct vuc_req *r, bool write, uint64_t offset,
                 uint64_t gpa, uint32_t len);
void vuc_req_flush (struct vuc_req *r);
void vuc_req_get_id (struct vuc_req *r, uint64_t gpa);
/* DISCARD / WRITE_ZEROES with nseg segments already written at gpa. */
void vuc_req_segments (struct vuc_req *r, uint32_t type, uint64_t gpa,
                       unsigned nseg);
void vuc_seg_fill (struct virtio_blk_discard_write_zeroes *s,
                   uint64_t offset, uint64_t len, bool unmap);
/* Adds r to the ring (no kick).  -1 if the ring has no room. */
int vuc_blk_submit (struct vuc_ring *ring, struct vuc_mem *m,
                    struct vuc_req *r);
/* Reaps one completion: the request, or NULL (none, or error: then
 * *err is set). */
struct vuc_req *vuc_blk_reap (struct vuc_ring *ring, int *err);
/* Kicks and waits until r is done, reaping everything that completes
 * meanwhile. */
int vuc_blk_wait (struct vuc_ring *ring, struct vuc_req *r, int timeout_ms);
/* Submit + wait. */
int vuc_blk_run (struct vuc_ring *ring, struct vuc_mem *m, struct vuc_req *r,
                 int timeout_ms);
const char *vuc_status_name (uint8_t status);

/* virtio_blk_config fields, decoded from what GET_CONFIG returned. */
struct vuc_blk_info {
  uint64_t capacity;            /* bytes */
  uint32_t blk_size;
  uint32_t seg_max, size_max;
  uint16_t num_queues;
  uint32_t max_discard_sectors, max_discard_seg, discard_align;
  uint32_t max_zero_sectors, max_zero_seg;
  bool zero_may_unmap, wce, readonly;
};
void vuc_blk_info (const struct vuc_conn *c, struct vuc_blk_info *i);

#endif /* BLKGATE_VUC_H */
