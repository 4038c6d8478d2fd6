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

"""Flow control at peak load: FIFO against classes, with and without
admission, on a real origin behind a shaped link.

::

    python benchmarks/flow/run.py [--peak 180] [--seeds 5] [--scale 16]
        [--rate 100mbit] [--limit 0] [--beside-repeat 3]
        [--beside-modes solo,classes,unpaced,fifo]
    python benchmarks/flow/run.py --seeds 0 --json /tmp/beside.json \
        --plot '' --beside-modes solo,classes,unpaced     # the row alone
    python benchmarks/flow/run.py --report benchmarks/results/flow.json
    python benchmarks/publish.py flow

Builds, and always tears down, two network namespaces joined by a veth
pair: the origin (a real nginx, docroot in tmpfs) and the client, the
origin's side shaped to ``--rate`` with ``tc tbf``.  Every run is a fresh
``python3 run.py --worker`` inside the client namespace: one ``Transfer``,
every copy through ``submit()``.  No ``origin_rate_limit`` by default
(``--limit`` sets one as a fraction of the link): the link is the
bottleneck, and the pacing of lower classes is what serves the classes.

First the interactive-beside-six-background row: the time of one 32 MiB
interactive copy while six 256 MiB background copies run
(``--beside-bg-mib``), against its solo time, with classes (pacing on),
classes without pacing
(``unpaced``) and fifo, alternated, ``--beside-repeat`` times
(``--beside-modes`` picks the rows, among them ``autobuf``: classes and
pacing with every class's sockets autotuned, no receive buffer of the
background class; ``--seeds 0`` runs only this row).
Diagnostics on stderr: ``FLOW_DEBUG=1`` (bytes per class each second,
pacing decisions; ``FLOW_DEBUG=2`` adds every request) and ``FLOW_SS=1``
(each client socket's unread bytes and receive buffer, from ``ss``,
every 0.5 s).

Then the peak (the issue's workload, seeded): a compressed peak of
``--peak`` seconds with Poisson arrivals in three classes at an offered
load rho = 1.2 of the link, a fifth of the bytes interactive and two
fifths each normal and background (our split: the seed paper gives none);
sizes follow the paper's laws with our parameters, divided by ``--scale``
so that a peak of minutes holds hundreds of transfers: interactive
chi-squared (4 degrees of freedom) with a mean of 32 MiB, normal Weibull
(shape 1.5) with a mean of 128 MiB, background Pareto (alpha 1.5, x_m
64 MiB) capped at 2 GiB; sizes are rounded up to 256 KiB (files are made
once per size).  Each transfer's deadline is max(3 x solo, solo + 2 s),
its solo time measured (latency + size / solo rate); refusals are not
retried.  Modes, replayed on the same workload, in alternating order per
seed: ``fifo`` (``[oslo_transfer] scheduler = fifo``: one class, first
come first served), ``classes`` (classes, weights and pacing,
``admission = false``) and ``admission`` (classes and admission).

Reported per class and overall, as means over the seeds with 95 %
confidence intervals (Student t): denials (a refusal, or a finish after
the deadline), p50/p95 completion time, the origin's utilisation (bytes
its shaped interface sent over rate x makespan).  A seed counts only if
FIFO has at least 30 denials.  The JSON (``--json``) is rewritten after
every run, so that a run cut short keeps the seeds it finished.
"""

import argparse
import json
import math
import os
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.abspath(__file__)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
sys.path.insert(0, ROOT)

import benchlib  # noqa: E402

MiB = 1024 * 1024
CLASSES = ('interactive', 'normal', 'background')
#: FLOW_NET=N runs a second copy beside a first (its own namespaces)
_NET = int(os.environ.get('FLOW_NET', '78'))
ORIGIN_IP = '10.%d.0.1' % _NET
CLIENT_IP = '10.%d.0.2' % _NET
NS_O, NS_C = 'oflow%d-o' % _NET, 'oflow%d-c' % _NET
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447,
       7: 2.365, 8: 2.306, 9: 2.262}


