/* Shared by the fuzz targets: the libFuzzer entry points, and a reader
 * that takes fixed-size fields off the front of the input (zeros once
 * it runs out, so every input decodes to something). */

#ifndef BLKGATE_FUZZ_H
#define BLKGATE_FUZZ_H

#include <dirent.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* Open fds, from /proc/self/fd. */
static inline int
count_fds (void)
{
  DIR *d = opendir ("/proc/self/fd");
  struct dirent *e;
  int n = 0;

  if (d == NULL)
    return -1;
  while ((e = readdir (d)) != NULL)
    n += e->d_name[0] != '.';
  closedir (d);
  return n;
}

/* Call at the end of each input: aborts when fds leak, i.e. when more
 * are open than a few more than after the first input (libraries may
 * keep an fd or two they open lazily). */
static inline void
check_fd_leak (void)
{
  static int base = -1;
  int n = count_fds ();

  if (base == -1)
    base = n;
  else if (n > base + 8) {
    fprintf (stderr, "fd leak: %d fds open, %d after the first input\n",
             n, base);
    abort ();
  }
}

#endif /* BLKGATE_FUZZ_H */
