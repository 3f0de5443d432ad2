/* blkgate file plugin: what file.c and queue.c share. */

#ifndef BLKGATE_FILE_H
#define BLKGATE_FILE_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

/* What file_open found.  Written only there and read-only afterwards,
 * so all queue threads share it without locks. */
struct handle {
  int fd;               /* buffered fd, always open */
  int dfd;              /* O_DIRECT fd, or -1 */
  bool is_bdev;
  bool readonly;
  bool can_punch;       /* FALLOC_FL_PUNCH_HOLE works */
  bool can_zero_range;  /* FALLOC_FL_ZERO_RANGE is worth trying */
  bool can_discard;     /* BLKDISCARD works (block devices) */
  bool inline_rw;       /* reads and writes are done in the queue thread */
  unsigned mem_align;   /* O_DIRECT buffer alignment */
  unsigned off_align;   /* O_DIRECT offset and length alignment */
  int block_size;
  int64_t size;
};

/* queue.c: the async data path, one io_uring per virtqueue.  Not
 * static, but plugins.syms keeps them out of the dynamic table. */
struct blkgate_request;
extern void *file_queue_open (void *handle, unsigned queue_index);
extern void file_queue_close (void *qctx);
extern int file_get_fd (void *qctx, short *events);
extern int file_poll (void *qctx);
extern int file_submit (void *qctx);
extern int file_aio_preadv (void *qctx, const struct iovec *iov, int iovcnt,
                            uint64_t offset, uint32_t flags,
                            struct blkgate_request *req);
extern int file_aio_pwritev (void *qctx, const struct iovec *iov, int iovcnt,
                             uint64_t offset, uint32_t flags,
                             struct blkgate_request *req);
extern int file_aio_flush (void *qctx, uint32_t flags,
                           struct blkgate_request *req);
extern int file_aio_trim (void *qctx, uint64_t offset, uint64_t count,
                          uint32_t flags, struct blkgate_request *req);
extern int file_aio_cancel (void *qctx, struct blkgate_request *req);
extern int file_aio_zero (void *qctx, uint64_t offset, uint64_t count,
                          uint32_t flags, struct blkgate_request *req);

#endif /* BLKGATE_FILE_H */
