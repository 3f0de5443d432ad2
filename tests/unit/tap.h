/* A tiny TAP producer for the C unit tests.
 *
 *   ok (cond, "what %d", x);      one check; returns cond
 *   is_int (got, want, "what");   integer equality, shows both on failure
 *   is_str (got, want, "what");   string equality (NULL-safe)
 *   diag ("fmt", ...);            a "# " comment line (stderr)
 *   todo_start ("why"); ... todo_end ();
 *                                 checks in between document known bugs:
 *                                 "not ok ... # TODO why" does not fail
 *                                 the program, "ok ... # TODO" is noted
 *   return done_testing ();       prints the plan "1..N", returns the
 *                                 exit status (0 only if all passed)
 *
 * Header-only: each test program includes it once. */

#ifndef BLKGATE_TAP_H
#define BLKGATE_TAP_H

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

static unsigned tap_run, tap_failed, tap_todo_failed;
static const char *tap_todo;    /* non-NULL: checks are TODO (known bugs) */

static void tap_vdiag (const char *fmt, va_list ap)
  __attribute__ ((format (printf, 1, 0)));
static void
tap_vdiag (const char *fmt, va_list ap)
{
  fflush (stdout);
  fputs ("# ", stderr);
  vfprintf (stderr, fmt, ap);
  fputc ('\n', stderr);
  fflush (stderr);
}

static void diag (const char *fmt, ...) __attribute__ ((format (printf, 1, 2),
                                                       unused));
static void
diag (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  tap_vdiag (fmt, ap);
  va_end (ap);
}

static bool tap_vok (bool cond, const char *file, int line, const char *fmt,
                     va_list ap) __attribute__ ((format (printf, 4, 0)));
static bool
tap_vok (bool cond, const char *file, int line, const char *fmt, va_list ap)
{
  tap_run++;
  if (!cond && tap_todo)
    tap_todo_failed++;
  else if (!cond)
    tap_failed++;
  printf ("%sok %u - ", cond ? "" : "not ", tap_run);
  vprintf (fmt, ap);
  if (tap_todo)
    printf (" # TODO %s", tap_todo);
  putchar ('\n');
  if (!cond && !tap_todo) {
    fflush (stdout);
    fprintf (stderr, "#   Failed test at %s line %d\n", file, line);
  }
  fflush (stdout);
  return cond;
}

static bool tap_ok (bool cond, const char *file, int line, const char *fmt,
                    ...) __attribute__ ((format (printf, 4, 5), unused));
static bool
tap_ok (bool cond, const char *file, int line, const char *fmt, ...)
{
  va_list ap;
  bool r;

  va_start (ap, fmt);
  r = tap_vok (cond, file, line, fmt, ap);
  va_end (ap);
  return r;
}

static bool tap_is_int (intmax_t got, intmax_t want, const char *file,
                        int line, const char *fmt, ...)
  __attribute__ ((format (printf, 5, 6), unused));
static bool
tap_is_int (intmax_t got, intmax_t want, const char *file, int line,
            const char *fmt, ...)
{
  va_list ap;
  bool r;

  va_start (ap, fmt);
  r = tap_vok (got == want, file, line, fmt, ap);
  va_end (ap);
  if (!r)
    fprintf (stderr, "#          got: %jd (0x%jx)\n#     expected: %jd (0x%jx)\n",
             got, (uintmax_t) got, want, (uintmax_t) want);
  return r;
}

static bool tap_is_str (const char *got, const char *want, const char *file,
                        int line, const char *fmt, ...)
  __attribute__ ((format (printf, 5, 6), unused));
static bool
tap_is_str (const char *got, const char *want, const char *file, int line,
            const char *fmt, ...)
{
  va_list ap;
  bool r, same = (got == NULL && want == NULL) ||
    (got && want && strcmp (got, want) == 0);

  va_start (ap, fmt);
  r = tap_vok (same, file, line, fmt, ap);
  va_end (ap);
  if (!r)
    fprintf (stderr, "#          got: %s%s%s\n#     expected: %s%s%s\n",
             got ? "\"" : "", got ? got : "NULL", got ? "\"" : "",
             want ? "\"" : "", want ? want : "NULL", want ? "\"" : "");
  return r;
}

#define ok(cond, ...) tap_ok (!!(cond), __FILE__, __LINE__, __VA_ARGS__)
#define is_int(got, want, ...) \
  tap_is_int ((intmax_t) (got), (intmax_t) (want), __FILE__, __LINE__, \
              __VA_ARGS__)
#define is_str(got, want, ...) \
  tap_is_str ((got), (want), __FILE__, __LINE__, __VA_ARGS__)

static void todo_start (const char *why) __attribute__ ((unused));
static void
todo_start (const char *why)
{
  tap_todo = why;
}

static void todo_end (void) __attribute__ ((unused));
static void
todo_end (void)
{
  tap_todo = NULL;
}

static int done_testing (void) __attribute__ ((unused));
static int
done_testing (void)
{
  printf ("1..%u\n", tap_run);
  if (tap_todo_failed)
    fprintf (stderr, "# %u known bug%s (TODO) still present.\n",
             tap_todo_failed, tap_todo_failed == 1 ? "" : "s");
  if (tap_failed)
    fprintf (stderr, "# Looks like you failed %u test%s of %u.\n",
             tap_failed, tap_failed == 1 ? "" : "s", tap_run);
  fflush (stdout);
  return tap_failed || tap_run == 0 ? 1 : 0;
}

#endif /* BLKGATE_TAP_H */
