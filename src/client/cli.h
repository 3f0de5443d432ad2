/* blkgate-io: what the command files share. */

#ifndef BLKGATE_IO_CLI_H
#define BLKGATE_IO_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "vuc.h"

#define MAX_AIO 256
#define POOL (MAX_AIO + 16)
#define CHUNK (1u << 20)        /* largest request read/write/verify send */

/* One asynchronous request of aio-read/aio-write/aio-flush. */
struct aio {
  struct vuc_req *req;
  unsigned queue;
  uint64_t offset, len;
  int pbyte;                    /* aio-read: pattern to check, or -1 */
  uint64_t seed;
  bool seeded;
  uint8_t *buf;
};

/* Where the last synchronous request's buffers were (log-check). */
struct last_req {
  bool valid;
  uint64_t hdr_gpa, status_gpa;
  struct vuc_buf data[VUC_MAX_DATA];
  unsigned ndata;
};

struct session {
  struct vuc_conn c;
  unsigned queue;               /* queue of the I/O commands */
  int retry_ms;                 /* connect retries (--retry) */
  int auto_reconnect_ms;        /* --auto-reconnect: 0 = off */
  bool kick_on_reconnect;       /* --kick-on-reconnect */
  struct last_req last;
  bool force;                   /* --force: send what we did not negotiate */
  struct vuc_req pool[POOL];    /* a request that timed out stays busy */
  struct aio aio[MAX_AIO];
  unsigned naio;
  uint64_t aio_mark;            /* data stack before the first aio */
};

/* A command: argv[0] is its name; returns 0 or -1 (message printed). */
struct command {
  const char *name;
  int (*fn) (struct session *s, int argc, char **argv);
  const char *args;
  const char *help;
};

extern const struct command io_commands[];
extern const struct command fault_commands[];
extern const struct command state_commands[];
int cmd_bench (struct session *s, int argc, char **argv);
int cmd_soak (struct session *s, int argc, char **argv);
int cmd_bad_chain (struct session *s, int argc, char **argv);

/* fault-cmds.c: forget the guest (rings, aio), connect afresh, and
 * check that the back-end serves GET_ID and a read. */
int alive_check (struct session *s, int retry_ms);

/* blkgate-io.c */
void fail (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
int fail_vuc (const char *what);        /* "what: vuc_error ()", -1 */
int session_init (struct session *s);    /* connected, init done */
int session_start (struct session *s);   /* and rings started */
struct vuc_ring *session_ring (struct session *s, unsigned q);
int parse_u64 (const char *what, const char *str, uint64_t *v);
int parse_uint (const char *what, const char *str, unsigned *v);
int parse_queue (struct session *s, const char *str, unsigned *q);
int no_args_left (int argc, char **argv, int optind_, int want);

/* io-cmds.c: a free request of the pool (header and status set up). */
struct vuc_req *req_get (struct session *s);
/* io-cmds.c: the data pattern of -S SEED at an absolute disk offset. */
void pattern_fill (uint8_t *buf, uint64_t offset, uint64_t len,
                   int pbyte, uint64_t seed);
/* Outstanding aio requests, completed by anyone reaping their queue. */
int aio_wait_all (struct session *s, int timeout_ms);
/* Waits for r; with --auto-reconnect, a hang-up of the back-end makes
 * us reconnect (as QEMU with reconnect=1) and wait again. */
int wait_req (struct session *s, struct vuc_ring *ring, struct vuc_req *r,
              int timeout_ms);
/* Requests handed to the back-end and not yet reaped, on every ring. */
unsigned outstanding (const struct session *s);

#endif /* BLKGATE_IO_CLI_H */
