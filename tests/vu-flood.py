#!/usr/bin/env python3
"""Floods a socket with connections, for tests/test-bounded-resources.bats.

usage: vu-flood.py --pid PID [--total N] [--hold N] [--control] SOCKET

Opens N connections in all (default 2000), keeping up to --hold (default 200) open at once;
the oldest is closed to make room for the next.  One connection in three sends half a
vhost-user header and stalls, one in three sends a whole GET_FEATURES (with --control: a
4 KiB line without a newline), the rest send nothing.  A connect that would block (the
listen backlog is full) counts as "busy" and is not retried.  While it runs, it samples
PID's fd count and resident memory and prints, one key=value line each:

  connections=N   connects that succeeded
  busy=N          connects refused because the backlog was full
  closed=N        connections the server closed on us while we held them
  max_fds=N       most fds PID held at any sample
  max_rss_kb=N    largest VmRSS of PID at any sample, in KiB
"""

import argparse
import collections
import errno
import os
import socket
import struct
import sys


def held_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def rss_kb(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def server_closed(s):
    """True when the server has closed s (after whatever it sent)."""
    try:
        while s.recv(4096, socket.MSG_DONTWAIT):
            pass
        return True
    except BlockingIOError:
        return False
    except OSError:
        return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("socket")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--total", type=int, default=2000)
    ap.add_argument("--hold", type=int, default=200)
    ap.add_argument("--control", action="store_true")
    a = ap.parse_args()

    half = struct.pack("<III", 1, 1, 0)[:6]
    whole = b"x" * 4096 if a.control else struct.pack("<III", 1, 1, 0)
    held = collections.deque()
    n = dict(connections=0, busy=0, closed=0, max_fds=0, max_rss_kb=0)
    for i in range(a.total):
        if len(held) >= a.hold:
            old = held.popleft()
            n["closed"] += server_closed(old)
            old.close()
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.setblocking(False)
        try:
            s.connect(a.socket)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.ECONNREFUSED):
                raise
            n["busy"] += 1
            s.close()
            continue
        n["connections"] += 1
        try:
            if i % 3 == 0:
                s.send(half)
            elif i % 3 == 1:
                s.send(whole)
        except OSError:
            pass
        held.append(s)
        if i % 50 == 0:
            n["max_fds"] = max(n["max_fds"], held_fds(a.pid))
            n["max_rss_kb"] = max(n["max_rss_kb"], rss_kb(a.pid))
    n["max_fds"] = max(n["max_fds"], held_fds(a.pid))
    n["max_rss_kb"] = max(n["max_rss_kb"], rss_kb(a.pid))
    for s in held:
        n["closed"] += server_closed(s)
        s.close()
    for k, v in n.items():
        print("%s=%d" % (k, v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
