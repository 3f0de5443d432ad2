/* A standalone driver for the fuzz targets, linked instead of libFuzzer
 * when blkgate is configured without --enable-fuzz: runs the target
 * once on every file named, and on every file of every directory named
 * (the seed corpus and the regression inputs), so make check replays
 * them with the ordinary compiler and sanitizer builds.  A crash is a
 * crash here too; exit 0 otherwise.  Also the way to run inputs under
 * a debugger or AFL++ without libFuzzer. */

#include <config.h>

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

/* Targets that need no setup do not define it. */
__attribute__ ((weak)) int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  return 0;
}

static int
run_file (const char *path)
{
  FILE *f = fopen (path, "rb");
  uint8_t *buf = NULL;
  size_t len = 0, cap = 0, r;

  if (f == NULL) {
    perror (path);
    return -1;
  }
  do {
    if (len == cap) {
      uint8_t *nbuf;
      cap = cap ? 2 * cap : 4096;
      nbuf = realloc (buf, cap);
      if (nbuf == NULL) {
        perror ("realloc");
        exit (EXIT_FAILURE);
      }
      buf = nbuf;
    }
    r = fread (buf + len, 1, cap - len, f);
    len += r;
  } while (r > 0);
  fclose (f);
  /* A private copy of exactly len bytes, as libFuzzer passes it, so
   * ASan sees reads past the end. */
  {
    uint8_t *copy = malloc (len ? len : 1);
    if (copy == NULL)
      exit (EXIT_FAILURE);
    memcpy (copy, buf, len);
    free (buf);
    LLVMFuzzerTestOneInput (copy, len);
    free (copy);
  }
  return 0;
}

static int
by_name (const void *a, const void *b)
{
  return strcmp (*(char *const *) a, *(char *const *) b);
}

/* Files of a directory, in name order (reproducible). */
static int
run_dir (const char *path, unsigned *count)
{
  DIR *d = opendir (path);
  struct dirent *e;
  char **names = NULL;
  size_t n = 0, i;
  int ret = 0;

  if (d == NULL) {
    perror (path);
    return -1;
  }
  while ((e = readdir (d)) != NULL) {
    char **nn;
    if (e->d_name[0] == '.')
      continue;
    nn = realloc (names, sizeof *names * (n + 1));
    if (nn == NULL || (nn[n] = malloc (strlen (path) + strlen (e->d_name)
                                       + 2)) == NULL)
      exit (EXIT_FAILURE);
    names = nn;
    sprintf (names[n++], "%s/%s", path, e->d_name);
  }
  closedir (d);
  qsort (names, n, sizeof *names, by_name);
  for (i = 0; i < n; i++) {
    struct stat st;
    if (stat (names[i], &st) == 0 && S_ISREG (st.st_mode)) {
      if (run_file (names[i]) == -1)
        ret = -1;
      else
        (*count)++;
    }
    free (names[i]);
  }
  free (names);
  return ret;
}

int
main (int argc, char **argv)
{
  unsigned count = 0;
  int i, ret = 0;

  LLVMFuzzerInitialize (&argc, &argv);
  for (i = 1; i < argc; i++) {
    struct stat st;
    if (stat (argv[i], &st) == -1) {
      perror (argv[i]);
      ret = -1;
    }
    else if (S_ISDIR (st.st_mode)) {
      if (run_dir (argv[i], &count) == -1)
        ret = -1;
    }
    else if (run_file (argv[i]) == -1)
      ret = -1;
    else
      count++;
  }
  printf ("%s: %u inputs replayed\n", argv[0], count);
  return ret == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
