/* Plugin loading.
 *
 * A plugin is found by name in $BLKGATE_PLUGIN_PATH, then next to the
 * daemon in a build tree (so make check needs no install), then in the
 * installed plugin directory; a name with a '/' is a path.  Its struct
 * is copied into ours, min(sizes) bytes, so plugins built against an
 * older, smaller struct still load and see their missing fields as 0. */

#include <config.h>

#include <ctype.h>
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <glib.h>

#include "log.h"
#include "plugins.h"
#include "utils.h"

bool
plugin_valid_name (const char *s)
{
  if (*s == '\0')
    return false;
  for (; *s; s++)
    if (!islower ((unsigned char) *s) && !isdigit ((unsigned char) *s) &&
        *s != '_' && *s != '-')
      return false;
  return true;
}

/* The build tree keeps plugins in plugins/NAME/.libs/ next to src/, or
 * in plugins/PREFIX/.libs/ for a NAME of PREFIX-SUFFIX (plugins/example
 * holds example-sync and example-async); filters likewise in filters/. */
static char *
in_tree_path (const char *kind, const char *file, const char *name)
{
  char exe[PATH_MAX];
  ssize_t n = readlink ("/proc/self/exe", exe, sizeof exe - 1);
  g_autofree char *dir = NULL;
  char *path;

  if (n <= 0)
    return NULL;
  exe[n] = '\0';
  dir = g_path_get_dirname (exe);
  path = g_strdup_printf ("%s/../%ss/%s/.libs/%s", dir, kind, name, file);
  if (access (path, R_OK) == 0 || strchr (name, '-') == NULL)
    return path;
  g_free (path);
  return g_strdup_printf ("%s/../%ss/%.*s/.libs/%s", dir, kind,
                          (int) strcspn (name, "-"), name, file);
}

char *
plugin_find (const char *kind, const char *name)
{
  bool filter = strcmp (kind, "filter") == 0;
  g_autofree char *file = g_strdup_printf ("blkgate-%s-%s.so", name, kind);
  const char *env = getenv (filter ? "BLKGATE_FILTER_PATH"
                            : "BLKGATE_PLUGIN_PATH");
  char *path;

  if (env) {
    g_auto (GStrv) dirs = g_strsplit (env, ":", -1);
    for (char **d = dirs; *d; d++) {
      path = g_build_filename (*d, file, NULL);
      if (access (path, R_OK) == 0)
        return path;
      g_free (path);
    }
  }
  path = in_tree_path (kind, file, name);
  if (path && access (path, R_OK) == 0)
    return path;
  g_free (path);
  return g_build_filename (filter ? FILTERDIR : PLUGINDIR, file, NULL);
}

/* Larger _struct_sizes are refused as garbage. */
#define MAX_STRUCT_SIZE 65536

/* The struct must at least reach the fields every plugin needs. */
static int
check_struct (const struct blkgate_plugin *src, const char *path)
{
  if (src->_api_version != 1) {
    blkgate_error ("%s: plugin uses API version %d; this blkgate supports "
                   "version 1", path, src->_api_version);
    return -1;
  }
  if (src->_struct_size < offsetof (struct blkgate_plugin, get_size) +
      sizeof src->get_size) {
    blkgate_error ("%s: plugin struct is too small (%llu bytes)", path,
                   (unsigned long long) src->_struct_size);
    return -1;
  }
  /* A newer header's struct is larger, but never by this much: this is
   * garbage, not a struct set up by BLKGATE_REGISTER_PLUGIN. */
  if (src->_struct_size > MAX_STRUCT_SIZE) {
    blkgate_error ("%s: plugin struct size %llu is implausible (more than "
                   "%d bytes)", path, (unsigned long long) src->_struct_size,
                   MAX_STRUCT_SIZE);
    return -1;
  }
  return 0;
}

static int
check_callbacks (const struct blkgate_plugin *p, const char *path)
{
  if (p->name == NULL || !plugin_valid_name (p->name)) {
    blkgate_error ("%s: plugin has no valid name", path);
    return -1;
  }
  if (p->open == NULL || p->get_size == NULL) {
    blkgate_error ("%s: plugin lacks the required open and get_size", path);
    return -1;
  }
  if (p->queue_open ? p->aio_preadv == NULL : p->preadv == NULL) {
    blkgate_error ("%s: plugin has no read callback (preadv or "
                   "queue_open + aio_preadv)", path);
    return -1;
  }
  if (p->_thread_model != BLKGATE_THREAD_MODEL_SERIALIZE_REQUESTS &&
      p->_thread_model != BLKGATE_THREAD_MODEL_PARALLEL) {
    blkgate_error ("%s: unknown thread model %d", path, p->_thread_model);
    return -1;
  }
  return 0;
}

