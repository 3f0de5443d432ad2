#!/usr/bin/env bats
# For every plugin this build tree built: `blkgate --dump-plugin NAME` prints the keys
# blkgate(8) documents, with sane values, and `blkgate NAME --help` prints the plugin's
# parameters, every one its man page lists.  The plugins are discovered, not listed; the
# test fails if one the Makefiles say is built is missing, and if the plugins without
# optional dependencies are not all there.

load test_helper

# Built whatever configure found: no optional dependency.
always=(null memory fuse example-sync example-async)

# The core's lines of --dump-plugin, as documented in blkgate(8); has_* come after them.
core_keys=(path name version api_version struct_size thread_model async magic_config_key)
has_keys=(can_write can_flush can_trim can_zero can_fua pwritev flush trim zero
  aio_pwritev aio_flush aio_trim aio_zero)

setup() {
  blkgate_setup
  requires_blkgate
}

# built_plugins: NAME SO for every plugin shared object in the build tree.
built_plugins() {
  local so name
  for so in "$top_builddir"/plugins/*/.libs/blkgate-*-plugin.so; do
    [ -e "$so" ] || continue
    name=${so##*/blkgate-}
    echo "${name%-plugin.so} $so"
  done
}

# expected_plugins: the plugins the generated Makefiles build (automake comments out the
# plugin_LTLIBRARIES of a plugin whose dependency configure did not find).
expected_plugins() {
  sed -n 's/^plugin_LTLIBRARIES *= *//p' "$top_builddir"/plugins/*/Makefile |
    tr ' ' '\n' | sed -n 's/^blkgate-\(.*\)-plugin\.la$/\1/p'
}

# man_params MANPAGE: the KEY of every KEY=... under PARAMETERS (one per .TP item).
man_params() {
  awk '/^\.SH PARAMETERS/ { p = 1; next } /^\.SH/ { p = 0 } p && prev == ".TP" { print } { prev = $0 }' "$1" |
    sed -e 's/\\f[BIRP]//g' -e 's/\\-/-/g' -e 's/^\.B[IR]* //' -e 's/^\[//' |
    sed -n 's/^\([a-z0-9_-]*\)=.*/\1/p'
}

@test "every plugin the Makefiles build was built, including those with no optional dependency" {
  local p built expected
  built=$(built_plugins | cut -d' ' -f1 | sort)
  expected=$(expected_plugins | sort)
  echo "# built: $(tr '\n' ' ' <<< "$built")" >&3
  for p in "${always[@]}"; do
    grep -qx "$p" <<< "$expected" || { echo "no Makefile builds the $p plugin" >&2; return 1; }
  done
  [ "$built" = "$expected" ] ||
    { echo "built: $(tr '\n' ' ' <<< "$built"); expected: $(tr '\n' ' ' <<< "$expected")" >&2; return 1; }
}

@test "--dump-plugin prints the documented keys with sane values, for every plugin" {
  local name so key value k n=0 size='' real
  # The documented keys are those of blkgate(8).
  for k in "${core_keys[@]}" "${has_keys[@]}"; do
    grep -q -- "^\.B[RI]* $k\b" "$top_srcdir/src/blkgate.8" ||
      { echo "blkgate(8) does not document $k" >&2; return 1; }
  done
  grep -q '^\.BI has_ CALLBACK =0|1$' "$top_srcdir/src/blkgate.8"
  while read -r name so; do
    n=$((n + 1))
    run -0 --separate-stderr "$BLKGATE" --dump-plugin "$name"
    [ -z "$stderr" ] || { echo "$name: stderr: $stderr" >&2; return 1; }
    declare -A got=()
    while IFS= read -r line; do
      [[ $line =~ ^([a-z0-9_]+)=(.*)$ ]] || { echo "$name: not key=value: $line" >&2; return 1; }
      key=${BASH_REMATCH[1]} value=${BASH_REMATCH[2]}
      [ -z "${got[$key]+x}" ] || { echo "$name: $key twice" >&2; return 1; }
      got[$key]=$value
    done <<< "$output"
    # The core's keys come first, in the documented order.
    [[ $output == path=*$'\n'name=* ]]
    real=$(realpath "${got[path]}")
    [ "$real" = "$(realpath "$so")" ] || { echo "$name: path ${got[path]}" >&2; return 1; }
    [ "${got[name]}" = "$name" ]
    [[ ${got[version]} =~ ^[0-9][0-9a-zA-Z.+~-]*$ ]] || { echo "$name: version ${got[version]}" >&2; return 1; }
    [ "${got[api_version]}" = 1 ]
    [[ ${got[struct_size]} =~ ^[1-9][0-9]*$ ]]
    # Built against this tree's header: all have the same struct.
    [ -z "$size" ] || [ "${got[struct_size]}" = "$size" ]
    size=${got[struct_size]}
    [[ ${got[thread_model]} == parallel || ${got[thread_model]} == serialize_requests ]]
    [[ ${got[async]} == yes || ${got[async]} == no ]]
    for k in "${has_keys[@]}"; do
      [[ ${got[has_$k]} == [01] ]] || { echo "$name: has_$k=${got[has_$k]}" >&2; return 1; }
    done
    # Every plugin reads; one that writes has the write call of its mode.
    if [ "${got[async]}" = yes ]; then
      [ "${got[has_pwritev]}${got[has_flush]}${got[has_trim]}${got[has_zero]}" = 0000 ]
    else
      [ "${got[has_aio_pwritev]}${got[has_aio_flush]}${got[has_aio_trim]}${got[has_aio_zero]}" = 0000 ]
    fi
    echo "# $name: version ${got[version]}, ${got[thread_model]}, async=${got[async]}" >&3
    unset got
  done < <(built_plugins)
  [ $n -ge ${#always[@]} ]
}

@test "PLUGIN --help prints the plugin's parameters, every one its man page lists" {
  local name so man params p n=0 magic
  while read -r name so; do
    n=$((n + 1))
    # plugins/DIR/.libs/blkgate-NAME-plugin.so: the page is plugins/DIR/blkgate-NAME-plugin.1.
    man=$top_srcdir/plugins/$(basename "$(dirname "$(dirname "$so")")")/blkgate-$name-plugin.1
    [ -f "$man" ] || { echo "$name: no man page $man" >&2; return 1; }
    mapfile -t params < <(man_params "$man")
    [ ${#params[@]} -gt 0 ] || { echo "$name: no parameters found in $man" >&2; return 1; }
    run -0 --separate-stderr "$BLKGATE" "$name" --help
    [ -z "$stderr" ] || { echo "$name: stderr: $stderr" >&2; return 1; }
    [[ $output == "$name"* ]] || { echo "$name: help starts: ${output%%$'\n'*}" >&2; return 1; }
    for p in "${params[@]}"; do
      [[ $output == *"$p="* ]] || { echo "$name: $p (in $man) is not in --help:" >&2; echo "$output" >&2; return 1; }
    done
    # The magic key is shown as optional: [KEY=].
    magic=$("$BLKGATE" --dump-plugin "$name" | sed -n 's/^magic_config_key=//p')
    [ -z "$magic" ] || [[ $output == *"[$magic=]"* ]] || [[ $output == *"$magic="* ]]
    # -h too.
    run -0 "$BLKGATE" "$name" -h
    [[ $output == *"${params[0]}="* ]]
    echo "# $name: ${params[*]}" >&3
  done < <(built_plugins)
  [ $n -ge ${#always[@]} ]
}
