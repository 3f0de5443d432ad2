/* blkgate-io info: what the back-end offers and what we negotiated,
 * and its virtio-blk config space, decoded. */

#include <config.h>

#include <endian.h>
#include <getopt.h>
#include <inttypes.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"

struct bit_name {
  unsigned bit;
  const char *name;
};

static const struct bit_name feature_names[] = {
  { VIRTIO_BLK_F_SIZE_MAX, "SIZE_MAX" }, { VIRTIO_BLK_F_SEG_MAX, "SEG_MAX" },
  { VIRTIO_BLK_F_GEOMETRY, "GEOMETRY" }, { VIRTIO_BLK_F_RO, "RO" },
  { VIRTIO_BLK_F_BLK_SIZE, "BLK_SIZE" }, { VIRTIO_BLK_F_FLUSH, "FLUSH" },
  { VIRTIO_BLK_F_TOPOLOGY, "TOPOLOGY" },
  { VIRTIO_BLK_F_CONFIG_WCE, "CONFIG_WCE" }, { VIRTIO_BLK_F_MQ, "MQ" },
  { VIRTIO_BLK_F_DISCARD, "DISCARD" },
  { VIRTIO_BLK_F_WRITE_ZEROES, "WRITE_ZEROES" },
  { 15, "LIFETIME" }, { 16, "SECURE_ERASE" }, { 17, "ZONED" },
  { VU_F_NOTIFY_ON_EMPTY, "NOTIFY_ON_EMPTY" }, { VU_F_LOG_ALL, "LOG_ALL" },
  { VU_F_INDIRECT_DESC, "INDIRECT_DESC" }, { VU_F_EVENT_IDX, "EVENT_IDX" },
  { VU_F_PROTOCOL_FEATURES, "PROTOCOL_FEATURES" },
  { VU_F_VERSION_1, "VERSION_1" }, { 33, "ACCESS_PLATFORM" },
  { VU_F_RING_PACKED, "RING_PACKED" }, { 35, "IN_ORDER" },
  { 38, "NOTIFICATION_DATA" }, { 40, "RING_RESET" },
  { 0, NULL }
};

static const struct bit_name protocol_names[] = {
  { 0, "MQ" }, { 1, "LOG_SHMFD" }, { 2, "RARP" }, { 3, "REPLY_ACK" },
  { 4, "MTU" }, { 5, "BACKEND_REQ" }, { 6, "CROSS_ENDIAN" },
  { 7, "CRYPTO_SESSION" }, { 8, "PAGEFAULT" }, { 9, "CONFIG" },
  { 10, "BACKEND_SEND_FD" }, { 11, "HOST_NOTIFIER" },
  { 12, "INFLIGHT_SHMFD" }, { 13, "RESET_DEVICE" },
  { 14, "INBAND_NOTIFICATIONS" }, { 15, "CONFIGURE_MEM_SLOTS" },
  { 16, "STATUS" }, { 17, "XEN_MMAP" }, { 18, "SHARED_OBJECT" },
  { 19, "DEVICE_STATE" }, { 20, "GET_VRING_BASE_INFLIGHT" },
  { 21, "GPA_ADDRESSES" }, { 22, "SHMEM" },
  { 23, "GET_VRING_BASE_SKIP_DRAIN" },
  { 0, NULL }
};

/* "NAME NAME* NAME(bit 41)": a star marks bits we did not ack. */
static void
print_bits (const char *label, uint64_t offered, uint64_t acked,
            const struct bit_name *names)
{
  unsigned bit, col;
  const struct bit_name *n;

  printf ("%-20s 0x%016" PRIx64 " offered, 0x%016" PRIx64 " acked\n",
          label, offered, acked);
  col = 0;
  for (bit = 0; bit < 64; bit++) {
    char buf[48];
    if (!(offered & VU_BIT (bit)))
      continue;
    for (n = names; n->name && n->bit != bit; n++)
      ;
    if (n->name)
      snprintf (buf, sizeof buf, "%s%s", n->name,
                acked & VU_BIT (bit) ? "" : "*");
    else
      snprintf (buf, sizeof buf, "bit%u%s", bit,
                acked & VU_BIT (bit) ? "" : "*");
    if (col == 0 || col + strlen (buf) > 56) {
      printf ("%s%-20s", col ? "\n" : "", "");
      col = 0;
    }
    printf (" %s", buf);
    col += strlen (buf) + 1;
  }
  if (col)
    putchar ('\n');
}

static uint32_t
cfg32 (const struct vuc_conn *c, size_t off)
{
  uint32_t v;
  memcpy (&v, c->config + off, 4);
  return le32toh (v);
}

