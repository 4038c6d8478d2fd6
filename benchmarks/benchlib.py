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

"""Shared helpers of the side-by-side benchmarks.

A benchmark runs our command and the reference tool on the same data in one
run, alternating the order, several times; each run is one process measured
by ``/usr/bin/time -v`` (wall time and peak RSS of that process alone).
"""

import dataclasses
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

MiB = 1024 * 1024
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(ROOT, 'benchmarks', 'results')

_UNITS = {'': 1, 'K': 1024, 'M': MiB, 'G': 1024 * MiB, 'T': 1024 ** 4}


def parse_size(text: str) -> int:
    """``'1G'`` -> 1073741824 (binary units; ``B``/``iB`` allowed)."""
    m = re.match(r'^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$', text, re.I)
    if not m:
        raise ValueError('not a size: %r' % text)
    return int(float(m.group(1)) * _UNITS[m.group(2).upper()])


def human(n: float) -> str:
    for unit in ('B', 'KiB', 'MiB', 'GiB'):
        if abs(n) < 1024 or unit == 'GiB':
            return '%.1f %s' % (n, unit) if unit != 'B' else '%d B' % n
        n /= 1024.0


#: nginx serving a folder read-only, in the foreground, everything under
#: its prefix (see :func:`nginx_static_conf`)
_NGINX_STATIC = """\
daemon off;
master_process on;
worker_processes 1;
user root;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    default_type application/octet-stream;
    types {{ }}
    sendfile on;
    tcp_nopush on;
    keepalive_timeout 60s;
    keepalive_requests 100000;
    send_timeout 300s;
    client_body_temp_path {prefix}/client_body_temp;
    proxy_temp_path {prefix}/proxy_temp;
    fastcgi_temp_path {prefix}/fastcgi_temp;
    uwsgi_temp_path {prefix}/uwsgi_temp;
    scgi_temp_path {prefix}/scgi_temp;
    access_log off;
    server {{
        listen {listen};
        root {docroot};
    }}
}}
"""


def nginx_static_conf(prefix: str, listen: str, docroot: str) -> str:
    """The text of an nginx config serving ``docroot`` on ``listen``.

    For ``nginx -c CONF -p PREFIX -e PREFIX/error.log`` (SERVERS.md):
    foreground, workers as root, pid, logs and temp folders under
    ``prefix``.

    :param listen: ``IP:PORT`` (or ``IP`` for port 80).
    """
    return _NGINX_STATIC.format(prefix=prefix, listen=listen,
                                docroot=docroot)