def sh(*argv, check=True):
    p = subprocess.run([str(a) for a in argv], capture_output=True,
                       text=True)
    if check and p.returncode:
        raise RuntimeError('%s: %s' % (' '.join(map(str, argv)),
                                       p.stderr.strip()))
    return p


def rate_bytes(text):
    m = re.fullmatch(r'(\d+(?:\.\d+)?)mbit', text)
    if not m:
        raise SystemExit('--rate like 100mbit')
    return float(m.group(1)) * 1e6 / 8


# -- the workload ------------------------------------------------------------

def sizes_for(cls, rng, scale):
    if cls == 'interactive':          # chi-squared, k = 4, mean 32 MiB
        x = rng.gammavariate(2.0, 2.0) / 4.0 * 32 * MiB
    elif cls == 'normal':             # Weibull, k = 1.5, mean 128 MiB
        lam = 128 * MiB / math.gamma(1 + 1 / 1.5)
        x = rng.weibullvariate(lam, 1.5)
    else:                             # Pareto, alpha 1.5, x_m 64 MiB
        x = min(64 * MiB * rng.paretovariate(1.5), 2048 * MiB)
    q = 256 * 1024
    return max(q, int(math.ceil(x / scale / q)) * q)


MEANS = {'interactive': 32 * MiB, 'normal': 128 * MiB,
         'background': 3 * 64 * MiB}        # Pareto mean a x_m / (a - 1)
SHARES = {'interactive': 0.2, 'normal': 0.4, 'background': 0.4}


def workload(seed, peak, scale, link, rho=1.2):
    rng = random.Random(seed)
    items = []
    for cls in CLASSES:
        lam = rho * link * SHARES[cls] / (MEANS[cls] / scale)
        t = rng.expovariate(lam)
        while t < peak:
            items.append({'cls': cls, 'at': t,
                          'size': sizes_for(cls, rng, scale)})
            t += rng.expovariate(lam)
    items.sort(key=lambda i: i['at'])
    return items


# -- the worker (inside the client namespace) -------------------------------

def _transfer(mode, limit, workers=16):
    from oslo_config import cfg
    import oslo_transfer
    from oslo_transfer import opts
    conf = cfg.ConfigOpts()
    conf([], project='oslo_transfer', default_config_files=[],
         default_config_dirs=[])
    opts.register_opts(conf)
    for k, v in (('origin_rate_limit', int(limit)),
                 ('executor_workers', workers),
                 ('scheduler', 'fifo' if mode == 'fifo' else 'classes'),
                 ('admission', mode == 'admission')):
        conf.set_override(k, v, group='oslo_transfer')
    t = oslo_transfer.Transfer(conf, drivers=['http'])
    t.scheduler.pacing = mode != 'unpaced'
    if mode == 'autobuf':
        # classes and pacing, the lower classes' sockets autotuned
        import dataclasses
        t.scheduler.policies = {
            c: dataclasses.replace(p, receive_buffer=None)
            for c, p in t.scheduler.policies.items()}
    return t


def _url(size):
    return 'http://%s/f-%d' % (ORIGIN_IP, size)


def worker_replay(job):
    from oslo_transfer import exceptions
    from oslo_transfer import Hints
    out = tempfile.mkdtemp(dir=job['dest'])
    t = _transfer(job['mode'], job['limit'])
    records = []
    lock = threading.Lock()

    def wait(i, item, h, at):
        rec = dict(item)
        try:
            h.result()
            rec['outcome'] = 'done'
        except exceptions.DeadlineUnreachable as exc:
            rec['outcome'] = 'refused'
            rec['why'] = str(exc)
        except Exception as exc:  # noqa: reported
            rec['outcome'] = 'error: %s' % exc
        rec['took'] = time.monotonic() - at
        try:
            os.unlink(os.path.join(out, 'd%d' % i))
        except OSError:
            pass
        with lock:
            records.append(rec)

    threads = []
    t0 = time.monotonic()
    for i, item in enumerate(job['items']):
        delay = t0 + item['at'] - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        at = time.monotonic()
        h = t.submit(_url(item['size']), os.path.join(out, 'd%d' % i),
                     hints=Hints(priority=item['cls'],
                                 deadline=item['deadline']))
        th = threading.Thread(target=wait, args=(i, item, h, at))
        th.start()
        threads.append(th)
    for th in threads:
        th.join()
    makespan = time.monotonic() - t0
    t.close()
    shutil.rmtree(out, ignore_errors=True)
    return {'records': records, 'makespan': makespan}


