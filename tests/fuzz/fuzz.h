/* Shared by the fuzz targets: the libFuzzer entry points, and a reader
 * that takes fixed-size fields off the front of the input (zeros once
 * it runs out, so every input decodes to something). */

#ifndef BLKGATE_FUZZ_H
#define BLKGATE_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);
int LLVMFuzzerInitialize (int *argc, char ***argv);

struct input {
  const uint8_t *p;
  size_t n;
};

static inline size_t
take (struct input *in, void *buf, size_t len)
{
  size_t k = len < in->n ? len : in->n;

  memcpy (buf, in->p, k);
  memset ((char *) buf + k, 0, len - k);
  in->p += k;
  in->n -= k;
  return k;
}

static inline uint8_t
take_u8 (struct input *in)
{
  uint8_t v;
  take (in, &v, sizeof v);
  return v;
}

static inline uint16_t
take_u16 (struct input *in)
{
  uint16_t v;
  take (in, &v, sizeof v);
  return v;
}

static inline uint32_t
take_u32 (struct input *in)
{
  uint32_t v;
  take (in, &v, sizeof v);
  return v;
}

static inline uint64_t
take_u64 (struct input *in)
{
  uint64_t v;
  take (in, &v, sizeof v);
  return v;
}

#endif /* BLKGATE_FUZZ_H */
