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
metadata with the HTTP origin as web seed (:mod:`oslo_transfer.torrent`).

``seed FILE|TORRENT`` shares local data (:meth:`Transfer.seed
<oslo_transfer.transfer.Transfer.seed>`) until its time is up or SIGTERM /
SIGINT (a clean stop, exit status 0).  Once the data is verified and the
session listens, one JSON line goes to stdout: ``{"event": "seeding",
"info_hash": ..., "listen_port": ..., "path": ..., "size": ...}``; when it
ends, another: ``{"event": "stopped", "info_hash": ..., "reason": ...}``.

``python -m oslo_transfer.cmd.torrent ARGS`` is ``oslo-transfer ARGS`` (the
tests start peers that way).
"""

import json
import logging
import os
import signal
import sys
import threading

from oslo_config import cfg

from oslo_transfer.cmd import _args
from oslo_transfer import torrent as torrent_mod

LOG = logging.getLogger(__name__)

#: the option group of ``piece_size``, the default of both commands
_GROUP = 'oslo_transfer_bittorrent'


def register(sub) -> None:
    p = sub.add_parser('make-torrent',
                       help='write BitTorrent metadata for a file or folder')
    p.add_argument('path', metavar='FILE', help='a file or a directory')
    p.add_argument('--web-seed', action='append', default=[], metavar='URL',
                   help='an HTTP(S) URL serving the same data (repeat)')
    p.add_argument('--tracker', action='append', default=[], metavar='URL',
                   help='a tracker announce URL (repeat)')
    p.add_argument('--piece-size',
                   type=_args.at_least(1, maximum=256 * 1024 * 1024),
                   metavar='BYTES',
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


def _piece_size(conf) -> int | None:
    """``[oslo_transfer_bittorrent] piece_size``; None: chosen by size."""
    try:
        return getattr(conf, _GROUP).piece_size or None
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        return None         # no bittorrent driver installed: the default


def run_make(args) -> int:
    piece = args.piece_size
    if piece is None:
        with args.make_transfer() as t:
            piece = _piece_size(t.conf)
    data = torrent_mod.make_torrent(args.path, web_seeds=args.web_seed,
                                    piece_size=piece, trackers=args.tracker,
                                    name=args.name)
    meta = torrent_mod.parse(data)
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


def _metadata(args, conf):
    """``(torrent, data_path)`` from the command line.

    ``torrent`` is what :meth:`Transfer.seed` takes: parsed metadata, the
    ``--torrent`` path or URL, metadata made now, or None (the driver
    makes it).
    """
    first = args.path
    if args.torrent is None and first.endswith('.torrent') and \
            os.path.isfile(first):
        meta = torrent_mod.parse_file(first)
        data = args.data or os.path.join(os.path.dirname(
            os.path.abspath(first)), meta.name)
        return meta, data
    if args.torrent is not None:
        return args.torrent, first
    if not (args.web_seed or args.save_torrent):
        return None, first
    raw = torrent_mod.make_torrent(first, web_seeds=args.web_seed,
                                   piece_size=_piece_size(conf))
    if args.save_torrent:
        _write(args.save_torrent, raw)
    return raw, first


def run_seed(args) -> int:
    with args.make_transfer() as t:
        if args.listen:
            _override(t.conf, 'listen_interfaces', [args.listen])
        torrent, path = _metadata(args, t.conf)
        stop = threading.Event()

        def on_signal(signum, frame):
            stop.set()

        old = {s: signal.signal(s, on_signal)
               for s in (signal.SIGTERM, signal.SIGINT)}
        try:
            seeding = t.seed(path, torrent, seconds=args.seed_time or None,
                             peers=args.peer, verify=not args.no_verify)
            try:
                _announce(seeding)
                while not stop.is_set() and not seeding.wait(0.5):
                    pass
            finally:
                seeding.stop()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    reason = 'stopped by signal' if stop.is_set() else seeding.reason
    print(json.dumps({'event': 'stopped', 'info_hash': seeding.info_hash,
                      'reason': reason}), flush=True)
    return 0


def _override(conf, name, value):
    try:
        conf.set_override(name, value, _GROUP)
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        pass                # no bittorrent driver: Transfer.seed says so


def _announce(seeding):
    print(json.dumps({'event': 'seeding', 'info_hash': seeding.info_hash,
                      'listen_port': seeding.listen_port,
                      'path': seeding.path, 'size': seeding.size}),
          flush=True)


def main(argv=None) -> int:
    """``python -m oslo_transfer.cmd.torrent ARGS``: ``oslo-transfer ARGS``."""
    from oslo_transfer.cmd import main as main_mod
    return main_mod.main(argv)


if __name__ == '__main__':
    sys.exit(main())