def worker_solo(job):
    out = tempfile.mkdtemp(dir=job['dest'])
    t = _transfer('classes', 0)
    times = {}
    for size in job['sizes']:
        best = None
        for _ in range(2):
            d = os.path.join(out, 'solo')
            t0 = time.monotonic()
            t.copy(_url(size), d, if_exists='replace')
            took = time.monotonic() - t0
            best = took if best is None else min(best, took)
        times[size] = best
    t.close()
    shutil.rmtree(out, ignore_errors=True)
    return times


def worker_beside(job):
    from oslo_transfer import Hints
    out = tempfile.mkdtemp(dir=job['dest'])
    t = _transfer(job['mode'], job['limit'])
    bg = [t.submit(_url(job['bg']), os.path.join(out, 'bg%d' % i),
                   hints=Hints(priority='background')) for i in range(6)]
    time.sleep(2.0)
    t0 = time.monotonic()
    stop = threading.Event()

    def watch():
        while not stop.wait(1.0):
            st = t.stats()
            print('%.1f %s %s' % (time.monotonic() - t0, {
                c: (v['bytes'] // MiB, v['active'])
                for c, v in st['classes'].items()}, st['origins']),
                file=sys.stderr)

    def sockets():
        # FLOW_SS=1: what the client's sockets hold (Recv-Q, rcvbuf)
        while not stop.wait(0.5):
            ss = subprocess.run(['ss', '-tmnH', 'state', 'established'],
                                capture_output=True, text=True).stdout
            rows = re.findall(r'^(\d+)\s+\d+\s+\S+\s+\S+\s*\n'
                              r'\s*skmem:\(r\d+,rb(\d+)', ss, re.M)
            held = ' '.join('%d/%d' % (int(q) // 1024, int(rb) // 1024)
                            for q, rb in rows)
            print('%.1f ss Recv-Q/rcvbuf KiB: %s'
                  % (time.monotonic() - t0, held), file=sys.stderr)

    if os.environ.get('FLOW_DEBUG'):
        import logging
        logging.warning('the interactive copy starts')
        threading.Thread(target=watch, daemon=True).start()
    if os.environ.get('FLOW_SS'):
        threading.Thread(target=sockets, daemon=True).start()
    t.copy(_url(job['size']), os.path.join(out, 'i'),
           hints=Hints(priority='interactive'))
    took = time.monotonic() - t0
    stop.set()
    running = sum(not h.done() for h in bg)
    for h in bg:
        h.cancel()
    for h in bg:
        try:
            h.result()
        except Exception:  # noqa: cancelled
            pass
    t.close()
    shutil.rmtree(out, ignore_errors=True)
    return {'took': took, 'running': running}


def worker(kind):
    job = json.load(sys.stdin)
    if os.environ.get('FLOW_DEBUG'):
        import logging
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                            format='%(relativeCreated)d %(threadName)s '
                                   '%(message)s')
        logging.getLogger('oslo_transfer.engine.throttle').setLevel(
            logging.INFO)
        if os.environ['FLOW_DEBUG'] == '2':
            for name in ('oslo_transfer', 'urllib3',
                         'oslo_transfer.engine.throttle'):
                logging.getLogger(name).setLevel(logging.DEBUG)
    fn = {'replay': worker_replay, 'solo': worker_solo,
          'beside': worker_beside}[kind]
    json.dump(fn(job), sys.stdout)


# -- the outer process --------------------------------------------------------

class Net:
    def __init__(self, rate):
        self.rate = rate
        self.made = []

    def build(self):
        for ns in (NS_O, NS_C):
            sh('ip', 'netns', 'add', ns)
            self.made.append(ns)
            sh('ip', '-n', ns, 'link', 'set', 'lo', 'up')
        sh('ip', 'link', 'add', 'eth0', 'netns', NS_O, 'type', 'veth',
           'peer', 'name', 'eth0', 'netns', NS_C)
        for ns, ip in ((NS_O, ORIGIN_IP), (NS_C, CLIENT_IP)):
            sh('ip', '-n', ns, 'addr', 'add', ip + '/24', 'dev', 'eth0')
            sh('ip', '-n', ns, 'link', 'set', 'eth0', 'up')
        sh('tc', '-n', NS_O, 'qdisc', 'add', 'dev', 'eth0', 'root', 'tbf',
           'rate', self.rate, 'burst', '256kb', 'latency', '50ms')

    def sent(self):
        out = sh('tc', '-n', NS_O, '-s', 'qdisc', 'show', 'dev',
                 'eth0').stdout
        return int(re.search(r'Sent (\d+) bytes', out).group(1))

    def close(self):
        for ns in self.made:
            sh('ip', 'netns', 'del', ns, check=False)


def run_worker(kind, job):
    p = subprocess.run(['ip', 'netns', 'exec', NS_C, sys.executable, HERE,
                        '--worker', kind], input=json.dumps(job),
                       capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT))
    if p.returncode:
        raise RuntimeError('worker %s failed: %s' % (kind, p.stderr[-2000:]))
    if os.environ.get('FLOW_DEBUG') or os.environ.get('FLOW_SS'):
        sys.stderr.write(p.stderr)
    return json.loads(p.stdout)


