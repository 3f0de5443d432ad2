/* Filters: loading, configuration and the layered plugin they make. */

#ifndef BLKGATE_FILTERS_H
#define BLKGATE_FILTERS_H

#include <stdbool.h>

#include "plugins.h"
#define BLKGATE_FILTER_API_VERSION 1
#include "blkgate-filter.h"

#define MAX_FILTERS 16

struct filter {
  void *dl;
  char *path;
  struct blkgate_filter f;      /* our copy, zero-extended */
  bool loaded;                  /* load() was called */
};

/* The loaded filters, outermost first (filters.c). */
extern struct filter filter_stack[MAX_FILTERS];
extern unsigned filter_count;

/* Loads every NAME (or path) of --filter, in order.  -1 after an
 * error message. */
int filters_load (char **names);
void filters_unload (void);

/* A command-line argument: KEY=VALUE goes to the outermost filter,
 * which passes on what it does not know, down to the plugin; a bare
 * value goes to the plugin's magic key.  -1 after an error. */
int filters_config_arg (struct plugin *pl, const char *arg);
int filters_config_complete (struct plugin *pl);

void filters_dump (void);
void filters_help (void);

/* filter-layer.c: a plugin whose calls go through the filters to pl
 * (pl itself when there are none).  Lives until filters_unload. */
struct plugin *filters_wrap (struct plugin *pl);
/* blkgate_complete of a token from blkgate_request_wrap: calls its
 * done and returns true; false for any other token. */
bool filter_token_complete (struct blkgate_request *req, int err);

#endif /* BLKGATE_FILTERS_H */
