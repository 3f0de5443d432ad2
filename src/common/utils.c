/* Small helpers shared by the daemon and the tools. */

#include <config.h>

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "utils.h"

/* Sizes are what admins type on command lines: a decimal number and
 * an optional binary suffix.  Anything else is refused rather than
 * guessed, and the result must fit in an int64_t. */
int64_t
parse_size (const char *str, const char **err)
{
  char *end;
  unsigned long long n;
  int shift = 0;

  if (str == NULL || !isdigit ((unsigned char) str[0])) {
    *err = "a size must start with a digit";
    return -1;
  }
  errno = 0;
  n = strtoull (str, &end, 10);
  if (errno != 0) {
    *err = "size out of range";
    return -1;
  }
  switch (tolower ((unsigned char) *end)) {
  case '\0': break;
  case 'b': shift = 0; end++; break;
  case 'k': shift = 10; end++; break;
  case 'm': shift = 20; end++; break;
  case 'g': shift = 30; end++; break;
  case 't': shift = 40; end++; break;
  case 'p': shift = 50; end++; break;
  default:
    *err = "unknown size suffix (use k, M, G, T or P)";
    return -1;
  }
  /* Accept "1G", "1GB", "1GiB". */
  if (shift && (strcasecmp (end, "ib") == 0 || strcasecmp (end, "b") == 0))
    end += strlen (end);
  if (*end != '\0') {
    *err = "trailing characters after the size";
    return -1;
  }
  if (n > (unsigned long long) INT64_MAX >> shift) {
    *err = "size out of range";
    return -1;
  }
  return (int64_t) (n << shift);
}

int
parse_bool (const char *str)
{
  static const char *yes[] = { "1", "on", "yes", "true", NULL };
  static const char *no[] = { "0", "off", "no", "false", NULL };
  size_t i;

  if (str == NULL)
    return -1;
  for (i = 0; yes[i]; i++)
    if (strcasecmp (str, yes[i]) == 0)
      return 1;
  for (i = 0; no[i]; i++)
    if (strcasecmp (str, no[i]) == 0)
      return 0;
  return -1;
}

bool
is_config_key (const char *arg, size_t len)
{
  return len > 0 && strspn (arg, "abcdefghijklmnopqrstuvwxyz"
                            "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") >= len;
}
