#!/usr/bin/env python3
"""One hostile vhost-user front-end case at a time, for tests/test-hostile-frontend.bats.

usage: vu-cases.py SOCKET CASE [--pid PID]
       vu-cases.py --list

Connects to the back-end at SOCKET, sends the messages of CASE and prints what happened, one
key=value line each:

  closed=yes|no       whether the back-end closed the connection (within 5 s of the last message)
  ack=N               the REPLY_ACK status of the last message, for cases that ask for one
  held_fds=N          (with --pid) the fds PID holds while this connection is still open

Exit status: 0 when the case ran (whatever the back-end did), 1 when it could not be run.
"""

import argparse
import mmap
import os
import select
import socket
import struct
import sys
import time

VERSION = 0x1
REPLY = 0x4
NEED_REPLY = 0x8

GET_FEATURES, SET_FEATURES, SET_OWNER = 1, 2, 3
SET_MEM_TABLE, SET_LOG_BASE = 5, 6
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE = 8, 9, 10
SET_VRING_KICK, SET_VRING_CALL = 12, 13
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES = 15, 16
GET_INFLIGHT_FD, SET_INFLIGHT_FD = 31, 32
ADD_MEM_REG = 37

F_PROTOCOL_FEATURES = 1 << 30
F_VERSION_1 = 1 << 32
PF_LOG_SHMFD = 1 << 1
PF_REPLY_ACK = 1 << 3
PF_INFLIGHT_SHMFD = 1 << 12
PF_MEM_SLOTS = 1 << 15
NOFD = 0x100

GUEST_SIZE = 1 << 20
GUEST_GPA = 1 << 32
GUEST_UVA = 0x7f5a00000000


class Closed(Exception):
    pass


class Conn:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(5)
        self.s.connect(path)

    def send_bytes(self, data, fds=()):
        if fds:
            socket.send_fds(self.s, [data], list(fds))
        else:
            self.s.sendall(data)

    def send(self, req, payload=b"", fds=(), flags=VERSION, size=None):
        hdr = struct.pack("<III", req, flags, len(payload) if size is None else size)
        self.send_bytes(hdr + payload, fds)

    def recv_exact(self, n):
        buf = b""
        while len(buf) < n:
            chunk = self.s.recv(n - len(buf))
            if not chunk:
                raise Closed()
            buf += chunk
        return buf

    def reply(self, req):
        r, flags, size = struct.unpack("<III", self.recv_exact(12))
        if r != req or not flags & REPLY:
            sys.exit("reply to %d: request %d flags %#x" % (req, r, flags))
        return self.recv_exact(size)

    def get_u64(self, req):
        self.send(req)
        return struct.unpack("<Q", self.reply(req))[0]

    def acked(self, req, payload=b"", fds=()):
        self.send(req, payload, fds, flags=VERSION | NEED_REPLY)
        return struct.unpack("<Q", self.reply(req))[0]

    def closed(self, wait=5.0):
        """True when the peer closes within wait seconds (data it sends is skipped)."""
        self.s.settimeout(wait)
        try:
            while self.s.recv(4096):
                pass
            return True
        except (socket.timeout, BlockingIOError):
            return False
        except ConnectionResetError:
            return True


def negotiate(c, pf_want=0):
    """GET/SET_FEATURES and protocol features; pf_want: protocol features to ack if offered."""
    f = c.get_u64(GET_FEATURES)
    c.send(SET_FEATURES, struct.pack("<Q", f & (F_PROTOCOL_FEATURES | F_VERSION_1)))
    pf = c.get_u64(GET_PROTOCOL_FEATURES)
    if pf_want & ~pf:
        sys.exit("protocol features %#x not offered (%#x)" % (pf_want & ~pf, pf))
    c.send(SET_PROTOCOL_FEATURES, struct.pack("<Q", pf & pf_want))
    c.send(SET_OWNER)


def memfd(size, name="guest"):
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    os.ftruncate(fd, size)
    return fd


def region(gpa, size, uva, offset=0):
    return struct.pack("<QQQQ", gpa, size, uva, offset)


def mem_table(regions):
    return struct.pack("<II", len(regions), 0) + b"".join(regions)


def guest_table(c):
    """One 1 MiB region of guest memory at GUEST_GPA."""
    fd = memfd(GUEST_SIZE)
    c.send(SET_MEM_TABLE, mem_table([region(GUEST_GPA, GUEST_SIZE, GUEST_UVA)]), [fd])
    os.close(fd)


def eventfd():
    return os.eventfd(0, os.EFD_CLOEXEC)


