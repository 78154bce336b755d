# SPDX-License-Identifier: MIT
# Description: a stand-in for ksmd-user's control side, for the ksmctl
# tests (tests/func/ksmctl-daemon.sh): a SOCK_SEQPACKET Unix socket that
# answers CTL requests (docs/daemon-protocol.md, src/wire.h) with a canned
# valid STATUS, OK/ERR to SET, "OK 3" to UNMERGE, or, selected by --mode,
# with a malformed or missing reply.  It takes ksmd-user's own options
# (--socket, --config, --log-level, --pidfile), so that `ksmctl daemon`
# can start it.
#
# Usage: python3 fake-ksmd.py --socket PATH [--mode MODE] [--ready FILE]
#            [--requests FILE] [--extra LINE]... [--omit KEY]...
#            [--reply TEXT] [--version TEXT] [ksmd-user options]
#   --ready FILE     written (with our pid) once the socket listens
#   --requests FILE  every request's text is appended to it, one a line
#   --extra LINE     appended to the STATUS reply (may be malformed)
#   --omit KEY       left out of the STATUS reply
#   --reply TEXT     the text of every CTL_REPLY instead (\n is a newline)
#   --version TEXT   daemon.version
#   --daemon-pid N   daemon.pid (default: ours)
# MODE: ok (default), and, for every request:
#   badmagic badseq badtype badlen badflags short nul emptytext oversize
#   nonprint huge
#             - a malformed packet
#   error     - an ERROR message (EPERM)
#   hang      - no reply (the connection stays open)
#   close     - the connection closed without a reply
#   exit3     - exit with status 3 at once, before listening
#   silent    - never listen (sleep)
# STATUS counters move between requests: global.lookups grows by 1000,
# global.matches_unstable by 5, and the merges of process 4243 by 10.

import argparse
import os
import socket
import struct
import sys
import time

MAGIC = 0x574D534B
CTL, CTL_REPLY, ERROR = 11, 12, 13
HDR = struct.Struct("=IHHII")  # magic, type, flags, len, seq
EPERM = 1


def status_text(args, served):
    lines = [
        "daemon.version " + args.version,
        "daemon.pid %d" % (args.daemon_pid or os.getpid()),
        "daemon.uptime_ms 3723000",
        "daemon.clients 3",
        "daemon.ghosts 1",
        "global.pages_shared 12",
        "global.pages_sharing 30",
        "global.pages_unshared 7",
        "global.general_profit -2097152",
        "global.store_pages 12",
        "global.store_bytes 49152",
        "global.lookups %d" % (1000 * served),
        "global.matches_stable 40",
        "global.matches_unstable %d" % (5 * served),
        "global.hints 6",
        "global.releases 2",
        "global.hash_collisions 0",
        "global.metadata_bytes 1048576",
        "global.vmas_added 9",
        "global.future_counter 42",
        "global.big 18446744073709551615",
        "global.most_negative -9223372036854775808",
        "knob.pages_to_scan 100",
        "knob.sleep_millisecs 20",
        "store.1.domain uid:1000",
        "store.1.node 0",
        "store.1.pages 12",
        "store.7.domain web.front-1",
        "store.7.node 1",
        "store.7.pages 0",
        "proc.4243.uid 1000",
        "proc.4243.domain uid:1000",
        "proc.4243.connected 1",
        "proc.4243.grants 17",
        "proc.4243.pages_shared 4",
        "proc.4243.pages_sharing 20",
        "proc.4243.pages_unshared 3",
        "proc.4243.pages_volatile 1",
        "proc.4243.full_scans 8",
        "proc.4243.general_profit -4096",
        "proc.4243.remote_pages 18",
        "proc.4243.merges %d" % (5 + 10 * served),
        "proc.4243.cow_breaks 2",
        "proc.4243.pages_tracked 640",
        "proc.4243.scan_cpu_ns 123456789",
        "proc.4243.metadata_bytes 65536",
        "proc.4243.vmas_added 4",
        "proc.4243.future_field 7",
        "proc.5000.uid 0",
        "proc.5000.domain web.front-1",
        "proc.5000.connected 0",
        "proc.5000.grants 3",
        "domain.uid:1000.clients 2",
        "domain.uid:1000.store_pages 12",
        "domain.web.front-1.clients 1",
        "domain.web.front-1.store_pages 0",
        "domain.Batch_2.clients 0",
        "domain.Batch_2.store_pages 0",
    ]
    lines = [l for l in lines if l.split(" ")[0] not in args.omit]
    return "".join(l + "\n" for l in lines + args.extra)


