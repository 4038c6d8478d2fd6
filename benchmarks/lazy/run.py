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

"""Lazy images: a boot-like trace served before the image has arrived.

::

    python benchmarks/lazy/run.py [--size 2G] [--rate 100mbit]
        [--qd 1,16] [--rows a,b,c,d,e,f] [--seed 1] [--repeat 3]
        [--no-complete] [--merge] [--keep] [--verbose]

A real nginx serves the image in a network namespace of its own, behind a
``--rate`` link shaped with ``tc tbf`` (the swarm benchmark's network,
one receiver).  The trace (:mod:`trace`: a 16 MiB head, then 400 reads in
32 regions, about 5 % of the image) is replayed through python3-libnbd at
each queue depth of ``--qd``, on these rows:

``a``  ``oslo-transfer copy``, then the trace from the local file
       (served by ``nbdkit file``): the time until the trace is served
       includes the whole copy;
``b``  ``nbdkit curl URL --filter=cache cache-on-read=true``;
``c``  qemu's curl driver with copy-on-read: ``qemu-nbd`` exports the
       ``copy-on-read`` filter over a qcow2 overlay whose raw backing file
       is the URL (``qemu-img create -f qcow2 -F raw -u -b URL``), so what
       the trace reads is copied into the overlay;
``d``  ``oslo-transfer nbd`` with ``--no-prefetch``;
``e``  ``oslo-transfer nbd`` (prefetch on);
``f``  ``oslo-transfer nbd`` with an access profile recorded by a run
       before (the measured run starts from an empty cache);
``g``  ``nbdkit torrent`` on the image's BitTorrent metadata (64 KiB
       pieces, the nginx URL as web seed, no other peer): the swarm
       reference, libtorrent's piece deadlines on the web seed;
``h``  ``oslo-transfer nbd --torrent`` on the same metadata with
       ``--peers 4`` (``p2p_min_peers``): ours through the swarm (the
       driver's lazy reader: urgent pieces from the origin at once, the
       prefetch as piece picking plus this host's share of the origin).

With ``--repeat N`` each row runs N times at each queue depth, the order
of the rows reversed every other pass (``b,d,e,f``, then ``f,e,d,b``, ...),
and the table gives the median time until the trace is served with its
minimum and maximum.  Rows that prefetch (e, f, h) wait for the complete
image in the first pass only (never with ``--no-complete``): the later
passes stop their server once the trace is served, so that a repeat costs
seconds, not the link's three minutes for the whole image.

Printed per row: the time until the trace is served, the bytes the
origin sent during the trace and in all (its tbf counter, headers
included), the read amplification (origin bytes during the trace / bytes
touched), the time until the image is complete (``-``: never), and the
peak RssAnon of the processes of the row (ours: the command and its
nbdkit).  JSON and a PNG plot go to ``benchmarks/results/lazy.*``;
``--merge`` keeps the rows of an earlier run of the same image, rate and
seed that this run did not measure (e.g. ``--rows g,h --merge``), and
for a row measured now with ``--no-complete``, the earlier row's bytes in
all and time until complete.

Needs root (network namespaces), nginx, nbdkit with its curl, torrent and
python plugins, qemu-utils with qemu-block-extra (row c) and
python3-libnbd.
"""

import argparse
import collections
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
sys.path.insert(0, HERE)
sys.path.insert(0, ROOT)

import benchlib  # noqa: E402
import trace as trace_mod  # noqa: E402

MiB = 1024 * 1024
SYSTEM_PYTHON = '/usr/bin/python3'


def _swarm():
    """The swarm benchmark's network helpers (one module, one network)."""
    return benchlib.load_script('swarm_run', 'swarm', 'run.py')


class RssSampler:
    """Peak RssAnon (KiB) of a process and its children, every 0.1 s."""

    def __init__(self, pid):
        self.pid = pid
        self.peak = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _pids(self):
        todo, seen = [self.pid], []
        while todo:
            pid = todo.pop()
            seen.append(pid)
            try:
                with open('/proc/%d/task/%d/children' % (pid, pid)) as f:
                    todo.extend(int(p) for p in f.read().split())
            except OSError:
                pass
        return seen

    def _run(self):
        while not self._stop.wait(0.1):
            for pid in self._pids():
                try:
                    with open('/proc/%d/status' % pid) as f:
                        status = f.read()
                except OSError:
                    continue
                name = status.split('\n')[0].split()[-1]
                for line in status.split('\n'):
                    if line.startswith('RssAnon:'):
                        kib = int(line.split()[1])
                        key = '%s-%d' % (name, pid)
                        self.peak[key] = max(self.peak.get(key, 0), kib)

    def stop(self) -> float:
        """Stop; the sum of the processes' peaks, in MiB."""
        self._stop.set()
        self._thread.join()
        return sum(self.peak.values()) / 1024.0