def ring_at(c, desc, avail, used, num=256):
    """Queue 0 with its rings at these front-end addresses, started by a kick fd."""
    c.send(SET_VRING_NUM, struct.pack("<II", 0, num))
    c.send(SET_VRING_ADDR, struct.pack("<IIQQQQ", 0, 0, desc, used, avail, 0))
    c.send(SET_VRING_BASE, struct.pack("<II", 0, 0))
    call, kick = eventfd(), eventfd()
    c.send(SET_VRING_CALL, struct.pack("<Q", 0), [call])
    c.send(SET_VRING_KICK, struct.pack("<Q", 0), [kick])
    os.close(call)
    os.close(kick)


# ---------------------------------------------------------------------------------------------
# The cases.  Each gets a fresh connection; what it returns is printed.

def oversized(c):
    c.send(GET_FEATURES, size=0x1000000)


def truncated_header(c):
    c.send_bytes(struct.pack("<III", GET_FEATURES, VERSION, 0)[:7])
    c.s.shutdown(socket.SHUT_WR)


def truncated_payload(c):
    c.send_bytes(struct.pack("<III", SET_FEATURES, VERSION, 8) + b"\0\0\0")
    c.s.shutdown(socket.SHUT_WR)


def wrong_size(c):
    c.send(SET_FEATURES, struct.pack("<I", 0))


def missing_fd_mem_table(c):
    c.send(SET_MEM_TABLE, mem_table([region(GUEST_GPA, GUEST_SIZE, GUEST_UVA)]))


def missing_fd_kick(c):
    c.send(SET_VRING_KICK, struct.pack("<Q", 0))


def missing_fd_inflight(c):
    negotiate(c, PF_INFLIGHT_SHMFD)
    c.send(SET_INFLIGHT_FD, struct.pack("<QQHH", 4096, 0, 1, 256))


def missing_fd_log_base(c):
    negotiate(c, PF_LOG_SHMFD)
    c.send(SET_LOG_BASE, struct.pack("<QQ", 4096, 0))


def missing_fd_add_mem_reg(c):
    negotiate(c, PF_MEM_SLOTS)
    guest_table(c)
    c.send(ADD_MEM_REG, struct.pack("<Q", 0) + region(2 * GUEST_GPA, 4096, 2 * GUEST_UVA))


def nofd_call_with_fd(c):
    """SET_VRING_CALL that says "no fd" and carries one."""
    fd = eventfd()
    c.send(SET_VRING_CALL, struct.pack("<Q", NOFD), [fd])
    os.close(fd)


def mem_table_fewer_fds(c):
    fd = memfd(GUEST_SIZE)
    c.send(SET_MEM_TABLE, mem_table([region(GUEST_GPA, GUEST_SIZE, GUEST_UVA),
                                     region(2 * GUEST_GPA, GUEST_SIZE, 2 * GUEST_UVA)]), [fd])
    os.close(fd)


def extra_fds(c):
    """Fds on messages that take none, with REPLY_ACK so that the connection stays open:
    the back-end must close them at once, not when the connection ends."""
    negotiate(c, PF_REPLY_ACK)
    fds = [memfd(GUEST_SIZE, "stray") for _ in range(3)] + [eventfd() for _ in range(3)]
    acks = [c.acked(SET_OWNER, b"", fds),
            c.acked(SET_FEATURES, struct.pack("<Q", F_PROTOCOL_FEATURES), fds[:1]),
            c.acked(SET_VRING_NUM, struct.pack("<II", 0, 256), fds[3:])]
    for fd in fds:
        os.close(fd)
    return {"ack": max(acks)}


def overlap_gpa(c):
    a, b = memfd(GUEST_SIZE), memfd(GUEST_SIZE)
    c.send(SET_MEM_TABLE, mem_table([region(GUEST_GPA, GUEST_SIZE, GUEST_UVA),
                                     region(GUEST_GPA + GUEST_SIZE // 2, GUEST_SIZE,
                                            2 * GUEST_UVA)]), [a, b])
    os.close(a)
    os.close(b)


def overlap_uva(c):
    a, b = memfd(GUEST_SIZE), memfd(GUEST_SIZE)
    c.send(SET_MEM_TABLE, mem_table([region(GUEST_GPA, GUEST_SIZE, GUEST_UVA),
                                     region(2 * GUEST_GPA, GUEST_SIZE,
                                            GUEST_UVA + GUEST_SIZE - 4096)]), [a, b])
    os.close(a)
    os.close(b)


def overlap_add_mem_reg(c):
    """ADD_MEM_REG of a region overlapping one already there."""
    negotiate(c, PF_MEM_SLOTS)
    guest_table(c)
    fd = memfd(GUEST_SIZE)
    c.send(ADD_MEM_REG, struct.pack("<Q", 0) +
           region(GUEST_GPA + 4096, 4096, 3 * GUEST_UVA), [fd])
    os.close(fd)


def map_fd(c, fd, size=GUEST_SIZE, offset=0, gpa=GUEST_GPA):
    c.send(SET_MEM_TABLE, mem_table([region(gpa, size, GUEST_UVA, offset)]), [fd])
    os.close(fd)


