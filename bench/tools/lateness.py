#!/usr/bin/env python3
"""Send lateness from the kernel's view: packet timestamps of a tcpdump capture against the
ideal open-loop schedule t0 + i/rate.

    lateness.py CAPTURE.pcap RATE CLOCKWATCH.log [SKIP]

The capture holds the first packet of every request (payload starting "GET ") and of every
response ("HTTP") on one server port. Timestamps are CLOCK_REALTIME; they are put on
CLOCK_MONOTONIC with the offsets that clockwatch recorded (every 10 ms and at every clock
step), so a stepped or slewed realtime clock is not mistaken for lateness. Requests are
sorted and matched to slots in order; t0 is chosen so that the earliest request relative to
its slot is on time (lateness 0). The first SKIP requests (warmup, start-up) are left out.

Two lateness figures per request:
  schedule  packet time - intended time;
  free      packet time - max(intended time, the previous response on the same connection):
            the part the generator could have avoided. An HTTP/1.1 connection carries one
            request at a time, so when all connections are still waiting for the target,
            a request cannot leave on time whatever the generator does; the schedule figure
            includes that wait, the free figure does not.

Prints one line: count, schedule p50 p90 p99 p99.9 max, free p50 p90 p99 p99.9 max (µs),
and the clock steps seen.
"""
import bisect
import struct
import sys


def packets(path):
    """[(ns, client port, 'req' | 'resp')] in capture order."""
    with open(path, "rb") as f:
        head = f.read(24)
        if len(head) < 24:
            sys.exit(f"{path}: not a pcap file")
        magic = struct.unpack("<I", head[:4])[0]
        if magic == 0xA1B23C4D:
            scale, endian = 1, "<"
        elif magic == 0xA1B2C3D4:
            scale, endian = 1000, "<"
        elif magic == 0x4D3CB2A1:
            scale, endian = 1, ">"
        elif magic == 0xD4C3B2A1:
            scale, endian = 1000, ">"
        else:
            sys.exit(f"{path}: not a pcap file")
        linktype = struct.unpack(endian + "I", head[20:24])[0]
        link = {1: 14, 113: 16, 276: 20, 0: 4}.get(linktype)
        if link is None:
            sys.exit(f"{path}: link type {linktype} not handled")
        out = []
        while True:
            h = f.read(16)
            if len(h) < 16:
                break
            sec, frac, incl, _orig = struct.unpack(endian + "IIII", h)
            data = f.read(incl)
            ip = data[link:]
            if len(ip) < 20 or ip[0] >> 4 != 4:
                continue
            ihl = (ip[0] & 0x0F) * 4
            tcp = ip[ihl:]
            if len(tcp) < 20:
                continue
            sport, dport = struct.unpack(">HH", tcp[:4])
            payload = tcp[(tcp[12] >> 4) * 4:]
            t = sec * 1_000_000_000 + frac * scale
            if payload.startswith(b"GET "):
                out.append((t, sport, "req"))
            elif payload.startswith(b"HTTP"):
                out.append((t, dport, "resp"))
        return out


def offsets(path):
    """(realtime ns at which each offset took effect, offset ns), sorted; steps seen."""
    pts, steps = [], 0
    for line in open(path):
        f = line.split()
        if len(f) != 3:
            continue
        mono, off = int(f[0]), int(f[1])
        steps += f[2] == "step"
        pts.append((mono + off, off))
    pts.sort()
    return pts, steps


def pct(sorted_v, q):
    if not sorted_v:
        return float("nan")
    i = min(len(sorted_v) - 1, max(0, int(q * len(sorted_v) + 0.999999) - 1))
    return sorted_v[i]


def summary(v):
    v = sorted(v)
    return [pct(v, 0.5), pct(v, 0.9), pct(v, 0.99), pct(v, 0.999), v[-1] if v else float("nan")]


def main():
    cap, rate, clock = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    skip = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    offs, steps = offsets(clock)
    keys = [o[0] for o in offs]

    def mono(r):
        j = bisect.bisect_right(keys, r) - 1
        return r - (offs[max(j, 0)][1] if offs else 0)

    pk = sorted((mono(t), port, kind) for t, port, kind in packets(cap))
    reqs = [(t, port) for t, port, kind in pk if kind == "req"]
    if len(reqs) <= skip:
        sys.exit("no requests captured")
    interval = 1e9 / rate
    t0 = min(t - i * interval for i, (t, _) in enumerate(reqs) if i >= skip)
    intended = {}
    for i, (t, port) in enumerate(reqs):
        intended[(t, port)] = t0 + i * interval
    sched, free = [], []
    last_resp = {}
    n = 0
    for t, port, kind in pk:
        if kind == "resp":
            last_resp[port] = t
            continue
        n += 1
        if n <= skip:
            continue
        want = intended[(t, port)]
        sched.append((t - want) / 1000.0)
        free.append((t - max(want, last_resp.get(port, want))) / 1000.0)
    fields = [len(sched)] + summary(sched) + summary(free)
    print(" ".join(f"{x:.0f}" for x in fields) + f" steps={steps}")


if __name__ == "__main__":
    main()
