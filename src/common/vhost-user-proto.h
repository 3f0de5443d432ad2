/* The vhost-user wire protocol: message ids, feature bits and payload
 * layouts, as QEMU's docs/interop/vhost-user.rst defines them.  Shared
 * by the daemon and the blkgate-io front-end.  All integers are in host
 * byte order. */

#ifndef BLKGATE_VHOST_USER_PROTO_H
#define BLKGATE_VHOST_USER_PROTO_H

#include <stdint.h>

/* Front-end -> back-end requests. */
enum vu_request {
  VU_GET_FEATURES = 1,
  VU_SET_FEATURES = 2,
  VU_SET_OWNER = 3,
  VU_RESET_OWNER = 4,
  VU_SET_MEM_TABLE = 5,
  VU_SET_LOG_BASE = 6,
  VU_SET_LOG_FD = 7,
  VU_SET_VRING_NUM = 8,
  VU_SET_VRING_ADDR = 9,
  VU_SET_VRING_BASE = 10,
  VU_GET_VRING_BASE = 11,
  VU_SET_VRING_KICK = 12,
  VU_SET_VRING_CALL = 13,
  VU_SET_VRING_ERR = 14,
  VU_GET_PROTOCOL_FEATURES = 15,
  VU_SET_PROTOCOL_FEATURES = 16,
  VU_GET_QUEUE_NUM = 17,
  VU_SET_VRING_ENABLE = 18,
  VU_SEND_RARP = 19,
  VU_NET_SET_MTU = 20,
  VU_SET_BACKEND_REQ_FD = 21,
  VU_IOTLB_MSG = 22,
  VU_SET_VRING_ENDIAN = 23,
  VU_GET_CONFIG = 24,
  VU_SET_CONFIG = 25,
  VU_GET_INFLIGHT_FD = 31,
  VU_SET_INFLIGHT_FD = 32,
  VU_RESET_DEVICE = 34,
  VU_GET_MAX_MEM_SLOTS = 36,
  VU_ADD_MEM_REG = 37,
  VU_REM_MEM_REG = 38,
  VU_SET_STATUS = 39,
  VU_GET_STATUS = 40,
  VU_GET_VRING_BASE_SKIP_DRAIN = 45,
  VU_REQUEST_MAX = 46,
};

/* Header flags. */
#define VU_VERSION          0x1
#define VU_VERSION_MASK     0x3
#define VU_FLAG_REPLY       0x4
#define VU_FLAG_NEED_REPLY  0x8

/* Requests the back-end sends on the back-end request channel
 * (SET_BACKEND_REQ_FD). */
#define VU_BACKEND_CONFIG_CHANGE_MSG 2

/* Virtio / vhost feature bits (u64 of GET/SET_FEATURES). */
#define VU_F_NOTIFY_ON_EMPTY      24
#define VU_F_LOG_ALL              26
#define VU_F_INDIRECT_DESC        28
#define VU_F_EVENT_IDX            29
#define VU_F_PROTOCOL_FEATURES    30
#define VU_F_VERSION_1            32
#define VU_F_RING_PACKED          34

/* Protocol feature bits. */
#define VU_PF_MQ                   0
#define VU_PF_LOG_SHMFD            1
#define VU_PF_RARP                 2
#define VU_PF_REPLY_ACK            3
#define VU_PF_MTU                  4
#define VU_PF_BACKEND_REQ          5
#define VU_PF_CONFIG               9
#define VU_PF_BACKEND_SEND_FD     10
#define VU_PF_INFLIGHT_SHMFD      12
#define VU_PF_RESET_DEVICE        13
#define VU_PF_CONFIGURE_MEM_SLOTS 15
#define VU_PF_STATUS              16
#define VU_PF_GET_VRING_BASE_INFLIGHT 20
#define VU_PF_GET_VRING_BASE_SKIP_DRAIN 23

#define VU_BIT(n) (UINT64_C(1) << (n))

/* Limits. */
#define VU_MAX_FDS            8     /* fds per message */
#define VU_MAX_MEM_REGIONS    8     /* regions in SET_MEM_TABLE */
#define VU_MAX_MEM_SLOTS      32    /* regions with ADD_MEM_REG */
#define VU_MAX_QUEUE_SIZE     1024
#define VU_MAX_CONFIG_SIZE    256
#define VU_VRING_IDX_MASK     0xff  /* index bits of kick/call/err u64 */
#define VU_VRING_NOFD_MASK    (1u << 8)

struct vu_header {
  uint32_t request;
  uint32_t flags;
  uint32_t size;
} __attribute__ ((packed));

struct vu_vring_state {
  uint32_t index;
  uint32_t num;
};

struct vu_vring_addr {
  uint32_t index;
  uint32_t flags;               /* bit 0: VU_VRING_F_LOG */
  uint64_t desc_user_addr;
  uint64_t used_user_addr;
  uint64_t avail_user_addr;
  uint64_t log_guest_addr;
};
#define VU_VRING_F_LOG 0x1

struct vu_mem_region {
  uint64_t guest_phys_addr;
  uint64_t memory_size;
  uint64_t userspace_addr;
  uint64_t mmap_offset;
};

struct vu_mem_table {
  uint32_t nregions;
  uint32_t padding;
  struct vu_mem_region regions[VU_MAX_MEM_REGIONS];
};

struct vu_mem_single {
  uint64_t padding;
  struct vu_mem_region region;
};

struct vu_log {
  uint64_t mmap_size;
  uint64_t mmap_offset;
};

struct vu_config {
  uint32_t offset;
  uint32_t size;
  uint32_t flags;
  uint8_t data[VU_MAX_CONFIG_SIZE];
};
#define VU_CONFIG_HDR_SIZE 12

struct vu_inflight {
  uint64_t mmap_size;
  uint64_t mmap_offset;
  uint16_t num_queues;
  uint16_t queue_size;
};

union vu_payload {
  uint64_t u64;
  struct vu_vring_state state;
  struct vu_vring_addr addr;
  struct vu_mem_table memory;
  struct vu_mem_single mem_reg;
  struct vu_log log;
  struct vu_config config;
  struct vu_inflight inflight;
};

/* A whole message: header, payload and the fds that came with it. */
struct vu_msg {
  struct vu_header hdr;
  union vu_payload payload;
  int fds[VU_MAX_FDS];
  unsigned nfds;
};

/* "GET_FEATURES", ..., or "UNKNOWN" (common/vu-names.c). */
const char *vu_request_name (uint32_t request);

#endif /* BLKGATE_VHOST_USER_PROTO_H */
