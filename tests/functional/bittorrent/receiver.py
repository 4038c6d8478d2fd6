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

"""A receiver of the swarm tests: one process, one ``Transfer.copy``.

``python -m tests.functional.bittorrent.receiver --dest D --torrent T
[--url URL] [--peer HOST:PORT]... [--peers N] [--listen IP:PORT]
[--checksum ALGO:HEX] [--set GROUP.OPT=VALUE]... [--slow-final-flush S]``

``--slow-final-flush`` makes the complete download wait S seconds, still in
the swarm, before its last flush: what a slow disk does.

Prints one JSON line on stdout: ``{"ok": true, "result": {...}, "stats":
{...}}`` (``stats`` are the bittorrent driver's counters: pieces from
peers and from the web seed, bytes, hash failures) or ``{"ok": false,
"error": CLASS, "message": TEXT, "stats": {...}}``; then seeds for the
configured ``seed_time`` (``Result.seeding.wait()``) and exits.
"""

import argparse
import json
import logging
import sys
import time

from oslo_config import cfg

import oslo_transfer
from oslo_transfer._drivers.bittorrent import download as download_mod
from oslo_transfer import transfer as transfer_mod


def main(argv=None):
    p = argparse.ArgumentParser()
    p.add_argument('--dest', required=True)
    p.add_argument('--torrent', required=True)
    p.add_argument('--url', action='append', default=[])
    p.add_argument('--peer', action='append', default=[])
    p.add_argument('--peers', type=int, default=4)
    p.add_argument('--listen', default='127.0.0.1:0')
    p.add_argument('--checksum')
    p.add_argument('--set', action='append', default=[],
                   help='GROUP.OPTION=VALUE override')
    p.add_argument('--state-path', required=True)
    p.add_argument('--slow-final-flush', type=float, default=0.0)
    args = p.parse_args(argv)
    if args.slow_final_flush:
        _slow_final_flush(args.slow_final_flush)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format='%(asctime)s %(process)d %(levelname)s '
                               '%(name)s: %(message)s')
    conf = cfg.ConfigOpts()
    conf([], project='oslo_transfer_tests', default_config_files=[],
         default_config_dirs=[])
    tr = transfer_mod.Transfer(conf)
    group = 'oslo_transfer_bittorrent'
    conf.set_override('listen_interfaces', [args.listen], group)
    conf.set_override('allow_multiple_connections_per_ip', True, group)
    conf.set_override('state_path', args.state_path, 'oslo_transfer')
    for item in args.set:
        key, _, value = item.partition('=')
        grp, _, opt = key.rpartition('.')
        conf.set_override(opt, value, grp or group)
    src = oslo_transfer.Source(urls=args.url, torrent=args.torrent)
    hints = oslo_transfer.Hints(peers=args.peers,
                                peer_addresses=tuple(args.peer))
    drv = tr.driver('bittorrent')
    seeding = None
    try:
        res = tr.copy(src, args.dest, checksum=args.checksum, hints=hints)
        seeding = res.seeding
        out = {'ok': True, 'result': {
            'driver': res.driver, 'bytes_transferred': res.bytes_transferred,
            'bytes_resumed': res.bytes_resumed, 'digest': res.digest,
            'attempts': [list(a) for a in (res.attempts or [])]}}
    except oslo_transfer.exceptions.TransferError as exc:
        out = {'ok': False, 'error': type(exc).__name__, 'message': str(exc)}
    out['stats'] = drv.last_stats
    print(json.dumps(out), flush=True)
    if seeding is not None:
        seeding.wait()
    return 0 if out['ok'] else 1


def _slow_final_flush(seconds):
    final_flush = download_mod.TorrentDownload._final_flush

    def slow(job):
        logging.getLogger(__name__).info(
            'receiver: final flush waits %.1fs', seconds)
        time.sleep(seconds)
        return final_flush(job)

    download_mod.TorrentDownload._final_flush = slow


if __name__ == '__main__':
    sys.exit(main())