class Bench:

    def __init__(self, args, net, swarm, work):
        self.args = args
        self.net = net
        self.swarm = swarm
        self.work = work
        self.size = args.size
        self.ns = net.receiver_ns[0]
        self.verbose = ['-vv'] if args.verbose else []

    # -- set-up --------------------------------------------------------------

    def prepare(self):
        self.docroot = os.path.join(self.work, 'docroot')
        os.makedirs(self.docroot)
        path = os.path.join(self.docroot, 'image.raw')
        benchlib.random_file(path, self.size)
        self.checksum = 'sha256:' + benchlib.sha256_of(path)
        self.blockmap = os.path.join(self.work, 'image.blockmap')
        subprocess.run(benchlib.oslo_transfer_cmd() + [
            'make-blockmap', path, '-o', self.blockmap], check=True,
            stdout=subprocess.DEVNULL)
        self.url = 'http://%s/image.raw' % self.swarm.ORIGIN_IP
        self.torrent = os.path.join(self.work, 'image.torrent')
        subprocess.run(benchlib.oslo_transfer_cmd() + [
            'make-torrent', path, '--web-seed', self.url, '--piece-size',
            str(64 * 1024), '-o', self.torrent], check=True,
            stdout=subprocess.DEVNULL)
        self.trace = trace_mod.make(self.size, self.args.seed)
        self.touched = trace_mod.touched(self.trace)
        self.trace_path = os.path.join(self.work, 'trace.json')
        with open(self.trace_path, 'w') as f:
            json.dump(self.trace, f)
        bench = self.swarm.Bench(self.args, self.net, self.work)
        bench.docroot, bench.url = self.docroot, self.url
        bench.start_origin()
        self.origin = bench

    def fresh(self, row):
        d = os.path.join(self.work, 'out', row)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        return d

    def in_ns(self, argv):
        return ['ip', 'netns', 'exec', self.ns] + argv

    # -- one row -------------------------------------------------------------

    def replay(self, uri, qd) -> float:
        out = subprocess.run([SYSTEM_PYTHON, os.path.join(HERE, 'trace.py'),
                              uri, self.trace_path, str(qd)],
                             capture_output=True, text=True,
                             env=dict(os.environ, PATH='/usr/bin:/bin'))
        if out.returncode:
            raise RuntimeError('the replay failed: %s' % out.stderr)
        return json.loads(out.stdout)['seconds']

    def serve(self, argv, sock, ready_line=False):
        """Start a server of the NBD socket ``sock``; wait until ready."""
        proc = subprocess.Popen(self.in_ns(argv), stdout=subprocess.PIPE,
                                stderr=open(sock + '.log', 'wb'))
        deadline = time.monotonic() + 60
        if ready_line:
            line = proc.stdout.readline()
            if not line.startswith(b'ready'):
                raise RuntimeError('%s: %s' % (argv[0], open(
                    sock + '.log').read()[-2000:]))
        else:
            while not os.path.exists(sock):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError('%s did not start' % argv[0])
                time.sleep(0.05)
        return proc

    @staticmethod
    def stop(proc):
        proc.send_signal(signal.SIGTERM)
        proc.wait(120)

    def row_copy(self, qd):
        d = self.fresh('a-%d' % qd)
        dest = os.path.join(d, 'image.raw')
        before = self.net.origin_tx()
        start = time.monotonic()
        proc = subprocess.Popen(self.in_ns(benchlib.oslo_transfer_cmd() + [
            'copy', self.url, dest, '--checksum', self.checksum,
            '--no-progress']))
        rss = RssSampler(proc.pid)
        if proc.wait():
            raise RuntimeError('oslo-transfer copy failed')
        complete = time.monotonic() - start
        peak = rss.stop()
        sock = os.path.join(d, 'sock')
        server = self.serve(['nbdkit', '-f', '-r', '-U', sock, 'file',
                             dest], sock)
        served = complete + self.replay('nbd+unix:///?socket=' + sock, qd)
        self.stop(server)
        sent = self.net.origin_tx() - before
        return self._row('a', qd, served, sent, sent, complete, peak)

    def row_nbdkit_curl(self, qd):
        d = self.fresh('b-%d' % qd)
        sock = os.path.join(d, 'sock')
        before = self.net.origin_tx()
        server = self.serve(['nbdkit', '-f', '-r', '-U', sock,
                             '--filter=cache', 'curl', self.url,
                             'cache-on-read=true'], sock)
        rss = RssSampler(server.pid)
        start = time.monotonic()
        served = self.replay('nbd+unix:///?socket=' + sock, qd)
        during = self.net.origin_tx() - before
        del start
        self.stop(server)
        return self._row('b', qd, served, during, during, None, rss.stop())

    def row_qemu_cor(self, qd):
        d = self.fresh('c-%d' % qd)
        sock = os.path.join(d, 'sock')
        overlay = os.path.join(d, 'overlay.qcow2')
        subprocess.run(['qemu-img', 'create', '-q', '-f', 'qcow2', '-F',
                        'raw', '-u', '-b', self.url, overlay,
                        str(self.size)], check=True)
        before = self.net.origin_tx()
        server = self.serve([
            'qemu-nbd', '-k', sock, '--image-opts',
            'driver=copy-on-read,file.driver=qcow2,file.file.driver=file,'
            'file.file.filename=' + overlay], sock)
        rss = RssSampler(server.pid)
        served = self.replay('nbd+unix:///?socket=' + sock, qd)
        during = self.net.origin_tx() - before
        self.stop(server)
        return self._row('c', qd, served, during, during, None, rss.stop())

    def row_nbdkit_torrent(self, qd):
        d = self.fresh('g-%d' % qd)
        sock = os.path.join(d, 'sock')
        cache = os.path.join(d, 'cache')
        os.makedirs(cache)
        before = self.net.origin_tx()
        server = self.serve(['nbdkit', '-f', '-r', '-U', sock, 'torrent',
                             self.torrent, 'cache=' + cache], sock)
        rss = RssSampler(server.pid)
        served = self.replay('nbd+unix:///?socket=' + sock, qd)
        during = self.net.origin_tx() - before
        self.stop(server)
        return self._row('g', qd, served, during, during, None, rss.stop())

    def row_ours(self, name, qd, *options, manifest=None, until_complete=True):
        d = self.fresh('%s-%d' % (name, qd))
        dest = os.path.join(d, 'image.raw')
        sock = os.path.join(d, 'sock')
        before = self.net.origin_tx()
        manifest = manifest or ['--blockmap', self.blockmap]
        server = self.serve(benchlib.oslo_transfer_cmd() + [
            'nbd', self.url, '--cache', dest, '--socket', sock,
            '--checksum', self.checksum] + manifest + list(options) +
            self.verbose, sock, ready_line=True)
        rss = RssSampler(server.pid)
        start = time.monotonic()
        served = self.replay('nbd+unix:///?socket=' + sock, qd)
        during = self.net.origin_tx() - before
        complete = total = None
        prefetching = '--no-prefetch' not in options
        if prefetching and until_complete:
            while not os.path.exists(dest):
                time.sleep(0.2)
            complete = time.monotonic() - start
        peak = rss.stop()
        self.stop(server)
        if complete is not None or not prefetching:
            total = self.net.origin_tx() - before
        return self._row(name, qd, served, during, total, complete, peak)

    def record_profile(self, qd):
        profile = os.path.join(self.work, 'boot-%d.profile' % qd)
        d = self.fresh('record-%d' % qd)
        sock = os.path.join(d, 'sock')
        server = self.serve(benchlib.oslo_transfer_cmd() + [
            'nbd', self.url, '--cache', os.path.join(d, 'image.raw'),
            '--socket', sock, '--blockmap', self.blockmap, '--profile',
            profile, '--no-prefetch'], sock, ready_line=True)
        self.replay('nbd+unix:///?socket=' + sock, qd)
        self.stop(server)               # the profile is written on close
        return profile

    def _row(self, name, qd, served, during, total, complete, rss):
        row = {'row': name, 'qd': qd, 'served_s': served,
               'origin_during_trace': during, 'origin_total': total,
               'amplification': during / self.touched,
               'complete_s': complete, 'peak_rss_anon_mib': rss}
        print('  %s qd=%-2d served %.2fs, origin %s during the trace '
              '(x%.2f of touched), %s in all, complete %s, RssAnon %.0f MiB'
              % (name, qd, served, benchlib.human(during),
                 row['amplification'],
                 '-' if total is None else benchlib.human(total),
                 '-' if complete is None else '%.1fs' % complete, rss),
              flush=True)
        return row

    def one(self, name, qd, complete):
        """One run of row ``name``; ``complete``: wait for the image."""
        # (a row's 2 GiB copy goes before the next row's starts)
        shutil.rmtree(os.path.join(self.work, 'out'), ignore_errors=True)
        if name == 'a':
            return self.row_copy(qd)
        if name == 'b':
            return self.row_nbdkit_curl(qd)
        if name == 'c':
            return self.row_qemu_cor(qd)
        if name == 'd':
            return self.row_ours('d', qd, '--no-prefetch')
        if name == 'e':
            return self.row_ours('e', qd, until_complete=complete)
        if name == 'f':
            profile = self.record_profile(qd)
            return self.row_ours('f', qd, '--profile', profile,
                                 until_complete=complete)
        if name == 'g':
            return self.row_nbdkit_torrent(qd)
        if name == 'h':
            return self.row_ours('h', qd, '--peers', '4',
                                 manifest=['--torrent', self.torrent],
                                 until_complete=complete)
        raise ValueError('no row %r' % name)

    def run(self):
        """Every row, ``--repeat`` times per queue depth, alternating."""
        runs = collections.OrderedDict()
        for qd in self.args.qd:
            for rep in range(self.args.repeat):
                order = self.args.rows if rep % 2 == 0 else \
                    list(reversed(self.args.rows))
                for name in order:
                    print('  run %d:' % (rep + 1), end='')
                    row = self.one(name, qd, complete=(
                        rep == 0 and not self.args.no_complete))
                    runs.setdefault((name, qd), []).append(row)
        return [summarize(rs) for rs in runs.values()]


