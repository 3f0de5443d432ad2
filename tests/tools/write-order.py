#!/usr/bin/env python3
"""Write bursts with a well-defined outcome, for restart tests.

  write-order.py gen --seed N --base OFFSET --plan FILE [--blocks 64]
                     [--writes 48] [--max-len 4] [--concurrent 20] [--queues 1]
      prints a blkgate-io script (aio-write and 'wait N' lines, then a
      plain 'wait') and writes the plan the check needs to FILE
  write-order.py check --plan FILE --image IMAGE
      checks the image against the plan; exit status 1 on a violation

The disk area is --blocks blocks of 4 KiB from --base.  Write #i (its
aio number) covers 1 to --max-len consecutive blocks and fills them with
the byte i (so at most 255 writes; 0 is "never written").  With --queues,
each write goes to a random queue ('queue N' lines), so overlapping writes
and the waits between them cross queues.

Ordering, as a guest relying on it does: before write #j is submitted,
the script waits for the previous write to each of its blocks ('wait N'),
except in --concurrent percent of the cases, where it leaves that earlier
write in flight so the two are concurrent.  The outcome is then defined
per block b:

  * a write #i to b is *superseded* when a later write to b was submitted
    after the guest waited for #i's completion;
  * b must hold, in all of its 4096 bytes, the byte of one write to b
    that is not superseded (with no concurrency: exactly the last write
    submitted to b), and 0 if nothing was written to it.

virtio lets a device complete concurrent requests in any order, so
concurrent overlapping writes may land either way; but a write whose
completion the guest saw before it submitted an overlapping one must
never land after that one.  If a gateway replayed a completed write after
a restart, its block would hold a superseded byte; if it lost one, the
block would hold an older byte or 0; a write split or misplaced shows up
as a torn block or a byte in a block the write does not cover.
"""

import argparse
import random
import sys

BS = 4096


def gen(a):
    rng = random.Random(a.seed)
    last = {}          # block -> aio number of the last write to it
    waited = set()     # aio numbers the guest waited for so far
    plan = []          # (aio, first block, n blocks, [aio numbers waited before it])
    lines = []
    queue = 0
    for i in range(1, a.writes + 1):
        n = rng.randint(1, a.max_len)
        first = rng.randrange(0, a.blocks - n + 1)
        need = sorted({last[b] for b in range(first, first + n)
                       if b in last and last[b] not in waited})
        deps = [d for d in need if rng.randrange(100) >= a.concurrent]
        if deps:
            lines.append("wait " + " ".join(str(d) for d in deps))
            waited.update(deps)
        q = rng.randrange(a.queues)
        if q != queue:
            lines.append("queue %d" % q)
            queue = q
        lines.append("aio-write %d %d -P %d" % (a.base + first * BS, n * BS, i))
        plan.append((i, first, n, sorted(waited)))
        for b in range(first, first + n):
            last[b] = i
    lines.append("wait")
    with open(a.plan, "w") as f:
        f.write("base %d blocks %d\n" % (a.base, a.blocks))
        for i, first, n, w in plan:
            f.write("write %d %d %d %s\n" % (i, first, n, ",".join(map(str, w)) or "-"))
    print("\n".join(lines))


def check(a):
    writes = []
    with open(a.plan) as f:
        head = f.readline().split()
        base, blocks = int(head[1]), int(head[3])
        for line in f:
            _, i, first, n, w = line.split()
            writes.append((int(i), int(first), int(n),
                           set() if w == "-" else set(map(int, w.split(",")))))
    with open(a.image, "rb") as f:
        f.seek(base)
        data = f.read(blocks * BS)
    data = data.ljust(blocks * BS, b"\0")
    bad = strict = loose = 0
    for b in range(blocks):
        to_b = [(i, w) for i, first, n, w in writes if first <= b < first + n]
        allowed = {i for i, _ in to_b
                   if not any(i in w2 for i2, w2 in to_b if i2 > i)}
        if not to_b:
            allowed = {0}
        elif len(allowed) == 1:
            strict += 1
        else:
            loose += 1
        blk = data[b * BS:(b + 1) * BS]
        vals = set(blk)
        if len(vals) != 1:
            print("block %d (offset %d): torn: bytes %s; expected write %s"
                  % (b, base + b * BS, sorted(vals), sorted(allowed)))
            bad += 1
            continue
        v = blk[0]
        if v not in allowed:
            why = ("a write that was superseded (replayed or landed late)"
                   if any(i == v for i, _ in to_b) else
                   "nothing written there" if v == 0 else
                   "a write that does not cover this block")
            print("block %d (offset %d): holds write %d, %s; expected %s "
                  "(writes to it in order: %s)"
                  % (b, base + b * BS, v, why,
                     "/".join("#%d" % x for x in sorted(allowed)) if to_b else "0",
                     " ".join("#%d" % i for i, _ in to_b) or "none"))
            bad += 1
    print("checked %d blocks: %d with one allowed write, %d with concurrent "
          "writes, %d never written, %d wrong"
          % (blocks, strict, loose, blocks - strict - loose, bad))
    return 1 if bad else 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("gen")
    g.add_argument("--seed", type=int, required=True)
    g.add_argument("--base", type=int, required=True)
    g.add_argument("--plan", required=True)
    g.add_argument("--blocks", type=int, default=64)
    g.add_argument("--writes", type=int, default=48)
    g.add_argument("--max-len", type=int, default=4)
    g.add_argument("--concurrent", type=int, default=20)
    g.add_argument("--queues", type=int, default=1)
    c = sub.add_parser("check")
    c.add_argument("--plan", required=True)
    c.add_argument("--image", required=True)
    a = p.parse_args()
    if a.cmd == "gen":
        if not 1 <= a.writes <= 255 or a.max_len > a.blocks:
            p.error("1 to 255 writes, --max-len at most --blocks")
        gen(a)
        return 0
    return check(a)


if __name__ == "__main__":
    sys.exit(main())
