/* vring-split.c + vring-chain.c + memtable.c: the split ring walker,
 * with indirect tables, as the queue thread drives it.
 *
 * Input: ring size (a power of 2 up to 128), negotiated features,
 * SET_VRING_BASE, a head for the resubmission walk, optionally the
 * three ring addresses (feature bit 0x80) and the size of a dirty log
 * that used ring writes go to (0x40), then the guest memory image
 * (guest.h): descriptor
 * table at offset 0, avail ring at 0x800, used ring at 0xa00 unless
 * given.  Every chain popped is checked against guest memory, then
 * completed, as the daemon does. */

#include <config.h>

#include "guest.h"
#include "vring.h"

#define DESC_OFF 0x000
#define AVAIL_OFF 0x800
#define USED_OFF 0xa00

/* Every piece of a chain lies inside guest memory. */
static void
check_chain (const struct guest *g, const struct chain *c)
{
  if (c->nout > c->niov || c->niov > c->max)
    abort ();
  guest_check_iov (g, c);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct input in = { data, size };
  struct ring vr = { 0 };
  struct guest g;
  unsigned num = 1u << (take_u8 (&in) % 8), npop = 0, i;
  uint8_t feat = take_u8 (&in);
  uint16_t base = take_u16 (&in), head = take_u16 (&in);
  uint64_t desc = U1 + DESC_OFF, avail = U1 + AVAIL_OFF, used = U1 + USED_OFF;
  struct iovec iov[128 + 8];
  uint64_t gpa[128 + 8];
  struct chain c = { .iov = iov, .gpa = gpa, .max = num + 8 };
  uint16_t heads[2 * 128];
  uint32_t lens[2 * 128];
  struct dirty_log log = { 0 };
  const char *err;

  if (feat & 0x80) {            /* addresses chosen by the input */
    desc = U1 + take_u16 (&in);
    avail = U1 + take_u16 (&in);
    used = U1 + take_u16 (&in);
  }
  if (feat & 0x40) {            /* migrating: a dirty log of some size */
    log.size = take_u16 (&in) % 0x9000;
    log.bitmap = calloc (1, log.size ? log.size : 1);
    if (log.bitmap == NULL)
      abort ();
    vr.log = &log;
    vr.log_guest_addr = G1 + USED_OFF;
  }
  guest_init (&g, &in);
  vr.indirect = feat & 1;
  vr.event_idx = feat & 2;
  if (vring_split_setup (&vr, g.t, num, desc, avail, used, &err) == -1 ||
      vring_split_set_base (&vr, base, &err) == -1)
    goto out;
  if (feat & 4) {               /* resubmission after a restart */
    if (vring_walk (&vr, g.t, head, &c, &err) == 0)
      check_chain (&g, &c);
  }
  while (npop < 2 * num) {
    int r = vring_split_pop (&vr, g.t, &c, &err);
    if (r <= 0)
      break;
    check_chain (&g, &c);
    heads[npop] = c.head;
    lens[npop++] = c.niov - c.nout;
  }
  if (feat & 8)
    vring_split_disable_kick (&vr);
  for (i = 0; i < npop; i++) {
    vring_split_push (&vr, heads[i], lens[i]);
    if (feat & 16)
      vring_split_publish (&vr);
  }
  vring_split_publish (&vr);
  vring_split_arm_kick (&vr);
 out:
  free (log.bitmap);
  guest_free (&g);
  return 0;
}