static uint16_t
cfg16 (const struct vuc_conn *c, size_t off)
{
  uint16_t v;
  memcpy (&v, c->config + off, 2);
  return le16toh (v);
}

#define OFF(f) offsetof (struct virtio_blk_config, f)

/* One config field; "(not offered)" when its feature bit is absent. */
static void
field (const struct vuc_conn *c, const char *name, uint64_t value, int bit)
{
  printf ("  %-26s %" PRIu64 "%s\n", name, value,
          bit >= 0 && !(c->features & VU_BIT (bit)) ? " (not offered)" : "");
}

static void
print_config (const struct vuc_conn *c)
{
  uint64_t cap;

  memcpy (&cap, c->config, 8);
  cap = le64toh (cap);
  printf ("config space (%u bytes)\n", c->config_len);
  printf ("  %-26s %" PRIu64 " sectors (%" PRIu64 " bytes)\n", "capacity",
          cap, cap * 512);
  field (c, "size_max", cfg32 (c, OFF (size_max)), VIRTIO_BLK_F_SIZE_MAX);
  field (c, "seg_max", cfg32 (c, OFF (seg_max)), VIRTIO_BLK_F_SEG_MAX);
  printf ("  %-26s %u/%u/%u%s\n", "geometry (c/h/s)",
          cfg16 (c, OFF (geometry.cylinders)), c->config[OFF (geometry.heads)],
          c->config[OFF (geometry.sectors)],
          c->features & VU_BIT (VIRTIO_BLK_F_GEOMETRY) ? "" : " (not offered)");
  field (c, "blk_size", cfg32 (c, OFF (blk_size)), VIRTIO_BLK_F_BLK_SIZE);
  field (c, "physical_block_exp", c->config[OFF (physical_block_exp)],
         VIRTIO_BLK_F_TOPOLOGY);
  field (c, "alignment_offset", c->config[OFF (alignment_offset)],
         VIRTIO_BLK_F_TOPOLOGY);
  field (c, "min_io_size", cfg16 (c, OFF (min_io_size)),
         VIRTIO_BLK_F_TOPOLOGY);
  field (c, "opt_io_size", cfg32 (c, OFF (opt_io_size)),
         VIRTIO_BLK_F_TOPOLOGY);
  field (c, "wce", c->config[OFF (wce)], VIRTIO_BLK_F_CONFIG_WCE);
  field (c, "num_queues", cfg16 (c, OFF (num_queues)), VIRTIO_BLK_F_MQ);
  field (c, "max_discard_sectors", cfg32 (c, OFF (max_discard_sectors)),
         VIRTIO_BLK_F_DISCARD);
  field (c, "max_discard_seg", cfg32 (c, OFF (max_discard_seg)),
         VIRTIO_BLK_F_DISCARD);
  field (c, "discard_sector_alignment",
         cfg32 (c, OFF (discard_sector_alignment)), VIRTIO_BLK_F_DISCARD);
  field (c, "max_write_zeroes_sectors",
         cfg32 (c, OFF (max_write_zeroes_sectors)), VIRTIO_BLK_F_WRITE_ZEROES);
  field (c, "max_write_zeroes_seg", cfg32 (c, OFF (max_write_zeroes_seg)),
         VIRTIO_BLK_F_WRITE_ZEROES);
  field (c, "write_zeroes_may_unmap", c->config[OFF (write_zeroes_may_unmap)],
         VIRTIO_BLK_F_WRITE_ZEROES);
}

int cmd_info (struct session *s, int argc, char **argv);

int
cmd_info (struct session *s, int argc, char **argv)
{
  const struct vuc_conn *c = &s->c;

  if (getopt_long (argc, argv, "", NULL, NULL) != -1 ||
      no_args_left (argc, argv, optind, 0) == -1 || session_init (s) == -1)
    return -1;
  printf ("%-20s %s\n", "socket", c->path);
  print_bits ("features", c->features, c->acked_features, feature_names);
  print_bits ("protocol features", c->protocol_features, c->acked_protocol,
              protocol_names);
  printf ("%-20s %" PRIu64 "%s\n", "queues", c->queue_num,
          vuc_has_pf (c, VU_PF_MQ) ? "" : " (no PROTOCOL_F_MQ)");
  if (vuc_has_pf (c, VU_PF_CONFIGURE_MEM_SLOTS))
    printf ("%-20s %" PRIu64 "\n", "max mem slots", c->max_mem_slots);
  if (c->inflight_fd >= 0)
    printf ("%-20s %" PRIu64 " bytes for %u queues\n", "inflight region",
            c->inflight_size, c->inflight_queues);
  print_config (c);
  return 0;
}
