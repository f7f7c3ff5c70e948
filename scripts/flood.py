#!/usr/bin/env python3
"""Foreign traffic for the contention tests: ICMP echo requests exactly the size of tracepkt's
probes (so they pass its length filter), UDP datagrams and TCP SYNs, to one IPv4 address, at a
bounded rate for a bounded time.

    flood.py --to 198.18.60.2 --seconds 120 --pps 3000 [--port 9]

It sends only to the address it is given, and refuses any outside the test range 198.18.0.0/15:
the tests point it at namespaces and VMs they create. Python standard library only; root.
"""

import argparse
import ipaddress
import os
import random
import signal
import socket
import struct
import sys
import time

TEST_RANGE = ipaddress.ip_network("198.18.0.0/15")
# tracepkt's probes carry 32 bytes after the ICMP echo header: the same size gets past its
# length filter, so these packets reach its map lookup.
PROBE_PAYLOAD = 32


def checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def echo_request(ident: int, seq: int) -> bytes:
    payload = os.urandom(PROBE_PAYLOAD)
    head = struct.pack("!BBHHH", 8, 0, 0, ident, seq)
    return struct.pack("!BBHHH", 8, 0, checksum(head + payload), ident, seq) + payload


def ipv4(src: str, dst: str, proto: int, payload: bytes) -> bytes:
    """An IPv4 header in front of `payload` (the kernel fills in the id and the checksum)."""
    return struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 0, 0x4000, 64, proto, 0,
                       socket.inet_aton(src), socket.inet_aton(dst)) + payload


def tcp_syn(src: str, dst: str, sport: int, dport: int) -> bytes:
    seq = random.getrandbits(32)
    head = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, socket.IPPROTO_TCP, len(head))
    return struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, checksum(pseudo + head), 0)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--to", required=True)
    p.add_argument("--seconds", type=float, required=True)
    p.add_argument("--pps", type=int, default=3000)
    p.add_argument("--port", type=int, default=9)
    a = p.parse_args()
    dst = ipaddress.ip_address(a.to)
    if dst.version != 4 or dst not in TEST_RANGE:
        print(f"flood.py: refusing {a.to}: only addresses in {TEST_RANGE} are flooded", file=sys.stderr)
        return 2
    if not 0 < a.seconds <= 3600 or not 0 < a.pps <= 100_000:
        print("flood.py: --seconds must be in (0, 3600] and --pps in (0, 100000]", file=sys.stderr)
        return 2
    dst = str(dst)
    # IPPROTO_RAW sockets only send: a raw ICMP or TCP socket would also be handed a copy of
    # every such packet the host receives, tracepkt's replies included, and drop each once its
    # unread buffer is full.
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (raw, udp):
        s.setblocking(False)
    # The source address the kernel will use, for the IP header and the TCP checksum.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect((dst, a.port))
    src = probe.getsockname()[0]
    probe.close()

    sent = {"icmp": 0, "udp": 0, "tcp": 0, "refused": 0}
    # Stopped early (SIGTERM from the test that started it): still say what was sent.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        flood(raw, udp, src, dst, a, sent)
    finally:
        print(" ".join(f"{k}={v}" for k, v in sent.items()), flush=True)
    return 0


def flood(raw, udp, src, dst, a, sent):
    start = time.monotonic()
    period = 3.0 / a.pps  # one packet of each kind per period
    n = 0
    while True:
        now = time.monotonic()
        if now - start >= a.seconds:
            break
        due = start + n * period
        if due > now:
            time.sleep(min(due - now, 0.01))
            continue
        n += 1
        # Echo ids 0xFFFE and 0xFFFF: see the contention tests for why these.
        for kind, send in (
            ("icmp", lambda: raw.sendto(ipv4(src, dst, socket.IPPROTO_ICMP, echo_request(0xFFFE + (n & 1), n & 0xFFFF)), (dst, 0))),
            ("udp", lambda: udp.sendto(os.urandom(PROBE_PAYLOAD), (dst, a.port))),
            ("tcp", lambda: raw.sendto(ipv4(src, dst, socket.IPPROTO_TCP, tcp_syn(src, dst, 20000 + n % 40000, a.port)), (dst, 0))),
        ):
            try:
                send()
                sent[kind] += 1
            except OSError:
                # Before the peer answers ARP, or while its queue is full: counted, not fatal.
                sent["refused"] += 1


if __name__ == "__main__":
    sys.exit(main())
