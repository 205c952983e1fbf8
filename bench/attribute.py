#!/usr/bin/env python3
"""Splits one server's CPU per request into parts, from a `perf record --call-graph dwarf` profile.

    bench/attribute.py PERF_DATA REQUESTS FREQ

REQUESTS is how many requests the profiled interval served (rate x seconds), FREQ the sampling frequency
given to `perf record -F`. Each sample is one 1/FREQ s slice of the process's CPU; a sample whose innermost
frame is in the kernel counts as kernel time, any other as user time, and each user sample goes to the first
part below whose pattern names a frame anywhere on its stack (so an allocation made by the access log is the
access log's, and the parts add up to the user total). bench/profile.sh runs this for etagd and the ceiling
stand-in when CALLGRAPH=dwarf; the stand-in's samples fall in the transport parts only.
"""

import re
import subprocess
import sys
from collections import Counter

# (part, pattern over one frame's symbol), most specific first.
PARTS = [
    ("access log", r"etagd::logging::access"),
    ("metrics", r"etagd::metrics"),
    ("finish: Cache-Status, Date, report", r"exchange::Run<B,U>::finish"),
    ("request key", r"request_key|ResourceKey::from_request"),
    ("lookup: store enqueue", r"as etagd_client::store::Store>::get_many"),
    ("lookup: keys, counters, judging", r"cache::(lookup|judge)::"),
    ("memcached batcher", r"store::memcached::(coalescer|wire|pool|protocol)|limit::batcher|memcache::exp"),
    ("hit: negotiation, conditional, headers", r"exchange::serve::|limit::handle"),
    ("rest of the exchange", r"etagd_client::exchange::"),
    ("hyper: parse", r"Http1Transaction>::parse"),
    ("hyper: encode", r"Http1Transaction>::encode"),
    ("hyper: rest", r"^hyper::|^<hyper::"),
    ("tokio: scheduler and I/O driver", r"tokio::runtime::"),
]

# A leaf frame in the allocator (mimalloc's `mi_*`, glibc's malloc family), for samples outside every part.
ALLOCATOR = re.compile(r"(_?mi_\w+|_int_(malloc|free)|malloc\w*|cfree|free|__libc_(malloc|free)) ")


def stacks(data: str):
    """The frames of each sample, innermost first."""
    text = subprocess.run(
        ["perf", "script", "-i", data, "-F", "comm,ip,sym,dso"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    for block in text.split("\n\n"):
        frames = [line.strip() for line in block.strip().split("\n")[1:] if line.strip()]
        if frames:
            yield [re.sub(r"^[0-9a-f]+ ", "", f).replace(" (inlined)", "") for f in frames]


def main() -> int:
    if len(sys.argv) != 4:
        print(__doc__.strip().split("\n\n")[1], file=sys.stderr)
        return 64
    data, requests, freq = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    per_request = 1e6 / freq / requests  # microseconds of CPU per request that one sample stands for
    kernel, parts = 0, Counter()
    patterns = [(name, re.compile(pattern)) for name, pattern in PARTS]
    for frames in stacks(data):
        if "[kernel.kallsyms]" in frames[0]:
            kernel += 1
            continue
        part = next((name for name, p in patterns if any(p.search(f) for f in frames)), None)
        if part is None:
            part = "allocator" if ALLOCATOR.match(frames[0]) else "other"
        parts[part] += 1
    user = sum(parts.values())
    print(f"CPU per request: {(user + kernel) * per_request:.2f} us")
    print(f"  kernel {kernel * per_request:6.2f} us")
    print(f"  user   {user * per_request:6.2f} us")
    for name in [name for name, _ in PARTS] + ["allocator", "other"]:
        if parts[name]:
            print(f"    {parts[name] * per_request:6.2f} us  {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
