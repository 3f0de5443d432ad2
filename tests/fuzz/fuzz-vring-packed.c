/* vring-packed.c + vring-chain.c + memtable.c: the packed ring walker,
 * with indirect tables, as the queue thread drives it.
 *
 * Input: ring size (1 to 128, any), negotiated features, the
 * SET_VRING_BASE word (avail and used positions with wrap counters),
 * the order in which popped buffers complete, optionally the size of a
 * dirty log that ring writes go to (feature bit 0x40), then the guest memory
 * image (guest.h): descriptor ring at offset 0, driver event area at
 * 0x800, device event area at 0x810.  Chains are checked against guest
 * memory and the buffer ids in flight. */

#include <config.h>

#include "guest.h"
#include "vring.h"

#define DESC_OFF 0x000
#define DRIVER_OFF 0x800
#define DEVICE_OFF 0x810

static void
check_chain (const struct guest *g, const struct ring *vr,
             const struct chain *c)
{
  if (c->nout > c->niov || c->niov > c->max || c->head >= vr->num ||
      c->ndesc == 0 || c->ndesc > vr->num)
    abort ();
  guest_check_iov (g, c);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct input in = { data, size };
  static struct ring vr;        /* 6 KiB: not on the stack */
  struct guest g;
  unsigned num = take_u8 (&in) % 128 + 1, npop = 0, i, round;
  uint8_t feat = take_u8 (&in);
  uint32_t base = take_u32 (&in);
  uint8_t order = take_u8 (&in);
  struct iovec iov[128 + 8];
  uint64_t gpa[128 + 8];
  struct chain c = { .iov = iov, .gpa = gpa, .max = num + 8 };
  uint16_t ids[2 * 128];
  uint32_t lens[2 * 128];
  struct dirty_log log = { 0 };
  const char *err;

  memset (&vr, 0, sizeof vr);
  if (feat & 0x40) {            /* migrating: a dirty log of some size */
    log.size = take_u16 (&in) % 0x9000;
    log.bitmap = calloc (1, log.size ? log.size : 1);
    if (log.bitmap == NULL)
      abort ();
    vr.log = &log;
    vr.log_guest_addr = G1 + DEVICE_OFF;
  }
  guest_init (&g, &in);
  vr.packed = true;
  vr.indirect = feat & 1;
  vr.event_idx = feat & 2;
  if (vring_packed_setup (&vr, g.t, num, U1 + DESC_OFF, U1 + DRIVER_OFF,
                          U1 + DEVICE_OFF, &err) == -1 ||
      vring_packed_set_base (&vr, base, &err) == -1)
    goto out;
  for (round = 0; round < 4; round++) {
    while (npop < 2 * num) {
      int r = vring_packed_pop (&vr, g.t, &c, &err);
      if (r <= 0)
        break;
      check_chain (&g, &vr, &c);
      ids[npop] = c.head;
      lens[npop++] = c.niov - c.nout;
    }
    if (npop == 0)
      break;
    /* Complete them, in ring order or the other way round. */
    for (i = 0; i < npop; i++) {
      unsigned k = order & 1 ? npop - 1 - i : i;
      vring_packed_push (&vr, ids[k], lens[k]);
      if (order & 2)
        vring_packed_publish (&vr);
    }
    vring_packed_publish (&vr);
    npop = 0;
    if (!vring_packed_arm_kick (&vr) || !(feat & 4))
      break;
  }
  (void) vring_packed_get_base (&vr);
 out:
  free (log.bitmap);
  guest_free (&g);
  return 0;
}