def make_file(docroot, size, seed=0):
    path = os.path.join(docroot, 'f-%d' % size)
    if not os.path.exists(path):
        block = random.Random(size).randbytes(MiB)
        with open(path, 'wb') as f:
            left = size
            while left:
                n = min(left, MiB)
                f.write(block[:n])
                left -= n
    return path


def ci(values):
    """(mean, half-width of the 95 % interval)."""
    if len(values) < 2:
        return (values[0] if values else float('nan')), float('nan')
    m = statistics.mean(values)
    return m, T95.get(len(values) - 1, 1.96) * statistics.stdev(
        values) / math.sqrt(len(values))


def pct(values, q):
    if not values:
        return float('nan')
    v = sorted(values)
    return v[min(len(v) - 1, int(round(q * (len(v) - 1))))]


def summarize(run, rate):
    out = {}
    recs = run['records']
    for cls in CLASSES + ('all',):
        mine = [r for r in recs if cls == 'all' or r['cls'] == cls]
        denied = sum(1 for r in mine if r['outcome'] == 'refused' or (
            r['outcome'] == 'done' and r['took'] > r['deadline']))
        done = [r['took'] for r in mine if r['outcome'] == 'done']
        out[cls] = {'n': len(mine), 'denied': denied,
                    'refused': sum(r['outcome'] == 'refused' for r in mine),
                    'errors': sum(r['outcome'].startswith('error')
                                  for r in mine),
                    'p50': pct(done, 0.5), 'p95': pct(done, 0.95)}
    out['util'] = run['sent'] / (rate * run['makespan'])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--worker')
    ap.add_argument('--peak', type=float, default=180.0)
    ap.add_argument('--seeds', type=int, default=5)
    ap.add_argument('--scale', type=float, default=16.0)
    ap.add_argument('--rate', default='100mbit')
    ap.add_argument('--limit', type=float, default=0.0,
                    help='origin_rate_limit as a fraction of the link '
                         '(default none: the link is the bottleneck)')
    ap.add_argument('--beside-repeat', type=int, default=3)
    ap.add_argument('--beside-bg-mib', type=int, default=256,
                    help='size of each background copy of the beside row '
                         '(below segment_threshold, 64 MiB: one stream '
                         'each)')
    ap.add_argument('--beside-modes', default='solo,classes,unpaced,fifo',
                    help='the rows of the beside run (--seeds 0 runs '
                         'only them)')
    ap.add_argument('--plot', default=os.path.join(
        ROOT, 'benchmarks', 'results', 'flow.png'))
    ap.add_argument('--json', default=os.path.join(
        ROOT, 'benchmarks', 'results', 'flow.json'))
    ap.add_argument('--report', metavar='JSON',
                    help='print the report (and plot) of a saved run')
    ap.add_argument('--modes', default='fifo,classes,admission')
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker)
    if args.report:
        with open(args.report) as f:
            out = json.load(f)
        args.peak, args.scale = out['meta']['peak'], out['meta']['scale']
        return report(args, out)
    if os.geteuid() != 0:
        sys.exit('benchmarks/flow needs root (network namespaces, tc)')
    link = rate_bytes(args.rate)
    limit = link * args.limit
    for path in (args.json, args.plot):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)),
                        exist_ok=True)
    work = tempfile.mkdtemp(prefix='oflow-')
    docroot = tempfile.mkdtemp(prefix='oflow-docroot-', dir='/dev/shm')
    net = Net(args.rate)
    nginx = None
    try:
        net.build()
        prefix = os.path.join(work, 'nginx')
        os.makedirs(prefix)
        conf = os.path.join(prefix, 'nginx.conf')
        with open(conf, 'w') as f:
            f.write(benchlib.nginx_static_conf(prefix, ORIGIN_IP + ':80',
                                               docroot))
        nginx = subprocess.Popen(['ip', 'netns', 'exec', NS_O, 'nginx', '-c',
                                  conf, '-p', prefix, '-e',
                                  prefix + '/error.log'])
        time.sleep(1.0)
        return bench(args, net, docroot, work, link, limit)
    finally:
        if nginx is not None:
            nginx.terminate()
            nginx.wait(10)
        net.close()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(docroot, ignore_errors=True)


