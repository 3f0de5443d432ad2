/* Unit tests for src/common/utils.c: parse_size, parse_bool, range_ok. */

#include <config.h>

#include <stdint.h>
#include <stdlib.h>

#include "utils.h"
#include "tap.h"

static void
size_ok (const char *str, int64_t want)
{
  const char *err = NULL;
  int64_t got = parse_size (str, &err);

  is_int (got, want, "parse_size (\"%s\") = %" PRId64, str, want);
}

/* str for a test description: quoted, control characters escaped. */
static const char *
quote (const char *str)
{
  static char buf[128];
  size_t n = 0;

  if (str == NULL)
    return "NULL";
  buf[n++] = '"';
  for (; *str && n < sizeof buf - 6; str++)
    if ((unsigned char) *str < 0x20)
      n += snprintf (buf + n, sizeof buf - n, "\\x%02x", *str);
    else
      buf[n++] = *str;
  buf[n++] = '"';
  buf[n] = '\0';
  return buf;
}

static void
size_bad (const char *str)
{
  const char *err = NULL;
  int64_t got = parse_size (str, &err);

  ok (got == -1 && err != NULL && err[0] != '\0',
      "parse_size (%s) is refused (%s)", quote (str),
      err ? err : "no message");
}

static void
test_parse_size (void)
{
  const int64_t K = 1024, M = K * K, G = M * K, T = G * K, P = T * K;

  /* Plain numbers. */
  size_ok ("0", 0);
  size_ok ("1", 1);
  size_ok ("512", 512);
  size_ok ("4096", 4096);
  size_ok ("0004096", 4096);
  size_ok ("9223372036854775807", INT64_MAX);

  /* Suffixes, both cases, with and without B / iB. */
  size_ok ("4k", 4 * K);
  size_ok ("4K", 4 * K);
  size_ok ("64M", 64 * M);
  size_ok ("64m", 64 * M);
  size_ok ("1G", G);
  size_ok ("3g", 3 * G);
  size_ok ("1T", T);
  size_ok ("2t", 2 * T);
  size_ok ("1P", P);
  size_ok ("1GiB", G);
  size_ok ("1gib", G);
  size_ok ("1GIB", G);
  size_ok ("1GB", G);
  size_ok ("1Gb", G);
  size_ok ("16KiB", 16 * K);
  size_ok ("16MiB", 16 * M);
  size_ok ("1TiB", T);
  size_ok ("512b", 512);
  size_ok ("512B", 512);
  size_ok ("0G", 0);

  /* Largest values that still fit, and one past. */
  size_ok ("8388607T", 8388607 * T);
  size_bad ("8388608T");        /* 2^63 */
  size_ok ("8191P", 8191 * P);
  size_bad ("8192P");
  size_bad ("9223372036854775808");     /* INT64_MAX + 1 */
  size_bad ("18446744073709551615");    /* UINT64_MAX */
  size_bad ("18446744073709551616");    /* strtoull overflow */
  size_bad ("99999999999999999999999999");
  size_bad ("99999999999T");
  size_bad ("9999999999G");
  size_bad ("17179869184G");    /* 2^34 G = 2^64 */

  /* Malformed. */
  size_bad (NULL);
  size_bad ("");
  size_bad ("-1");
  size_bad ("+1");
  size_bad (" 1");
  size_bad ("1 ");
  size_bad ("1X");
  size_bad ("1x");
  size_bad ("1.5G");
  size_bad ("1,5G");
  size_bad ("0x10");
  size_bad ("k");
  size_bad ("G");
  size_bad ("1kk");
  size_bad ("1GiBx");
  size_bad ("1Gi");
  size_bad ("1GiBB");
  size_bad ("1bib");            /* "iB" only after a real multiplier */
  size_bad ("1bb");
  size_bad ("1E");              /* exabytes are not offered */
  size_bad ("1 G");
  size_bad ("1\nG");
}

static void
test_parse_bool (void)
{
  static const char *yes[] = { "1", "on", "yes", "true", "ON", "Yes",
                               "TRUE", "tRuE", NULL };
  static const char *no[] = { "0", "off", "no", "false", "OFF", "No",
                              "FALSE", "fAlSe", NULL };
  static const char *bad[] = { "", "2", "-1", "01", "y", "n", "t", "f",
                               "onn", "of", "yes ", " yes", "enable",
                               "truee", "1.0", NULL };
  size_t i;

  for (i = 0; yes[i]; i++)
    is_int (parse_bool (yes[i]), 1, "parse_bool (\"%s\") = 1", yes[i]);
  for (i = 0; no[i]; i++)
    is_int (parse_bool (no[i]), 0, "parse_bool (\"%s\") = 0", no[i]);
  for (i = 0; bad[i]; i++)
    is_int (parse_bool (bad[i]), -1, "parse_bool (\"%s\") = -1", bad[i]);
  is_int (parse_bool (NULL), -1, "parse_bool (NULL) = -1");
}

static void
test_range_ok (void)
{
  const uint64_t M = UINT64_MAX;

  ok (range_ok (0, 0, 0), "range_ok (0, 0, 0)");
  ok (!range_ok (0, 1, 0), "!range_ok (0, 1, 0)");
  ok (!range_ok (1, 0, 0), "!range_ok (1, 0, 0)");
  ok (range_ok (1, 0, 1), "range_ok (1, 0, 1): empty range at the limit");
  ok (range_ok (5, 5, 10), "range_ok (5, 5, 10): ends exactly at the limit");
  ok (!range_ok (5, 6, 10), "!range_ok (5, 6, 10): one past");
  ok (!range_ok (11, 0, 10), "!range_ok (11, 0, 10): start past the limit");
  ok (range_ok (0, 10, 10), "range_ok (0, 10, 10)");
  ok (!range_ok (0, 11, 10), "!range_ok (0, 11, 10)");
  ok (range_ok (M, 0, M), "range_ok (MAX, 0, MAX)");
  ok (!range_ok (M, 1, M), "!range_ok (MAX, 1, MAX): would wrap");
  ok (!range_ok (1, M, M), "!range_ok (1, MAX, MAX): would wrap");
  ok (range_ok (0, M, M), "range_ok (0, MAX, MAX)");
  ok (range_ok (M - 1, 1, M), "range_ok (MAX-1, 1, MAX)");
  ok (!range_ok (M - 1, 2, M), "!range_ok (MAX-1, 2, MAX)");
  ok (!range_ok (M / 2 + 1, M / 2 + 1, M), "!range_ok (MAX/2+1, MAX/2+1, MAX)");
  ok (range_ok (M / 2, M / 2 + 1, M), "range_ok (MAX/2, MAX/2+1, MAX)");
  ok (!range_ok (UINT64_C (1) << 63, UINT64_C (1) << 63, M),
      "!range_ok (2^63, 2^63, MAX): sum is exactly 2^64");
  ok (!range_ok (4096, M - 100, 1u << 20), "!range_ok with a huge length");
}

int
main (void)
{
  test_parse_size ();
  test_parse_bool ();
  test_range_ok ();
  return done_testing ();
}
