/* control.c: the control socket's JSON command parser and commands,
 * as a client's line reaches them (control_reply), with the null
 * plugin as the backend and no front-end connected.
 *
 * Input: one line (without its newline).  "shutdown" sends SIGTERM to
 * the process, as it must: SIGTERM is blocked in every thread (from
 * the start, so libFuzzer's threads inherit it) and taken back after
 * each call.  Stop the fuzzer with SIGINT or -max_total_time. */

#include <config.h>

#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <glib.h>

#include "control.h"
#include "fuzz.h"
#include "null-backend.h"

#define MAX_LINE 4096           /* CONTROL_MAX_LINE: longer lines are dropped */

static sigset_t term;

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  sigemptyset (&term);
  sigaddset (&term, SIGTERM);
  pthread_sigmask (SIG_BLOCK, &term, NULL);
  control_serve (null_backend_open (), false);
  return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  struct timespec now = { 0, 0 };
  char *out;

  if (size > MAX_LINE)
    return 0;
  out = control_reply ((const char *) data, size);
  if (out == NULL || strlen (out) == 0 || out[strlen (out) - 1] != '\n' ||
      strstr (out, "\"ok\"") == NULL)
    abort ();
  g_free (out);
  sigtimedwait (&term, NULL, &now);
  return 0;
}