def summarize(runs) -> dict:
    """One row of the table from the runs of one row at one queue depth.

    Medians of the times and bytes of the trace (with the minimum and
    maximum time), the origin's bytes in all and the time until complete
    from the run that waited for the image, the highest peak RssAnon.
    """
    served = [r['served_s'] for r in runs]
    during = [r['origin_during_trace'] for r in runs]
    whole = [r for r in runs if r['origin_total'] is not None]
    return {'row': runs[0]['row'], 'qd': runs[0]['qd'],
            'runs': len(runs),
            'served_s': statistics.median(served),
            'served_min_s': min(served), 'served_max_s': max(served),
            'served_runs_s': served,
            'origin_during_trace': statistics.median(during),
            'amplification': statistics.median(
                r['amplification'] for r in runs),
            'origin_total': whole[0]['origin_total'] if whole else None,
            'complete_s': whole[0]['complete_s'] if whole else None,
            'peak_rss_anon_mib': max(r['peak_rss_anon_mib'] for r in runs),
            'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}


def report(rows, size, touched, rate_bps):
    bound = touched / rate_bps
    print('\nimage %s, bytes touched %s, bound (touched / link) %.2fs'
          % (benchlib.human(size), benchlib.human(touched), bound))
    print('%-4s %-3s %4s %9s %15s %8s %12s %6s %12s %9s %9s' % (
        'row', 'qd', 'runs', 'served', '(min-max)', 'x bound',
        'origin/trace', 'ampl', 'origin/all', 'complete', 'RssAnon'))
    for r in rows:
        print('%-4s %-3d %4d %8.2fs %15s %8.2f %12s %6.2f %12s %9s '
              '%6.0fMiB' % (
                  r['row'], r['qd'], r.get('runs', 1), r['served_s'],
                  '(%.2f-%.2f)' % (r.get('served_min_s', r['served_s']),
                                   r.get('served_max_s', r['served_s'])),
                  r['served_s'] / bound,
                  benchlib.human(r['origin_during_trace']),
                  r['amplification'],
                  '-' if r['origin_total'] is None
                  else benchlib.human(r['origin_total']),
                  '-' if r['complete_s'] is None
                  else '%.1fs' % r['complete_s'],
                  r['peak_rss_anon_mib']))


def _merged(rows, meta, path):
    """``rows`` plus the rows of ``path`` (same set-up) not measured now.

    A row measured now that did not wait for the complete image
    (``--no-complete``) keeps the earlier row's origin bytes in all and
    time until complete, with the date they were measured.
    """
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError):
        return rows
    if any(old.get('meta', {}).get(k) != meta[k]
           for k in ('size', 'rate', 'touched', 'seed')):
        print('%s: another set-up; not merged' % path)
        return rows
    before = {(r['row'], r['qd']): r for r in old['rows']}
    for r in rows:
        prev = before.pop((r['row'], r['qd']), None)
        if prev is not None and r['complete_s'] is None and \
                prev.get('complete_s') is not None:
            r['complete_s'] = prev['complete_s']
            r['origin_total'] = prev['origin_total']
            r['complete_date'] = prev.get('complete_date',
                                          prev.get('date'))
    return sorted(list(before.values()) + rows,
                  key=lambda r: (r['qd'], r['row']))


