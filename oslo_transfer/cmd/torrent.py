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

"""``oslo-transfer make-torrent`` and ``oslo-transfer seed``.

``make-torrent FILE --web-seed URL -o OUT.torrent`` writes BitTorrent v1
metadata with the HTTP origin as web seed.

``seed FILE|TORRENT`` shares local data until its time is up or SIGTERM /
SIGINT (a clean stop: the torrent leaves the session, exit status 0).  Once
the data is verified and the session listens, one JSON line goes to stdout:
``{"event": "seeding", "info_hash": ..., "listen_port": ..., "path": ...}``.

Also runnable as ``python -m oslo_transfer.cmd.torrent`` (the tests start
peers that way).
"""

import argparse
import json
import logging
import os
import signal
import sys
import threading

from oslo_config import cfg

from oslo_transfer.cmd import _args
from oslo_transfer import exceptions
from oslo_transfer import torrent as meta_mod

LOG = logging.getLogger(__name__)

GROUP = 'oslo_transfer_bittorrent'


def register(sub) -> None:
    p = sub.add_parser('make-torrent',
                       help='write BitTorrent metadata for a file or folder')
    p.add_argument('path', metavar='FILE', help='a file or a directory')
    p.add_argument('--web-seed', action='append', default=[], metavar='URL',
                   help='an HTTP(S) URL serving the same data (repeat)')
    p.add_argument('--tracker', action='append', default=[], metavar='URL',
                   help='a tracker announce URL (repeat)')
    p.add_argument('--piece-size', type=_args.at_least(1), metavar='BYTES',
                   help='bytes per piece (default: from the size, 256 KiB '
                        'to 4 MiB, or [oslo_transfer_bittorrent] '
                        'piece_size)')
    p.add_argument('--name', help='name in the metadata (default: the '
                                  'base name of FILE)')
    p.add_argument('-o', '--output', required=True, metavar='OUT.torrent',
                   help='where to write the metadata ("-" for stdout)')
    p.set_defaults(func=run_make)

    p = sub.add_parser('seed', help='share local data by BitTorrent until '
                                    'stopped (SIGTERM)')
    p.add_argument('path', metavar='FILE|TORRENT',
                   help='the data to share, or a .torrent whose data lies '
                        'beside it (or in --data)')
    p.add_argument('--torrent', metavar='FILE|URL',
                   help='metadata of FILE (default: made now)')
    p.add_argument('--data', metavar='PATH',
                   help='the data of a TORRENT given as first argument')
    p.add_argument('--seed-time', type=_args.at_least(0, float),
                   default=0.0, metavar='S',
                   help='seconds to seed; 0 (the default) seeds until '
                        'SIGTERM')
    p.add_argument('--peer', action='append', default=[],
                   metavar='HOST:PORT', help='a peer to connect to (repeat)')
    p.add_argument('--listen', metavar='IP:PORT',
                   help='listen address (default: [oslo_transfer_'
                        'bittorrent] listen_interfaces)')
    p.add_argument('--web-seed', action='append', default=[], metavar='URL',
                   help='web seed of metadata made now')
    p.add_argument('--save-torrent', metavar='OUT.torrent',
                   help='write the metadata made now to this file')
    p.add_argument('--no-verify', action='store_true',
                   help='trust the data instead of hash-checking it first')
    p.set_defaults(func=run_seed)


def _driver(conf):
    from oslo_transfer._drivers.bittorrent import driver as bittorrent
    from oslo_transfer import opts
    opts.register_opts(conf, [bittorrent.BitTorrentDriver])
    drv = bittorrent.BitTorrentDriver(conf)
    drv.check_available()
    return drv


def run_make(args) -> int:
    piece = args.piece_size
    if piece is None:
        from oslo_transfer._drivers.bittorrent import driver as bittorrent
        from oslo_transfer import opts
        opts.register_opts(args.conf, [bittorrent.BitTorrentDriver])
        piece = getattr(args.conf, GROUP).piece_size or None
    data = meta_mod.make_torrent(args.path, web_seeds=args.web_seed,
                                 piece_size=piece, trackers=args.tracker,
                                 name=args.name)
    meta = meta_mod.parse(data)
    if args.output == '-':
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    else:
        _write(args.output, data)
        print('%s: %d bytes in %d pieces of %d, info-hash %s'
              % (args.output, meta.total_size, meta.num_pieces,
                 meta.piece_length, meta.info_hash))
    return 0


