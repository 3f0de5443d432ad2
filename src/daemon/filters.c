/* Filter loading and configuration.
 *
 * Filters are found like plugins (plugins.c: $BLKGATE_FILTER_PATH, the
 * build tree's filters/NAME/.libs/, the installed filter directory),
 * and their struct is copied the same way, min(sizes) bytes, so an
 * older, smaller struct keeps loading.  Parameters walk down the stack
 * nbdkit-style: each filter's config sees every KEY=VALUE and passes on
 * the keys that are not its own, the plugin gets what is left. */

#include <config.h>

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <glib.h>

#include "filters.h"
#include "log.h"
#include "utils.h"

struct filter filter_stack[MAX_FILTERS];
unsigned filter_count;

/* The plugin under the filters while configuring. */
static struct plugin *config_plugin;

static int
check_filter (const struct blkgate_filter *src, const char *path)
{
  if (src->_api_version != 1) {
    blkgate_error ("%s: filter uses API version %d; this blkgate supports "
                   "version 1", path, src->_api_version);
    return -1;
  }
  if (src->_struct_size < offsetof (struct blkgate_filter, name) +
      sizeof src->name) {
    blkgate_error ("%s: filter struct is too small (%llu bytes)", path,
                   (unsigned long long) src->_struct_size);
    return -1;
  }
  return 0;
}

static int
filter_load (struct filter *fl, const char *name)
{
  struct blkgate_filter *(*init) (void);
  const struct blkgate_filter *src;
  size_t n;

  if (strchr (name, '/'))
    fl->path = g_strdup (name);
  else if (plugin_valid_name (name))
    fl->path = plugin_find ("filter", name);
  else {
    blkgate_error ("invalid filter name: %s", name);
    return -1;
  }
  fl->dl = dlopen (fl->path, RTLD_NOW | RTLD_LOCAL);
  if (fl->dl == NULL) {
    blkgate_error ("cannot load filter %s: %s", name, dlerror ());
    return -1;
  }
  init = (struct blkgate_filter *(*) (void)) dlsym (fl->dl, "filter_init");
  if (init == NULL || (src = init ()) == NULL) {
    blkgate_error ("%s: not a blkgate filter (no filter_init)", fl->path);
    return -1;
  }
  if (check_filter (src, fl->path) == -1)
    return -1;
  n = src->_struct_size < sizeof fl->f ? src->_struct_size : sizeof fl->f;
  memcpy (&fl->f, src, n);
  if (fl->f.name == NULL || !plugin_valid_name (fl->f.name)) {
    blkgate_error ("%s: filter has no valid name", fl->path);
    return -1;
  }
  if (fl->f.load)
    fl->f.load ();
  fl->loaded = true;
  debug ("loaded filter %s from %s", fl->f.name, fl->path);
  return 0;
}

int
filters_load (char **names)
{
  for (; names && *names; names++) {
    if (filter_count == MAX_FILTERS) {
      blkgate_error ("too many filters (at most %d)", MAX_FILTERS);
      return -1;
    }
    /* Counted first, so that filters_unload cleans up a failed one. */
    if (filter_load (&filter_stack[filter_count++], *names) == -1)
      return -1;
  }
  return 0;
}

/* Innermost first, the reverse of loading. */
void
filters_unload (void)
{
  while (filter_count > 0) {
    struct filter *fl = &filter_stack[--filter_count];

    if (fl->dl) {
      if (fl->loaded && fl->f.unload)
        fl->f.unload ();
      dlclose (fl->dl);
    }
    g_free (fl->path);
    memset (fl, 0, sizeof *fl);
  }
}

/* nxdata of the config calls: the index of the next layer, as a
 * pointer into this array (filter_count is the plugin). */
static unsigned layer_index[MAX_FILTERS + 1];

static int
config_next (void *nxdata, const char *key, const char *value)
{
  unsigned i = *(unsigned *) nxdata;
  struct plugin *pl = config_plugin;

  if (i < filter_count) {
    const struct blkgate_filter *f = &filter_stack[i].f;

    if (f->config)
      return f->config (config_next, &layer_index[i + 1], key, value);
    return config_next (&layer_index[i + 1], key, value);
  }
  if (pl->p.config == NULL) {
    blkgate_error ("%s: this plugin takes no parameters (got '%s=%s')",
                   pl->p.name, key, value);
    return -1;
  }
  return pl->p.config (key, value);
}

static int
complete_next (void *nxdata)
{
  unsigned i = *(unsigned *) nxdata;

  if (i < filter_count) {
    const struct blkgate_filter *f = &filter_stack[i].f;

    if (f->config_complete)
      return f->config_complete (complete_next, &layer_index[i + 1]);
    return complete_next (&layer_index[i + 1]);
  }
  return plugin_config_complete (config_plugin);
}

int
filters_config_arg (struct plugin *pl, const char *arg)
{
  const char *eq = strchr (arg, '=');
  g_autofree char *key = NULL;

  if (filter_count == 0 || eq == NULL || !is_config_key (arg, eq - arg))
    return plugin_config_arg (pl, arg);
  for (unsigned i = 0; i <= MAX_FILTERS; i++)
    layer_index[i] = i;
  config_plugin = pl;
  key = g_strndup (arg, eq - arg);
  return config_next (&layer_index[0], key, eq + 1);
}

int
filters_config_complete (struct plugin *pl)
{
  for (unsigned i = 0; i <= MAX_FILTERS; i++)
    layer_index[i] = i;
  config_plugin = pl;
  return complete_next (&layer_index[0]);
}

void
filters_dump (void)
{
  for (unsigned i = 0; i < filter_count; i++) {
    const struct filter *fl = &filter_stack[i];

    printf ("filter=%s\n", fl->f.name);
    printf ("filter_path=%s\n", fl->path);
    if (fl->f.version)
      printf ("filter_version=%s\n", fl->f.version);
    fflush (stdout);
    if (fl->f.dump_filter)
      fl->f.dump_filter ();
  }
}

void
filters_help (void)
{
  for (unsigned i = 0; i < filter_count; i++) {
    const struct blkgate_filter *f = &filter_stack[i].f;

    printf ("\n%s filter", f->name);
    if (f->longname)
      printf (" (%s)", f->longname);
    printf ("\n");
    if (f->description)
      printf ("%s\n", f->description);
    if (f->config_help)
      printf ("\n%s\n", f->config_help);
  }
}
