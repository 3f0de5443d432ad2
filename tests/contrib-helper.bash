# For the tests of contrib/ and make install (test-contrib.bats, test-install.bats):
# `load contrib-helper` after `load test_helper`.
#
# systemd is not PID 1 on a test machine, so the unit cannot be started there.  These
# functions do what systemd would do with it, as far as a test can: read ExecStart=, the
# environment file and the specifiers the way systemd does, move the unit's paths into the
# test's directory, and run the command with the unit's UMask=, NoNewPrivileges= and
# CapabilityBoundingSet= (through setpriv).  The other sandboxing options are checked by
# test-contrib.bats from a strace of the gateway.

# makevar NAME: the value of the make variable NAME in the build tree, expanded
# (e.g. makevar sbindir prints /usr/local/sbin).
makevar() {
  printf 'print-var:\n\t@echo $(%s)\n' "$1" |
    make -s --no-print-directory -C "$top_builddir" -f Makefile -f - print-var
}

# unit_values UNIT KEY: the values of every KEY= line of the unit file, one a line.
unit_values() {
  sed -n "s/^[[:space:]]*$2[[:space:]]*=[[:space:]]*//p" "$1" | sed 's/[[:space:]]*$//'
}

# unit_value UNIT KEY: the value of the one KEY= line of the unit file; fails if there is
# none or more than one (the tests only read settings that are given once).
unit_value() {
  local v n
  v=$(unit_values "$1" "$2")
  n=$(grep -c -E "^[[:space:]]*$2[[:space:]]*=" "$1" || true)
  [ "$n" = 1 ] || { echo "$1: $n lines set $2, expected one" >&2; return 1; }
  printf '%s\n' "$v"
}

