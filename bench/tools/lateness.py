#!/usr/bin/env python3
"""Send lateness from the kernel's view: packet timestamps of a tcpdump capture against the
ideal open-loop schedule t0 + i/rate.

    lateness.py CAPTURE.pcap RATE CLOCKWATCH.log [SKIP]

The capture holds one packet per request (a filter on the request's first payload bytes).
Its timestamps are CLOCK_REALTIME; they are put on CLOCK_MONOTONIC with the offsets that
clockwatch recorded (every 10 ms and at every clock step), so a stepped or slewed realtime
clock is not mistaken for lateness. Packets are sorted and matched to slots in order; t0 is
chosen so that the earliest packet relative to its slot is on time (lateness 0). The first
SKIP packets (the warmup, start-up) are left out. Prints one line:
count p50 p90 p99 p99.9 max (µs) and the clock steps seen.
"""
import bisect
import struct
import sys


def packets(path):
    with open(path, "rb") as f:
        head = f.read(24)
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
        out = []
        while True:
            h = f.read(16)
            if len(h) < 16:
                break
            sec, frac, incl, _orig = struct.unpack(endian + "IIII", h)
            f.seek(incl, 1)
            out.append(sec * 1_000_000_000 + frac * scale)
        return out


def offsets(path):
    """(realtime ns at which each offset took effect, offset ns), sorted."""
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


def main():
    cap, rate, clock = sys.argv[1], float(sys.argv[2]), sys.argv[3]
    skip = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    real = packets(cap)
    offs, steps = offsets(clock)
    keys = [o[0] for o in offs]
    mono = []
    for r in real:
        j = bisect.bisect_right(keys, r) - 1
        off = offs[max(j, 0)][1] if offs else 0
        mono.append(r - off)
    mono.sort()
    interval = 1e9 / rate
    rel = [t - i * interval for i, t in enumerate(mono)]
    if not rel:
        sys.exit("no packets captured")
    t0 = min(rel[skip:] or rel)
    late = sorted((x - t0) / 1000.0 for x in rel[skip:])
    spread = (max(o for _, o in offs) - min(o for _, o in offs)) / 1000.0 if offs else 0.0
    print(
        f"{len(late)} {pct(late, .5):.0f} {pct(late, .9):.0f} {pct(late, .99):.0f} "
        f"{pct(late, .999):.0f} {late[-1]:.0f} steps={steps} offset_spread_us={spread:.0f}"
    )


if __name__ == "__main__":
    main()
