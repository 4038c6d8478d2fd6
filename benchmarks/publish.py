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

"""Put the latest benchmark results into the documentation.

::

    python benchmarks/publish.py [NAME ...] [--results DIR]

For each benchmark NAME (default: every ``benchmarks/results/*.json``
that a side-by-side benchmark wrote), writes

* ``doc/source/_static/benchmarks/NAME.png``: its plot, without the
  ``[baseline]`` rows of a before/after run;
* ``doc/source/user/benchmarks/NAME.inc``: when, how and where it was
  measured, and a table per scenario (median and minimum wall time, the
  ratio to the reference tool, peak RSS, CPU time),

which ``doc/source/user/performance.rst`` includes.  Commit both with
the change that measured them: a reader sees the figures without running
anything.  ``swarm`` (the boot storm), ``lazy`` (lazy images) and
``flow`` (flow control at peak) have JSON and plots of their own; their
tables are written the same way.  ``flow_beside`` is the flow
benchmark's interactive-beside-background row run alone
(``benchmarks/flow/run.py --seeds 0 --json
benchmarks/results/flow_beside.json --plot ''``; ``flow_beside_stream``
the same with background copies read as one stream each,
``--beside-bg-mib 48``): a table, no plot.
"""

import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import benchlib  # noqa: E402

ROOT = benchlib.ROOT
STATIC = os.path.join(ROOT, 'doc', 'source', '_static', 'benchmarks')
INCLUDES = os.path.join(ROOT, 'doc', 'source', 'user', 'benchmarks')


def _meta_lines(meta):
    lines = []
    if meta.get('date'):
        lines.append('Measured %s on %s.'
                     % (meta['date'], meta.get('machine', '?')))
    if meta.get('command'):
        lines += ['', 'Command::', '', '    ' + meta['command']]
    for note in meta.get('notes', ()):
        # what a benchmark adds beside its table (a bound, shares)
        lines += ['', note]
    return lines


def _table(header, rows):
    """A reST simple table."""
    cols = list(zip(*([header] + rows)))
    widths = [max(len(c) for c in col) for col in cols]
    rule = '  '.join('=' * w for w in widths)
    head = '  '.join(h.ljust(w) for h, w in zip(header, widths)).rstrip()
    out = [rule, head, rule]
    out += ['  '.join(c.ljust(w) for c, w in zip(r, widths)).rstrip()
            for r in rows]
    out.append(rule)
    return out


def side_by_side(name, data):
    """The ``.inc`` lines of a benchlib benchmark's JSON."""
    meta = data.get('_meta', {})
    lines = _meta_lines(meta)
    for title, rows in data.items():
        if title.startswith('_'):
            continue
        rows = [r for r in rows
                if not r['tool'].endswith(benchlib.BASELINE_SUFFIX)]
        # the reference is the row every ratio is taken against
        ref = next((r['tool'] for r in rows if abs(r['ratio'] - 1) < 1e-9),
                   rows[0]['tool'] if rows else '')
        table = [[r['tool'], '%.3f' % r['median_s'], '%.3f' % r['min_s'],
                  '%.2f' % r['ratio'], '%.0f MiB' % r['peak_rss_mib'],
                  '%.2f' % r.get('cpu_s', 0.0)] for r in rows]
        lines += ['', '**%s** (%d runs each)' % (
            title, len(rows[0]['runs_s']) if rows else 0), '']
        lines += _table(['tool', 'median s', 'min s', 'x ' + ref,
                         'peak RSS', 'CPU s'], table)
    return lines


def swarm(data):
    """The ``.inc`` lines of the boot storm's JSON."""
    lines = _meta_lines(data.get('_meta', {}))
    lines += ['', '%s to N receivers over %s links; lower bound S/U = '
              '%.2f s.' % (benchlib.human(data['size']), data['rate'],
                           data['bound_s']), '']
    table = [[str(r['n']), r['tool'], '%.2f' % r['last_s'],
              '%.2f' % r['x_bound'], '%.2f' % r['egress_x_size'],
              '%.0f MiB' % r['peak_rss_mib'], str(len(r['runs_s']))]
             for r in data['rows']]
    return lines + _table(['N', 'tool', 'last s', 'x bound', 'egress x S',
                           'peak RSS', 'runs'], table)


#: what each row of ``benchmarks/lazy/run.py`` runs (its docstring)
LAZY_ROWS = {
    'a': 'oslo-transfer copy, then the trace from the file',
    'b': 'nbdkit curl + cache filter (cache-on-read)',
    'c': 'qemu curl driver, copy-on-read',
    'd': 'oslo-transfer nbd --no-prefetch',
    'e': 'oslo-transfer nbd (prefetch)',
    'f': 'oslo-transfer nbd, recorded profile',
    'g': 'nbdkit torrent (web seed)',
    'h': 'oslo-transfer nbd --torrent (swarm)',
}