int
plugin_load (struct plugin *pl, const char *name)
{
  struct blkgate_plugin *(*init) (void);
  const struct blkgate_plugin *src;
  size_t n;

  memset (pl, 0, sizeof *pl);
  if (strchr (name, '/'))
    pl->path = g_strdup (name);
  else if (plugin_valid_name (name))
    pl->path = plugin_find ("plugin", name);
  else {
    blkgate_error ("invalid plugin name: %s", name);
    return -1;
  }
  pl->dl = dlopen (pl->path, RTLD_NOW | RTLD_LOCAL);
  if (pl->dl == NULL) {
    blkgate_error ("cannot load plugin %s: %s", name, dlerror ());
    return -1;
  }
  init = (struct blkgate_plugin *(*) (void)) dlsym (pl->dl, "plugin_init");
  if (init == NULL || (src = init ()) == NULL) {
    blkgate_error ("%s: not a blkgate plugin (no plugin_init)", pl->path);
    return -1;
  }
  if (check_struct (src, pl->path) == -1)
    return -1;
  n = src->_struct_size < sizeof pl->p ? src->_struct_size : sizeof pl->p;
  memcpy (&pl->p, src, n);
  if (check_callbacks (&pl->p, pl->path) == -1)
    return -1;
  if (pl->p.load)
    pl->p.load ();
  pl->loaded = true;
  debug ("loaded plugin %s from %s", pl->p.name, pl->path);
  return 0;
}

void
plugin_unload (struct plugin *pl)
{
  if (pl->dl) {
    if (pl->loaded && pl->p.unload)
      pl->p.unload ();
    dlclose (pl->dl);
  }
  g_free (pl->path);
  memset (pl, 0, sizeof *pl);
}

int
plugin_config_arg (struct plugin *pl, const char *arg)
{
  const char *eq = strchr (arg, '=');
  g_autofree char *key = NULL;

  if (eq == NULL || !is_config_key (arg, eq - arg)) {
    if (pl->p.magic_config_key == NULL) {
      blkgate_error ("%s: expected KEY=VALUE, got '%s'", pl->p.name, arg);
      return -1;
    }
    key = g_strdup (pl->p.magic_config_key);
    eq = arg - 1;
  }
  else
    key = g_strndup (arg, eq - arg);
  if (pl->p.config == NULL) {
    blkgate_error ("%s: this plugin takes no parameters (got '%s')",
                   pl->p.name, arg);
    return -1;
  }
  return pl->p.config (key, eq + 1);
}

int
plugin_config_complete (struct plugin *pl)
{
  return pl->p.config_complete ? pl->p.config_complete () : 0;
}

/* Debug flags are ints the plugin exports as NAME_debug_FLAG. */
int
plugin_set_debug_flag (struct plugin *pl, const char *flag, int value)
{
  g_autofree char *sym = g_strdup_printf ("%s_debug_%s", pl->p.name, flag);
  int *p;

  for (char *s = sym; *s; s++)
    if (*s == '-' || *s == '.')
      *s = '_';
  p = dlsym (pl->dl, sym);
  if (p == NULL) {
    blkgate_error ("plugin %s has no debug flag '%s'", pl->p.name, flag);
    return -1;
  }
  *p = value;
  return 0;
}

void
plugin_dump (const struct plugin *pl)
{
  const struct blkgate_plugin *p = &pl->p;

  printf ("path=%s\n", pl->path);
  printf ("name=%s\n", p->name);
  if (p->version)
    printf ("version=%s\n", p->version);
  printf ("api_version=%d\n", p->_api_version);
  printf ("struct_size=%llu\n", (unsigned long long) p->_struct_size);
  printf ("thread_model=%s\n",
          p->_thread_model == BLKGATE_THREAD_MODEL_PARALLEL ? "parallel"
          : "serialize_requests");
  printf ("async=%s\n", p->queue_open ? "yes" : "no");
  if (p->magic_config_key)
    printf ("magic_config_key=%s\n", p->magic_config_key);
#define HAS(f) printf ("has_%s=%d\n", #f, p->f != NULL)
  HAS (can_write); HAS (can_flush); HAS (can_trim); HAS (can_zero);
  HAS (can_fua); HAS (pwritev); HAS (flush); HAS (trim); HAS (zero);
  HAS (aio_pwritev); HAS (aio_flush); HAS (aio_trim); HAS (aio_zero);
#undef HAS
  fflush (stdout);
  if (p->dump_plugin)
    p->dump_plugin ();
}

void
plugin_help (const struct plugin *pl)
{
  const struct blkgate_plugin *p = &pl->p;

  printf ("%s", p->name);
  if (p->longname)
    printf (" (%s)", p->longname);
  printf ("\n");
  if (p->description)
    printf ("%s\n", p->description);
  if (p->config_help)
    printf ("\n%s\n", p->config_help);
}