# envfile_value FILE VAR: the value of VAR in the systemd environment file FILE
# (EnvironmentFile=): NAME=value or NAME="value" lines, # and ; comments, the last one
# wins.  What this parser does not know (backslashes, continuation lines, quotes that do
# not span the whole value) is an error rather than a guess.
envfile_value() {
  local line value found=
  while IFS= read -r line || [ -n "$line" ]; do
    line=${line#"${line%%[![:space:]]*}"}
    case $line in ''|'#'*|';'*) continue ;; esac
    [[ $line =~ ^([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] ||
      { echo "$1: cannot parse: $line" >&2; return 1; }
    [ "${BASH_REMATCH[1]}" = "$2" ] || continue
    value=${BASH_REMATCH[2]}
    value=${value%"${value##*[![:space:]]}"}
    [[ $value != *\\* ]] || { echo "$1: backslashes are not handled: $line" >&2; return 1; }
    if [[ $value =~ ^\"([^\"]*)\"$ || $value =~ ^\'([^\']*)\'$ ]]; then
      value=${BASH_REMATCH[1]}
    elif [[ $value == *[\"\']* ]]; then
      echo "$1: quotes inside a value are not handled: $line" >&2
      return 1
    fi
    found=$value
  done < "$1"
  [ -n "$found" ] || { echo "$1 does not set $2" >&2; return 1; }
  printf '%s\n' "$found"
}

# unit_specifiers STRING INSTANCE: STRING with %i, %I and %% expanded as systemd does for a
# plain instance name; any other specifier is an error (none is expected in the unit).
unit_specifiers() {
  local s=$1
  s=${s//%%/$'\001'}
  s=${s//%i/$2}
  s=${s//%I/$2}
  [[ $s != *%* ]] || { echo "unexpected specifier in: $1" >&2; return 1; }
  printf '%s\n' "${s//$'\001'/%}"
}

# exec_start UNIT INSTANCE ENVFILE: the unit's ExecStart= command line for INSTANCE, one
# argument a line, as systemd builds it: split at white space, specifiers expanded, $VAR
# replaced by the words of VAR's value in ENVFILE and ${VAR} by the whole value.
exec_start() {
  local -
  set -f
  local line word w value
  line=$(unit_value "$1" ExecStart) || return 1
  # Quotes, escapes and the -@+!: prefixes change how systemd reads the line: the unit has
  # none, and this function does not pretend to handle them.
  [[ $line != *[\"\'\\]* ]] || { echo "ExecStart has quotes or backslashes: $line" >&2; return 1; }
  case $line in [-@+!:]*) echo "ExecStart has a prefix: $line" >&2; return 1 ;; esac
  line=$(unit_specifiers "$line" "$2") || return 1
  for word in $line; do
    if [[ $word =~ ^\$([A-Za-z_][A-Za-z0-9_]*)$ ]]; then
      value=$(envfile_value "$3" "${BASH_REMATCH[1]}") || return 1
      for w in $value; do printf '%s\n' "$w"; done
    elif [[ $word =~ ^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$ ]]; then
      envfile_value "$3" "${BASH_REMATCH[1]}" || return 1
    elif [[ $word == *'$'* ]]; then
      echo "ExecStart: a variable inside a word is not handled: $word" >&2
      return 1
    else
      printf '%s\n' "$word"
    fi
  done
}

# unit_paths STRING: STRING with the unit's system paths moved into the test's directories:
# /run/blkgate to $rundir, /var/lib/blkgate to $statedir (set by unit_setup).
unit_paths() {
  local s=$1
  s=${s//\/run\/blkgate/$rundir}
  s=${s//\/var\/lib\/blkgate/$statedir}
  printf '%s\n' "$s"
}

# unit_setup: $rundir (short: it holds the socket) and $statedir, the test's
# /run/blkgate and /var/lib/blkgate.
unit_setup() {
  rundir=$sockdir/run
  statedir=$tmp/lib
  mkdir -p "$rundir" "$statedir"
}

# setpriv_args UNIT: the setpriv(1) options that give a process what the unit's
# NoNewPrivileges= and CapabilityBoundingSet= give it (the unit runs as root: with a
# bounding set, root keeps only the capabilities in it across execve).
setpriv_args() {
  local nnp caps c list=-all
  nnp=$(unit_value "$1" NoNewPrivileges) || return 1
  caps=$(unit_value "$1" CapabilityBoundingSet) || return 1
  [[ $caps != '~'* ]] || { echo "CapabilityBoundingSet=~ is not handled" >&2; return 1; }
  for c in $caps; do
    c=${c,,}
    list+=",+${c#cap_}"
  done
  [ "$nnp" = yes ] && printf '%s\n' --no-new-privs
  printf '%s\n' --bounding-set "$list" --inh-caps -all --ambient-caps -all
}

# start_unit UNIT INSTANCE ENVFILE BINARY [WRAPPER...]: runs the unit's ExecStart for
# INSTANCE with ENVFILE, its paths moved (unit_paths) and its program replaced by BINARY,
# the way systemd would run a Type=forking service: with the unit's umask and privileges,
# done when the first process exits 0; the daemon's pid is then read from the unit's
# PIDFile=.  WRAPPER (e.g. strace ...) is put in front of the whole.  Sets $gateway_pid
# and $unit_cmd (the command line, paths moved, program not replaced); teardown stops the
# gateway.  The gateway's stderr goes to $gwlog.
start_unit() {
  local unit=$1 inst=$2 envfile=$3 binary=$4 a args privs pidf umask status=0
  shift 4
  [ "$(unit_value "$unit" Type)" = forking ] ||
    { echo "$unit is not Type=forking: start_unit needs an update" >&2; return 1; }
  mapfile -t args < <(exec_start "$unit" "$inst" "$envfile")
  [ ${#args[@]} -gt 1 ] || { echo "no ExecStart in $unit" >&2; return 1; }
  unit_cmd=()
  for a in "${args[@]}"; do unit_cmd+=("$(unit_paths "$a")"); done
  pidf=$(unit_paths "$(unit_specifiers "$(unit_value "$unit" PIDFile)" "$inst")")
  umask=$(unit_value "$unit" UMask)
  mapfile -t privs < <(setpriv_args "$unit")
  [ ${#privs[@]} -gt 0 ] || return 1
  requires setpriv

  rm -f "$pidf"
  echo "# ${unit_cmd[*]}" >> "$gwlog"
  (umask "$umask" && exec "$@" setpriv "${privs[@]}" -- "$binary" "${unit_cmd[@]:1}") \
    </dev/null >>"$gwlog" 2>&1 3>&- || status=$?
  if [ $status -ne 0 ]; then
    echo "the unit's command exited with status $status:" >&2
    cat "$gwlog" >&2
    return 1
  fi
  # Type=forking with PIDFile=: the file must be there when the first process has exited.
  grep -q -x '[0-9][0-9]*' "$pidf" 2>/dev/null ||
    { echo "no pid in $pidf (PIDFile=) after ExecStart returned" >&2; return 1; }
  gateway_pid=$(cat "$pidf")
  touch "$tmp/.pids/gateway.$gateway_pid"
}
