/* Privileges: --user/--group and the socket's owner, group and mode.
 *
 * Why drop root: blkgate is started as root so that it can create its
 * socket and pid file under /run, open block devices and mount a
 * --fuse-export file.  Serving needs none of that, and a process that
 * maps guest memory and parses what a guest wrote into it should not
 * hold root while it does.  So once the socket, the pid file, the
 * plugin and the mount are open, it becomes --user/--group for good
 * (real, effective and saved ids alike), before the first front-end
 * message is read.
 *
 * Names are resolved at startup, before anything is opened: a typo is
 * refused while there is nothing to undo, and nothing needs the user
 * database (NSS) after daemonizing.
 *
 * The socket is created with mode 0600 and owned by whoever runs
 * blkgate (server_listen_path); QEMU usually runs as another user
 * (libvirt-qemu, kvm), so the socket can be given to it. */

#include <config.h>

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <glib.h>

#include "log.h"
#include "privs.h"

static struct {
  bool user_set, group_set;
  uid_t uid;
  gid_t gid;
  gid_t *groups;                /* supplementary groups of --user */
  int ngroups;

  bool sock_owner_set, sock_group_set, sock_mode_set;
  uid_t sock_uid;
  gid_t sock_gid;
  mode_t sock_mode;
} pv;

/* A numeric id: digits only, and not (id_t) -1, which chown and setuid
 * take to mean "no change". */
static bool
parse_id (const char *s, unsigned *id)
{
  unsigned long long v;
  char *end;

  if (*s < '0' || *s > '9')
    return false;
  errno = 0;
  v = strtoull (s, &end, 10);
  if (errno || *end || v >= (unsigned) -1)
    return false;
  *id = v;
  return true;
}

/* A user by name, or by number: a number need not be in the user
 * database (*pw is then NULL), as with chown(1). */
static int
find_user (const char *opt, const char *s, uid_t *uid, struct passwd **pw)
{
  unsigned id;

  *pw = getpwnam (s);
  if (*pw == NULL && parse_id (s, &id)) {
    *pw = getpwuid (id);
    *uid = id;
    return 0;
  }
  if (*pw == NULL) {
    blkgate_error ("%s %s: no such user", opt, s);
    return -1;
  }
  *uid = (*pw)->pw_uid;
  return 0;
}

/* A group by name, or by number (which need not be in the database). */
static int
find_group (const char *opt, const char *s, gid_t *gid)
{
  struct group *gr = getgrnam (s);
  unsigned id;

  if (gr) {
    *gid = gr->gr_gid;
    return 0;
  }
  if (parse_id (s, &id)) {
    *gid = id;
    return 0;
  }
  blkgate_error ("%s %s: no such group", opt, s);
  return -1;
}

/* The groups of the user called name, gid among them (initgroups(3)'s
 * list, computed now so that the drop itself needs no lookup). */
static int
user_groups (const char *name, gid_t gid)
{
  int n = 16;

  for (;;) {
    pv.groups = g_renew (gid_t, pv.groups, n);
    pv.ngroups = n;
    if (getgrouplist (name, gid, pv.groups, &pv.ngroups) != -1)
      return 0;
    if (pv.ngroups <= n) {
      blkgate_error ("--user %s: cannot list the user's groups", name);
      return -1;
    }
    n = pv.ngroups;
  }
}

/* --user and --group: whom to become.  The gid is --group's, else the
 * user's primary group; the supplementary groups are the user's, or
 * none with --group alone or a numeric user the database does not
 * know. */
static int
init_drop (const char *user, const char *group)
{
  struct passwd *pw = NULL;

  pv.user_set = user != NULL;
  pv.group_set = group != NULL;
  if (user && find_user ("--user", user, &pv.uid, &pw) == -1)
    return -1;
  if (pw)
    pv.gid = pw->pw_gid;
  if (group && find_group ("--group", group, &pv.gid) == -1)
    return -1;
  if (user && pw == NULL && group == NULL) {
    blkgate_error ("--user %s: no such user in the user database, so no "
                   "group to take: give --group too", user);
    return -1;
  }
  return pw ? user_groups (pw->pw_name, pv.gid) : 0;
}

/* An octal mode, 0 to 0777: no setuid, setgid or sticky bit, which mean
 * nothing on a socket and suggest a typo. */
static int
parse_mode (const char *s, mode_t *mode)
{
  unsigned long v;

  if (*s == '\0' || strspn (s, "01234567") != strlen (s) ||
      (v = strtoul (s, NULL, 8)) > 0777) {
    blkgate_error ("--socket-mode %s: expected an octal mode from 0 to "
                   "0777, such as 0660", s);
    return -1;
  }
  *mode = v;
  return 0;
}

int
privs_init (const struct privs_options *o)
{
  if (init_drop (o->user, o->group) == -1)
    return -1;
  if (o->socket_owner) {
    struct passwd *pw;

    pv.sock_owner_set = true;
    if (find_user ("--socket-owner", o->socket_owner, &pv.sock_uid,
                   &pw) == -1)
      return -1;
  }
  pv.sock_group_set = o->socket_group != NULL;
  if (o->socket_group &&
      find_group ("--socket-group", o->socket_group, &pv.sock_gid) == -1)
    return -1;
  pv.sock_mode_set = o->socket_mode != NULL;
  return o->socket_mode ? parse_mode (o->socket_mode, &pv.sock_mode) : 0;
}

int
privs_socket (const char *path)
{
  if ((pv.sock_owner_set || pv.sock_group_set) &&
      lchown (path, pv.sock_owner_set ? pv.sock_uid : (uid_t) -1,
              pv.sock_group_set ? pv.sock_gid : (gid_t) -1) == -1) {
    blkgate_error ("--socket-owner/--socket-group: chown %s: %m", path);
    return -1;
  }
  if (pv.sock_mode_set && chmod (path, pv.sock_mode) == -1) {
    blkgate_error ("--socket-mode: chmod %s: %m", path);
    return -1;
  }
  return 0;
}

static int
drop_failed (const char *what)
{
  blkgate_error ("cannot drop privileges: %s: %m%s", what,
                 errno == EPERM ? " (--user and --group need blkgate to "
                 "start as root, with CAP_SETUID and CAP_SETGID)" : "");
  return -1;
}

/* Trust, but verify: every id is the one asked for, and a process that
 * gave up root cannot take it back. */
static int
check_dropped (void)
{
  uid_t ru, eu, su;
  gid_t rg, eg, sg;

  if (getresuid (&ru, &eu, &su) == -1 || getresgid (&rg, &eg, &sg) == -1)
    return drop_failed ("getresuid");
  if (rg != pv.gid || eg != pv.gid || sg != pv.gid ||
      (pv.user_set && (ru != pv.uid || eu != pv.uid || su != pv.uid)) ||
      (pv.user_set && pv.uid != 0 && setuid (0) != -1)) {
    blkgate_error ("cannot drop privileges: the process's ids are not "
                   "the ones asked for");
    return -1;
  }
  debug ("running as uid %u, gid %u, %d supplementary groups",
         (unsigned) eu, (unsigned) eg, pv.ngroups);
  return 0;
}

int
privs_drop (void)
{
  if (!pv.user_set && !pv.group_set)
    return 0;
  /* Groups first: once the uid is not root, they can no longer change. */
  if (setgroups (pv.ngroups, pv.groups) == -1)
    return drop_failed ("setgroups");
  if (setgid (pv.gid) == -1)
    return drop_failed ("setgid");
  if (pv.user_set && setuid (pv.uid) == -1)
    return drop_failed ("setuid");
  return check_dropped ();
}
