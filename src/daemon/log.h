/* Logging: errors always, debug only with -v. */

#ifndef BLKGATE_LOG_H
#define BLKGATE_LOG_H

#include <stdbool.h>

extern bool verbose;

/* Public API (blkgate-plugin.h) re-declared for the core. */
void blkgate_error (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));
void blkgate_debug (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

/* Lifecycle events admins want to see without -v (connects, restarts). */
void blkgate_info (const char *fmt, ...) __attribute__ ((format (printf, 1, 2)));

/* Log to syslog instead of stderr (after daemonizing, --log=syslog). */
void log_to_syslog (bool on);
/* Opens the connection to syslog, before dropping root (privs.c);
 * messages still go to stderr until log_to_syslog. */
void log_open_syslog (void);

#define debug(fmt, ...) \
  do { if (verbose) blkgate_debug (fmt, ##__VA_ARGS__); } while (0)

#endif /* BLKGATE_LOG_H */
