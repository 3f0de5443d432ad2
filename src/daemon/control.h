/* The control socket (--control PATH): JSON lines, see blkgate(8). */

#ifndef BLKGATE_CONTROL_H
#define BLKGATE_CONTROL_H

#include <stdbool.h>

#include "backend.h"

/* Creates the socket at path (mode 0600), before daemonizing so that
 * an error reaches the caller.  -1 after an error. */
int control_listen (const char *path);
/* Serves it from the main loop. */
void control_serve (struct backend *be, bool fuse_export);
/* Stops listening, drops the clients and removes the socket. */
void control_stop (void);

#endif /* BLKGATE_CONTROL_H */
