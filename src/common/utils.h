/* Small helpers shared by the daemon and the tools. */

#ifndef BLKGATE_UTILS_H
#define BLKGATE_UTILS_H

#include <stdint.h>
#include <stdbool.h>
#include <stddef.h>

/* "4096", "4k", "64M", "1G", "1T" (powers of 1024) -> bytes; -1 when
 * malformed or out of range, with a message in *err (static string). */
int64_t parse_size (const char *str, const char **err);

/* on/off, yes/no, true/false, 1/0 -> 1/0; -1 when malformed. */
int parse_bool (const char *str);

/* Whether the len bytes at arg can be a plugin parameter's name:
 * [A-Za-z0-9_.-]+.  KEY=VALUE splits at the first '=' only when KEY
 * is one, so a bare value for the magic key may hold '=' (a URI's
 * query), as in nbdkit. */
bool is_config_key (const char *arg, size_t len);

/* Overflow-safe a + b <= limit. */
static inline bool
range_ok (uint64_t a, uint64_t b, uint64_t limit)
{
  return a <= limit && b <= limit - a;
}

#endif /* BLKGATE_UTILS_H */
