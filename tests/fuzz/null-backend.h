/* The backend of the fuzz targets that run the daemon's main-loop code
 * (device, control): the null plugin, linked in (plugins/null/null.c)
 * instead of dlopened, configured and opened as main.c does.  It
 * completes every request inside its aio_* call and holds no data. */

#ifndef BLKGATE_FUZZ_NULL_BACKEND_H
#define BLKGATE_FUZZ_NULL_BACKEND_H

#include <stdlib.h>

#include "backend.h"
#include "stats.h"

#define FUZZ_QUEUES 2

struct blkgate_plugin *plugin_init (void);

static struct plugin null_plugin;
static struct backend null_backend;

static inline struct backend *
null_backend_open (void)
{
  memcpy (&null_plugin.p, plugin_init (), sizeof null_plugin.p);
  if (plugin_config_arg (&null_plugin, "size=64M") == -1 ||
      plugin_config_complete (&null_plugin) == -1 ||
      backend_open (&null_backend, &null_plugin, false, "fuzz") == -1 ||
      stats_init (FUZZ_QUEUES) == -1)
    abort ();
  return &null_backend;
}

#endif /* BLKGATE_FUZZ_NULL_BACKEND_H */
