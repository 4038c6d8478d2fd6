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

"""The boot storm: N hosts fetch one image from one HTTP origin.

::

    python benchmarks/swarm/run.py [--size 64M] [--receivers 4,8,16]
        [--rate 100mbit] [--repeat 3] [--libtorrent]

Builds, and always tears down, a small network of namespaces: a bridge in a
namespace of its own, the origin (a real nginx) and N receivers, each joined
to the bridge by a veth pair shaped to ``--rate`` in both directions with
``tc tbf``; addresses in 10.77.0.0/24 exist only inside those namespaces.
For each N, alternating the order, ``--repeat`` times:

``http``
    N concurrent ``curl -o`` from the origin (HTTP fan-out);
``oslo``
    N concurrent ``Transfer.copy`` with the selector's plan (bittorrent, the
    origin as web seed, every receiver told the others' addresses),
    checksum verified;
``libtorrent`` (``--libtorrent``)
    plain libtorrent with the origin as its own web seed and the same peers:
    what oslo.transfer's piece selection is measured against;
``aria2c`` (``--tracker`` only)
    aria2c on the same metadata, the origin as web seed, peers from the
    tracker.

With ``--tracker`` the receivers are told no peer address: they find each
other through a real tracker (Debian's opentracker, in the origin's
namespace, named in the metadata), and ours get only ``Hints(peers=N)``.

Printed per N and tool (medians): the time of the last receiver, its ratio
to the lower bound S/U (S the size, U the origin's link rate), the origin's
egress as a multiple of S (bytes sent by the tbf qdisc of the origin's
interface, headers included) and the peak RSS of one receiver.  Targets of
the issue at N = 8 and 16: time <= 1.5 x bound, egress <= 1.5 x S.

Needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN to create namespaces); it
checks first and says so.
"""

import argparse
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))
sys.path.insert(0, ROOT)

import benchlib  # noqa: E402

NET = '10.77.0'
ORIGIN_IP = NET + '.1'
BT_PORT = 6881
TRACKER_PORT = 6969


def sh(*argv, check=True, capture=True):
    p = subprocess.run([str(a) for a in argv], capture_output=capture,
                       text=True)
    if check and p.returncode != 0:
        raise RuntimeError('%s failed (%d): %s' % (' '.join(map(str, argv)),
                                                   p.returncode,
                                                   (p.stderr or '').strip()))
    return p


def check_privileges(prefix):
    """Exit with a clear message if namespaces or tc cannot be used."""
    if os.geteuid() != 0:
        sys.exit('benchmarks/swarm needs root: it creates network namespaces, '
                 'veth pairs, a bridge and tc qdiscs (CAP_NET_ADMIN and '
                 'CAP_SYS_ADMIN).  Run it as root on a test machine.')
    for tool in ('ip', 'tc', 'nginx', 'curl'):
        if shutil.which(tool) is None and not os.path.exists(
                '/usr/sbin/' + tool):
            sys.exit('%s is not installed (Debian packages iproute2, nginx, '
                     'curl)' % tool)
    probe = prefix + '-probe'
    steps = [
        ('ip', 'netns', 'add', probe),
        ('ip', '-n', probe, 'link', 'add', 'pa', 'type', 'veth', 'peer',
         'name', 'pb'),
        ('ip', '-n', probe, 'link', 'add', 'pbr', 'type', 'bridge'),
        ('tc', '-n', probe, 'qdisc', 'add', 'dev', 'pa', 'root', 'tbf',
         'rate', '100mbit', 'burst', '256kb', 'latency', '50ms'),
    ]
    try:
        for step in steps:
            p = sh(*step, check=False)
            if p.returncode != 0:
                sys.exit('cannot build the benchmark network: "%s" failed: %s'
                         '\nThe boot-storm benchmark needs the privilege to '
                         'create network namespaces, veth pairs, bridges and '
                         'tc qdiscs (root with CAP_NET_ADMIN/CAP_SYS_ADMIN, '
                         'not a restricted container).'
                         % (' '.join(step), p.stderr.strip()))
    finally:
        sh('ip', 'netns', 'del', probe, check=False)


