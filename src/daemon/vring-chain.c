/* Building a descriptor chain, the same for split and packed rings:
 * every buffer goes through the memory table, and readable buffers
 * must all come before writable ones (virtio 1.x 2.7.4.2, 2.8.20). */

#include <config.h>

#include "vring.h"

int
vring_chain_add (const struct memtable *mem, uint64_t addr, uint32_t len,
                 bool writable, struct chain *c, const char **err)
{
  if (!writable && c->niov > c->nout) {
    *err = "readable descriptor after a writable one";
    return -1;
  }
  if (len == 0)
    return 0;
  if (memtable_gpa_iov (mem, addr, len, c->iov, c->gpa, &c->niov,
                        c->max) == -1) {
    *err = c->niov >= c->max ? "descriptor chain has too many buffers"
      : "descriptor points outside guest memory";
    return -1;
  }
  if (!writable)
    c->nout = c->niov;
  return 0;
}