def answer(req, args, served):
    """The reply text to the request text @req."""
    if args.reply is not None:
        return args.reply.replace("\\n", "\n")
    words = req.split()
    if words == ["STATUS"]:
        return status_text(args, served)
    if len(words) == 3 and words[0] == "SET":
        if words[1] == "max_page_sharing":
            return "ERR EBUSY pages are shared\n"
        return "OK\n"
    if words == ["UNMERGE"]:
        return "OK 3\n"
    return "ERR EINVAL unknown request\n"


def packet(mode, seq, text):
    body = text.encode("ascii")
    typ, flags, length, magic = CTL_REPLY, 0, HDR.size + len(body), MAGIC
    if mode == "error":
        body = struct.pack("=iHH", EPERM, CTL, 0)
        typ, length = ERROR, HDR.size + len(body)
    elif mode == "badmagic":
        magic = 0x4B534D57
    elif mode == "badseq":
        seq = (seq + 1) & 0xFFFFFFFF
    elif mode == "badtype":
        typ = CTL
    elif mode == "badlen":
        length += 1
    elif mode == "badflags":
        flags = 1
    elif mode == "nul":
        body = body[:10] + b"\0" + body[11:]
    elif mode == "emptytext":
        body, length = b"", HDR.size
    elif mode == "oversize":
        body = b"global.x 1\n" * 7000  # 77,000 bytes of text: more than 65,536
        length = HDR.size + len(body)
    elif mode == "huge":
        body = b"global.x 1\n" * 12728  # 140,008 bytes: more than KSMU_WIRE_MAX
        length = HDR.size + len(body)
    elif mode == "nonprint":
        body = body + b"global.x 1\x1b[2J\n"
        length = HDR.size + len(body)
    pkt = HDR.pack(magic, typ, flags, length, seq) + body
    if mode == "short":
        pkt = pkt[:8]
    return pkt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--socket", required=True)
    ap.add_argument("--mode", default="ok")
    ap.add_argument("--ready")
    ap.add_argument("--requests")
    ap.add_argument("--extra", action="append", default=[])
    ap.add_argument("--omit", action="append", default=[])
    ap.add_argument("--reply")
    ap.add_argument("--version", default="0.3.0")
    ap.add_argument("--daemon-pid", type=int)
    # ksmd-user's own options, so that `ksmctl daemon` can run us
    ap.add_argument("--config")
    ap.add_argument("--log-level")
    ap.add_argument("--pidfile")
    args = ap.parse_args()

    sys.stderr.write("fake-ksmd: pid %d, argv %s\n" % (os.getpid(), " ".join(sys.argv[1:])))
    sys.stderr.flush()
    if args.pidfile:
        with open(args.pidfile, "w") as f:
            f.write("%d\n" % os.getpid())
    if args.mode == "exit3":
        sys.exit(3)
    if args.mode == "silent":
        time.sleep(120)
        sys.exit(0)

    try:
        os.unlink(args.socket)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    srv.bind(args.socket)
    srv.listen(16)
    if args.ready:
        with open(args.ready + ".tmp", "w") as f:
            f.write("%d\n" % os.getpid())
        os.rename(args.ready + ".tmp", args.ready)

    served = 0
    held = []  # "hang": connections kept open, unanswered
    end = time.time() + 300  # never outlive the test
    srv.settimeout(1)
    while time.time() < end:
        try:
            c, _ = srv.accept()
        except socket.timeout:
            continue
        c.settimeout(5)
        try:
            req = c.recv(70000)
        except OSError:
            c.close()
            continue
        if len(req) < HDR.size:
            c.close()
            continue
        magic, typ, flags, length, seq = HDR.unpack_from(req)
        text = req[HDR.size:]
        ok = magic == MAGIC and typ == CTL and flags == 0 and length == len(req) \
            and text and b"\0" not in text
        if args.requests:
            with open(args.requests, "a") as f:
                f.write(text.decode("ascii", "replace") + ("\n" if ok else " (MALFORMED)\n"))
        if not ok:
            # what the daemon does: ERROR {EBADMSG}, then disconnect
            c.send(HDR.pack(MAGIC, ERROR, 0, HDR.size + 8, seq) + struct.pack("=iHH", 74, typ, 0))
            c.close()
            continue
        text = text.decode("ascii")
        if text == "STATUS":
            served += 1
        if args.mode == "hang":
            held.append(c)
            continue
        if args.mode != "close":
            try:
                c.send(packet(args.mode, seq, answer(text, args, served)))
            except OSError as e:
                sys.stderr.write("fake-ksmd: send: %s\n" % e)
        c.close()


if __name__ == "__main__":
    main()
