/* Listening socket and the one front-end connection. */

#ifndef BLKGATE_SERVER_H
#define BLKGATE_SERVER_H

#include "backend.h"

/* Creates a listening UNIX socket at path (mode 0600), replacing a
 * stale socket file but refusing a live one.  -1 after an error. */
int server_listen_path (const char *path);

/* Serves front-ends on listen_fd from the main loop. */
void server_start (int listen_fd, struct backend *be, unsigned nqueues);
/* Drops the connection (stopping its queues) and stops listening. */
void server_stop (void);

#endif /* BLKGATE_SERVER_H */
