#!/usr/bin/env bats
# The nbd plugin over TCP and over TLS (nbds://, nbds+unix:// with a pre-shared key), and
# a TLS connection replaced after the server restarts.

load test_helper

setup() {
  blkgate_setup
  requires_plugin nbd
  requires nbdkit
  bgio=$top_builddir/src/blkgate-io
  # A TLS-PSK keys file: USERNAME:HEXKEY.
  printf 'alice:%s\n' "$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')" > "$tmp/keys.psk"
}

# free_port: a TCP port nobody listens on now.
free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

@test "nbd:// over TCP: what the guest side writes is on the server" {
  local port
  port=$(free_port)
  truncate -s 64M "$tmp/disk.img"
  start_daemon nbdkit nbdkit -f -i 127.0.0.1 -p "$port" file "$tmp/disk.img"
  wait_for 30 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null
  start_gateway nbd "nbd://127.0.0.1:$port/"
  run "$bgio" "$sock" -c 'write 1M 256k -S 21' -c 'verify 1M 256k -S 21' -c flush
  [ "$status" -eq 0 ] || { echo "$output"; false; }
  "$bgio" "$sock" read 1M 256k -o "$tmp/via-gw"
  cmp "$tmp/via-gw" <(dd if="$tmp/disk.img" bs=256k skip=4 count=1 status=none)
}

@test "nbds+unix:// with a PSK: data goes through TLS; a wrong user or no TLS is refused at start" {
  start_nbdkit tls --tls=require --tls-psk="$tmp/keys.psk" memory 64M
  local uri="nbds+unix:///?socket=$sockdir/tls.nbd"

  run "$BLKGATE" -f -s "$sockdir/x.sock" nbd "$(nbd_uri tls)"
  [ "$status" -ne 0 ]
  [[ $output == *"cannot connect to"*"TLS"* ]] || { echo "$output"; false; }

  run "$BLKGATE" -f -s "$sockdir/x.sock" nbd "$uri" tls-psk="$tmp/keys.psk" tls-username=bob
  [ "$status" -ne 0 ]
  [[ $output == *"bob"* ]] || { echo "$output"; false; }

  start_gateway nbd "$uri" tls-psk="$tmp/keys.psk" tls-username=alice
  run "$bgio" "$sock" -c 'write 0 1M -S 5' -c 'verify 0 1M -S 5' -c 'zero 0 64k' \
    -c 'verify 0 64k -P 0'
  [ "$status" -eq 0 ] || { echo "$output"; false; }
}

@test "TLS: nbdkit killed with writes in flight; the new TLS connection sends them again" {
  local uri="nbds+unix:///?socket=$sockdir/tls.nbd"
  truncate -s 64M "$tmp/disk.img"
  start_nbdkit tls --tls=require --tls-psk="$tmp/keys.psk" --filter=delay \
    file "$tmp/disk.img" delay-write=2
  start_gateway nbd "$uri" tls-psk="$tmp/keys.psk" tls-username=alice
  "$bgio" "$sock" -c 'aio-write 0 64k -S 31' -c 'aio-write 1M 64k -S 32' \
    -c 'aio-write 2M 4k -S 33' -c wait >"$tmp/bgio.out" 2>&1 &
  local bgio_pid=$!
  # The writes are at the server (2 s each) when it dies.
  sleep 1
  kill_daemon tls KILL
  start_nbdkit tls --tls=require --tls-psk="$tmp/keys.psk" file "$tmp/disk.img"
  wait "$bgio_pid" || { cat "$tmp/bgio.out"; false; }
  cat "$tmp/bgio.out"
  [ "$(grep -c ': OK$' "$tmp/bgio.out")" -eq 3 ]
  wait_for_log "$gwlog" "reconnected" 10
  "$bgio" "$sock" -c 'verify 0 64k -S 31' -c 'verify 1M 64k -S 32' -c 'verify 2M 4k -S 33'
  # And they are in the file behind the server.
  "$bgio" "$sock" read 1M 64k -o "$tmp/via-gw"
  cmp "$tmp/via-gw" <(dd if="$tmp/disk.img" bs=64k skip=16 count=1 status=none)
}
