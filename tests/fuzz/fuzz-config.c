/* The parsers of what an admin types: parse_size, parse_bool and
 * is_config_key (src/common/utils.c), their plugin API wrappers
 * (public-api.c), and the plugin's KEY=VALUE / bare VALUE arguments
 * (plugins.c) as they reach a real plugin's config callback (the null
 * plugin, linked in rather than loaded).
 *
 * Input: one byte saying which parser, then the string (stops at the
 * first NUL, as a command line argument would).
 *
 * main.c's own option parsing is not here: it is GLib's GOption, and
 * main.c acts on what it parsed (files, sockets, daemonizing). */

#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "fuzz.h"
#include "plugins.h"
#include "utils.h"

struct blkgate_plugin *plugin_init (void);

static struct plugin pl;

/* The null plugin's I/O calls are never made here: backend.c, which
 * defines this, is not linked. */
void
blkgate_complete (struct blkgate_request *req, int err)
{
  abort ();
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  memcpy (&pl.p, plugin_init (), sizeof pl.p);
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct input in = { data, size };
  uint8_t which = take_u8 (&in);
  char *s = malloc (in.n + 1);
  const char *err;
  int64_t n;

  if (s == NULL)
    abort ();
  memcpy (s, in.p, in.n);
  s[in.n] = '\0';
  switch (which % 6) {
  case 0:
    n = parse_size (s, &err);
    if (n < -1 || (n == -1 && err == NULL))
      abort ();
    break;
  case 1:
    if (parse_bool (s) < -1 || parse_bool (s) > 1)
      abort ();
    break;
  case 2:
    if (is_config_key (s, strlen (s)) && strpbrk (s, "= /") != NULL)
      abort ();
    break;
  case 3:
    if (blkgate_parse_size (s) < -1)
      abort ();
    break;
  case 4:
    (void) blkgate_parse_bool (s);
    break;
  case 5:
    if (plugin_config_arg (&pl, s) == 0)
      (void) plugin_config_complete (&pl);
    break;
  }
  free (s);
  return 0;
}
