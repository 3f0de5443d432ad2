/* Per-thread error messages and the clock, for the whole library. */

#include <config.h>

#include <stdarg.h>
#include <stdio.h>
#include <time.h>

#include "vuc.h"

static __thread char errbuf[512];

const char *
vuc_error (void)
{
  return errbuf[0] ? errbuf : "unknown error";
}

void
vuc_set_error (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (errbuf, sizeof errbuf, fmt, ap);
  va_end (ap);
}

uint64_t
vuc_now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return (uint64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}
