/* log.c for the fuzz targets: every message is formatted, as the
 * daemon would (so a bad argument still shows under ASan/UBSan), and
 * thrown away, so that millions of refusals do not flood the terminal
 * and slow the fuzzer down.  BLKGATE_FUZZ_LOG=1 prints them. */

#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "log.h"

bool verbose = true;            /* debug () formats its arguments too */

static void __attribute__ ((format (printf, 1, 0)))
emit (const char *fmt, va_list ap)
{
  static int show = -1;
  char buf[1024];

  if (show == -1)
    show = getenv ("BLKGATE_FUZZ_LOG") != NULL;
  vsnprintf (buf, sizeof buf, fmt, ap);
  if (show)
    fprintf (stderr, "%s\n", buf);
}

void
blkgate_error (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  emit (fmt, ap);
  va_end (ap);
}

void
blkgate_debug (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  emit (fmt, ap);
  va_end (ap);
}

void
blkgate_info (const char *fmt, ...)
{
  va_list ap;
  va_start (ap, fmt);
  emit (fmt, ap);
  va_end (ap);
}

void
log_to_syslog (bool on)
{
}

void
log_open_syslog (void)
{
}
