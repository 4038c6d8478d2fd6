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

"""HTTP download: ``oslo-transfer copy`` beside ``curl`` and ``aria2c``.

Two scenarios against a real nginx on 127.0.0.1, in one run:

1. **loopback** (``--size``, default 1G): ``oslo-transfer copy --checksum
   sha256:...`` (verified, default segments) against ``curl -o`` followed
   by ``openssl dgst -sha256 FILE`` and ``sync FILE`` (the same
   verification and durability as ours: the ratio column's reference),
   ``curl -o`` followed by ``sync`` only, and bare ``curl -o``.  Targets:
   <= 1.05x the like-for-like reference, <= 100 MiB peak RSS.
2. **per-connection cap** (``--capped-size``, default 512M; nginx
   ``limit_rate --rate``, default 50m): ``curl`` against ``aria2c -x8 -s8
   -k1M`` (alone, followed by ``sync FILE``, and followed by ``openssl
   dgst -sha256`` and ``sync``: the reference) against ``oslo-transfer
   copy --segments 8``.  Target: ours at least as fast as aria2c.

Both scenarios also run ours with ``[oslo_transfer] fsync = false`` (a
config file in the work dir): curl and aria2c leave their bytes in the page
cache, ours makes them durable before the rename by default, and on a disk
that writes ~500 MB/s that difference alone is most of the gap.

Each tool runs ``--repeat`` times (default 3), alternating the order; the
destination is removed and dirty pages are flushed (untimed) before every
run.  Every output is checked against the source's sha256.  Results:
a table on stdout, ``benchmarks/results/http.json`` and ``http.png``.

Usage::

    python benchmarks/http/run.py --size 1G
"""

import argparse
import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

from benchmarks import benchlib  # noqa: E402
from tests.functional.http import nginx as nginx_mod  # noqa: E402


#: the like-for-like references: the tool plus what it needs to match a
#: verified, durable copy of ours (a sha256 of the file, then its fsync)
LIKE_CURL = 'curl -o && openssl sha256 && sync'
LIKE_ARIA = 'aria2c -x8 ... && openssl sha256 && sync'


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', default='1G', help='loopback object size')
    p.add_argument('--capped-size', default='512M',
                   help='object size of the rate-capped scenario')
    p.add_argument('--rate', default='50m',
                   help='nginx limit_rate per connection (capped scenario)')
    p.add_argument('--segments', type=int, default=8,
                   help='oslo-transfer --segments in the capped scenario')
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--workdir', default=None,
                   help='where the data lives (default: a temp dir under '
                        '/var/tmp, removed afterwards)')
    p.add_argument('--skip-capped', action='store_true')
    p.add_argument('--skip-loopback', action='store_true')
    args = p.parse_args(argv)
    if args.repeat < 3:
        p.error('--repeat must be at least 3')

    curl = benchlib.require('curl')
    aria2c = benchlib.require('aria2c')
    sync_bin = benchlib.require('sync')
    ours = benchlib.oslo_transfer_cmd()

    own_dir = args.workdir is None
    work = args.workdir or tempfile.mkdtemp(prefix='oslo-transfer-bench-',
                                            dir='/var/tmp')
    docroot = os.path.join(work, 'docroot')
    out = os.path.join(work, 'out')
    os.makedirs(out, exist_ok=True)
    server = nginx_mod.Nginx(os.path.join(work, 'nginx'), docroot,
                             rate=args.rate)
    scenarios = {}
    try:
        server.start()
        print('nginx %s on 127.0.0.1:%d, data in %s'
              % (server.binary, server.port, work))
        if not args.skip_loopback:
            size = benchlib.parse_size(args.size)
            scenarios['loopback %s, sha256 verified' % benchlib.human(
                size)] = loopback(server, size, args.repeat, out, curl,
                                  sync_bin, ours)
        if not args.skip_capped:
            size = benchlib.parse_size(args.capped_size)
            scenarios['limit_rate %s/conn, %s' % (
                args.rate, benchlib.human(size))] = capped(
                server, size, args.repeat, out, curl, aria2c, ours,
                args.segments)
    finally:
        server.stop()
        if own_dir:
            import shutil
            shutil.rmtree(work, ignore_errors=True)
    benchlib.save('http', scenarios)
    return 0


def _prepare(dest):
    def before(_name):
        for p in (dest, dest + '.part', dest + '.part.ctl',
                  dest + '.part.lock', dest + '.aria2'):
            if os.path.lexists(p):
                os.unlink(p)
        benchlib.sync()
    return before