def _write(path, data):
    tmp = '%s.tmp-%d' % (path, os.getpid())
    with open(tmp, 'wb') as f:
        f.write(data)
    os.replace(tmp, path)


def _metadata(args, drv):
    """``(meta, data_path)`` from the command line."""
    first = args.path
    if args.torrent is None and first.endswith('.torrent') and \
            os.path.isfile(first):
        meta = drv.load_metadata(first, _ctx(args.conf))
        data = args.data or os.path.join(os.path.dirname(
            os.path.abspath(first)), meta.name)
        return meta, data
    if args.torrent is not None:
        return drv.load_metadata(args.torrent, _ctx(args.conf)), first
    piece = drv.options.piece_size or None
    raw = meta_mod.make_torrent(first, web_seeds=args.web_seed,
                                piece_size=piece)
    if args.save_torrent:
        _write(args.save_torrent, raw)
    return meta_mod.parse(raw), first


def _ctx(conf):
    """A context whose ``driver_for`` reaches the http driver.

    For ``--torrent URL``: the bittorrent driver reads the metadata with
    the http driver of a Transfer, built only then.
    """
    from oslo_transfer import driver

    def driver_for(location):
        from oslo_transfer import transfer
        return transfer.Transfer(conf, drivers=['http']).driver_for(location)

    return driver.Context(driver_for=driver_for)


def run_seed(args) -> int:
    conf = args.conf
    if args.listen:
        from oslo_transfer._drivers.bittorrent import driver as bittorrent
        from oslo_transfer import opts
        opts.register_opts(conf, [bittorrent.BitTorrentDriver])
        conf.set_override('listen_interfaces', [args.listen], GROUP)
    drv = _driver(conf)
    meta, path = _metadata(args, drv)
    stop = threading.Event()

    def on_signal(signum, frame):
        stop.set()

    old = {s: signal.signal(s, on_signal)
           for s in (signal.SIGTERM, signal.SIGINT)}
    from oslo_transfer._drivers.bittorrent import driver as bittorrent
    try:
        sess = drv.seed(path, meta, seconds=args.seed_time or None,
                        peers=args.peer, verify=not args.no_verify)
        print(json.dumps({'event': 'seeding', 'info_hash': meta.info_hash,
                          'listen_port': sess.listen_port(),
                          'path': os.path.abspath(path),
                          'size': meta.total_size}), flush=True)
        while not stop.is_set():
            if bittorrent.wait_for_seeding(0.5):
                break
    finally:
        bittorrent.stop_seeding()
        for s, h in old.items():
            signal.signal(s, h)
    status = 'stopped by signal' if stop.is_set() else 'seed time is up'
    print(json.dumps({'event': 'stopped', 'info_hash': meta.info_hash,
                      'reason': status}), flush=True)
    return 0


def main(argv=None) -> int:
    """``python -m oslo_transfer.cmd.torrent make-torrent|seed ...``."""
    from oslo_transfer.cmd import main as main_mod
    parser = argparse.ArgumentParser(prog='oslo-transfer')
    parser.add_argument('--config-file', action='append', default=[],
                        metavar='PATH')
    parser.add_argument('-v', '--verbose', action='count', default=0)
    sub = parser.add_subparsers(dest='command', metavar='COMMAND')
    sub.required = True
    register(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level={0: logging.WARNING, 1: logging.INFO}.get(args.verbose,
                                                        logging.DEBUG),
        stream=sys.stderr, format='%(levelname)s %(name)s: %(message)s')
    try:
        args.conf = cfg.ConfigOpts()
        args.conf([], project='oslo_transfer',
                  default_config_files=args.config_file,
                  default_config_dirs=[])
        return args.func(args)
    except (exceptions.TransferError, ValueError) as exc:
        print('oslo-transfer: %s: %s' % (type(exc).__name__, exc),
              file=sys.stderr)
        return main_mod.exit_code(exc)


if __name__ == '__main__':
    sys.exit(main())
