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

"""The multi-source row of the flow-control benchmark: one file, two mirrors.

::

    python benchmarks/flow/multisource.py [--size 512M]
        [--rates 50mbit,150mbit] [--repeat 5]

Builds, and always tears down, three network namespaces: a client and two
origins (a real nginx each, one docroot in tmpfs holding the same file),
each origin joined to the client by its own veth pair whose origin side is
shaped with ``tc tbf`` to one of ``--rates``.  Rows, alternating the order,
``--repeat`` times, each a fresh process in the client's namespace:

``oslo-transfer``
    ``oslo-transfer copy URL1 DEST --also URL2 --checksum sha256:..
    --json``: both mirrors at once, verified, durable (fsync) and renamed;
``aria2c+sha256+sync``
    ``aria2c -x4 -s8 -k1M URL1 URL2 && openssl dgst -sha256 F && sync F``:
    the reference made to do what ours does;
``aria2c``
    the bare tool.

Printed: medians, ratios to the bare aria2c row and to the link-bound
lower bound S / (U1 + U2) (U the shaped rates; headers make the real
bound a few percent higher), and the share of each mirror in our copies
(``Result.bytes_by_location``).  Targets of issue 17: ours <= 1.15 x the
bound, and no slower than aria2c.  Results go to
``benchmarks/results/multisource.json`` (``benchmarks/publish.py``).

Needs root (network namespaces, tc); network-bound, so it need not hold
the functional-test lock, but run it ``nice``.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, 'benchmarks'))

import benchlib  # noqa: E402

MiB = benchlib.MiB
NS = 'omsrc'
CLIENT = NS + '-c'


swarm = benchlib.load_script('swarm_run', 'swarm', 'run.py')
flow = benchlib.load_script('flow_run', 'flow', 'run.py')


class Mirrors:
    """A client namespace and one shaped origin namespace per rate."""

    def __init__(self, rates):
        self.rates = rates
        self.origins = ['%s-m%d' % (NS, i) for i in range(len(rates))]
        self.ips = ['10.79.%d.1' % (i + 1) for i in range(len(rates))]
        self.made = []

    def _ns(self, name):
        swarm.sh('ip', 'netns', 'add', name)
        self.made.append(name)
        swarm.sh('ip', '-n', name, 'link', 'set', 'lo', 'up')

    def build(self):
        self._ns(CLIENT)
        for i, (ns, ip, rate) in enumerate(zip(self.origins, self.ips,
                                               self.rates)):
            self._ns(ns)
            peer = 'm%d' % i
            swarm.sh('ip', 'link', 'add', 'eth0', 'netns', ns, 'type',
                     'veth', 'peer', 'name', peer, 'netns', CLIENT)
            client_ip = ip.rsplit('.', 1)[0] + '.2'
            for where, dev, addr in ((ns, 'eth0', ip),
                                     (CLIENT, peer, client_ip)):
                swarm.sh('ip', '-n', where, 'addr', 'add', addr + '/24',
                         'dev', dev)
                swarm.sh('ip', '-n', where, 'link', 'set', dev, 'up')
            swarm.sh('tc', '-n', ns, 'qdisc', 'add', 'dev', 'eth0', 'root',
                     'tbf', 'rate', rate, 'burst', '256kb', 'latency',
                     '50ms')

    def close(self):
        for ns in reversed(self.made):
            swarm.sh('ip', 'netns', 'del', ns, check=False)
        self.made = []


def start_nginx(ns, ip, docroot, work):
    prefix = os.path.join(work, ns)
    os.makedirs(prefix)
    conf = os.path.join(prefix, 'nginx.conf')
    with open(conf, 'w') as f:
        f.write(benchlib.nginx_static_conf(prefix, ip + ':80', docroot))
    proc = subprocess.Popen(['ip', 'netns', 'exec', ns, 'nginx', '-c', conf,
                             '-p', prefix, '-e', prefix + '/error.log'])
    for _ in range(100):
        p = swarm.sh('ip', 'netns', 'exec', CLIENT, 'curl', '-sfI',
                     'http://%s/' % ip, check=False)
        if p.returncode in (0, 22):   # 22: 403/404, but it answers
            return proc
        time.sleep(0.1)
    proc.terminate()
    sys.exit('nginx in %s did not answer' % ns)


def tools(urls, digest, out):
    exe = benchlib.oslo_transfer_cmd()
    inside = ['nice', 'ip', 'netns', 'exec', CLIENT]
    aria = ('aria2c -q -x4 -s8 -k1M --file-allocation=none '
            '--allow-overwrite=true --auto-file-renaming=false -d %s -o %s '
            '%s' % (os.path.dirname(out), os.path.basename(out),
                    ' '.join(urls)))
    return {
        'oslo-transfer': inside + exe + [
            'copy', urls[0], out, '--also', urls[1], '--checksum',
            'sha256:' + digest, '--json', '--no-progress',
            '--if-exists', 'replace'],
        'aria2c+sha256+sync': inside + [
            'sh', '-c', '%s && openssl dgst -sha256 %s && sync %s'
            % (aria, out, out)],
        'aria2c': inside + ['sh', '-c', aria],
    }


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--size', type=benchlib.parse_size, default=512 * MiB)
    ap.add_argument('--rates', default='50mbit,150mbit')
    ap.add_argument('--repeat', type=int, default=5)
    args = ap.parse_args()
    swarm.check_privileges(NS)
    benchlib.require('aria2c')
    benchlib.require('openssl')
    # The oslo-transfer rows run this tree's package.
    os.environ['PYTHONPATH'] = ROOT
    rates = args.rates.split(',')
    if len(rates) != 2:
        sys.exit('--rates takes two rates, e.g. 50mbit,150mbit')
    work = tempfile.mkdtemp(prefix='omsrc-')
    docroot = tempfile.mkdtemp(prefix='omsrc-docroot-', dir='/dev/shm')
    net = Mirrors(rates)
    servers = []
    try:
        net.build()
        path = benchlib.random_file(os.path.join(docroot, 'image'),
                                    args.size)
        digest = benchlib.sha256_of(path)
        for ns, ip in zip(net.origins, net.ips):
            servers.append(start_nginx(ns, ip, docroot, work))
        urls = ['http://%s/image' % ip for ip in net.ips]
        return bench(args, rates, urls, digest, work)
    finally:
        for p in servers:
            p.terminate()
            p.wait(10)
        net.close()
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(docroot, ignore_errors=True)


def bench(args, rates, urls, digest, work):
    out = os.path.join(work, 'dest', 'image')
    os.makedirs(os.path.dirname(out))
    shares = []

    def before(name):
        for f in (out, out + '.aria2'):
            if os.path.exists(f):
                os.unlink(f)
        benchlib.sync()

    def check(name, run):
        if benchlib.sha256_of(out) != digest:
            sys.exit('%s: the copy differs from the source' % name)
        if name.startswith('oslo-transfer'):
            res = json.loads(run.stdout.strip().splitlines()[-1])
            by = res['bytes_by_location']
            shares.append([by.get(u, 0) / args.size for u in urls])

    runs = benchlib.alternate(tools(urls, digest, out), args.repeat,
                              before=before, check=check)
    title = '%s from two mirrors at %s' % (benchlib.human(args.size),
                                           ' and '.join(rates))
    rows = benchlib.summarize(title, runs, args.size, 'aria2c')
    link = sum(flow.rate_bytes(r) for r in rates)
    bound = args.size / link
    print('\nlower bound S / (U1 + U2) = %.2f s' % bound)
    for row in rows:
        row['x_bound'] = row['median_s'] / bound
        print('  %-20s %.2f x bound' % (row['tool'], row['x_bound']))
    mean = [statistics.median(s[i] for s in shares) for i in range(2)]
    ideal = [flow.rate_bytes(r) / link for r in rates]
    print('oslo-transfer shares (median): %s (link shares %s)' % (
        ', '.join('%.3f' % m for m in mean),
        ', '.join('%.3f' % i for i in ideal)))
    benchlib.save('multisource', {title: rows})
    _annotate(rows, bound, mean, ideal)
    return 0


def _annotate(rows, bound, shares, ideal):
    """Add the bound and the shares to the saved JSON's ``_meta``.

    ``notes`` are printed under the table by ``benchmarks/publish.py``.
    """
    path = os.path.join(benchlib.RESULTS, 'multisource.json')
    with open(path) as f:
        data = json.load(f)
    data['_meta'].update(bound_s=bound, shares=shares, link_shares=ideal)
    data['_meta']['notes'] = [
        'Lower bound S / (U1 + U2) = %.2f s; medians over it: %s.  '
        'Shares of our copies (median): %s (the links: %s).' % (
            bound, ', '.join('%s %.2f x' % (r['tool'], r['x_bound'])
                             for r in rows),
            ' / '.join('%.3f' % s for s in shares),
            ' / '.join('%.2f' % i for i in ideal))]
    with open(path, 'w') as f:
        json.dump(data, f, indent=2)


if __name__ == '__main__':
    sys.exit(main())