def bench(args, net, docroot, work, link, limit):
    probe = [256 * 1024, 64 * MiB]
    for s in probe:
        make_file(docroot, s)
    solo = run_worker('solo', {'sizes': probe, 'dest': work})
    (s1, t1), (s2, t2) = sorted((int(k), v) for k, v in solo.items())
    solo_rate = (s2 - s1) / (t2 - t1)
    latency = max(0.0, t1 - s1 / solo_rate)
    print('solo: %.2f MB/s, %.3f s latency (link %.2f MB/s, limit %.2f)'
          % (solo_rate / 1e6, latency, link / 1e6, limit / 1e6), flush=True)
    out = {'meta': {'command': shlex.join(['python3'] + sys.argv),
                    'peak': args.peak, 'scale': args.scale,
                    'rate': args.rate, 'limit': limit,
                    'solo_rate': solo_rate, 'latency': latency,
                    'seeds': args.seeds},
           'beside': None, 'results': {}}
    if args.beside_repeat:
        out['beside'] = beside_row(args, docroot, work, limit)
        save(args, out)
    modes = args.modes.split(',')
    results = out['results'] = {m: [] for m in modes}
    for seed in range(1, args.seeds + 1):
        items = workload(seed, args.peak, args.scale, link)
        for it in items:
            make_file(docroot, it['size'])
            s = latency + it['size'] / solo_rate
            it['deadline'] = max(3 * s, s + 2.0)
        order = modes if seed % 2 else modes[::-1]
        for mode in order:
            before = net.sent()
            run = run_worker('replay', {'items': items, 'mode': mode,
                                        'limit': limit, 'dest': work})
            run['sent'] = net.sent() - before
            summ = summarize(run, link)
            summ['seed'] = seed
            summ['makespan'] = run['makespan']
            results[mode].append(summ)
            print('seed %d %-9s n=%d denied=%d (i %d, n %d, b %d) refused=%d'
                  ' errors=%d util=%.2f makespan=%.1fs' % (
                      seed, mode, summ['all']['n'], summ['all']['denied'],
                      summ['interactive']['denied'],
                      summ['normal']['denied'],
                      summ['background']['denied'],
                      summ['all']['refused'], summ['all']['errors'],
                      summ['util'], run['makespan']), flush=True)
            save(args, out)
        for fn in set(it['size'] for it in items):
            if fn not in (32 * MiB, 256 * MiB) and fn not in probe:
                try:
                    os.unlink(os.path.join(docroot, 'f-%d' % fn))
                except OSError:
                    pass
    report(args, out)


