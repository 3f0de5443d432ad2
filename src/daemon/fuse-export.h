/* --fuse-export: the disk the daemon serves, also exposed as a regular
 * file through libfuse3, coherent with the guest's I/O. */

#ifndef BLKGATE_FUSE_EXPORT_H
#define BLKGATE_FUSE_EXPORT_H

#include <stdbool.h>

#include "backend.h"

struct fuse_export;

/* Detaches a stale mount left at path by a crashed gateway, creates
 * path if it does not exist, mounts the disk over it and starts
 * serving it (read-only unless writable).  Call it on the main thread,
 * in the process that will serve (after daemonizing).  NULL after an
 * error, which has been logged. */
struct fuse_export *fuse_export_start (struct backend *be, const char *path,
                                       bool writable);

/* Stops serving, waits up to timeout_ms for the export's requests in
 * the plugin, unmounts, removes path if fuse_export_start created it,
 * and frees fx.  Returns false if requests were still in the plugin:
 * the mount is then detached but the export's threads are left
 * running, so the caller must exit without closing the backend. */
bool fuse_export_stop (struct fuse_export *fx, int timeout_ms);

#endif /* BLKGATE_FUSE_EXPORT_H */
