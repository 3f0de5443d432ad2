/* Listening socket and the one front-end connection. */

#ifndef BLKGATE_SERVER_H
#define BLKGATE_SERVER_H

#include <stdbool.h>

#include "backend.h"
#include "device.h"

/* Creates a listening UNIX socket at path (mode 0600), replacing a
 * stale socket file but refusing a live one.  -1 after an error. */
int server_listen_path (const char *path);

/* Serves front-ends on listen_fd from the main loop. */
void server_start (int listen_fd, struct backend *be,
                   const struct device_config *cfg);
/* Stops listening and drops the connection, waiting up to timeout_ms
 * for requests in flight.  Returns false when some were left (recorded
 * in the inflight region): the process must then exit without freeing
 * what the queue threads still use. */
bool server_stop (int timeout_ms);

/* The connected front-end's device, or NULL (control socket). */
struct device *server_device (void);

#endif /* BLKGATE_SERVER_H */