def save(args, out):
    """Write what was measured so far (a run cut short keeps its seeds)."""
    if args.json:
        with open(args.json + '.tmp', 'w') as f:
            json.dump(out, f, indent=1)
        os.replace(args.json + '.tmp', args.json)


def beside_row(args, docroot, work, limit):
    size, bg = 32 * MiB, args.beside_bg_mib * MiB
    make_file(docroot, size)
    make_file(docroot, bg)
    rows = {m: [] for m in args.beside_modes.split(',')}
    if 'solo' not in rows:
        rows['solo'] = []
    modes = list(rows)
    rows['bg_mib'] = args.beside_bg_mib
    for r in range(args.beside_repeat):
        order = list(modes)
        if r % 2:
            order.reverse()
        for mode in order:
            if mode == 'solo':
                took = run_worker('solo', {'sizes': [size],
                                           'dest': work})[str(size)]
                rows['solo'].append(took)
                continue
            res = run_worker('beside', {'mode': mode, 'limit': limit,
                                        'size': size, 'bg': bg,
                                        'dest': work})
            if res['running'] != 6:
                print('warning: only %d background copies ran to the end'
                      % res['running'])
            rows[mode].append(res['took'])
        print('beside, repeat %d: %s' % (r + 1, {
            m: round(v[-1], 2) for m, v in rows.items()
            if isinstance(v, list)}), flush=True)
    return rows


def counted(results):
    """The indexes of the seeds that count (FIFO had >= 30 denials)."""
    return [i for i, r in enumerate(results.get('fifo', []))
            if r['all']['denied'] >= 30]


def table(results):
    """The report's lines (also what ``benchmarks/publish.py`` shows)."""
    keep = counted(results)
    n = len(results.get('fifo', []))
    lines = ['seeds where FIFO had >= 30 denials (the ones that count): '
             '%d of %d' % (len(keep), n), '']
    pick = {m: [runs[i] for i in keep if i < len(runs)]
            for m, runs in results.items()}
    lines.append('%-10s %-12s %14s %14s %14s %12s' % (
        'mode', 'class', 'denials', 'p50 s', 'p95 s', 'transfers'))
    for mode, runs in pick.items():
        for cls in CLASSES + ('all',):
            d = ci([r[cls]['denied'] for r in runs])
            p50 = ci([r[cls]['p50'] for r in runs])
            p95 = ci([r[cls]['p95'] for r in runs])
            tn = ci([r[cls]['n'] for r in runs])
            lines.append('%-10s %-12s %7.1f ±%5.1f %7.2f ±%5.2f '
                         '%7.2f ±%5.2f %12.0f' % (
                             mode, cls, d[0], d[1], p50[0], p50[1], p95[0],
                             p95[1], tn[0]))
        u = ci([r['util'] for r in runs])
        lines.append('%-10s %-12s %.3f ±%.3f' % (mode, 'utilisation', u[0],
                                                 u[1]))
    lines.append('')
    for mode in [m for m in pick if m != 'fifo']:
        for cls in ('all', 'interactive'):
            red = [1 - r[cls]['denied'] / f[cls]['denied']
                   for r, f in zip(pick[mode], pick['fifo'])
                   if f[cls]['denied']]
            tot = (sum(r[cls]['denied'] for r in pick[mode]),
                   sum(f[cls]['denied'] for f in pick['fifo']))
            m = ci(red) if red else (float('nan'), float('nan'))
            lines.append('%-10s fewer denials than fifo (%s): %.0f%% ±%.0f '
                         '(total %d against %d)' % (
                             mode, cls, 100 * m[0], 100 * m[1], *tot))
        ur = [r['util'] / f['util'] for r, f in zip(pick[mode], pick['fifo'])]
        m = ci(ur)
        lines.append('%-10s utilisation / fifo: %.3f ±%.3f'
                     % (mode, m[0], m[1]))
    return lines


