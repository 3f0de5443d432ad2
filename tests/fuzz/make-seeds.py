#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (corpus/TARGET/NAME):
small valid inputs, in each target's input format (see the comment at
the top of each fuzz-TARGET.c), from which the fuzzer mutates.

    tests/fuzz/make-seeds.py [DIR]    (default: corpus/ next to it)

Run it again after changing an input format; the files are in git."""

import os
import struct
import sys

OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "corpus")

# guest.h: region 1 at GPA G1 / UVA U1, region 2 right after it.
G1, U1, S1, S2 = 0x40000000, 0x7f0000000000, 0x3000, 0x1000

# vhost-user requests, features (vhost-user-proto.h).
GET_FEATURES, SET_FEATURES, SET_OWNER, SET_MEM_TABLE, SET_LOG_BASE = 1, 2, 3, 5, 6
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR = 12, 13, 14
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM = 15, 16, 17
SET_VRING_ENABLE, SET_BACKEND_REQ_FD, GET_CONFIG, SET_CONFIG = 18, 21, 24, 25
GET_INFLIGHT_FD, SET_INFLIGHT_FD, RESET_DEVICE = 31, 32, 34
GET_MAX_MEM_SLOTS, ADD_MEM_REG, REM_MEM_REG = 36, 37, 38
GET_VRING_BASE_SKIP_DRAIN = 45
F_INDIRECT, F_EVENT_IDX, F_PROTOCOL, F_VERSION_1, F_PACKED, F_LOG_ALL = 28, 29, 30, 32, 34, 26
PF = dict(MQ=0, LOG_SHMFD=1, REPLY_ACK=3, BACKEND_REQ=5, CONFIG=9,
          INFLIGHT=12, RESET=13, MEM_SLOTS=15, BASE_INFLIGHT=20, SKIP_DRAIN=23)

# virtio descriptors.
NEXT, WRITE, INDIRECT = 1, 2, 4
P_AVAIL, P_USED = 1 << 7, 1 << 15
BLK_IN, BLK_OUT, BLK_FLUSH, BLK_GET_ID, BLK_DISCARD, BLK_ZEROES = 0, 1, 4, 8, 11, 13


def write(target, name, data):
    d = os.path.join(OUT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def bits(*ns):
    v = 0
    for n in ns:
        v |= 1 << n
    return v


class Image:
    """Guest memory image for guest.h (trailing zeros dropped: the
    targets read zeros past the end of the input)."""

    def __init__(self, size=S1 + S2):
        self.b = bytearray(size)

    def put(self, off, data):
        self.b[off:off + len(data)] = data

    def bytes(self):
        return bytes(self.b).rstrip(b"\0")


def sdesc(addr, length, flags, nxt):
    return struct.pack("<QIHH", addr, length, flags, nxt)


def pdesc(addr, length, id_, flags):
    return struct.pack("<QIHH", addr, length, id_, flags)


def blk_hdr(type_, sector=0):
    return struct.pack("<IIQ", type_, 0, sector)


# ---- vring-split: num shift, features, base, head, image ----
def split_seeds():
    def seed(name, shift, feat, image, base=0, head=0, extra=b""):
        write("vring-split", name,
              struct.pack("<BBHH", shift, feat, base, head) + extra +
              image.bytes())

    def avail(im, heads, idx=None):
        im.put(0x800, struct.pack("<HH", 0, len(heads) if idx is None else idx))
        im.put(0x804, b"".join(struct.pack("<H", h) for h in heads))

    im = Image()                        # read: header, data, status
    im.put(0, sdesc(G1 + 0x1000, 16, NEXT, 1) +
           sdesc(G1 + 0x1100, 512, WRITE | NEXT, 2) +
           sdesc(G1 + 0x1300, 1, WRITE, 0))
    im.put(0x1000, blk_hdr(BLK_IN))
    avail(im, [0])
    seed("read-chain", 3, 0, im)
    seed("read-chain-resubmit", 3, 4, im, head=0)

    im = Image()                        # two requests, one across regions
    im.put(0, sdesc(G1 + 0x1000, 16, NEXT, 1) +
           sdesc(G1 + S1 - 0x100, 0x200, NEXT, 2) +
           sdesc(G1 + 0x1300, 1, WRITE, 0) +
           sdesc(G1 + 0x1400, 16, NEXT, 4) +
           sdesc(G1 + 0x1300, 1, WRITE, 0))
    avail(im, [0, 3])
    seed("two-chains-cross-region", 3, 2, im)

    im = Image()                        # indirect table of 3
    im.put(0, sdesc(G1 + 0x1800, 48, INDIRECT, 0))
    im.put(0x1800, sdesc(G1 + 0x1000, 16, NEXT, 1) +
           sdesc(G1 + 0x1100, 512, NEXT, 2) + sdesc(G1 + 0x1300, 1, WRITE, 0))
    avail(im, [0])
    seed("indirect", 3, 1, im)
    seed("indirect-event-idx", 4, 1 | 2 | 8 | 16, im)
    # Migrating: used ring writes logged (bitmap covers G1's pages).
    seed("indirect-logged", 3, 1 | 0x40, im, extra=struct.pack("<H", 0x8100))

    im = Image()                        # a loop: refused
    im.put(0, sdesc(G1 + 0x1000, 16, NEXT, 1) + sdesc(G1 + 0x1000, 16, NEXT, 0))
    avail(im, [0])
    seed("loop", 1, 0, im)


# ---- vring-packed: num - 1, features, base, order, image ----
def packed_seeds():
    base = 0x8000 | 0x8000 << 16        # avail 0 and used 0, wrap counters 1

    def seed(name, num, feat, image, order=0, b=base, extra=b""):
        write("vring-packed", name,
              struct.pack("<BBIB", num - 1, feat, b, order) + extra +
              image.bytes())

    av = P_AVAIL                        # available in the first lap
    im = Image()
    im.put(0, pdesc(G1 + 0x1000, 16, 0, av | NEXT) +
           pdesc(G1 + 0x1100, 512, 0, av | WRITE | NEXT) +
           pdesc(G1 + 0x1300, 1, 7, av | WRITE))
    seed("read-chain", 8, 0, im)

    im = Image()                        # two buffers, completed in reverse
    im.put(0, pdesc(G1 + 0x1000, 16, 0, av | NEXT) +
           pdesc(G1 + 0x1300, 1, 3, av | WRITE) +
           pdesc(G1 + S1 - 0x80, 0x100, 0, av | NEXT) +
           pdesc(G1 + 0x1300, 1, 1, av | WRITE))
    seed("two-buffers-reverse", 8, 2 | 4, im, order=3)

    im = Image()                        # indirect
    im.put(0, pdesc(G1 + 0x1800, 48, 2, av | INDIRECT))
    im.put(0x1800, pdesc(G1 + 0x1000, 16, 0, 0) + pdesc(G1 + 0x1100, 512, 0, 0) +
           pdesc(G1 + 0x1300, 1, 0, WRITE))
    seed("indirect", 4, 1, im)
    seed("indirect-logged", 4, 1 | 0x40, im, extra=struct.pack("<H", 0x8100))

    im = Image()                        # wraps: ring of 3, start at slot 2
    im.put(32, pdesc(G1 + 0x1000, 16, 0, av | NEXT))
    im.put(0, pdesc(G1 + 0x1300, 1, 1, P_USED | WRITE))
    seed("wrap", 3, 2, im, b=(2 | 0x8000) | (2 | 0x8000) << 16)


# ---- inflight: mode, ring size byte, base, queue area, image ----
def stride(num):
    s = max(16 + 16 * num, 32 + 32 * num)
    return (s + 63) & ~63


def inflight_seeds():
    # Split, 8 entries: heads 0 and 3 in flight (3 submitted first).
    num = 8
    area = bytearray(stride(num))
    area[0:16] = struct.pack("<QHHHH", 0, 1, num, 0, 0)
    for head, counter in ((0, 5), (3, 2)):
        area[16 + 16 * head:32 + 16 * head] = struct.pack("<B5xHQ", 1, 0, counter)
    im = Image()
    im.put(0, sdesc(G1 + 0x1000, 16, NEXT, 1) + sdesc(G1 + 0x1300, 1, WRITE, 0) +
           b"\0" * 16 + sdesc(G1 + 0x1400, 16, NEXT, 4) +
           sdesc(G1 + 0x1300, 1, WRITE, 0))
    im.put(0x800, struct.pack("<HHHH", 0, 2, 3, 0))
    write("inflight", "split-two-in-flight",
          struct.pack("<BBI", 0, 3, 0) + bytes(area) + im.bytes())

    # Split: last batch reached the used ring (used idx 1), head 3's
    # flag still set: repaired.
    area2 = bytearray(area)
    area2[12:14] = struct.pack("<H", 3)     # last_batch_head
    im2 = Image(size=len(im.b))
    im2.b[:] = im.b
    im2.put(0xa00, struct.pack("<HHII", 0, 1, 3, 1))
    write("inflight", "split-repair-batch",
          struct.pack("<BBI", 0, 3, 0) + bytes(area2) + im2.bytes())

    # Packed, 8 entries: one chain of 2 (entries 0, 1; buffer id 5) in
    # flight, entries 2-7 free.
    area = bytearray(stride(num))
    area[0:32] = struct.pack("<QHHHHHHBB7x", 1, 1, num, 2, 2, 0, 0, 1, 1)
    ents = {0: (1, 1, 1, 2, 0, 0, NEXT, 16, G1 + 0x1000),
            1: (0, 8, 0, 0, 0, 5, WRITE, 1, G1 + 0x1300)}
    for i in range(2, num):
        ents[i] = (0, i + 1, 0, 0, 0, 0, 0, 0, 0)
    for i, (fl, nxt, last, n, ctr, id_, flags, ln, addr) in ents.items():
        area[32 + 32 * i:64 + 32 * i] = struct.pack("<BxHHHQHHIQ", fl, nxt, last,
                                                    n, ctr, id_, flags, ln, addr)
    im = Image()
    im.put(0, pdesc(G1 + 0x1000, 16, 0, P_AVAIL | NEXT) +
           pdesc(G1 + 0x1300, 1, 5, P_AVAIL | WRITE))
    write("inflight", "packed-one-chain",
          struct.pack("<BBI", 1, num - 1, 0x80008000) + bytes(area) + im.bytes())
    write("inflight", "packed-fresh",
          struct.pack("<BBI", 1 | 4 | 8, num - 1, 0x80008000) +
          bytes(stride(num)) + im.bytes())
    write("inflight", "split-fresh",
          struct.pack("<BBI", 4, 3, 0) + bytes(stride(num)) + im.bytes())


# ---- blk: export, pieces ----
def blk_seeds():
    def seed(name, pieces, nout, caps=0x3f, shift=0, blocks=1 << 16):
        out = struct.pack("<BIBHHBB", shift, blocks, caps, 4096, 4096,
                          len(pieces), nout)
        for p in pieces:
            out += struct.pack("<H", len(p) - 1) + p
        write("blk", name, out)

    data = b"\xab" * 512
    seed("read", [blk_hdr(BLK_IN, 8), data, b"\xff"], 1)
    seed("read-split-pieces", [blk_hdr(BLK_IN, 8)[:10], blk_hdr(BLK_IN, 8)[10:],
                               data[:100], data[100:] + b"\xff"], 2)
    seed("write", [blk_hdr(BLK_OUT, 16), data, b"\xff"], 2, caps=0x02)
    seed("write-readonly", [blk_hdr(BLK_OUT, 16), data, b"\xff"], 2, caps=0x01)
    seed("flush", [blk_hdr(BLK_FLUSH), b"\xff"], 1)
    seed("get-id", [blk_hdr(BLK_GET_ID), b"\0" * 20, b"\xff"], 1)
    seg = struct.pack("<QII", 0, 8, 0) + struct.pack("<QII", 64, 16, 0)
    seed("discard", [blk_hdr(BLK_DISCARD) + seg, b"\xff"], 1)
    seed("write-zeroes-unmap",
         [blk_hdr(BLK_ZEROES), struct.pack("<QII", 8, 8, 1), b"\xff"], 2)
    seed("read-4k-blocks", [blk_hdr(BLK_IN, 8), b"\0" * 2048, b"\0" * 2048,
                            b"\xff"], 1, shift=3)


# ---- vu-msg: fd count, stream ----
def msg(req, payload=b"", flags=1):
    return struct.pack("<III", req, flags, len(payload)) + payload


def region(gpa, size, uva, off=0):
    return struct.pack("<QQQQ", gpa, size, uva, off)


def vu_msg_seeds():
    def seed(name, nfds, stream):
        write("vu-msg", name, bytes([nfds]) + stream)

    seed("get-features", 0, msg(GET_FEATURES))
    seed("handshake", 0, msg(GET_FEATURES) + msg(SET_FEATURES, struct.pack(
        "<Q", bits(F_VERSION_1, F_PROTOCOL))) + msg(GET_PROTOCOL_FEATURES) +
        msg(SET_PROTOCOL_FEATURES, struct.pack("<Q", 1 << PF["REPLY_ACK"])) +
        msg(GET_QUEUE_NUM) + msg(SET_OWNER))
    seed("mem-table", 1, msg(SET_MEM_TABLE, struct.pack("<II", 1, 0) +
                             region(0, 0x10000, U1)))
    seed("mem-table-two", 2, msg(SET_MEM_TABLE, struct.pack("<II", 2, 0) +
                                 region(0, 0x10000, U1) +
                                 region(0x10000, 0x10000, U1 + 0x10000)))
    seed("vring-kick", 1, msg(SET_VRING_KICK, struct.pack("<Q", 0)))
    seed("vring-call-nofd", 0, msg(SET_VRING_CALL, struct.pack("<Q", 0x100)))
    seed("vring-addr", 0, msg(SET_VRING_ADDR, struct.pack(
        "<IIQQQQ", 0, 0, U1 + 0x1000, U1 + 0x3000, U1 + 0x2000, 0)))
    seed("config", 0, msg(GET_CONFIG, struct.pack("<III", 0, 60, 0) + b"\0" * 60))
    seed("set-config-wce", 0, msg(SET_CONFIG, struct.pack("<III", 32, 1, 0) + b"\1"))
    seed("inflight", 1, msg(SET_INFLIGHT_FD, struct.pack("<QQHH", 8384, 0, 2, 128)))
    seed("add-rem-reg", 1, msg(ADD_MEM_REG, struct.pack("<Q", 0) +
                               region(0, 0x10000, U1)) +
         msg(REM_MEM_REG, struct.pack("<Q", 0) + region(0, 0x10000, U1)))
    seed("log-base", 1, msg(SET_LOG_BASE, struct.pack("<QQ", 4096, 0)))
    seed("truncated", 0, msg(SET_FEATURES, struct.pack("<Q", 1))[:15])
    seed("need-reply", 0, msg(SET_VRING_NUM, struct.pack("<II", 0, 128), flags=9))


# ---- device: operations (fuzz-device.c) ----
RAM_FD, EVENTFD, INFLIGHT_FD, NULL_FD = 0, 1, 2, 3


def op(req, payload=b"", fds=(), flags=1):
    kinds = 0
    for i, k in enumerate(fds):
        kinds |= k << (2 * i)
    return (bytes([req, flags]) + struct.pack("<H", len(payload)) + payload +
            bytes([len(fds)]) + struct.pack("<H", kinds))


def poke(off, data):
    return b"\xf0" + struct.pack("<HH", off, len(data)) + data


KICK = b"\xf1"


def device_seeds():
    u64 = lambda v: struct.pack("<Q", v)
    state = lambda i, n: struct.pack("<II", i, n)
    pf = bits(PF["MQ"], PF["REPLY_ACK"], PF["CONFIG"], PF["INFLIGHT"],
              PF["RESET"], PF["MEM_SLOTS"], PF["BASE_INFLIGHT"], PF["LOG_SHMFD"])

    def start(feat, pfeat=pf):
        return (op(GET_FEATURES) + op(SET_FEATURES, u64(feat)) +
                op(GET_PROTOCOL_FEATURES) + op(SET_PROTOCOL_FEATURES, u64(pfeat)) +
                op(GET_QUEUE_NUM) + op(SET_OWNER) +
                op(SET_MEM_TABLE, struct.pack("<II", 1, 0) +
                   region(0, 0x10000, U1), [RAM_FD]))

    def ring(q, num, extra=b""):
        return (op(SET_VRING_NUM, state(q, num)) +
                op(SET_VRING_ADDR, struct.pack("<IIQQQQ", q, 0, U1 + 0x1000,
                                               U1 + 0x3000, U1 + 0x2000, 0)) +
                op(SET_VRING_BASE, state(q, 0)) + extra +
                op(SET_VRING_CALL, u64(q), [EVENTFD]) +
                op(SET_VRING_ERR, u64(q), [EVENTFD]) +
                op(SET_VRING_KICK, u64(q), [EVENTFD]) +
                op(SET_VRING_ENABLE, state(q, 1)))

    split_req = (poke(0x1000, sdesc(0x4000, 16, NEXT, 1) +
                      sdesc(0x5000, 512, WRITE | NEXT, 2) +
                      sdesc(0x6000, 1, WRITE, 0)) +
                 poke(0x4000, blk_hdr(BLK_IN, 8)) +
                 poke(0x2000, struct.pack("<HHH", 0, 1, 0)))
    feat = bits(F_VERSION_1, F_PROTOCOL, F_INDIRECT, F_EVENT_IDX)
    write("device", "split-read",
          start(feat) + split_req + ring(0, 8) + KICK +
          op(GET_VRING_BASE, state(0, 0)) + op(GET_CONFIG, struct.pack(
              "<III", 0, 60, 0) + b"\0" * 60))
    inflight = (op(GET_INFLIGHT_FD, struct.pack("<QQHH", 0, 0, 2, 128)) +
                op(SET_INFLIGHT_FD, struct.pack("<QQHH", 8384, 0, 2, 128),
                   [INFLIGHT_FD]))
    write("device", "split-inflight",
          start(feat) + inflight + split_req + ring(0, 8) + KICK +
          op(GET_VRING_BASE, state(0, 1)) + op(RESET_DEVICE))
    packed_req = poke(0x1000, pdesc(0x4000, 16, 0, P_AVAIL | NEXT) +
                      pdesc(0x5000, 512, 0, P_AVAIL | WRITE | NEXT) +
                      pdesc(0x6000, 1, 3, P_AVAIL | WRITE)) + \
        poke(0x4000, blk_hdr(BLK_IN, 8))
    pfeat = bits(F_VERSION_1, F_PROTOCOL, F_PACKED, F_EVENT_IDX)
    write("device", "packed-read",
          start(pfeat) + inflight + packed_req +
          ring(1, 8, op(SET_VRING_BASE, state(1, 0x80008000))) + KICK +
          op(GET_VRING_BASE, state(1, 0)))
    write("device", "mem-regions-config",
          start(bits(F_VERSION_1, F_PROTOCOL)) +
          op(GET_MAX_MEM_SLOTS) +
          op(ADD_MEM_REG, u64(0) + region(0x100000, 0x10000, U1 + 0x100000),
             [RAM_FD]) +
          op(REM_MEM_REG, u64(0) + region(0x100000, 0x10000, U1 + 0x100000)) +
          op(SET_CONFIG, struct.pack("<III", 32, 1, 0) + b"\1", flags=9) +
          op(SET_BACKEND_REQ_FD, b"", [NULL_FD]) +
          op(SET_LOG_BASE, struct.pack("<QQ", 4096, 0), [RAM_FD]) +
          op(GET_VRING_BASE_SKIP_DRAIN, state(0, 0)))
    write("device", "no-protocol-features",
          op(GET_FEATURES) + op(SET_FEATURES, u64(bits(F_VERSION_1))) +
          op(SET_MEM_TABLE, struct.pack("<II", 1, 0) + region(0, 0x10000, U1),
             [RAM_FD]) + split_req + ring(0, 8) + KICK +
          op(GET_VRING_BASE, state(0, 0)))


def config_seeds():
    for i, s in enumerate([b"\0" + b"64M", b"\0" + b"1GiB", b"\0" + b"9223372036854775807",
                           b"\1on", b"\1False", b"\2size", b"\2a.b-c_d",
                           b"\3" + b"4k", b"\4yes", b"\5size=1G", b"\x0564M",
                           b"\5size=", b"\5nbd://host/?x=y"]):
        write("config", "seed-%02d" % i, s)


def control_seeds():
    for i, s in enumerate([b'{"command":"stats"}', b'{"command":"resize"}',
                           b'{"command":"resize","size":"32M"}',
                           b'{"command":"resize","size":1048576}',
                           b'{"command":"resize","size":-1}',
                           b'{"command":"reopen"}', b'{"command":"shutdown"}',
                           b'{"command":"nope"}', b'{"command":1}', b'[1]',
                           b'not json']):
        write("control", "seed-%02d" % i, s)


split_seeds()
packed_seeds()
inflight_seeds()
blk_seeds()
vu_msg_seeds()
device_seeds()
config_seeds()
control_seeds()
