#!/usr/bin/env python3
"""A minimal QMP client for the tests.

  qmp.py SOCKET COMMAND [JSON-ARGUMENTS]   run one command, print its "return"
  qmp.py SOCKET wait-migration [TIMEOUT]   poll query-migrate until it ends;
                                           exit 0 if it completed
"""
import json
import socket
import sys
import time


def connect(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(30)
    s.connect(path)
    f = s.makefile("rw")
    json.loads(f.readline())  # greeting
    execute(f, "qmp_capabilities")
    return f


def execute(f, cmd, args=None):
    msg = {"execute": cmd}
    if args:
        msg["arguments"] = args
    f.write(json.dumps(msg) + "\n")
    f.flush()
    while True:
        reply = json.loads(f.readline())
        if "event" in reply:
            continue
        if "error" in reply:
            raise SystemExit("%s: %s" % (cmd, reply["error"].get("desc")))
        return reply.get("return")


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    f = connect(sys.argv[1])
    if sys.argv[2] == "wait-migration":
        deadline = time.time() + float(sys.argv[3] if len(sys.argv) > 3 else 120)
        while time.time() < deadline:
            status = execute(f, "query-migrate").get("status")
            if status in ("completed", "failed", "cancelled"):
                print(status)
                sys.exit(0 if status == "completed" else 1)
            time.sleep(0.2)
        print("timeout")
        sys.exit(1)
    args = json.loads(sys.argv[3]) if len(sys.argv) > 3 else None
    print(json.dumps(execute(f, sys.argv[2], args)))


if __name__ == "__main__":
    main()
