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

"""One receiver of the boot-storm benchmark (runs inside its namespace).

``--mode oslo`` (default): ``Transfer.copy`` with the selector's plan, as a
compute node would run it; the plan must start with bittorrent.
``--mode libtorrent``: plain libtorrent with the origin as its own web seed
(``urlseed_max_request_bytes`` of one piece), the same peers connected: the
baseline that oslo.transfer's piece selection is measured against.

Sleeps until ``--start-at`` (so that interpreter start-up is not timed),
copies, prints one JSON line (start, end, stats, peak RSS), then seeds until
every named peer is complete (or ``--seed-time``) and exits.
"""

import argparse
import json
import logging
import os
import resource
import sys
import threading
import time


def run_oslo(args, peers):
    from oslo_config import cfg
    import oslo_transfer
    from oslo_transfer import transfer as transfer_mod

    conf = cfg.ConfigOpts()
    conf([], project='oslo_transfer_bench', default_config_files=[],
         default_config_dirs=[])
    tr = transfer_mod.Transfer(conf)
    g = 'oslo_transfer_bittorrent'
    conf.set_override('listen_interfaces', [args.listen], g)
    conf.set_override('seed_time', args.seed_time, g)
    conf.set_override('state_path', args.state_path, 'oslo_transfer')
    for item in args.set:
        key, _, value = item.partition('=')
        conf.set_override(key, value, g)
    src = oslo_transfer.Source(urls=[args.url], torrent=args.torrent)
    hints = oslo_transfer.Hints(peers=args.peers or len(peers),
                                peer_addresses=peers)
    plan = tr.plan(src, args.dest, hints=hints)
    wait_until(args.start_at)
    start = time.time()
    cpu0 = _cpu()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    logging.getLogger('peer').info('copy starts')
    if args.lt:
        from oslo_transfer._drivers.bittorrent import session as session_mod
        sess = session_mod.get_session(tr.driver('bittorrent').options)
        sess.session.apply_settings(lt_settings(args.lt))
    timeline = None
    if args.timeline:
        from oslo_transfer._drivers.bittorrent import session as session_mod

        def handles():
            sess = session_mod.current()
            return sess.session.get_torrents() if sess else []
        timeline = Timeline(args.start_at, handles).start()
    res = tr.copy(src, args.dest, checksum=args.checksum, hints=hints)
    end = time.time()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    out = {'start': start, 'end': end, 'driver': res.driver,
           'copy_cpu_s': _cpu() - cpu0,
           'copy_user_s': ru1.ru_utime - ru0.ru_utime,
           'copy_sys_s': ru1.ru_stime - ru0.ru_stime,
           'timeline': timeline.stop() if timeline else None,
           'plan': [c.driver for c in plan.candidates],
           'stats': tr.driver('bittorrent').last_stats}
    return out, lambda: res.seeding.wait() if res.seeding else True


def run_libtorrent(args, peers):
    import libtorrent as lt
    from oslo_transfer import torrent as meta_mod

    with open(args.torrent, 'rb') as f:
        meta = meta_mod.parse(f.read())
    host, port = args.listen.rsplit(':', 1)
    s = lt.session({
        'listen_interfaces': args.listen, 'enable_dht': False,
        'enable_lsd': False, 'enable_upnp': False, 'enable_natpmp': False,
        'enable_outgoing_utp': False, 'enable_incoming_utp': False,
        'urlseed_max_request_bytes': meta.piece_length,
        'ignore_limits_on_local_network': False,
        'close_redundant_connections': False,
        'alert_mask': lt.alert.category_t.status_notification,
        **lt_settings(args.lt)})
    ti = lt.torrent_info(meta.torrent_bytes(trackers=meta.trackers))
    ti.add_url_seed(args.url)
    p = lt.add_torrent_params()
    p.ti = ti
    p.save_path = os.path.dirname(args.dest)
    p.renamed_files = {0: os.path.basename(args.dest)}
    wait_until(args.start_at)
    start = time.time()
    cpu0 = _cpu()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    h = s.add_torrent(p)
    timeline = None
    if args.timeline:
        timeline = Timeline(args.start_at, lambda: [h]).start()
    for addr in peers:
        ip, pport = addr.rsplit(':', 1)
        if addr != args.listen:
            h.connect_peer((ip, int(pport)))
    while not h.status().is_seeding:
        s.wait_for_alert(200)
        s.pop_alerts()
    end = time.time()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    st = h.status()
    out = {'start': start, 'end': end, 'driver': 'libtorrent',
           'copy_cpu_s': _cpu() - cpu0,
           'copy_user_s': ru1.ru_utime - ru0.ru_utime,
           'copy_sys_s': ru1.ru_stime - ru0.ru_stime,
           'timeline': timeline.stop() if timeline else None,
           'stats': {'peer_bytes': st.total_payload_download}}

    others = (args.peers or len(peers)) - 1

    def seed(session=s):
        deadline = time.time() + args.seed_time
        while time.time() < deadline:
            infos = h.get_peer_info()
            if len([i for i in infos if i.seed]) >= others:
                time.sleep(3)
                return
            time.sleep(0.5)

    return out, seed


