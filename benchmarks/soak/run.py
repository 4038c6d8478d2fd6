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

"""Kill-and-resume soak: SIGKILL a copy again and again, restart servers.

For each protocol (http, ftp, sftp, nfs, iscsi, file, bittorrent) one
``oslo-transfer copy`` of ``--size`` bytes (default 256 MiB) runs as a
subprocess against a real server on 127.0.0.1, started with the functional
suites' launchers (``tests/functional/soak/protocols.py``):

* it is killed with SIGKILL at ``--kills`` seeded random points (default
  20) and started again after each;
* the server is restarted ``--restarts`` times (default 5) while the copy
  runs; ``file`` has no server, so its source is replaced instead (in
  place, from the end backwards, and by a rename, by turns): the copy must
  then start again or fail, never join two versions.

Row ``lazy`` (``tests/functional/soak/lazy.py``): ``oslo-transfer nbd``
over nginx with a blockmap, killed with SIGKILL (the command and its
nbdkit) ``--kills`` times while a python3-libnbd client reads random
ranges, then restarted: the client reads the same ranges again (they must
be the source's bytes), the blocks the origin sent again are compared with
the present-map's bound (the blocks sent in the last second before the
kill), and once the prefetch completed the cache, it must be the source
with nothing beside it.  Its size is ``--lazy-size`` (default 64 MiB).
The row fails if no kill cut a read in flight (a read that started before
the kill and failed).

Reported per protocol (``tests/functional/soak/harness.py`` measures):
whether the final sha256 is right, the bytes each kill cost (correct bytes
of ``DEST.part`` that the control file did not record: the next run
fetches them again) against DESIGN.md's bound (``checkpoint_bytes`` plus
one chunk per segment in flight), held bytes that were wrong (the journal
must never claim a byte it does not have), runs that failed by themselves,
the bytes the server logged as sent (nginx, vsftpd) and anything left
beside ``DEST`` after success (there must be nothing).  Results: a table
on stdout, ``benchmarks/results/soak.json`` and ``soak.png`` (matplotlib).

Usage::

    python benchmarks/soak/run.py [--protocols http,ftp,...] [--size 256M]
        [--kills 20] [--restarts 5] [--seed 1] [--workdir DIR]
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

from benchmarks import benchlib  # noqa: E402
from tests.functional.soak import harness  # noqa: E402
from tests.functional.soak import lazy  # noqa: E402
from tests.functional.soak import protocols  # noqa: E402

MiB = benchlib.MiB
ALL = ('http', 'ftp', 'sftp', 'nfs', 'iscsi', 'file', 'bittorrent', 'lazy')


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--protocols', default=','.join(ALL),
                   help='comma-separated, from: %s' % ', '.join(ALL))
    p.add_argument('--size', default='256M', help='bytes to copy')
    p.add_argument('--lazy-size', default='64M',
                   help='bytes of the lazy image (row lazy)')
    p.add_argument('--kills', type=int, default=20)
    p.add_argument('--restarts', type=int, default=5)
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--workdir', default=None,
                   help='where servers, sources and copies live (default: '
                        'a temp dir under /var/tmp, removed afterwards)')
    p.add_argument('--set', action='append', default=[],
                   metavar='OPTION=VALUE',
                   help='an [oslo_transfer] option of the copies, e.g. '
                        'checkpoint_bytes=8388608')
    args = p.parse_args(argv)
    names = [n.strip() for n in args.protocols.split(',') if n.strip()]
    unknown = sorted(set(names) - set(ALL))
    if unknown:
        p.error('unknown protocol(s): %s' % ', '.join(unknown))
    size = benchlib.parse_size(args.size)
    options = dict(item.split('=', 1) for item in args.set)
    own = args.workdir is None
    work = args.workdir or tempfile.mkdtemp(prefix='oslo-transfer-soak-',
                                            dir='/var/tmp')
    reports, rows, lazy_rows = [], [], []
    try:
        for i, name in enumerate(names):
            if name == 'lazy':
                lazy_rows = [soak_lazy(os.path.join(work, name), args,
                                       seed=args.seed + i)]
            else:
                reports.append(soak_one(name, os.path.join(work, name),
                                        size, args, options,
                                        seed=args.seed + i))
            # After each protocol: a long run cut short keeps its rows.
            rows = table(reports, size, options) + lazy_rows
            save(rows, args, size)
    finally:
        if own:
            shutil.rmtree(work, ignore_errors=True)
    bad = [r['protocol'] for r in rows if not r['ok']]
    if bad:
        print('\nFAILED: %s' % ', '.join(bad))
    return 1 if bad else 0


def soak_one(name, work, size, args, options, seed):
    print('\n%s: %s, %d kills, %d %s (seed %d)' % (
        name, benchlib.human(size), args.kills, args.restarts,
        'source replacements' if name == 'file' else 'server restarts',
        seed), flush=True)
    proto = protocols.PROTOCOLS[name](work, size, seed)
    events = harness.schedule(size, args.kills, args.restarts, seed)
    with proto:
        soak = harness.Soak(proto, work, options=options,
                            log=lambda msg: print(msg, flush=True))
        report = soak.run(events)
    report['segments'] = proto.segments(soak.options)
    report['bound_per_kill'] = proto.bound_per_kill(soak.options)
    report['options'] = {k: v for k, v in soak.options.items()
                         if k != 'state_path'}
    return report


def soak_lazy(work, args, seed):
    """The ``lazy`` row: its own table line (a read, not a copy)."""
    size = benchlib.parse_size(args.lazy_size)
    print('\nlazy: %s image, %d kills of oslo-transfer nbd while a client '
          'reads (seed %d)' % (benchlib.human(size), args.kills, seed),
          flush=True)
    r = lazy.LazySoak(work, size, seed, args.kills,
                      log=lambda msg: print(msg, flush=True)).run()
    cut = sum(k['reads_cut'] for k in r['kills'])
    ok = (r['digest_ok'] and not r['reads_wrong'] and not r['leftovers']
          and not r['over_bound'] and cut > 0)
    print('\n%-10s %-6s %5s %9s %11s %11s %11s %9s %9s' % (
        'protocol', 'digest', 'kills', 'reads cut', 'reads wrong',
        'lost max', 'over bound', 'served', 'leftover'))
    print('%-10s %-6s %5d %9d %11d %7.2f MiB %11d %5.0f MiB %9s' % (
        'lazy', 'ok' if r['digest_ok'] else 'WRONG', len(r['kills']), cut,
        r['reads_wrong'], r['lost_max'] / MiB, len(r['over_bound']),
        r['served'] / MiB, ','.join(r['leftovers']) or 'none'))
    print('(lost: 64 KiB blocks the origin sent again after a kill; the '
          'bound of each kill is the blocks it sent in the last %.2f s '
          'before it)' % lazy.WINDOW)
    return {'protocol': 'lazy', 'digest_ok': r['digest_ok'], 'size': size,
            'kills': len(r['kills']), 'reads_wrong': r['reads_wrong'],
            'reads_cut': cut,
            'kills_that_cut': sum(1 for k in r['kills'] if k['reads_cut']),
            'lost_total': r['lost_total'], 'lost_max': r['lost_max'],
            'lost_per_kill': [k['lost'] for k in r['kills']],
            'bound_per_kill': max([k['bound'] for k in r['kills']] or [0]),
            'bounds': [k['bound'] for k in r['kills']],
            'over_bound': r['over_bound'], 'served': r['served'],
            'leftovers': r['leftovers'], 'elapsed': round(r['elapsed'], 1),
            'ok': ok}


def table(reports, size, options):
    rows = []
    print('\n%-10s %-6s %5s %5s %4s %5s %11s %11s %10s %11s %9s %9s' % (
        'protocol', 'digest', 'kills', 'rstrt', 'runs', 'fails',
        'lost total', 'lost max', 'bound/kill', 'kills*bound',
        'served', 'leftover'))
    for r in reports:
        kills = len(r['kills'])
        bound = r['bound_per_kill']
        ok = (r['digest_ok'] and r['result_digest_ok'] and
              not r['leftovers'] and not r['held_wrong'] and
              r['lost_max'] <= bound and not r['failures'] and
              not any('error' in x for x in r['restarts']))
        row = {
            'protocol': r['protocol'], 'digest_ok': r['digest_ok'],
            'latest_version': r['latest'], 'kills': kills,
            'unfired': r['unfired'], 'restarts': len(r['restarts']),
            'restart_seconds': [round(x.get('seconds', 0), 2)
                                for x in r['restarts']],
            'runs': r['runs'], 'failed_runs': len(r['failures']),
            'failures': r['failures'],
            'lost_total': r['lost_total'], 'lost_max': r['lost_max'],
            'lost_per_kill': [k['lost'] for k in r['kills']],
            'held_per_kill': [k['held'] for k in r['kills']],
            'held_wrong': r['held_wrong'], 'segments': r['segments'],
            'bound_per_kill': bound, 'bound_total': kills * bound,
            'served': r['served'],
            'refetched_served': (r['served'] - size
                                 if r['served'] is not None else None),
            'last_run': {k: r['result'].get(k) for k in (
                'bytes_transferred', 'bytes_resumed', 'driver')},
            'leftovers': r['leftovers'], 'elapsed': round(r['elapsed'], 1),
            'ok': ok}
        rows.append(row)
        print('%-10s %-6s %5d %5d %4d %5d %7.1f MiB %7.1f MiB %6.1f MiB '
              '%7.1f MiB %9s %9s' % (
                  row['protocol'], 'ok' if r['digest_ok'] else 'WRONG',
                  kills, row['restarts'], row['runs'], row['failed_runs'],
                  row['lost_total'] / MiB, row['lost_max'] / MiB,
                  bound / MiB, row['bound_total'] / MiB,
                  '-' if r['served'] is None else
                  '%.0f MiB' % (r['served'] / MiB),
                  ','.join(r['leftovers']) or 'none'))
    print('(lost: correct bytes of DEST.part that the control file did not '
          'record at a kill, fetched again by the next run; bound/kill: '
          'checkpoint_bytes + segments x chunk_size, DESIGN.md; served: '
          'body bytes the server logged for the source, %s each, requests '
          'cut by a restart not logged)' % benchlib.human(size))
    return rows


def save(rows, args, size):
    os.makedirs(benchlib.RESULTS, exist_ok=True)
    meta = {'command': 'python benchmarks/soak/run.py ' + ' '.join(
        sys.argv[1:] if len(sys.argv) > 1 else []),
        'date': datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec='seconds'),
        'machine': '%s, %d CPUs, Python %s' % (
            platform.platform(), os.cpu_count() or 0,
            platform.python_version()),
        'size': size, 'kills': args.kills, 'restarts': args.restarts,
        'seed': args.seed}
    path = os.path.join(benchlib.RESULTS, 'soak.json')
    with open(path, 'w') as f:
        json.dump({'meta': meta, 'rows': rows}, f, indent=2)
    print('results: %s' % path)
    plot(rows, meta)


def plot(rows, meta):
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('matplotlib is not installed: no plot (pip install '
              'matplotlib)')
        return
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for i, row in enumerate(rows):
        lost = [n / MiB for n in row['lost_per_kill']]
        ax.scatter([i] * len(lost), lost, s=14, alpha=0.6,
                   color='#c0392b', label='one kill' if i == 0 else None)
        ax.hlines(row['bound_per_kill'] / MiB, i - 0.35, i + 0.35,
                  color='#2c3e50',
                  label='bound per kill' if i == 0 else None)
        ax.text(i, max(lost + [row['bound_per_kill'] / MiB]) + 0.8,
                '%s\n%d kills' % ('digest ok' if row['digest_ok']
                                  else 'WRONG', row['kills']),
                ha='center', fontsize=7)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([r['protocol'] for r in rows])
    ax.set_ylabel('MiB fetched again after one SIGKILL')
    ax.set_title('Kill-and-resume soak: %s, %d kills, %d restarts per '
                 'protocol' % (benchlib.human(meta['size']), meta['kills'],
                               meta['restarts']), fontsize=10)
    ax.margins(y=0.2)
    ax.legend(fontsize=8, loc='upper left')
    fig.tight_layout()
    path = os.path.join(benchlib.RESULTS, 'soak.png')
    fig.savefig(path, dpi=110)
    print('plot: %s' % path)


if __name__ == '__main__':
    sys.exit(main())