def save(rows, meta, merge=False):
    os.makedirs(benchlib.RESULTS, exist_ok=True)
    path = os.path.join(benchlib.RESULTS, 'lazy.json')
    if merge:
        rows = _merged(rows, meta, path)
    with open(path, 'w') as f:
        json.dump({'meta': meta, 'rows': rows}, f, indent=2)
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('matplotlib is not installed: no plot')
        return
    qds = sorted({r['qd'] for r in rows})
    fig, axes = plt.subplots(1, len(qds), figsize=(6 * len(qds), 4.5),
                             squeeze=False)
    for ax, qd in zip(axes[0], qds):
        sel = [r for r in rows if r['qd'] == qd]
        ax.bar([r['row'] for r in sel], [r['served_s'] for r in sel],
               yerr=[[r['served_s'] - r.get('served_min_s', r['served_s'])
                      for r in sel],
                     [r.get('served_max_s', r['served_s']) - r['served_s']
                      for r in sel]],
               color=['#c0392b' if r['row'] in 'defh' else '#7f8c8d'
                      for r in sel])
        for i, r in enumerate(sel):
            ax.text(i, r['served_s'], '%.2fs\nx%.2f' % (
                r['served_s'], r['amplification']), ha='center',
                va='bottom', fontsize=8)
        ax.set_yscale('log')
        ax.set_title('trace served, queue depth %d (median, min-max)'
                     % qd, fontsize=10)
        ax.set_ylabel('seconds (log), lower is better')
    fig.tight_layout()
    path = os.path.join(benchlib.RESULTS, 'lazy.png')
    fig.savefig(path, dpi=110)
    print('plot: %s' % path)


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', type=benchlib.parse_size, default='2G')
    p.add_argument('--rate', default='100mbit')
    p.add_argument('--qd', default='1,16',
                   type=lambda s: [int(x) for x in s.split(',')])
    p.add_argument('--rows', default='a,b,c,d,e,f,g,h',
                   type=lambda s: s.split(','))
    p.add_argument('--merge', action='store_true',
                   help='keep the rows of the last run (same set-up) that '
                        'this run does not measure')
    p.add_argument('--seed', type=int, default=1)
    p.add_argument('--repeat', type=int, default=1,
                   help='runs of each row per queue depth, the order of '
                        'the rows alternating (medians, min-max)')
    p.add_argument('--no-complete', action='store_true',
                   help='rows that prefetch stop once the trace is served '
                        '(they wait for the complete image in the first '
                        'run otherwise)')
    p.add_argument('--keep', action='store_true',
                   help='keep the work directory (the servers\' logs)')
    p.add_argument('--verbose', '-v', action='store_true',
                   help='run our rows with -vv (debug logs, with --keep)')
    args = p.parse_args()
    swarm = _swarm()
    prefix = 'otlz%d' % (os.getpid() % 10000)
    swarm.check_privileges(prefix)
    for tool in ('nginx', 'nbdkit'):
        benchlib.require(tool)
    work = tempfile.mkdtemp(prefix='oslo-lazy-bench-')
    net = swarm.Network(prefix, 1, args.rate)
    bench = None
    try:
        net.build()
        bench = Bench(args, net, swarm, work)
        bench.prepare()
        print('image %s on %s at %s; trace of %d reads, %s touched'
              % (benchlib.human(args.size), bench.url, args.rate,
                 len(bench.trace), benchlib.human(bench.touched)),
              flush=True)
        rows = bench.run()
        rate_bps = swarm._rate_bytes(args.rate)
        report(rows, args.size, bench.touched, rate_bps)
        save(rows, {'size': args.size, 'rate': args.rate,
                    'touched': bench.touched, 'seed': args.seed},
             merge=args.merge)
    finally:
        if bench is not None and getattr(bench, 'origin', None):
            bench.origin.stop()
        net.close()
        if args.keep:
            print('kept %s' % work)
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == '__main__':
    main()
