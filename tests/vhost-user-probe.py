#!/usr/bin/env python3
"""Connects to a vhost-user-blk back-end as QEMU would at device creation and prints what it
offers, one key=value line each:

  features=0x...            GET_FEATURES
  protocol_features=0x...   GET_PROTOCOL_FEATURES (if VHOST_USER_F_PROTOCOL_FEATURES is offered)
  queues=N                  GET_QUEUE_NUM (if the MQ protocol feature is offered)
  capacity=N                512-byte sectors, from GET_CONFIG (if the CONFIG protocol feature
                            is offered)

usage: vhost-user-probe.py [--timeout SECONDS] [--hold SECONDS] SOCKET

--hold keeps the connection open that long after the probe.  Exit status: 0 on success; 1 if
the connection could not be made; 2 if the back-end closed it or did not answer within the
timeout (default 5 s), as when it refuses a second front-end.
"""

import argparse
import socket
import struct
import sys
import time

VERSION = 0x1
REPLY = 0x4

GET_FEATURES = 1
SET_OWNER = 3
GET_PROTOCOL_FEATURES = 15
SET_PROTOCOL_FEATURES = 16
GET_QUEUE_NUM = 17
GET_CONFIG = 24

F_PROTOCOL_FEATURES = 1 << 30
PROTOCOL_F_MQ = 1 << 0
PROTOCOL_F_CONFIG = 1 << 9

CONFIG_SIZE = 60        # struct virtio_blk_config as QEMU 7.2 asks for it


class NoAnswer(Exception):
    pass


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise NoAnswer("the back-end closed the connection")
        buf += chunk
    return buf


def send(sock, request, payload=b""):
    sock.sendall(struct.pack("<III", request, VERSION, len(payload)) + payload)


def call(sock, request, payload=b""):
    send(sock, request, payload)
    try:
        hdr = recv_exact(sock, 12)
    except socket.timeout:
        raise NoAnswer("no answer to request %d" % request)
    req, flags, size = struct.unpack("<III", hdr)
    if req != request or not flags & REPLY:
        raise NoAnswer("bad reply to request %d: request %d flags 0x%x" % (request, req, flags))
    return recv_exact(sock, size)


def probe(sock):
    features, = struct.unpack("<Q", call(sock, GET_FEATURES))
    print("features=0x%x" % features)
    if not features & F_PROTOCOL_FEATURES:
        return
    proto, = struct.unpack("<Q", call(sock, GET_PROTOCOL_FEATURES))
    print("protocol_features=0x%x" % proto)
    send(sock, SET_PROTOCOL_FEATURES, struct.pack("<Q", proto & (PROTOCOL_F_MQ | PROTOCOL_F_CONFIG)))
    if proto & PROTOCOL_F_MQ:
        queues, = struct.unpack("<Q", call(sock, GET_QUEUE_NUM))
        print("queues=%d" % queues)
    send(sock, SET_OWNER)
    if proto & PROTOCOL_F_CONFIG:
        reply = call(sock, GET_CONFIG, struct.pack("<III", 0, CONFIG_SIZE, 0) + bytes(CONFIG_SIZE))
        capacity, = struct.unpack_from("<Q", reply, 12)
        print("capacity=%d" % capacity)


def main():
    ap = argparse.ArgumentParser(description="Probe a vhost-user-blk back-end.")
    ap.add_argument("--timeout", type=float, default=5.0)
    ap.add_argument("--hold", type=float, default=0.0)
    ap.add_argument("socket")
    args = ap.parse_args()

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(args.timeout)
    try:
        sock.connect(args.socket)
    except OSError as e:
        print("vhost-user-probe: cannot connect to %s: %s" % (args.socket, e), file=sys.stderr)
        return 1
    try:
        probe(sock)
    except (NoAnswer, ConnectionError) as e:
        print("vhost-user-probe: %s" % e, file=sys.stderr)
        return 2
    sys.stdout.flush()
    time.sleep(args.hold)
    sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
