/* vhost-user message framing: reading a message with its fds, checking
 * its size against its type, and writing replies. */

#ifndef BLKGATE_VU_MSG_H
#define BLKGATE_VU_MSG_H

#include "vhost-user-proto.h"

/* Reads one message.  Returns 1, 0 on a clean EOF before a header, or
 * -1 on error (message in *err); fds are closed on error. */
int vu_msg_recv (int sock, struct vu_msg *msg, const char **err);

/* A message being received piece by piece: the main loop reads what
 * the socket has and never waits for the rest. */
struct vu_rx {
  struct vu_msg msg;
  size_t got;                   /* bytes of header and payload so far */
};

/* Empties rx (closing any fds it holds) for the next message; also
 * initialises one (set msg.nfds to 0 first). */
void vu_rx_reset (struct vu_rx *rx);

/* Reads more of the message in rx; flags are recv flags (MSG_DONTWAIT:
 * never block).  Returns 1 when the message is complete (the caller
 * owns rx->msg and its fds and then calls vu_rx_reset), 2 when more
 * is to come, 0 on EOF before a message, -1 on error (*err says why;
 * rx is reset, its fds closed). */
int vu_rx_step (int sock, struct vu_rx *rx, int flags, const char **err);

/* Checks payload size and fd count against the request type.  Returns
 * 0 or -1 with a message in *err.  Pure: no I/O, for unit tests/fuzz. */
int vu_msg_check (const struct vu_msg *msg, const char **err);

/* Sends a reply to msg with size bytes of payload (flags exactly
 * VERSION|REPLY) and up to one fd (-1 for none).  Never waits: -1 with
 * errno EAGAIN when the socket cannot take the whole reply now. */
int vu_msg_reply (int sock, const struct vu_msg *msg, const void *payload,
                  uint32_t size, int fd);

/* Closes every fd still held by msg (sets them to -1). */
void vu_msg_close_fds (struct vu_msg *msg);

#endif /* BLKGATE_VU_MSG_H */
