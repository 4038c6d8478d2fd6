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

"""``oslo-transfer copy``, ``plan`` and ``drivers``."""

import argparse
import json
import re
import signal
import sys
import time

from oslo_config import cfg

from oslo_transfer.cmd import _args
from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import selector

_UNITS = {'': 1, 'k': 1024, 'm': 1024 ** 2, 'g': 1024 ** 3, 't': 1024 ** 4}


def parse_rate(text: str) -> int:
    """``"50M"`` or ``"50MiB"`` -> bytes per second; ``0`` is unlimited."""
    m = re.match(r'^\s*(\d{1,30}(?:\.\d{1,30})?)\s*([kmgt]?)(?:i?b)?'
                 r'(?:/s)?\s*$', text.lower(), re.ASCII)
    if not m:
        raise ValueError('rate must look like 50M, 800K or 1G, not %r'
                         % _args._shorten(text))
    value = float(m.group(1)) * _UNITS[m.group(2)]
    if value > _args.MAX_INT:
        raise ValueError('rate %r is more than %d bytes per second'
                         % (text.strip(), _args.MAX_INT))
    return int(value)


def _rate_arg(text):
    """argparse type of ``--rate``: :func:`parse_rate`, a usage error."""
    try:
        return parse_rate(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc))


def _add_source_args(p):
    p.add_argument('source', metavar='SRC',
                   help='URL or path to read; repeat --also for more '
                        'locations of the same data')
    p.add_argument('--also', action='append', default=[], metavar='URL',
                   help='another location of the same data: read at once '
                        'with SRC when --checksum is given and both serve '
                        'ranged reads, else a fallback')
    p.add_argument('--checksum', metavar='ALGO:HEX',
                   help='expected digest, e.g. sha256:9f86d0...')
    p.add_argument('--peers', type=_args.at_least(1), default=1, metavar='N',
                   help='hosts fetching the same data at once, this one '
                        'included')
    p.add_argument('--peer', action='append', default=[],
                   metavar='HOST:PORT', help='a BitTorrent peer (repeat)')
    p.add_argument('--torrent', metavar='FILE|URL',
                   help='BitTorrent metadata of the source')
    p.add_argument('--same-network', action='store_true', default=None,
                   help='source and destination hosts reach each other by '
                        'IP')
    p.add_argument('--isolated', dest='same_network', action='store_false',
                   help='the networks are isolated (the default '
                        'assumption)')


def _source(args):
    urls = [args.source] + list(args.also)
    torrent = args.torrent
    return locations.Source(urls=urls, torrent=torrent,
                            checksum=None)


def _hints(args):
    return selector.Hints(same_network=args.same_network, peers=args.peers,
                          peer_addresses=tuple(args.peer),
                          priority=getattr(args, 'priority', 'normal'),
                          deadline=getattr(args, 'deadline', None))


def register(sub):
    p = sub.add_parser('copy', help='copy SRC to DST (a path or a URL)')
    _add_source_args(p)
    p.add_argument('dest', metavar='DST')
    p.add_argument('--segments', type=_args.at_least(1, maximum=64),
                   metavar='N',
                   help='parallel ranged segments, 1 to 64 (default 4)')
    p.add_argument('--rate', type=_rate_arg, metavar='BYTES/S',
                   help='rate limit, e.g. 50M; 0 is unlimited')
    p.add_argument('--priority', choices=('interactive', 'normal',
                                          'background'),
                   default='normal',
                   help='scheduling class (default normal; -v shows it)')
    p.add_argument('--deadline', type=_args.at_least(0.001, float),
                   metavar='SECONDS',
                   help='finish within this many seconds, or be refused at '
                        'once (exit status 1, nothing written) when that '
                        'cannot be met; never cancels a running copy')
    p.add_argument('--if-exists', choices=('verify', 'replace', 'error'),
                   default='verify',
                   help='what to do with an existing DST (default: keep it '
                        'if it matches, refuse otherwise)')
    p.add_argument('--in-place', action='store_true',
                   help='write into the existing device or file DST itself '
                        '(no DST.part, no rename); the default when DST is '
                        'a block device')
    p.add_argument('--assume-zeroed', action='store_true',
                   help='with --in-place: DST reads as zeros, so zero runs '
                        'of the source are skipped rather than written')
    p.add_argument('--seed-time', type=_args.at_least(0, float),
                   metavar='SECONDS',
                   help='BitTorrent: after the copy, seed the file this '
                        'long before returning, so that the other hosts '
                        'get it from this one (default: '
                        '[oslo_transfer_bittorrent] seed_time; 0 returns at '
                        'once)')
    p.add_argument('--json', action='store_true',
                   help='print the Result as one JSON object')
    p.add_argument('--no-progress', action='store_true',
                   help='no progress bar even on a terminal')
    p.set_defaults(func=run_copy)

    p = sub.add_parser('plan', help='explain which driver would be used; '
                                    'moves nothing')
    _add_source_args(p)
    p.add_argument('dest', metavar='DST', nargs='?')
    p.add_argument('--json', action='store_true')
    p.set_defaults(func=run_plan)

    p = sub.add_parser('drivers', help='list installed drivers and what '
                                       'they can do')
    p.add_argument('--json', action='store_true')
    p.set_defaults(func=run_driver_list)