def lazy(data):
    """The ``.inc`` lines of the lazy-image benchmark's JSON."""
    meta = data.get('meta', {})
    lines = _meta_lines(data.get('_meta', {}))
    size, touched = meta.get('size', 0), meta.get('touched', 0)
    lines += ['', 'A %s image behind a %s link; the boot trace touches %s '
              '(seed %s).  "served" is the median time until the whole trace '
              'is read over the row\'s runs (the order of the rows '
              'alternating), with its minimum and maximum; "ampl" is what '
              'the origin sent during the trace over the bytes touched '
              '(median); "origin/all" and "complete" come from the run that '
              'waited for the complete image.' % (
                  benchlib.human(size), meta.get('rate', '?'),
                  benchlib.human(touched), meta.get('seed', '?')), '']
    dates = {}
    for r in data['rows']:
        dates.setdefault(r.get('date', '?'), set()).add(r['row'])
        if r.get('complete_date'):
            dates.setdefault(r['complete_date'], set()).add(
                r['row'] + ' (complete)')
    if len(dates) > 1:
        lines += ['Measured on: %s.' % '; '.join(
            '%s, rows %s' % (d, ', '.join(sorted(rows)))
            for d, rows in sorted(dates.items())), '']
    table = [[r['row'], LAZY_ROWS.get(r['row'], '?'), str(r['qd']),
              str(r.get('runs', 1)), '%.2f' % r['served_s'],
              '%.2f-%.2f' % (r.get('served_min_s', r['served_s']),
                             r.get('served_max_s', r['served_s'])),
              benchlib.human(r['origin_during_trace']),
              '%.2f' % r['amplification'],
              '-' if r.get('origin_total') is None
              else benchlib.human(r['origin_total']),
              '-' if r.get('complete_s') is None
              else '%.1f' % r['complete_s'],
              '%.0f MiB' % r['peak_rss_anon_mib']]
             for r in data['rows']]
    return lines + _table(['row', 'what', 'qd', 'runs', 'served s',
                           'min-max', 'origin/trace', 'ampl', 'origin/all',
                           'complete s', 'RssAnon'], table)


def flow(data):
    """The ``.inc`` lines of the flow-control benchmark's JSON."""
    flow_run = _flow_run()
    meta = data.get('meta', {})
    lines = _meta_lines(dict(data.get('_meta', {}),
                             command=meta.get('command')))
    lines += ['', 'A peak of %.0f s at rho 1.2 behind a %s link, sizes / '
              '%g, %d seeds; solo rate %.2f MB/s.  Means over the seeds '
              'that count, with 95 %% confidence intervals:' % (
                  meta.get('peak', 0), meta.get('rate', '?'),
                  meta.get('scale', 1), len(data['results'].get('fifo', [])),
                  meta.get('solo_rate', 0) / 1e6), '',
              '.. code-block:: text', '']
    body = flow_run.table(data['results'])
    if data.get('beside'):
        body += [''] + flow_run.beside_lines(data['beside'])
    body += ['', 'Per seed (the order of the modes alternates):', '']
    body += flow_run.per_seed(data['results'])
    return lines + ['   ' + b if b else '' for b in body]


def flow_beside(data):
    """The ``.inc`` lines of the beside row run alone (``--seeds 0``)."""
    meta = data.get('meta', {})
    lines = _meta_lines(dict(data.get('_meta', {}),
                             command=meta.get('command')))
    lines += ['', 'Behind a %s link; solo rate %.2f MB/s:' % (
        meta.get('rate', '?'), meta.get('solo_rate', 0) / 1e6), '',
        '.. code-block:: text', '']
    body = _flow_run().beside_lines(data['beside'])
    return lines + ['   ' + b if b else '' for b in body]


def _flow_run():
    return benchlib.load_script('flow_run', 'flow', 'run.py')


def publish(name, results):
    src = os.path.join(results, name + '.json')
    with open(src) as f:
        data = json.load(f)
    if '_meta' not in data:
        # a benchmark that writes JSON of its own (lazy, swarm): when is the
        # file's time, where is this machine
        data['_meta'] = {
            'date': time.strftime('%Y-%m-%d %H:%M UTC',
                                  time.gmtime(os.path.getmtime(src))),
            'machine': benchlib.machine()}
    os.makedirs(STATIC, exist_ok=True)
    os.makedirs(INCLUDES, exist_ok=True)
    png = os.path.join(STATIC, name + '.png')
    if name.startswith('flow_beside'):
        lines = flow_beside(data)        # (a table, no plot)
    elif name in ('swarm', 'lazy', 'flow'):
        lines = {'swarm': swarm, 'lazy': lazy, 'flow': flow}[name](data)
        shutil.copyfile(os.path.join(results, name + '.png'), png)
    else:
        lines = side_by_side(name, data)
        benchlib.plot(data, png, baseline=False)
    inc = os.path.join(INCLUDES, name + '.inc')
    with open(inc, 'w') as f:
        f.write('.. This file is written by benchmarks/publish.py.\n\n')
        f.write('\n'.join(lines) + '\n')
    print('%s -> %s, %s' % (src, os.path.relpath(inc, ROOT),
                            os.path.relpath(png, ROOT)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('names', nargs='*', metavar='NAME')
    p.add_argument('--results', default=benchlib.RESULTS,
                   help='where the JSON and PNG files are (default: '
                        'benchmarks/results)')
    args = p.parse_args(argv)
    names = args.names or sorted(
        n[:-5] for n in os.listdir(args.results) if n.endswith('.json'))
    for name in names:
        publish(name, args.results)
    return 0


if __name__ == '__main__':
    sys.exit(main())