class Network:
    """Namespaces, veths, bridge and shaping; :meth:`close` removes all."""

    def __init__(self, prefix, receivers, rate):
        self.prefix = prefix
        self.rate = rate
        self.bridge_ns = prefix + '-br'
        self.origin_ns = prefix + '-o'
        self.receiver_ns = ['%s-r%d' % (prefix, i) for i in range(receivers)]
        self.ips = [NET + '.%d' % (10 + i) for i in range(receivers)]
        self.created = []

    def _ns(self, name):
        sh('ip', 'netns', 'add', name)
        self.created.append(name)
        sh('ip', '-n', name, 'link', 'set', 'lo', 'up')

    def _shape(self, ns, dev):
        sh('tc', '-n', ns, 'qdisc', 'add', 'dev', dev, 'root', 'tbf',
           'rate', self.rate, 'burst', '256kb', 'latency', '50ms')

    def build(self):
        self._ns(self.bridge_ns)
        sh('ip', '-n', self.bridge_ns, 'link', 'add', 'br0', 'type',
           'bridge', 'forward_delay', '0')
        sh('ip', '-n', self.bridge_ns, 'link', 'set', 'br0', 'up')
        nodes = [(self.origin_ns, ORIGIN_IP)] + list(zip(self.receiver_ns,
                                                         self.ips))
        for i, (ns, ip) in enumerate(nodes):
            self._ns(ns)
            port = 'p%d' % i
            sh('ip', 'link', 'add', 'eth0', 'netns', ns, 'type', 'veth',
               'peer', 'name', port, 'netns', self.bridge_ns)
            sh('ip', '-n', ns, 'addr', 'add', ip + '/24', 'dev', 'eth0')
            sh('ip', '-n', ns, 'link', 'set', 'eth0', 'up')
            sh('ip', '-n', self.bridge_ns, 'link', 'set', port, 'master',
               'br0')
            sh('ip', '-n', self.bridge_ns, 'link', 'set', port, 'up')
            self._shape(ns, 'eth0')                  # node -> bridge
            self._shape(self.bridge_ns, port)        # bridge -> node

    def origin_tx(self) -> int:
        """Bytes the origin's interface sent (its tbf qdisc counter)."""
        out = sh('tc', '-n', self.origin_ns, '-s', 'qdisc', 'show', 'dev',
                 'eth0').stdout
        m = re.search(r'Sent (\d+) bytes', out)
        return int(m.group(1))

    def close(self):
        for ns in reversed(self.created):
            sh('ip', 'netns', 'del', ns, check=False)
        self.created = []


def _cpu_ticks():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open('/proc/stat') as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]            # idle + iowait
    return sum(fields) - idle, sum(fields)


class _Sampler:
    """Samples the origin's byte counter every 0.1 s during a run."""

    def __init__(self, net, base, t0):
        import threading
        self.net = net
        self.base = base
        self.t0 = t0
        self.points = []
        self.rx = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()

    def _run(self):
        while not self._stop.wait(0.1):
            self.points.append((time.time() - self.t0,
                                self.net.origin_tx() - self.base))
            if os.environ.get('SWARM_TIMELINE'):
                rx = []
                for ns in self.net.receiver_ns:
                    out = sh('ip', '-n', ns, '-s', 'link', 'show',
                             'eth0').stdout.split('\n')
                    i = [k for k, line in enumerate(out)
                         if line.strip().startswith('RX:')][0]
                    rx.append(int(out[i + 1].split()[0]))
                self.rx.append((time.time() - self.t0, rx))

    def stop(self):
        self._stop.set()
        self._thread.join()

    def reached(self, nbytes) -> str:
        for t, b in self.points:
            if b >= nbytes:
                return '%.2f' % t
        return 'end'            # between the last sample and the end


