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
    icmp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    tcp = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_TCP)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for s in (icmp, tcp, udp):
        s.setblocking(False)
    # The source address the kernel will use, for the TCP checksum.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.connect((dst, a.port))
    src = probe.getsockname()[0]
    probe.close()

    sent = {"icmp": 0, "udp": 0, "tcp": 0, "refused": 0}
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
        # Echo ids from the top of the range, away from the ones tracepkt hands out first.
        for kind, send in (
            ("icmp", lambda: icmp.sendto(echo_request(0xF000 | (n & 0x0FFF), n & 0xFFFF), (dst, 0))),
            ("udp", lambda: udp.sendto(os.urandom(PROBE_PAYLOAD), (dst, a.port))),
            ("tcp", lambda: tcp.sendto(tcp_syn(src, dst, 20000 + n % 40000, a.port), (dst, 0))),
        ):
            try:
                send()
                sent[kind] += 1
            except OSError:
                # Before the peer answers ARP, or while its queue is full: counted, not fatal.
                sent["refused"] += 1
    print(" ".join(f"{k}={v}" for k, v in sent.items()), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