def beside_lines(beside):
    solo = statistics.median(beside['solo'])
    lines = ['interactive 32 MiB beside six %d MiB background copies '
             '(median of %d; solo %.2f s):' % (beside.get('bg_mib', 256),
                                               len(beside['solo']), solo)]
    for mode in ('classes', 'autobuf', 'unpaced', 'fifo'):
        if beside.get(mode):
            t = statistics.median(beside[mode])
            lines.append('  %-8s %6.2f s = %5.2f x solo   runs: %s' % (
                mode, t, t / solo, ' '.join('%.2f' % x
                                            for x in beside[mode])))
    return lines


def per_seed(results):
    lines = []
    for mode, runs in results.items():
        for r in runs:
            lines.append('seed %d %-9s n=%d denied=%d (i %d, n %d, b %d) '
                         'refused=%d errors=%d util=%.2f makespan=%.1fs' % (
                             r['seed'], mode, r['all']['n'],
                             r['all']['denied'],
                             r['interactive']['denied'],
                             r['normal']['denied'],
                             r['background']['denied'],
                             r['all']['refused'], r['all']['errors'],
                             r['util'], r['makespan']))
    return lines


def report(args, out):
    print()
    if any(out['results'].values()):
        print('peak %.0f s, sizes / %g; means over the seeds that count, '
              'with 95 %% CI' % (args.peak, args.scale))
        print('\n'.join(table(out['results'])))
    if out['beside']:
        print()
        print('\n'.join(beside_lines(out['beside'])))
    if args.plot:
        plot(args, out)


def plot(args, out):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    results = out['results']
    keep = counted(results)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    modes = list(results)
    groups = CLASSES + ('all',)
    width = 0.8 / max(1, len(modes))
    for k, mode in enumerate(modes):
        runs = [results[mode][i] for i in keep if i < len(results[mode])]
        means, errs = [], []
        for cls in groups:
            m, e = ci([r[cls]['denied'] for r in runs])
            means.append(m)
            errs.append(0 if math.isnan(e) else e)
        axes[0].bar([i + k * width for i in range(len(groups))], means,
                    width, yerr=errs, label=mode, capsize=3)
    axes[0].set_xticks([i + width for i in range(len(groups))])
    axes[0].set_xticklabels(groups)
    axes[0].set_ylabel('denials per peak (mean, 95 % CI)')
    axes[0].set_title('peak of %.0f s, rho 1.2, %d seeds'
                      % (args.peak, len(keep)))
    axes[0].legend()
    for k, mode in enumerate(modes):
        runs = [results[mode][i] for i in keep if i < len(results[mode])]
        means, errs = [], []
        for cls in CLASSES:
            m, e = ci([r[cls]['p95'] for r in runs])
            means.append(m)
            errs.append(0 if math.isnan(e) else e)
        axes[1].bar([i + k * width for i in range(len(CLASSES))], means,
                    width, yerr=errs, label=mode, capsize=3)
    axes[1].set_xticks([i + width for i in range(len(CLASSES))])
    axes[1].set_xticklabels(CLASSES)
    axes[1].set_yscale('log')
    axes[1].set_ylabel('p95 completion time, s (log)')
    beside = out.get('beside')
    if beside and all(beside.get(m) for m in ('solo', 'classes', 'unpaced',
                                              'fifo')):
        solo = statistics.median(beside['solo'])
        axes[1].set_title(
            'interactive beside 6 background: %.2fx solo (unpaced %.2fx, '
            'fifo %.2fx)' % tuple(statistics.median(beside[m]) / solo
                                  for m in ('classes', 'unpaced', 'fifo')),
            fontsize=9)
    fig.tight_layout()
    fig.savefig(args.plot, dpi=90)
    print('plot:', args.plot)


if __name__ == '__main__':
    sys.exit(main())
