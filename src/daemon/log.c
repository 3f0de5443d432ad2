/* Logging: one place decides where messages go.  Every function keeps
 * errno, so "%m" works anywhere in a format (glibc expands it). */

#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <pthread.h>

#include "log.h"

bool verbose;
static bool use_syslog;

/* LOG_NDELAY: connect to /dev/log now, while we may still be root;
 * after --user the socket need not let us in.  (glibc reconnects by
 * itself if the syslog daemon restarts, as whoever we are then.) */
void
log_open_syslog (void)
{
  openlog ("blkgate", LOG_PID | LOG_NDELAY, LOG_DAEMON);
}

void
log_to_syslog (bool on)
{
  if (on)
    log_open_syslog ();
  use_syslog = on;
}

/* Format the whole line first so that lines from several threads do
 * not interleave on stderr. */
static void __attribute__ ((format (printf, 3, 0)))
log_v (int prio, const char *tag, const char *fmt, va_list ap)
{
  int saved = errno;
  char msg[1024];

  vsnprintf (msg, sizeof msg, fmt, ap);
  if (use_syslog)
    syslog (prio, "%s", msg);
  else
    fprintf (stderr, "blkgate: %s%s\n", tag, msg);
  errno = saved;
}

void
blkgate_error (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  log_v (LOG_ERR, "error: ", fmt, ap);
  va_end (ap);
}

void
blkgate_info (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  log_v (LOG_INFO, "", fmt, ap);
  va_end (ap);
}

void
blkgate_debug (const char *fmt, ...)
{
  va_list ap;
  if (!verbose)
    return;
  va_start (ap, fmt);
  log_v (LOG_DEBUG, "debug: ", fmt, ap);
  va_end (ap);
}
