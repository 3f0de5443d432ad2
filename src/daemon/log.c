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

void
log_to_syslog (bool on)
{
  use_syslog = on;
  if (on)
    openlog ("blkgate", LOG_PID, LOG_DAEMON);
}

/* Format the whole line first so that lines from several threads do
 * not interleave on stderr. */
static void
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
