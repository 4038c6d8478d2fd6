#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See the
#    License for the specific language governing permissions and limitations
#    under the License.

"""A boot-like read trace, seeded, and its replay through python3-libnbd.

The trace (the lazy-images issue's): a 16 MiB sequential head (read in
64 KiB requests), then 400 reads clustered in 32 regions spread over the
image, sized 4 KiB (40 %), 64 KiB (40 %) and 1 MiB (20 %), each region
about ``5 % of the image / 32`` wide, so that the trace touches about 5 %
of the image.  Offsets are aligned to 4 KiB.  ``make(size, seed)`` returns
``[[offset, length], ...]`` in order; :func:`touched` is the size of the
union of its extents ("bytes touched").

``python3 trace.py URI TRACE.json QD`` (Debian's python3, which has
python3-libnbd) replays the trace with ``QD`` reads in flight (1: one
after the other; 16: a guest's queue) and prints ``{"seconds": T,
"bytes": N}``; run by ``run.py``.
"""

import json
import random
import sys
import time

KiB = 1024
MiB = 1024 * KiB
HEAD = 16 * MiB
READS = 400
REGIONS = 32
SIZES = ((4 * KiB, 0.4), (64 * KiB, 0.4), (MiB, 0.2))


def make(size: int, seed: int = 1) -> list:
    rng = random.Random(seed)
    trace = [[off, 64 * KiB] for off in range(0, min(HEAD, size), 64 * KiB)]
    width = max(MiB, int(size * 0.05 / REGIONS))
    starts = sorted(rng.randrange(HEAD, max(HEAD + 1, size - width))
                    for _ in range(REGIONS))
    for _ in range(READS):
        length = rng.choices([s for s, _ in SIZES],
                             [w for _, w in SIZES])[0]
        start = rng.choice(starts)
        off = start + rng.randrange(0, max(1, width - length))
        off -= off % (4 * KiB)
        trace.append([off, min(length, size - off)])
    return trace


def touched(trace) -> int:
    total = 0
    end = -1
    for off, n in sorted(trace):
        if off + n <= end:
            continue
        total += off + n - max(off, end)
        end = off + n
    return total


def replay(uri: str, trace: list, qd: int) -> dict:
    import nbd
    h = nbd.NBD()
    h.connect_uri(uri)
    start = time.monotonic()
    if qd <= 1:
        for off, n in trace:
            h.pread(n, off)
    else:
        pending = []
        for off, n in trace:
            buf = nbd.Buffer(n)
            pending.append(h.aio_pread(buf, off))
            while h.aio_in_flight() >= qd:
                h.poll(-1)
        while h.aio_in_flight() > 0:
            h.poll(-1)
        for cookie in pending:
            h.aio_command_completed(cookie)
    seconds = time.monotonic() - start
    h.shutdown()
    return {'seconds': seconds, 'bytes': sum(n for _, n in trace)}


if __name__ == '__main__':
    with open(sys.argv[2]) as f:
        print(json.dumps(replay(sys.argv[1], json.load(f),
                                int(sys.argv[3]))))
