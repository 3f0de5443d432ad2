#!/usr/bin/env bats
# The plugin ABI (blkgate-plugin(3), ABI): <blkgate-plugin.h> compiles as strict C99 with gcc
# and clang and as C++11; a C++ plugin registers and serves; a plugin built against an older,
# smaller struct loads and serves without the daemon reading past its end; an unknown API
# version, an impossible struct size and an unknown thread model are refused with a message
# naming the plugin.  The plugins are tests/abi/*.c{,pp}, built here with knobs (see there).

load test_helper

setup() {
  blkgate_setup
  requires_blkgate
  [ -x "$BLKGATE_IO" ] || { echo "$BLKGATE_IO does not exist: run make first" >&2; return 1; }
  abi=$top_srcdir/tests/abi
}

# build OUT COMPILER [FLAGS...]: the ABI test plugin, as a shared object OUT, with the
# source tree's header only.
build() {
  local out=$1 cc=$2
  shift 2
  "$cc" "$@" -shared -fPIC -I"$top_srcdir/src" -o "$out" "$abi/abi-plugin.c"
}

# serves SO: blkgate serves SO (a 16 MiB disk) and what is written reads back.
serves() {
  start_gateway "$1" size=16M
  run -0 bio "$sock" -c 'write 0 1M -S 11' -c 'verify 0 1M -S 11' -c flush -c 'verify 1M 1M -P 0'
  stop_gateway
}

# refused SO MESSAGE: --dump-plugin and serving both fail with status 1 and MESSAGE, which
# names SO, and no socket is created.
refused() {
  run -1 --separate-stderr "$BLKGATE" --dump-plugin "$1"
  [[ "$stderr" == *"$1: $2"* ]] || { echo "stderr: $stderr" >&2; return 1; }
  [ -z "$output" ]
  run -1 --separate-stderr "$BLKGATE" -f -s "$sock" "$1" size=1M
  [[ "$stderr" == *"$1: $2"* ]] || { echo "stderr: $stderr" >&2; return 1; }
  [ ! -e "$sock" ]
}

@test "the header compiles as C99 with gcc -pedantic -Wall -Wextra -Werror, and loads" {
  requires gcc
  build "$tmp/abi.so" gcc -std=c99 -pedantic -Werror -Wall -Wextra
  run -0 "$BLKGATE" --dump-plugin "$tmp/abi.so"
  [[ "$output" == *$'\nname=abi\n'*$'\napi_version=1\n'* ]]
  serves "$tmp/abi.so"
}

@test "the header compiles as C99 with clang -pedantic -Werror" {
  requires clang
  build "$tmp/abi.so" clang -std=c99 -pedantic -Werror -Wall -Wextra
  run -0 "$BLKGATE" --dump-plugin "$tmp/abi.so"
  [[ "$output" == *$'\nname=abi\n'* ]]
}

@test "the header refuses to compile without BLKGATE_API_VERSION 1" {
  requires gcc
  printf '#include <blkgate-plugin.h>\n' > "$tmp/none.c"
  run ! gcc -std=c99 -fsyntax-only -I"$top_srcdir/src" "$tmp/none.c"
  [[ "$output" == *"#define BLKGATE_API_VERSION 1"* ]]
  printf '#define BLKGATE_API_VERSION 2\n#include <blkgate-plugin.h>\n' > "$tmp/two.c"
  run ! gcc -std=c99 -fsyntax-only -I"$top_srcdir/src" "$tmp/two.c"
  [[ "$output" == *"supports only BLKGATE_API_VERSION 1"* ]]
}

@test "a C++11 plugin (g++ -pedantic -Werror) registers with C linkage and serves" {
  requires g++ nm
  g++ -std=c++11 -pedantic -Werror -Wall -Wextra -shared -fPIC -I"$top_srcdir/src" \
    -o "$tmp/cxx.so" "$abi/cxx-plugin.cpp"
  # The entry point keeps its C name (not _Z11plugin_initv).
  nm -D --defined-only "$tmp/cxx.so" | grep -q ' plugin_init$'
  run -0 "$BLKGATE" --dump-plugin "$tmp/cxx.so"
  [[ "$output" == *$'\nname=cxx\n'* ]]
  start_gateway "$tmp/cxx.so" 16M
  run -0 bio "$sock" -c 'write 0 1M -S 12' -c 'verify 0 1M -S 12'
  stop_gateway
}

@test "the C++ plugin also builds with clang++" {
  requires clang++
  clang++ -std=c++11 -pedantic -Werror -Wall -Wextra -shared -fPIC -I"$top_srcdir/src" \
    -o "$tmp/cxx.so" "$abi/cxx-plugin.cpp"
  run -0 "$BLKGATE" --dump-plugin "$tmp/cxx.so"
  [[ "$output" == *$'\nname=cxx\n'* ]]
}

@test "a plugin built against an older, smaller struct loads and serves; the rest reads as unset" {
  local cur old
  build "$tmp/new.so" "${CC:-cc}" -std=c99
  build "$tmp/old.so" "${CC:-cc}" -std=c99 -DOLD_STRUCT
  cur=$("$BLKGATE" --dump-plugin "$tmp/new.so" | sed -n 's/^struct_size=//p')
  run -0 "$BLKGATE" --dump-plugin "$tmp/old.so"
  old=$(sed -n 's/^struct_size=//p' <<< "$output")
  echo "# struct sizes: current $cur, old $old" >&3
  [ "$old" -gt 0 ] && [ "$old" -lt "$cur" ]
  # The bytes after the old struct are 0xff: a daemon that copied them would see an
  # async plugin with garbage callbacks.
  [[ "$output" == *$'\nasync=no\n'* ]]
  [[ "$output" == *$'\nhas_flush=1\n'* && "$output" == *$'\nhas_aio_pwritev=0\n'* ]]
  [[ "$output" == *$'\nversion=0.9\n'* ]]
  serves "$tmp/old.so"
}

@test "a plugin with a larger struct (a newer header) loads; its extra fields are ignored" {
  build "$tmp/newer.so" "${CC:-cc}" -std=c99 -DSTRUCT_SIZE=400
  run -0 "$BLKGATE" --dump-plugin "$tmp/newer.so"
  [[ "$output" == *$'\nstruct_size=400\n'* ]]
}

@test "API versions 2 and 0 are refused with a message naming the plugin and both versions" {
  local v
  for v in 2 0; do
    build "$tmp/v$v.so" "${CC:-cc}" -std=c99 -DAPI_VERSION=$v
    refused "$tmp/v$v.so" "plugin uses API version $v; this blkgate supports version 1"
  done
}

@test "a struct too small, or absurdly large, is refused" {
  build "$tmp/small.so" "${CC:-cc}" -std=c99 -DSTRUCT_SIZE=8
  refused "$tmp/small.so" "plugin struct is too small (8 bytes)"
  build "$tmp/zero.so" "${CC:-cc}" -std=c99 -DSTRUCT_SIZE=0
  refused "$tmp/zero.so" "plugin struct is too small (0 bytes)"
  build "$tmp/huge.so" "${CC:-cc}" -std=c99 -DSTRUCT_SIZE=0xffffffffffffffffULL
  refused "$tmp/huge.so" "plugin struct size 18446744073709551615 is implausible"
}

@test "an unknown thread model is refused" {
  build "$tmp/tm.so" "${CC:-cc}" -std=c99 -DTHREAD_MODEL_VALUE=7
  refused "$tmp/tm.so" "unknown thread model 7"
}