def lt_settings(items) -> dict:
    """``["name=value", ...]`` -> libtorrent settings (int, bool or str)."""
    out = {}
    for item in items:
        key, _, value = item.partition('=')
        if value.lower() in ('true', 'false'):
            out[key] = value.lower() == 'true'
        else:
            try:
                out[key] = int(value)
            except ValueError:
                out[key] = value
    return out


def _cpu():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class Timeline:
    """Samples the torrent's progress and this process's CPU every 0.25 s.

    Each sample is ``[t, pieces held, MB/s down, MB/s up, peers, user CPU
    s, system CPU s]`` with ``t`` in seconds from ``--start-at``.
    """

    def __init__(self, t0, handles):
        self.t0 = t0
        self.handles = handles      # callable -> list of torrent handles
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join()
        return self.samples

    def _run(self):
        while not self._stop.wait(0.25):
            ru = resource.getrusage(resource.RUSAGE_SELF)
            row = [round(time.time() - self.t0, 2), 0, 0.0, 0.0, 0,
                   round(ru.ru_utime, 2), round(ru.ru_stime, 2)]
            try:
                for h in self.handles():
                    st = h.status()
                    row[1] = st.num_pieces
                    row[2] = round(st.download_payload_rate / 1e6, 1)
                    row[3] = round(st.upload_payload_rate / 1e6, 1)
                    row[4] = st.num_peers
            except RuntimeError:
                pass
            self.samples.append(row)


def wait_until(t):
    delay = t - time.time()
    if delay > 0:
        time.sleep(delay)


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--mode', choices=('oslo', 'libtorrent'), default='oslo')
    p.add_argument('--dest', required=True)
    p.add_argument('--torrent', required=True)
    p.add_argument('--url', required=True)
    p.add_argument('--listen', required=True)
    p.add_argument('--peer', action='append', default=[])
    p.add_argument('--peers', type=int, default=0,
                   help='receivers in all (default: the --peer count)')
    p.add_argument('--checksum')
    p.add_argument('--start-at', type=float, default=0.0)
    p.add_argument('--seed-time', type=float, default=60.0)
    p.add_argument('--state-path', default='/tmp/oslo-transfer-bench')
    p.add_argument('--set', action='append', default=[])
    p.add_argument('--lt', action='append', default=[],
                   help='raw libtorrent setting NAME=VALUE (experiments)')
    p.add_argument('--log')
    p.add_argument('--timeline', action='store_true',
                   help='sample progress and CPU every 0.25 s')
    args = p.parse_args()
    if args.log:
        logging.basicConfig(filename=args.log, level=logging.DEBUG,
                            format='%(asctime)s %(name)s: %(message)s')
    peers = tuple(args.peer)
    run = run_oslo if args.mode == 'oslo' else run_libtorrent
    try:
        out, seed = run(args, peers)
        out['ok'] = True
    except Exception as exc:  # noqa: reported to the benchmark
        out, seed = {'ok': False, 'error': '%s: %s' % (type(exc).__name__,
                                                       exc)}, None
    ru = resource.getrusage(resource.RUSAGE_SELF)
    out['rss_kib'] = ru.ru_maxrss
    out['cpu_s'] = ru.ru_utime + ru.ru_stime
    print(json.dumps(out), flush=True)
    if seed is not None:
        seed()
    return 0 if out['ok'] else 1


if __name__ == '__main__':
    sys.exit(main())
