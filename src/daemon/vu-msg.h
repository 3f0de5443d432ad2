/* vhost-user message framing: reading a message with its fds, checking
 * its size against its type, and writing replies. */

#ifndef BLKGATE_VU_MSG_H
#define BLKGATE_VU_MSG_H

#include "vhost-user-proto.h"

/* Reads one message.  Returns 1, 0 on a clean EOF before a header, or
 * -1 on error (message in *err); fds are closed on error. */
int vu_msg_recv (int sock, struct vu_msg *msg, const char **err);

/* Checks payload size and fd count against the request type.  Returns
 * 0 or -1 with a message in *err.  Pure: no I/O, for unit tests/fuzz. */
int vu_msg_check (const struct vu_msg *msg, const char **err);

/* Sends a reply to msg with size bytes of payload (flags exactly
 * VERSION|REPLY) and up to one fd (-1 for none). */
int vu_msg_reply (int sock, const struct vu_msg *msg, const void *payload,
                  uint32_t size, int fd);

/* Closes every fd still held by msg (sets them to -1). */
void vu_msg_close_fds (struct vu_msg *msg);

#endif /* BLKGATE_VU_MSG_H */