def mmap_pipe(c):
    r, w = os.pipe()
    os.close(w)
    map_fd(c, r)


def mmap_eventfd(c):
    map_fd(c, eventfd())


def mmap_offset_past_file(c):
    map_fd(c, memfd(GUEST_SIZE), offset=GUEST_SIZE + 4096)


def mmap_size_zero(c):
    map_fd(c, memfd(GUEST_SIZE), size=0)


def mmap_size_overflow(c):
    map_fd(c, memfd(GUEST_SIZE), size=(1 << 64) - 4096)


def mmap_offset_overflow(c):
    map_fd(c, memfd(GUEST_SIZE), offset=(1 << 64) - 4096)


def ring_outside(c):
    negotiate(c)
    guest_table(c)
    ring_at(c, GUEST_UVA + 2 * GUEST_SIZE, GUEST_UVA + 0x2000, GUEST_UVA + 0x3000)


def ring_straddling(c):
    """The used ring (4 + 8 * 256 + 2 bytes) starts 1 KiB before the end of the region."""
    negotiate(c)
    guest_table(c)
    ring_at(c, GUEST_UVA, GUEST_UVA + 0x2000, GUEST_UVA + GUEST_SIZE - 1024)


def log_base(c, size, offset, file_size):
    negotiate(c, PF_LOG_SHMFD)
    fd = memfd(file_size, "log")
    c.send(SET_LOG_BASE, struct.pack("<QQ", size, offset), [fd])
    os.close(fd)


def log_past_file(c):
    log_base(c, 4096, 4096, 4096)


def log_size_zero(c):
    log_base(c, 0, 0, 4096)


def log_offset_overflow(c):
    log_base(c, 4096, (1 << 64) - 2048, 4096)


def stall_header(c):
    """Half a header, then nothing (the connection stays open)."""
    c.send_bytes(struct.pack("<III", GET_FEATURES, VERSION, 0)[:5])
    return {"stalled_s": stall_until_closed(c)}


def stall_payload(c):
    """A whole handshake, then a payload sent one byte a second for ever."""
    negotiate(c)
    c.send_bytes(struct.pack("<III", SET_MEM_TABLE, VERSION, 8 + 32))
    start = time.monotonic()
    try:
        for _ in range(120):
            c.send_bytes(b"\0")
            time.sleep(1)
    except (BrokenPipeError, ConnectionResetError):
        pass
    return {"stalled_s": int(time.monotonic() - start)}


def stall_idle(c):
    """Connects and sends nothing."""
    return {"stalled_s": stall_until_closed(c)}


def unread_replies(c):
    """GET_FEATURES as fast as the socket takes them, never reading a reply."""
    msg = struct.pack("<III", GET_FEATURES, VERSION, 0)
    c.s.setblocking(False)
    sent = 0
    start = time.monotonic()
    while time.monotonic() - start < 3:
        try:
            c.s.send(msg * 64)
            sent += 64
        except BlockingIOError:
            time.sleep(0.01)
        except (BrokenPipeError, ConnectionResetError):
            break
    # Wait for the hang-up without reading what is pending.
    p = select.poll()
    p.register(c.s, select.POLLRDHUP)
    p.poll(120 * 1000)
    return {"sent": sent, "stalled_s": int(time.monotonic() - start)}


def stall_until_closed(c):
    start = time.monotonic()
    c.s.setblocking(True)
    c.closed(wait=120)
    return int(time.monotonic() - start)


CASES = {name: fn for name, fn in globals().items()
         if hasattr(fn, "__code__") and fn.__module__ == __name__ and fn.__code__.co_argcount == 1
         and name not in ("negotiate", "guest_table", "stall_until_closed", "eventfd",
                          "mem_table", "held_fds")}


def held_fds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("socket", nargs="?")
    ap.add_argument("case", nargs="?")
    ap.add_argument("--pid", type=int)
    ap.add_argument("--list", action="store_true")
    a = ap.parse_args()
    if a.list:
        print("\n".join(sorted(CASES)))
        return 0
    if a.case not in CASES:
        sys.exit("unknown case %r (--list lists them)" % a.case)
    try:
        c = Conn(a.socket)
    except OSError as e:
        print("cannot connect to %s: %s" % (a.socket, e), file=sys.stderr)
        return 1
    out = {}
    try:
        out = CASES[a.case](c) or {}
    except (Closed, BrokenPipeError, ConnectionResetError):
        out["closed"] = "yes"
    if a.pid and "closed" not in out:
        time.sleep(0.5)
        out["held_fds"] = held_fds(a.pid)
    if "closed" not in out and "stalled_s" not in out:
        out["closed"] = "yes" if c.closed() else "no"
    for k, v in out.items():
        print("%s=%s" % (k, v))
    return 0


if __name__ == "__main__":
    sys.exit(main())