class Bench:

    def __init__(self, args, net, workdir):
        self.args = args
        self.net = net
        self.work = workdir
        self.size = args.size
        self.procs = []
        self.run_no = 0

    # -- setup --------------------------------------------------------------

    def start_origin(self):
        prefix = os.path.join(self.work, 'nginx')
        os.makedirs(prefix, exist_ok=True)
        conf = os.path.join(prefix, 'nginx.conf')
        with open(conf, 'w') as f:
            f.write(benchlib.nginx_static_conf(prefix, ORIGIN_IP + ':80',
                                               self.docroot))
        self.nginx = subprocess.Popen(
            ['ip', 'netns', 'exec', self.net.origin_ns, 'nginx', '-c', conf,
             '-p', prefix, '-e', os.path.join(prefix, 'error.log')],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(self.nginx)
        deadline = time.monotonic() + 15
        while sh('ip', 'netns', 'exec', self.net.receiver_ns[0], 'curl',
                 '-sf', '-o', '/dev/null', '--max-time', '2', '-r', '0-0',
                 self.url, check=False).returncode != 0:
            if time.monotonic() > deadline:
                sys.exit('nginx does not answer in the origin namespace')
            time.sleep(0.2)

    def prepare_data(self):
        from oslo_transfer._drivers.bittorrent import driver as bittorrent
        self.docroot = os.path.join(self.work, 'docroot')
        data = os.path.join(self.docroot, 'image.raw')
        benchlib.random_file(data, self.size)
        self.sha256 = benchlib.sha256_of(data)
        self.url = 'http://%s/image.raw' % ORIGIN_IP
        self.torrent = os.path.join(self.work, 'image.torrent')
        trackers = []
        if self.args.tracker:
            trackers = ['http://%s:%d/announce' % (ORIGIN_IP, TRACKER_PORT)]
        raw = bittorrent.make_torrent(data, web_seeds=[self.url],
                                      trackers=trackers)
        with open(self.torrent, 'wb') as f:
            f.write(raw)
        from oslo_transfer import torrent as meta_mod
        self.info_hash = meta_mod.parse(raw).info_hash

    def start_tracker(self):
        """opentracker in the origin's namespace, this torrent whitelisted.

        It reads the whitelist as ``nobody``: the work folder is opened to
        all for that (it holds only the random image and logs).
        """
        os.chmod(self.work, 0o755)
        whitelist = os.path.join(self.work, 'whitelist')
        with open(whitelist, 'w') as f:
            f.write(self.info_hash + '\n')
        os.chmod(whitelist, 0o644)
        self.tracker = subprocess.Popen(
            ['ip', 'netns', 'exec', self.net.origin_ns, 'opentracker',
             '-i', ORIGIN_IP, '-p', str(TRACKER_PORT), '-P',
             str(TRACKER_PORT), '-w', whitelist],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(self.tracker)
        deadline = time.monotonic() + 15
        probe = 'http://%s:%d/stats' % (ORIGIN_IP, TRACKER_PORT)
        while sh('ip', 'netns', 'exec', self.net.receiver_ns[0], 'curl',
                 '-s', '-o', '/dev/null', '--max-time', '2', probe,
                 check=False).returncode != 0:
            if time.monotonic() > deadline:
                sys.exit('opentracker does not answer in the origin '
                         'namespace')
            time.sleep(0.2)

    def clean_outputs(self):
        out = os.path.join(self.work, 'out')
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(os.path.join(self.work, 'state'), ignore_errors=True)
        for i in range(len(self.net.receiver_ns)):
            os.makedirs(os.path.join(out, 'r%d' % i))
        os.sync()

    def log_path(self, n, mode, i):
        d = os.path.join(self.work, 'logs',
                         'n%d-%s-%d' % (n, mode, self.run_no))
        os.makedirs(d, exist_ok=True)
        return os.path.join(d, 'r%d.log' % i)

    def dest(self, i):
        return os.path.join(self.work, 'out', 'r%d' % i, 'image.raw')

    # -- the tools ------------------------------------------------------------

    def run_http(self, n):
        timer = '/usr/bin/time' if os.path.exists('/usr/bin/time') else None
        procs = []
        before = self.net.origin_tx()
        busy0, total0 = _cpu_ticks()
        start = time.monotonic()
        for i in range(n):
            argv = ['ip', 'netns', 'exec', self.net.receiver_ns[i]]
            if timer:
                argv += [timer, '-f', '%M', '-o', self.dest(i) + '.rss']
            argv += ['curl', '-sf', '-o', self.dest(i), self.url]
            procs.append(subprocess.Popen(argv))
        ends = []
        for p in procs:
            if p.wait() != 0:
                raise RuntimeError('curl failed (%d)' % p.returncode)
            ends.append(time.monotonic())
        wall = max(ends) - start
        busy1, total1 = _cpu_ticks()
        egress = self.net.origin_tx() - before
        rss = 0
        if timer:
            for i in range(n):
                with open(self.dest(i) + '.rss') as f:
                    rss = max(rss, int(f.read().split()[-1]))
        self.verify(n)
        return {'wall': wall, 'egress': egress, 'rss_kib': rss,
                'machine_busy': (busy1 - busy0) / max(1, total1 - total0)}

    def run_peers(self, n, mode):
        addrs = ['%s:%d' % (ip, BT_PORT) for ip in self.net.ips[:n]]
        # Interpreters, plans and sessions start before this instant (not
        # timed); a receiver that was not ready in time is reported.
        start_at = time.time() + 4.0 + 1.0 * n
        procs = []
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            p for p in (ROOT, os.environ.get('PYTHONPATH')) if p))
        before = self.net.origin_tx()
        for i in range(n):
            argv = ['ip', 'netns', 'exec', self.net.receiver_ns[i],
                    sys.executable, os.path.join(HERE, 'peer.py'),
                    '--mode', mode, '--dest', self.dest(i),
                    '--torrent', self.torrent, '--url', self.url,
                    '--listen', addrs[i], '--start-at', repr(start_at),
                    '--checksum', 'sha256:' + self.sha256,
                    '--state-path', os.path.join(self.work, 'state'),
                    '--log', self.log_path(n, mode, i), '--peers', str(n)]
            if not self.args.tracker:
                for a in addrs:
                    argv += ['--peer', a]
            for item in self.args.set:
                argv += ['--set', item]
            for item in self.args.lt:
                argv += ['--lt', item]
            if self.args.timeline:
                argv.append('--timeline')
            # this checkout's oslo_transfer, not an installed one
            procs.append(subprocess.Popen(argv, stdout=subprocess.PIPE,
                                          text=True, cwd=ROOT, env=env))
        self.procs.extend(procs)
        sampler = _Sampler(self.net, before, start_at)
        sampler.start()
        wait = start_at - time.time()
        if wait > 0:
            time.sleep(wait)
        busy0, total0 = _cpu_ticks()
        results = []
        for i, p in enumerate(procs):
            line = p.stdout.readline()
            if not line:
                raise RuntimeError('receiver %d (%s) printed nothing; see %s'
                                   % (i, mode, self.log_path(n, mode, i)))
            res = json.loads(line)
            if not res.get('ok'):
                raise RuntimeError('receiver %d (%s) failed: %s'
                                   % (i, mode, res.get('error')))
            results.append(res)
            late = res['start'] - start_at
            if late > 0.5:
                print('    receiver %d started %.1fs late (machine too busy '
                      'for the start margin)' % (i, late))
        busy1, total1 = _cpu_ticks()
        egress = self.net.origin_tx() - before
        sampler.stop()
        if self.args.tracker:
            # Told no peer list, a seed cannot know when every receiver is
            # complete: they all are now.
            for p in procs:
                p.send_signal(signal.SIGTERM)
        if sampler.rx:
            prev = None
            for t, rx in sampler.rx:
                if prev is not None and t > -0.5:
                    dt = t - prev[0]
                    rates = [(a - b) / dt / 1e6 for a, b in zip(rx, prev[1])]
                    print('    t=%5.2f origin %5.1f MB  rx MB/s %s' % (
                        t, dict(sampler.points).get(t, 0) / 1e6,
                        ' '.join('%5.1f' % r for r in rates[:n])))
                prev = (t, rx)
        for p in procs:
            try:
                p.wait(90)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        wall = max(r['end'] for r in results) - start_at
        if mode == 'oslo':
            drivers = {r['driver'] for r in results}
            if drivers != {'bittorrent'}:
                raise RuntimeError('the plan did not use bittorrent: %s'
                                   % drivers)
        self.verify(n)
        out = {'wall': wall, 'egress': egress,
               'rss_kib': max(r['rss_kib'] for r in results)}
        if mode == 'oslo':
            out['origin_pieces'] = sum(r['stats']['origin_pieces']
                                       for r in results)
            out['pieces'] = results[0]['stats']['pieces']
        # when the origin had sent 90% and 100% of what it sent
        out['origin_90_s'] = sampler.reached(0.9 * egress)
        out['origin_done_s'] = sampler.reached(egress)
        out['first_s'] = min(r['end'] for r in results) - start_at
        out['origin_1m_s'] = sampler.reached(1 << 20)
        out['cpu_s'] = sum(r['copy_cpu_s'] for r in results)
        out['cpu_user_s'] = sum(r['copy_user_s'] for r in results)
        out['cpu_sys_s'] = sum(r['copy_sys_s'] for r in results)
        out['machine_busy'] = (busy1 - busy0) / max(1, total1 - total0)
        if self.args.timeline:
            self.print_timeline(n, mode, results, start_at, out)
        return out

    def run_aria2c(self, n):
        """aria2c in every receiver's namespace; peers from the tracker.

        Each seeds on after completing (so that later ones can use it);
        ``--on-bt-download-complete`` notes the instant it held the whole
        verified file (aria2c checks every piece's hash).
        """
        hook = os.path.join(self.work, 'aria2-done.sh')
        with open(hook, 'w') as f:
            f.write('#!/bin/sh\ndate +%s.%N > "$3.done"\n')
        os.chmod(hook, 0o755)
        procs = []
        before = self.net.origin_tx()
        busy0, total0 = _cpu_ticks()
        start = time.time()
        for i in range(n):
            argv = ['ip', 'netns', 'exec', self.net.receiver_ns[i],
                    'aria2c', '--enable-dht=false', '--enable-dht6=false',
                    '--bt-enable-lpd=false', '--enable-peer-exchange=false',
                    '--listen-port=%d' % BT_PORT, '--seed-ratio=0.0',
                    '--dir', os.path.dirname(self.dest(i)),
                    '--console-log-level=warn', '--summary-interval=0',
                    '--follow-torrent=false', '--file-allocation=none',
                    '--on-bt-download-complete=' + hook, self.torrent]
            log = open(self.log_path(n, 'aria2c', i), 'wb')
            procs.append(subprocess.Popen(argv, stdout=log,
                                          stderr=subprocess.STDOUT))
            log.close()
        self.procs.extend(procs)
        done = [self.dest(i) + '.done' for i in range(n)]
        deadline = time.monotonic() + 300
        rss = 0
        while not all(os.path.exists(d) and os.path.getsize(d) for d in done):
            if time.monotonic() > deadline:
                raise RuntimeError('aria2c did not complete in 300 s')
            for p in procs:
                if p.poll() is not None:
                    raise RuntimeError('aria2c exited with %d; see %s'
                                       % (p.returncode, self.log_path(
                                           n, 'aria2c', 0)))
                rss = max(rss, _hwm_kib(p.pid))
            time.sleep(0.1)
        busy1, total1 = _cpu_ticks()
        egress = self.net.origin_tx() - before
        for p in procs:
            rss = max(rss, _hwm_kib(p.pid))
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        ends = []
        for d in done:
            with open(d) as f:
                ends.append(float(f.read().strip()))
            os.unlink(d)
        self.verify(n)
        return {'wall': max(ends) - start, 'egress': egress,
                'rss_kib': rss,
                'machine_busy': (busy1 - busy0) / max(1, total1 - total0)}

    def print_timeline(self, n, mode, results, start_at, out):
        """Per receiver: when it held 10/50/90/100 % of the pieces, CPU."""
        pieces = None
        path = os.path.join(os.path.dirname(self.log_path(n, mode, 0)),
                            'timeline.json')
        with open(path, 'w') as f:
            json.dump([r.get('timeline') for r in results], f)
        print('    receiver  10%   50%   90%  100%   end   user   sys  '
              'python  (s from start; CPU s of the copy; python: the '
              'driver\'s loop + web-seed + alert threads)')
        for i, r in enumerate(results):
            tl = r.get('timeline') or []
            pieces = pieces or out.get('pieces') or max(
                [row[1] for row in tl] or [1])

            def at(frac, tl=tl):
                for row in tl:
                    if row[1] >= frac * pieces:
                        return '%5.2f' % row[0]
                return '    -'
            st = r.get('stats') or {}
            keys = ('loop_cpu_s', 'fetcher_cpu_s', 'alert_cpu_s')
            py = [st.get(k, 0) for k in keys]
            print('    r%-7d %s %s %s %s %5.2f %6.2f %5.2f %6.2f (%s)'
                  % (i, at(0.1), at(0.5), at(0.9), at(1.0),
                     r['end'] - start_at, r['copy_user_s'],
                     r['copy_sys_s'], sum(py),
                     '+'.join('%.2f' % x for x in py)))

    def verify(self, n):
        for i in range(n):
            if os.path.getsize(self.dest(i)) != self.size:
                raise RuntimeError('%s has the wrong size' % self.dest(i))
        # the oslo runs verify their checksum themselves; check curl's and
        # libtorrent's outputs, and one of ours, independently
        if benchlib.sha256_of(self.dest(n - 1)) != self.sha256:
            raise RuntimeError('%s differs from the origin' % self.dest(n - 1))

    def stop(self):
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def _hwm_kib(pid) -> int:
    """Peak RSS (VmHWM) of a live process, KiB (0 if gone)."""
    try:
        with open('/proc/%d/status' % pid) as f:
            for line in f:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--size', type=benchlib.parse_size, default='64M')
    p.add_argument('--receivers', default='4,8,16',
                   help='comma-separated N values (default 4,8,16)')
    p.add_argument('--rate', default='100mbit',
                   help='tc rate of every link (default 100mbit)')
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--libtorrent', action='store_true',
                   help='also run plain libtorrent with a web seed')
    p.add_argument('--set', action='append', default=[],
                   metavar='OPT=VALUE',
                   help='[oslo_transfer_bittorrent] override for our peers')
    p.add_argument('--workdir', default='/var/tmp',
                   help='folder for the data (default /var/tmp)')
    p.add_argument('--tools', default=None,
                   help='comma-separated subset of http,oslo,libtorrent')
    p.add_argument('--lt', action='append', default=[], metavar='NAME=VALUE',
                   help='raw libtorrent setting for both peer modes '
                        '(experiments)')
    p.add_argument('--timeline', action='store_true',
                   help='per receiver: progress and CPU over time')
    p.add_argument('--tracker', action='store_true',
                   help='no peer list: the receivers meet through '
                        'opentracker (adds the aria2c tool)')
    p.add_argument('--keep', action='store_true',
                   help='keep the work folder (receivers\' logs)')
    args = p.parse_args()
    ns_counts = [int(x) for x in args.receivers.split(',')]
    prefix = 'ots%d' % (os.getpid() % 100000)
    check_privileges(prefix)
    rate_bps = _rate_bytes(args.rate)
    bound = args.size / rate_bps
    net = Network(prefix, max(ns_counts), args.rate)
    work = tempfile.mkdtemp(prefix='oslo-swarm-', dir=args.workdir)
    bench = Bench(args, net, work)
    tools = ['http', 'oslo'] + (['libtorrent'] if args.libtorrent else [])
    if args.tracker:
        tools.append('aria2c')
        for tool in ('opentracker', 'aria2c'):
            if shutil.which(tool) is None:
                sys.exit('%s is not installed (Debian package %s)'
                         % (tool, {'aria2c': 'aria2'}.get(tool, tool)))
    if args.tools:
        tools = args.tools.split(',')
    results = {}

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    try:
        net.build()
        bench.prepare_data()
        bench.start_origin()
        if args.tracker:
            bench.start_tracker()
        print('size %s, links %s, lower bound S/U = %.2fs; receivers %s; '
              '%d repeats' % (benchlib.human(args.size), args.rate, bound,
                              ns_counts, args.repeat), flush=True)
        for n in ns_counts:
            runs = {t: [] for t in tools}
            for rep in range(args.repeat):
                order = tools if rep % 2 == 0 else list(reversed(tools))
                for tool in order:
                    bench.clean_outputs()
                    bench.run_no = rep + 1
                    if tool == 'http':
                        r = bench.run_http(n)
                    elif tool == 'aria2c':
                        r = bench.run_aria2c(n)
                    else:
                        r = bench.run_peers(n, tool)
                    runs[tool].append(r)
                    print('  N=%-2d run %d %-10s %7.2fs  %5.2fx bound  '
                          'egress %5.2fx S  %6.1f MiB RSS%s%s'
                          % (n, rep + 1, tool, r['wall'], r['wall'] / bound,
                             r['egress'] / args.size, r['rss_kib'] / 1024.0,
                             '  origin pieces %d/%d' % (
                                 r['origin_pieces'], r['pieces'])
                             if 'pieces' in r else
                             '  machine busy %.0f%%' % (
                                 100 * r['machine_busy']),
                             '  (origin 1 MiB at %ss, 90%% at %ss, done at '
                             '%ss; first receiver done %.2fs; CPU %.1fs '
                             '(user %.1f, sys %.1f); machine busy %.0f%%)'
                             % (r['origin_1m_s'], r['origin_90_s'],
                                r['origin_done_s'], r['first_s'],
                                r['cpu_s'], r['cpu_user_s'], r['cpu_sys_s'],
                                100 * r['machine_busy'])
                             if 'first_s' in r else ''), flush=True)
            results[n] = runs
        report(results, args.size, bound, args.rate, args.tracker)
    except KeyboardInterrupt:
        print('interrupted: tearing the network down', file=sys.stderr)
        return 130
    finally:
        bench.stop()
        net.close()
        if args.keep:
            print('kept %s' % work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


def _rate_bytes(rate: str) -> float:
    m = re.match(r'^(\d+(?:\.\d+)?)([kmg]?)bit$', rate.lower())
    if not m:
        sys.exit('--rate must look like 100mbit')
    mult = {'': 1, 'k': 1e3, 'm': 1e6, 'g': 1e9}[m.group(2)]
    return float(m.group(1)) * mult / 8


def report(results, size, bound, rate, tracker=False):
    print()
    print('boot storm: %s to N receivers, %s links, bound S/U = %.2fs%s'
          % (benchlib.human(size), rate, bound,
             '; peers found through a tracker only' if tracker else ''))
    print('%-4s %-11s %10s %9s %12s %10s' % ('N', 'tool', 'last s',
                                             'x bound', 'egress x S',
                                             'peak RSS'))
    rows = []
    for n, runs in results.items():
        for tool, rs in runs.items():
            wall = statistics.median(r['wall'] for r in rs)
            egress = statistics.median(r['egress'] for r in rs) / size
            rss = max(r['rss_kib'] for r in rs) / 1024.0
            rows.append({'n': n, 'tool': tool, 'last_s': wall,
                         'x_bound': wall / bound, 'egress_x_size': egress,
                         'peak_rss_mib': rss,
                         'runs_s': [r['wall'] for r in rs]})
            print('%-4d %-11s %10.2f %9.2f %12.2f %7.1f MiB'
                  % (n, tool, wall, wall / bound, egress, rss))
    targets = [r for r in rows if r['tool'] == 'oslo' and r['n'] >= 8]
    egress_max = 1.3 if tracker else 1.5
    for r in targets:
        ok = r['x_bound'] <= 1.5 and r['egress_x_size'] <= egress_max
        print('target at N=%d (time <= 1.5x bound, egress <= %.1fx S): %s'
              % (r['n'], egress_max, 'met' if ok else 'NOT met'))
    _save(rows, size, bound, rate, tracker)


def _save(rows, size, bound, rate, tracker=False):
    name = 'swarm-tracker' if tracker else 'swarm'
    os.makedirs(benchlib.RESULTS, exist_ok=True)
    with open(os.path.join(benchlib.RESULTS, name + '.json'), 'w') as f:
        json.dump({'size': size, 'rate': rate, 'bound_s': bound,
                   'tracker': tracker, 'rows': rows}, f, indent=2)
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('matplotlib is not installed: no plot')
        return
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4.5))
    for tool, colour in (('http', '#7f8c8d'), ('oslo', '#c0392b'),
                         ('libtorrent', '#2980b9'), ('aria2c', '#8e44ad')):
        pts = [r for r in rows if r['tool'] == tool]
        if not pts:
            continue
        label = {'http': 'HTTP fan-out (curl)', 'oslo': 'oslo.transfer',
                 'libtorrent': 'libtorrent + web seed',
                 'aria2c': 'aria2c + web seed'}[tool]
        a1.plot([r['n'] for r in pts], [r['x_bound'] for r in pts], 'o-',
                color=colour, label=label)
        a2.plot([r['n'] for r in pts], [r['egress_x_size'] for r in pts],
                'o-', color=colour, label=label)
    a1.set_title('time of the last receiver / (S/U)')
    a2.set_title('origin egress / S')
    for ax in (a1, a2):
        ax.set_xlabel('receivers N')
        ax.axhline(1.5, color='#27ae60', ls='--', lw=1)
        ax.legend()
        ax.grid(alpha=0.3)
    fig.suptitle('boot storm: %s, %s links%s' % (
        benchlib.human(size), rate, ', peers from a tracker' if tracker
        else ''))
    fig.tight_layout()
    fig.savefig(os.path.join(benchlib.RESULTS, name + '.png'), dpi=100)
    print('wrote %s' % os.path.join(benchlib.RESULTS, name + '.png'))


if __name__ == '__main__':
    sys.exit(main())