def load_script(name: str, *path: str):
    """Another benchmark's script as a module, to use its helpers.

    :param name: the module's name (``swarm_run``, ``flow_run``).
    :param path: its path under ``benchmarks/`` (``'swarm', 'run.py'``).
    """
    spec = importlib.util.spec_from_file_location(
        name, os.path.join(ROOT, 'benchmarks', *path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def require(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        sys.exit('%s is not installed (see bindep.txt)' % name)
    return path


def oslo_transfer_cmd() -> list:
    # The script beside the interpreter first: a pyenv shim on PATH costs
    # a few hundred milliseconds of bash per run.
    exe = os.path.join(os.path.dirname(sys.executable), 'oslo-transfer')
    if not os.access(exe, os.X_OK):
        exe = shutil.which('oslo-transfer') or exe
    if not os.access(exe, os.X_OK):
        sys.exit('oslo-transfer is not installed: pip install -e %s' % ROOT)
    _compile_package()
    return [exe]


def _compile_package():
    """Write the package's byte code once, as ``pip install`` does.

    With an editable install (or PYTHONDONTWRITEBYTECODE set, as some
    shells and CI runners do) every run would otherwise compile the
    package's modules again: ~80 ms of start-up that an installed copy
    does not pay.
    """
    import compileall
    compileall.compile_dir(os.path.join(ROOT, 'oslo_transfer'), quiet=1)
    os.environ.pop('PYTHONDONTWRITEBYTECODE', None)


def random_file(path: str, size: int) -> str:
    """Create (or reuse, if the size matches) a file of random bytes."""
    if os.path.exists(path) and os.path.getsize(path) == size:
        return path
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = path + '.tmp'
    with open(tmp, 'wb') as f:
        left = size
        while left:
            n = min(left, 16 * MiB)
            f.write(os.urandom(n))
            left -= n
    os.replace(tmp, path)
    return path


def sha256_of(path: str) -> str:
    import hashlib
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(4 * MiB), b''):
            h.update(block)
    return h.hexdigest()


@dataclasses.dataclass
class Run:
    tool: str
    wall: float
    rss_kib: int
    returncode: int
    stdout: str
    stderr: str
    #: user + system CPU seconds of the process (and children it waited
    #: for), from ``/usr/bin/time -v``
    cpu_s: float = 0.0
    #: how many CPUs the whole machine kept busy meanwhile (``/proc/stat``;
    #: the servers on loopback and any other load count too)
    busy_cpus: float = 0.0


def _cpu_jiffies():
    """(busy, total) jiffies of all CPUs together, from ``/proc/stat``."""
    try:
        with open('/proc/stat') as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def measure(tool: str, argv: list, env=None) -> Run:
    """Run ``argv`` under ``/usr/bin/time -v``; wall time and peak RSS."""
    timer = require('time') if not os.path.exists('/usr/bin/time') \
        else '/usr/bin/time'
    with tempfile.NamedTemporaryFile('r', suffix='.time') as tf:
        busy0, total0 = _cpu_jiffies()
        start = time.monotonic()
        p = subprocess.run([timer, '-v', '-o', tf.name] + list(argv),
                           capture_output=True, text=True, env=env,
                           stdin=subprocess.DEVNULL)
        wall = time.monotonic() - start
        busy1, total1 = _cpu_jiffies()
        report = tf.read()
    m = re.search(r'Maximum resident set size \(kbytes\): (\d+)', report)
    rss = int(m.group(1)) if m else 0
    cpu = 0.0
    for what in ('User', 'System'):
        m = re.search(r'%s time \(seconds\): ([\d.]+)' % what, report)
        cpu += float(m.group(1)) if m else 0.0
    ncpu = os.cpu_count() or 1
    busy = (ncpu * (busy1 - busy0) / (total1 - total0)
            if total1 > total0 else 0.0)
    return Run(tool, wall, rss, p.returncode, p.stdout, p.stderr, cpu, busy)


def sync():
    """Flush dirty pages so one run's writeback does not slow the next."""
    os.sync()


#: environment variable naming another source tree of oslo.transfer (an
#: older commit's worktree): every ``oslo-transfer`` row then runs a second
#: time against that tree, in the same alternation, as ``NAME [baseline]``
BASELINE_ENV = 'OSLO_TRANSFER_BENCH_BASELINE'
BASELINE_SUFFIX = ' [baseline]'


def _with_baseline(tools: dict) -> tuple:
    """``(tools, envs)`` with the baseline rows of :data:`BASELINE_ENV`."""
    tree = os.environ.get(BASELINE_ENV)
    envs = {}
    if not tree:
        return tools, envs
    if not os.path.isdir(os.path.join(tree, 'oslo_transfer')):
        sys.exit('%s=%s: no oslo_transfer package there' % (BASELINE_ENV,
                                                            tree))
    import compileall
    compileall.compile_dir(os.path.join(tree, 'oslo_transfer'), quiet=1)
    env = dict(os.environ, PYTHONPATH=os.path.abspath(tree))
    out = {}
    for name, argv in tools.items():
        out[name] = argv
        if name.startswith('oslo-transfer'):
            out[name + BASELINE_SUFFIX] = argv
            envs[name + BASELINE_SUFFIX] = env
    return out, envs


def alternate(tools: dict, repeats: int, before=None, check=None) -> dict:
    """Run each tool ``repeats`` times, alternating the order.

    With :data:`BASELINE_ENV` set, each ``oslo-transfer`` row also runs
    against that tree (a before/after comparison in one run).

    :param tools: ``{name: argv}``.
    :param before: ``before(name)`` runs untimed before each run (remove
        the destination, sync).
    :param check: ``check(name, run)`` raises if the run's output is wrong.
    :returns: ``{name: [Run, ...]}``.
    """
    tools, envs = _with_baseline(tools)
    names = list(tools)
    runs = {n: [] for n in names}
    for i in range(repeats):
        order = names if i % 2 == 0 else list(reversed(names))
        for name in order:
            if before:
                before(name)
            run = measure(name, tools[name], env=envs.get(name))
            if run.returncode != 0:
                sys.exit('%s failed (%d): %s %s' % (name, run.returncode,
                                                    run.stdout[-2000:],
                                                    run.stderr[-2000:]))
            if check:
                check(name, run)
            runs[name].append(run)
            print('  run %d %-28s %7.3fs  %6.1f MiB RSS  %5.2f CPU s  '
                  '%.1f CPUs busy'
                  % (i + 1, name, run.wall, run.rss_kib / 1024.0,
                     run.cpu_s, run.busy_cpus), flush=True)
    return runs


def summarize(title: str, runs: dict, size: int, reference: str) -> list:
    """Print a table of medians and ratios to ``reference``; return rows."""
    ref = statistics.median(r.wall for r in runs[reference])
    rows = []
    print()
    print(title)
    print('%-30s %9s %9s %11s %9s %10s %6s %5s' % (
        'tool', 'median s', 'min s', 'MiB/s', 'x ' + reference[:8],
        'peak RSS', 'CPU s', 'busy'))
    for name, rs in runs.items():
        walls = [r.wall for r in rs]
        med = statistics.median(walls)
        rss = max(r.rss_kib for r in rs) / 1024.0
        cpu = statistics.median(r.cpu_s for r in rs)
        busy = statistics.median(r.busy_cpus for r in rs)
        row = {'tool': name, 'median_s': med, 'min_s': min(walls),
               'runs_s': walls, 'mib_per_s': size / MiB / med,
               'ratio': med / ref, 'peak_rss_mib': rss,
               'cpu_s': cpu, 'busy_cpus': busy}
        rows.append(row)
        print('%-30s %9.3f %9.3f %11.1f %9.2f %7.1f MiB %6.2f %5.1f'
              % (name, med, min(walls), row['mib_per_s'], row['ratio'], rss,
                 cpu, busy))
    print('(CPU s: the process\'s user + system time, median; busy: CPUs '
          'the whole machine kept busy meanwhile, of %d, servers '
          'included)' % (os.cpu_count() or 1))
    return rows


def machine() -> str:
    """One line naming the machine: CPUs, memory, kernel, Python."""
    import platform
    mem = ''
    try:
        with open('/proc/meminfo') as f:
            kib = int(f.readline().split()[1])
        mem = ', %d GiB' % round(kib / 1024 / 1024)
    except (OSError, ValueError, IndexError):
        pass
    return '%d CPUs%s, Linux %s, Python %s' % (
        os.cpu_count() or 1, mem, platform.release(),
        platform.python_version())


def save(name: str, scenarios: dict):
    """Write JSON and, when matplotlib is installed, a PNG bar chart.

    The JSON holds the scenarios' rows and, under ``_meta``, when, how and
    where they were measured (``benchmarks/publish.py`` puts them in the
    docs).
    """
    os.makedirs(RESULTS, exist_ok=True)
    meta = {'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
            'command': ' '.join(['python3'] + [
                os.path.relpath(a, ROOT) if a.startswith(ROOT) else a
                for a in sys.argv]),
            'machine': machine(),
            'baseline': os.environ.get(BASELINE_ENV)}
    with open(os.path.join(RESULTS, name + '.json'), 'w') as f:
        json.dump(dict(scenarios, _meta=meta), f, indent=2)
    path = plot(scenarios, os.path.join(RESULTS, name + '.png'))
    if path:
        print('plot: %s' % path)


def plot(scenarios: dict, path: str, baseline: bool = True):
    """A bar chart of each scenario's medians; None without matplotlib.

    :param baseline: keep the ``[baseline]`` rows.
    """
    try:
        import matplotlib
        matplotlib.use('Agg')
        import matplotlib.pyplot as plt
    except ImportError:
        print('matplotlib is not installed: no plot (pip install '
              'matplotlib)')
        return None
    scenarios = {title: [r for r in rows if baseline or
                         not r['tool'].endswith(BASELINE_SUFFIX)]
                 for title, rows in scenarios.items()
                 if not title.startswith('_')}
    fig, axes = plt.subplots(1, len(scenarios),
                             figsize=(6 * len(scenarios), 4.5),
                             squeeze=False)
    for ax, (title, rows) in zip(axes[0], scenarios.items()):
        tools = [r['tool'] for r in rows]
        ax.bar(tools, [r['median_s'] for r in rows],
               color=['#c0392b' if t.startswith('oslo') else '#7f8c8d'
                      for t in tools])
        for i, r in enumerate(rows):
            ax.text(i, r['median_s'], '%.2fs\n%.0f MiB RSS'
                    % (r['median_s'], r['peak_rss_mib']),
                    ha='center', va='bottom', fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel('median wall time (s), lower is better')
        ax.tick_params(axis='x', labelrotation=20, labelsize=8)
        ax.margins(y=0.25)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