def _checker(dest, digest):
    def check(name, run):
        got = benchlib.sha256_of(dest)
        if got != digest:
            sys.exit('%s produced a wrong file (sha256 %s)' % (name, got))
        if name.startswith('oslo-transfer'):
            r = json.loads(run.stdout)
            run.internal = r['elapsed']
    return check


def _no_fsync_conf(out):
    """A config file with ``fsync = false`` (like for like with curl)."""
    path = os.path.join(out, 'no-fsync.conf')
    with open(path, 'w') as f:
        f.write('[oslo_transfer]\nfsync = false\n')
    return path


def loopback(server, size, repeat, out, curl, sync_bin, ours):
    src = benchlib.random_file(os.path.join(server.docroot, 'big.raw'),
                               size)
    digest = benchlib.sha256_of(src)  # also warms the page cache
    url = server.url('big.raw')
    dest = os.path.join(out, 'big.raw')
    openssl = benchlib.require('openssl')
    tools = {
        'curl -o': [curl, '-s', '-f', '-o', dest, url],
        'curl -o && sync FILE': ['sh', '-c', '"$0" -s -f -o "$1" "$2" && '
                                 '"$3" "$1"', curl, dest, url, sync_bin],
        LIKE_CURL: ['sh', '-c', '"$0" -s -f -o "$1" "$2" && "$4" dgst '
                    '-sha256 "$1" >/dev/null && "$3" "$1"', curl, dest, url,
                    sync_bin, openssl],
        'oslo-transfer copy (sha256)': ours + [
            'copy', url, dest, '--checksum', 'sha256:' + digest, '--json',
            '--no-progress'],
        'oslo-transfer, fsync=false': ours + [
            '--config-file', _no_fsync_conf(out),
            'copy', url, dest, '--checksum', 'sha256:' + digest, '--json',
            '--no-progress'],
    }
    print('\nloopback: %s from nginx, %d runs each'
          % (benchlib.human(size), repeat))
    runs = benchlib.alternate(tools, repeat, _prepare(dest),
                              _checker(dest, digest))
    rows = benchlib.summarize('loopback, %s' % benchlib.human(size), runs,
                              size, LIKE_CURL)
    _internal(runs)
    return rows


def capped(server, size, repeat, out, curl, aria2c, ours, segments):
    src = benchlib.random_file(os.path.join(server.docroot, 'capped.raw'),
                               size)
    digest = benchlib.sha256_of(src)
    url = server.url('capped.raw', 'slow')
    dest = os.path.join(out, 'capped.raw')
    openssl = benchlib.require('openssl')
    aria = [aria2c, '-q', '-x8', '-s8', '-k1M', '--allow-overwrite=true',
            '--auto-file-renaming=false', '-d', out, '-o', 'capped.raw', url]
    tools = {
        'curl -o': [curl, '-s', '-f', '-o', dest, url],
        'aria2c -x8 -s8 -k1M': aria,
        'aria2c -x8 ... && sync FILE': [
            'sh', '-c', '"$@" && sync "$0"', dest] + aria,
        LIKE_ARIA: [
            'sh', '-c', '"$@" && "%s" dgst -sha256 "$0" >/dev/null && '
            'sync "$0"' % openssl, dest] + aria,
        'oslo-transfer --segments %d' % segments: ours + [
            'copy', url, dest, '--checksum', 'sha256:' + digest,
            '--segments', str(segments), '--json', '--no-progress'],
        'oslo-transfer --segments %d, fsync=false' % segments: ours + [
            '--config-file', _no_fsync_conf(out),
            'copy', url, dest, '--checksum', 'sha256:' + digest,
            '--segments', str(segments), '--json', '--no-progress'],
    }
    print('\ncapped: %s through limit_rate %s per connection, %d runs each'
          % (benchlib.human(size), server.rate, repeat))
    runs = benchlib.alternate(tools, repeat, _prepare(dest),
                              _checker(dest, digest))
    rows = benchlib.summarize('limit_rate %s per connection, %s'
                              % (server.rate, benchlib.human(size)), runs,
                              size, LIKE_ARIA)
    _internal(runs)
    return rows


def _internal(runs):
    for name, rs in runs.items():
        internal = [getattr(r, 'internal', None) for r in rs]
        if all(i is not None for i in internal):
            import statistics
            print('  %s: Result.elapsed median %.3fs (process start-up and '
                  'imports are the rest)' % (name,
                                             statistics.median(internal)))


if __name__ == '__main__':
    sys.exit(main())
