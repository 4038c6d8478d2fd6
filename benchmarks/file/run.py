#!/usr/bin/env python3
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

"""Local copy: ``oslo-transfer copy`` beside ``cp``.

The same >= 1 GiB file of random bytes (``--size``) is copied on one
filesystem by:

* ``cp`` (coreutils: copy_file_range/reflink, no fsync);
* ``cp && sync FILE`` (the same durability as ours: the data is on disk
  when the command returns);
* ``oslo-transfer copy`` without a checksum (zero-copy, fsync, atomic
  rename) -- the target: <= 1.05x cp;
* ``oslo-transfer copy``, ``fsync = false`` (like for like with ``cp``:
  the bytes stay in the page cache);
* ``oslo-transfer copy --checksum sha256:...`` (on a filesystem without
  reflink, ext4, the data is streamed and hashed in one pass).

A sparse variant (``--sparse``, default on) copies a file of the same
apparent size holding 64 MiB of data, to show that holes cost nothing.

Each tool runs ``--repeat`` times (>= 3), alternating the order; before
every run the destination is removed and dirty pages are flushed (untimed).
Every output is checked against the source's sha256.  Results: a table,
``benchmarks/results/file.json`` and ``file.png``.

Usage::

    python benchmarks/file/run.py --size 1G
"""

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

from benchmarks import benchlib  # noqa: E402

MiB = benchlib.MiB


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', default='1G')
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--workdir', default=None,
                   help='folder on the filesystem to test (default: a temp '
                        'dir under /var/tmp, removed afterwards)')
    p.add_argument('--no-sparse', action='store_true',
                   help='skip the sparse-file scenario')
    args = p.parse_args(argv)
    if args.repeat < 3:
        p.error('--repeat must be at least 3')
    size = benchlib.parse_size(args.size)
    cp = benchlib.require('cp')
    sync_bin = benchlib.require('sync')
    ours = benchlib.oslo_transfer_cmd()

    own_dir = args.workdir is None
    work = args.workdir or tempfile.mkdtemp(prefix='oslo-transfer-bench-',
                                            dir='/var/tmp')
    scenarios = {}
    try:
        src = benchlib.random_file(os.path.join(work, 'src.raw'), size)
        scenarios['local copy, %s random' % benchlib.human(size)] = \
            scenario('dense', src, work, cp, sync_bin, ours, args.repeat)
        if not args.no_sparse:
            sparse = os.path.join(work, 'sparse.raw')
            make_sparse(sparse, size)
            scenarios['local copy, %s sparse (64 MiB data)' % benchlib.human(
                size)] = scenario('sparse', sparse, work, cp, sync_bin, ours,
                                  args.repeat)
    finally:
        if own_dir:
            shutil.rmtree(work, ignore_errors=True)
    benchlib.save('file', scenarios)
    return 0


def make_sparse(path, size):
    if os.path.exists(path) and os.path.getsize(path) == size:
        return
    with open(path, 'wb') as f:
        f.truncate(size)
        step = max(MiB, size // 16)
        for off in range(0, size, step):
            f.seek(off)
            f.write(os.urandom(min(4 * MiB, size - off)))


def _no_fsync_conf(work):
    path = os.path.join(work, 'no-fsync.conf')
    with open(path, 'w') as f:
        f.write('[oslo_transfer]\nfsync = false\n')
    return path


def scenario(label, src, work, cp, sync_bin, ours, repeat):
    size = os.path.getsize(src)
    digest = benchlib.sha256_of(src)  # also warms the page cache
    dest = os.path.join(work, 'dst-%s.raw' % label)
    tools = {
        'cp': [cp, src, dest],
        'cp && sync FILE': ['sh', '-c', '"$0" "$1" "$2" && "$3" "$2"', cp,
                            src, dest, sync_bin],
        'oslo-transfer copy': ours + ['copy', src, dest, '--json',
                                      '--no-progress'],
        'oslo-transfer, fsync=false': ours + [
            '--config-file', _no_fsync_conf(work), 'copy', src, dest,
            '--json', '--no-progress'],
        'oslo-transfer copy (sha256)': ours + [
            'copy', src, dest, '--checksum', 'sha256:' + digest, '--json',
            '--no-progress'],
    }

    def before(_name):
        for p in (dest, dest + '.part', dest + '.part.ctl',
                  dest + '.part.lock'):
            if os.path.lexists(p):
                os.unlink(p)
        benchlib.sync()

    def check(name, run):
        if benchlib.sha256_of(dest) != digest:
            sys.exit('%s produced a wrong file' % name)
        run.allocated = os.stat(dest).st_blocks * 512
        if name.startswith('oslo-transfer'):
            import json
            run.internal = json.loads(run.stdout)['elapsed']

    print('\n%s: %s, %d runs each' % (label, benchlib.human(size), repeat))
    runs = benchlib.alternate(tools, repeat, before, check)
    rows = benchlib.summarize('%s local copy, %s' % (label,
                                                     benchlib.human(size)),
                              runs, size, 'cp')
    for row in rows:
        rs = runs[row['tool']]
        row['allocated_mib'] = max(r.allocated for r in rs) / MiB
        internal = [getattr(r, 'internal', None) for r in rs]
        if all(i is not None for i in internal):
            import statistics
            row['internal_median_s'] = statistics.median(internal)
            print('  %s: Result.elapsed median %.3fs'
                  % (row['tool'], row['internal_median_s']))
    print('  allocated: %s' % ', '.join(
        '%s %.0f MiB' % (r['tool'], r['allocated_mib']) for r in rows))
    return rows


if __name__ == '__main__':
    sys.exit(main())
