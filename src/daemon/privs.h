/* --user/--group (dropping root once everything is open) and the
 * socket's owner, group and mode (--socket-owner/-group/-mode). */

#ifndef BLKGATE_PRIVS_H
#define BLKGATE_PRIVS_H

/* The options as given (names or numeric ids, an octal mode); NULL
 * when not given.  Filled by the command line parser. */
struct privs_options {
  char *user;
  char *group;
  char *socket_owner;
  char *socket_group;
  char *socket_mode;
};

/* Resolves the names and checks the mode, before anything is opened:
 * an unknown user or a bad mode is refused while there is nothing to
 * undo.  -1 after blkgate_error. */
int privs_init (const struct privs_options *o);

/* Gives the socket just created at path its owner, group and mode.
 * -1 after blkgate_error (the caller removes the socket). */
int privs_socket (const char *path);

/* Becomes --user/--group for good: supplementary groups, gid, uid, in
 * that order, each checked.  Nothing to do without those options.
 * -1 after blkgate_error. */
int privs_drop (void);

#endif /* BLKGATE_PRIVS_H */
