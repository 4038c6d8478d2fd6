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

"""A real NBD client for the tests: python3-libnbd, in Debian's python3.

Run as ``/usr/bin/python3 nbdclient.py URI REQUEST_JSON``; ``REQUEST``
is ``{"reads": [[offset, length], ...], "connections": N}``.  Prints one
JSON object: ``{"size": .., "flags": {..}, "reads": [{"sha256": HEX} or
{"error": TEXT, "errno": N}, ...], "extents": [[offset, length, flags],
...]}``.  The reads are spread over ``connections`` connections and run
at once (a guest's queue), in threads.

With ``"times": true`` each read also gets ``start`` and ``end``
(``time.monotonic()``, CLOCK_MONOTONIC: comparable with another process's
on the same host), ``connected`` is written to stderr once every
connection is up, and a failed shutdown (the server is gone) still prints
the report: the soak (:mod:`tests.functional.soak.lazy`) kills the server
mid-read.
"""

import concurrent.futures
import errno
import hashlib
import json
import sys
import time

import nbd


def _read(h, off, n, times=False):
    start = time.monotonic()
    try:
        out = {'sha256': hashlib.sha256(h.pread(n, off)).hexdigest()}
    except nbd.Error as exc:
        code = exc.errno
        if isinstance(code, str):       # libnbd names it ("EIO")
            code = getattr(errno, code, code)
        out = {'error': str(exc), 'errno': code}
    if times:
        out.update(start=start, end=time.monotonic())
    return out


def main(uri, request):
    conns = max(1, request.get('connections', 1))
    handles = []
    for _ in range(conns):
        h = nbd.NBD()
        h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
        h.connect_uri(uri)
        handles.append(h)
    times = bool(request.get('times'))
    if times:
        sys.stderr.write('connected\n')
        sys.stderr.flush()
    h = handles[0]
    out = {'size': h.get_size(),
           'flags': {'read_only': h.is_read_only(),
                     'can_flush': h.can_flush(), 'can_fua': h.can_fua(),
                     'can_multi_conn': h.can_multi_conn(),
                     'can_trim': h.can_trim(), 'can_zero': h.can_zero()}}
    reads = request.get('reads', [])
    with concurrent.futures.ThreadPoolExecutor(max(1, conns)) as pool:
        futs = [pool.submit(_read, handles[i % conns], off, n, times)
                for i, (off, n) in enumerate(reads)]
        out['reads'] = [f.result() for f in futs]
    if request.get('extents'):
        seen = []

        def cb(meta, offset, entries, err):
            for i in range(0, len(entries), 2):
                seen.append([offset, entries[i], entries[i + 1]])
                offset += entries[i]
            return 0

        off = 0
        while off < out['size']:
            before = len(seen)
            h.block_status(min(out['size'] - off, 1 << 30), off, cb)
            off = seen[-1][0] + seen[-1][1] if len(seen) > before else \
                out['size']
        out['extents'] = seen
    for h in handles:
        try:
            h.shutdown()
        except nbd.Error:
            if not times:
                raise
    print(json.dumps(out))


if __name__ == '__main__':
    main(sys.argv[1], json.loads(sys.argv[2]))
