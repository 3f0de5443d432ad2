/* Loading plugins: dlopen, plugin_init, ABI checks. */

#ifndef BLKGATE_PLUGINS_H
#define BLKGATE_PLUGINS_H

#include <stdbool.h>

#define BLKGATE_API_VERSION 1
#include "blkgate-plugin.h"

struct plugin {
  void *dl;
  char *path;
  struct blkgate_plugin p;      /* our copy, zero-extended */
  bool loaded;                  /* load() was called */
};

/* [a-z0-9_-]+ */
bool plugin_valid_name (const char *s);
/* The path of blkgate-NAME-KIND.so (KIND "plugin" or "filter"): in
 * $BLKGATE_PLUGIN_PATH or $BLKGATE_FILTER_PATH, the build tree, or the
 * installed directory. */
char *plugin_find (const char *kind, const char *name);

/* Finds NAME (or a path) and loads it.  -1 after an error message. */
int plugin_load (struct plugin *pl, const char *name);
void plugin_unload (struct plugin *pl);

/* KEY=VALUE (or a bare value for the magic key).  -1 after an error. */
int plugin_config_arg (struct plugin *pl, const char *arg);
int plugin_config_complete (struct plugin *pl);

/* -D NAME.FLAG=N for this plugin; -1 after an error. */
int plugin_set_debug_flag (struct plugin *pl, const char *flag, int value);

void plugin_dump (const struct plugin *pl);
void plugin_help (const struct plugin *pl);

#endif /* BLKGATE_PLUGINS_H */
