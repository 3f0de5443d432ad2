/* abi-plugin.c: a RAM disk plugin for test-plugin-abi.bats, built in
 * several variants by compile-time knobs:
 *
 *   -DOLD_STRUCT           register a copy of struct blkgate_plugin cut
 *                          before the async fields, as a plugin built
 *                          against an older, smaller header would; the
 *                          bytes after it are poison (0xff), so a daemon
 *                          that reads past _struct_size sees garbage
 *                          callbacks
 *   -DAPI_VERSION=N        _api_version the plugin claims
 *   -DSTRUCT_SIZE=N        _struct_size the plugin claims
 *   -DTHREAD_MODEL_VALUE=N _thread_model the plugin claims
 *
 * Without knobs it uses BLKGATE_REGISTER_PLUGIN like any plugin.  It
 * must compile cleanly with -std=c99 -pedantic -Wall -Wextra -Werror
 * (gcc and clang): that is the header's C99 test.
 */

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define BLKGATE_API_VERSION 1
#define BLKGATE_THREAD_MODEL BLKGATE_THREAD_MODEL_SERIALIZE_REQUESTS
#include <blkgate-plugin.h>

static int64_t size = -1;
static char *disk;

static int
abi_config (const char *key, const char *value)
{
  if (strcmp (key, "size") == 0) {
    size = blkgate_parse_size (value);
    return size == -1 ? -1 : 0;
  }
  blkgate_error ("unknown parameter '%s'", key);
  return -1;
}

static int
abi_config_complete (void)
{
  if (size == -1) {
    blkgate_error ("size=SIZE is required");
    return -1;
  }
  disk = calloc (1, size > 0 ? (size_t) size : 1);
  if (disk == NULL) {
    blkgate_error ("calloc: %s", strerror (errno));
    return -1;
  }
  return 0;
}

static void
abi_unload (void)
{
  free (disk);
}

static void *
abi_open (int readonly)
{
  (void) readonly;
  return disk;
}

static int64_t
abi_get_size (void *handle)
{
  (void) handle;
  return size;
}

static int
abi_preadv (void *handle, const struct iovec *iov, int iovcnt,
            uint64_t offset, uint32_t flags)
{
  int i;

  (void) handle;
  (void) flags;
  for (i = 0; i < iovcnt; i++) {
    memcpy (iov[i].iov_base, disk + offset, iov[i].iov_len);
    offset += iov[i].iov_len;
  }
  return 0;
}

static int
abi_pwritev (void *handle, const struct iovec *iov, int iovcnt,
             uint64_t offset, uint32_t flags)
{
  int i;

  (void) handle;
  (void) flags;
  for (i = 0; i < iovcnt; i++) {
    memcpy (disk + offset, iov[i].iov_base, iov[i].iov_len);
    offset += iov[i].iov_len;
  }
  return 0;
}

static int
abi_flush (void *handle, uint32_t flags)
{
  (void) handle;
  (void) flags;
  return 0;
}

#ifndef OLD_STRUCT

static struct blkgate_plugin plugin = {
  .name            = "abi",
  .version         = "1.0",
  .config          = abi_config,
  .config_complete = abi_config_complete,
  .config_help     = "size=<SIZE>  (required) Size of the disk.",
  .magic_config_key = "size",
  .unload          = abi_unload,
  .open            = abi_open,
  .get_size        = abi_get_size,
  .preadv          = abi_preadv,
  .pwritev         = abi_pwritev,
  .flush           = abi_flush,
};

#else /* OLD_STRUCT */

/* struct blkgate_plugin as an older header had it: the same fields in
 * the same order, ending with the synchronous data calls. */
struct old_plugin {
  uint64_t _struct_size;
  int _api_version;
  int _thread_model;
  const char *name;
  const char *longname;
  const char *version;
  const char *description;
  void (*load) (void);
  void (*unload) (void);
  int (*config) (const char *key, const char *value);
  int (*config_complete) (void);
  const char *config_help;
  const char *magic_config_key;
  void (*dump_plugin) (void);
  void *(*open) (int readonly);
  void (*close) (void *handle);
  int64_t (*get_size) (void *handle);
  int (*block_size) (void *handle);
  int (*can_write) (void *handle);
  int (*can_flush) (void *handle);
  int (*can_trim) (void *handle);
  int (*can_zero) (void *handle);
  int (*can_fua) (void *handle);
  int (*max_queues) (void *handle);
  int (*preadv) (void *handle, const struct iovec *iov, int iovcnt,
                 uint64_t offset, uint32_t flags);
  int (*pwritev) (void *handle, const struct iovec *iov, int iovcnt,
                  uint64_t offset, uint32_t flags);
  int (*flush) (void *handle, uint32_t flags);
  int (*trim) (void *handle, uint64_t offset, uint64_t count,
               uint32_t flags);
  int (*zero) (void *handle, uint64_t offset, uint64_t count,
               uint32_t flags);
};

/* The old struct, then poison where the newer fields would be. */
static struct {
  struct old_plugin p;
  unsigned char poison[4096];
} old;

static void __attribute__ ((constructor))
old_init (void)
{
  memset (old.poison, 0xff, sizeof old.poison);
  old.p.name = "abi";
  old.p.version = "0.9";
  old.p.config = abi_config;
  old.p.config_complete = abi_config_complete;
  old.p.config_help = "size=<SIZE>  (required) Size of the disk.";
  old.p.magic_config_key = "size";
  old.p.unload = abi_unload;
  old.p.open = abi_open;
  old.p.get_size = abi_get_size;
  old.p.preadv = abi_preadv;
  old.p.pwritev = abi_pwritev;
  old.p.flush = abi_flush;
}

#endif /* OLD_STRUCT */

/* BLKGATE_REGISTER_PLUGIN, with the knobs applied. */
__attribute__ ((visibility ("default")))
struct blkgate_plugin *
plugin_init (void)
{
#ifdef OLD_STRUCT
  struct blkgate_plugin *p = (struct blkgate_plugin *) (void *) &old;

  old.p._struct_size = sizeof old.p;
#else
  struct blkgate_plugin *p = &plugin;

  p->_struct_size = sizeof plugin;
#endif
  p->_api_version = BLKGATE_API_VERSION;
  p->_thread_model = BLKGATE_THREAD_MODEL;
#ifdef API_VERSION
  p->_api_version = API_VERSION;
#endif
#ifdef STRUCT_SIZE
  p->_struct_size = STRUCT_SIZE;
#endif
#ifdef THREAD_MODEL_VALUE
  p->_thread_model = THREAD_MODEL_VALUE;
#endif
  return p;
}