class ProgressBar:
    """A one-line progress bar on stderr (only when it is a terminal)."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.start = time.monotonic()
        self.last = 0.0

    def __call__(self, done, total):
        now = time.monotonic()
        if now - self.last < 0.2 and (total is None or done < total):
            return
        self.last = now
        rate = done / max(now - self.start, 1e-6)
        if total:
            pct = 100.0 * done / total
            width = 30
            fill = int(width * done / total)
            eta = (total - done) / rate if rate else 0
            line = '[%s%s] %5.1f%% %s/%s %s/s ETA %ds' % (
                '#' * fill, '.' * (width - fill), pct, _human(done),
                _human(total), _human(rate), eta)
        else:
            line = '%s %s/s' % (_human(done), _human(rate))
        self.stream.write('\r' + line.ljust(78))
        self.stream.flush()

    def close(self):
        self.stream.write('\n')
        self.stream.flush()


def _human(n):
    n = float(n)
    for unit in ('B', 'KiB', 'MiB', 'GiB', 'TiB'):
        if n < 1024 or unit == 'TiB':
            return '%.1f %s' % (n, unit)
        n /= 1024


def run_copy(args):
    from oslo_transfer import checksum as checksum_mod
    ck = checksum_mod.parse(args.checksum) if args.checksum else None
    bar = None
    if sys.stderr.isatty() and not args.json and not args.no_progress:
        bar = ProgressBar()
    with args.make_transfer() as t:
        if args.seed_time is not None:
            _override_seed_time(t.conf, args.seed_time)
        try:
            result = t.copy(_source(args), args.dest, checksum=ck,
                            hints=_hints(args), progress=bar,
                            if_exists=args.if_exists,
                            segments=args.segments, rate=args.rate,
                            write_in_place=True if args.in_place else None,
                            assume_zeroed=args.assume_zeroed)
        finally:
            if bar is not None:
                bar.close()
        if result.seeding is None:
            _print_result(args, result)
            return 0
        # Before the result is printed: a caller that reads it may send
        # SIGTERM at once, and the seeding must then stop cleanly.
        old = signal.signal(signal.SIGTERM, _on_sigterm)
        try:
            _print_result(args, result)
            _seed_before_return(result.seeding)
        except _Terminated:
            _stop_seeding(result.seeding)
        finally:
            signal.signal(signal.SIGTERM, old)
    return 0


def _print_result(args, result):
    if args.json:
        print(json.dumps(result.to_dict(), sort_keys=True))
    else:
        print('%s -> %s via %s: %s moved, %s resumed, %.2fs (%s/s)%s' % (
            result.url or '(existing)', result.dest,
            result.driver or '-', _human(result.bytes_transferred),
            _human(result.bytes_resumed), result.elapsed,
            _human(result.throughput),
            ', %s %s' % (result.algorithm, result.digest)
            if result.digest else ''))
    sys.stdout.flush()


_BT_GROUP = 'oslo_transfer_bittorrent'


def _override_seed_time(conf, seconds):
    if seconds < 0:
        raise ValueError('--seed-time must be 0 or more, not %s' % seconds)
    try:
        conf.set_override('seed_time', seconds, group=_BT_GROUP)
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        # No BitTorrent driver installed: nothing will seed anyway.
        pass


class _Terminated(Exception):
    pass


def _on_sigterm(signum, frame):
    raise _Terminated()


def _seed_before_return(seeding):
    """Block while this process seeds what the copy fetched.

    The destination is already complete and renamed (and the result
    printed); seeding ends when the driver's rules say so (BitTorrent:
    after ``seed_time``, at ``seed_ratio``, once every ``--peer`` is
    complete), or on Ctrl-C / SIGTERM (exit status 0: the copy itself
    succeeded; the caller installed the SIGTERM handler before printing
    the result).
    """
    print('oslo-transfer: seeding %s for the other hosts (Ctrl-C stops)'
          % seeding.path, file=sys.stderr)
    try:
        seeding.wait()
    except KeyboardInterrupt:
        _stop_seeding(seeding)


def _stop_seeding(seeding):
    seeding.stop()
    seeding.wait(10.0)
    print('oslo-transfer: stopped seeding', file=sys.stderr)


def run_plan(args):
    with args.make_transfer() as t:
        plan = t.plan(_source(args), args.dest, hints=_hints(args))
    if args.json:
        d = plan.to_dict()
        if getattr(plan, 'write_plan', None):
            d['write'] = plan.write_plan.to_dict()
        print(json.dumps(d, sort_keys=True))
    else:
        print(plan.explain())
        if getattr(plan, 'write_plan', None):
            print(plan.write_plan.explain())
    return 0


def _cap_names(caps):
    return [c.name.lower() for c in driver_mod.Capability
            if c.name and c.name != 'NONE' and c in caps]


def _row(name, status, drv=None):
    return {'name': name, 'schemes': list(drv.schemes) if drv else [],
            'capabilities': _cap_names(drv.capabilities) if drv else [],
            'status': status}


def _driver_rows(t):
    """Usable drivers first, then those that are not, and why."""
    usable, unusable = [], []
    for drv in t.drivers:
        try:
            drv.check_available()
        except exceptions.MissingDependency as exc:
            unusable.append(_row(drv.name, 'unavailable: %s' % exc))
        else:
            usable.append(_row(drv.name, 'ok', drv))
    failed = [_row(name, 'failed to load: %s' % exc)
              for name, exc in sorted(t.load_failures.items())]
    return usable + sorted(unusable, key=lambda r: r['name']) + failed


def run_driver_list(args):
    with args.make_transfer() as t:
        rows = _driver_rows(t)
    if args.json:
        print(json.dumps(rows, sort_keys=True))
        return 0
    for r in rows:
        print('%-11s %-18s %s%s' % (
            r['name'], ','.join(r['schemes']) or '-',
            ', '.join(r['capabilities']),
            '' if r['status'] == 'ok' else r['status']))
    return 0
