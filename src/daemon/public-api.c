/* The small API the daemon exports to plugins (blkgate-plugin.h) that
 * does not belong to another module: size and boolean parsing.
 * blkgate_error/debug live in log.c, blkgate_complete in backend.c. */

#include <config.h>

#include "log.h"
#include "plugins.h"
#include "utils.h"

int64_t
blkgate_parse_size (const char *str)
{
  const char *err;
  int64_t n = parse_size (str, &err);

  if (n == -1)
    blkgate_error ("invalid size '%s': %s", str, err);
  return n;
}

int
blkgate_parse_bool (const char *str)
{
  int b = parse_bool (str);

  if (b == -1)
    blkgate_error ("invalid boolean '%s' (use on/off)", str);
  return b;
}
