/* The control socket (--control PATH): JSON lines, see blkgate(8). */

#ifndef BLKGATE_CONTROL_H
#define BLKGATE_CONTROL_H

#include <stdbool.h>

#include "backend.h"

/* Creates the socket at path (mode 0600), before daemonizing so that
 * an error reaches the caller.  -1 after an error. */
int control_listen (const char *path);
/* Serves it from the main loop.  Without control_listen it only
 * records be for control_reply. */
void control_serve (struct backend *be, bool fuse_export);
/* The reply (a JSON object and a newline, g_free it) to one line from
 * a client: what a client gets, for tests/fuzz/fuzz-control.c. */
char *control_reply (const char *line, size_t len);
/* Stops listening, drops the clients and removes the socket. */
void control_stop (void);

#endif /* BLKGATE_CONTROL_H */
