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

"""The one libtorrent session of the process, and its alerts.

libtorrent is imported here, on first use, never when the driver module is
imported.  One session serves every download and every seed of the process
(one listen socket, one set of rate limits).  A single daemon thread waits
for alerts (``wait_for_alert``, no polling loop) and hands each torrent's
alerts to the listener registered for its info-hash; the listener runs on
that thread and must only queue the alert.

Settings (see the driver's options for the user-facing names):

* DHT, UPnP and NAT-PMP are off: peers come from the orchestrator's hints
  and from trackers; local peer discovery is an option;
* TCP only (no uTP): in a data centre uTP's delay-based congestion control
  only costs CPU and throughput;
* ``ignore_limits_on_local_network = False``: rate limits hold in a data
  centre, where every peer is "local";
* every interested peer is unchoked (``unchoke_slots_limit = -1``): the
  hosts of a boot storm cooperate, tit-for-tat only slows them down;
* ``urlseed_max_request_bytes`` of one piece (the default, 16 MiB, makes
  every peer pull the whole file from a web seed).  oslo.transfer fetches
  web-seed pieces itself (see ``origin``); the setting guards any
  web seed that libtorrent would contact on its own.
"""

import atexit
import dataclasses
import importlib.util
import logging
import threading
import time

from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

__all__ = ['find_libtorrent', 'import_libtorrent', 'get_session', 'is_seed',
           'Session']

_lt = None

_MISSING = ('the bittorrent driver needs libtorrent 2.x, a requirement of '
            'oslo.transfer that is missing here: pip install libtorrent')


def find_libtorrent():
    """Raise ``MissingDependency`` unless libtorrent can be imported.

    Looks for the module without loading it: every plan checks the
    peer-to-peer drivers, and loading libtorrent (~15 ms and ~10 MiB of
    shared library) would be paid by each HTTP or file copy too.  The
    version is checked by :func:`import_libtorrent` on first use.
    """
    if _lt is not None:
        return
    try:
        found = importlib.util.find_spec('libtorrent') is not None
    except (ImportError, ValueError):
        found = False
    if not found:
        raise exceptions.MissingDependency(_MISSING)


def import_libtorrent():
    """Import libtorrent, or raise ``MissingDependency`` naming the extra."""
    global _lt
    if _lt is None:
        try:
            import libtorrent
        except ImportError as exc:
            raise exceptions.MissingDependency(_MISSING) from exc
        major = int(getattr(libtorrent, 'version_major', 0))
        if major < 2:
            raise exceptions.MissingDependency(
                'the bittorrent driver needs libtorrent 2.x, found %s'
                % libtorrent.__version__)
        _lt = libtorrent
    return _lt


def settings_from(opts, lt) -> dict:
    """libtorrent settings from the ``[oslo_transfer_bittorrent]`` group."""
    cat = lt.alert.category_t
    return {
        'listen_interfaces': ','.join(opts.listen_interfaces),
        'enable_dht': False,
        'enable_upnp': False,
        'enable_natpmp': False,
        'enable_lsd': bool(opts.local_peer_discovery),
        'enable_outgoing_utp': False,
        'enable_incoming_utp': False,
        'download_rate_limit': int(opts.download_rate_limit),
        'upload_rate_limit': int(opts.upload_rate_limit),
        'ignore_limits_on_local_network': False,
        'allow_multiple_connections_per_ip':
            bool(opts.allow_multiple_connections_per_ip),
        'unchoke_slots_limit': -1,
        'urlseed_max_request_bytes': 1024 * 1024,
        'min_reconnect_time': 2,
        # Seeds stay connected to complete peers, so that a seed can see
        # that every named peer is complete and stop early.
        'close_redundant_connections': False,
        'stop_tracker_timeout': 1,
        'alert_queue_size': 100000,
        'alert_mask': (cat.error_notification | cat.status_notification |
                       cat.storage_notification |
                       cat.piece_progress_notification),
        'user_agent': 'oslo.transfer libtorrent/%s' % lt.__version__,
        'validate_https_trackers': True,
    }


@dataclasses.dataclass(frozen=True)
class Event:
    """A copy of the facts of one alert.

    libtorrent frees an alert at the next ``pop_alerts()``: listeners get
    this copy, never the alert.

    :ivar kind: the alert's type name (``piece_finished_alert``, ...).
    :ivar info_hash: hex v1 info-hash of the torrent.
    :ivar piece: the piece index, for piece alerts.
    :ivar message: libtorrent's text.
    :ivar error: True for alerts in the error category.
    :ivar data: the piece's bytes, for a ``read_piece_alert`` (None when
        the read failed).
    """

    kind: str
    info_hash: str
    piece: int | None = None
    message: str = ''
    error: bool = False
    data: bytes | None = None


def is_seed(info) -> bool:
    """True if the peer of ``info`` (a ``peer_info``) has the whole file.

    ``peer_info.seed`` is the flag's value (a class constant, true for
    every peer), not the state: the state is a bit of ``flags``.
    """
    return bool(info.flags & import_libtorrent().peer_info.seed)


def alert_info_hash(alert) -> str | None:
    """The hex v1 info-hash an alert is about, or None."""
    hashes = getattr(alert, 'info_hashes', None)
    if hashes is not None:
        return str(hashes.v1)
    handle = getattr(alert, 'handle', None)
    if handle is None:
        return None
    try:
        return str(handle.info_hashes().v1)
    except RuntimeError:
        return None


class Session:
    """The process-wide libtorrent session and its alert thread."""

    def __init__(self, opts):
        lt = import_libtorrent()
        self.lt = lt
        self.settings = settings_from(opts, lt)
        self._lock = threading.Lock()
        self._listeners = {}
        self._listening = threading.Event()
        self.listen_errors = []
        #: CPU seconds of the alert thread so far (diagnostics)
        self.alert_cpu = 0.0
        self.session = lt.session(self.settings)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._alert_loop,
                                        name='oslo-transfer-bittorrent',
                                        daemon=True)
        self._thread.start()

    # -- settings -----------------------------------------------------------

    def apply(self, opts):
        """Apply the options of another ``ConfigOpts`` (last one wins)."""
        new = settings_from(opts, self.lt)
        changed = {k: v for k, v in new.items() if self.settings.get(k) != v}
        if changed:
            LOG.info('bittorrent: changing session settings %s',
                     sorted(changed))
            if 'listen_interfaces' in changed:
                self._listening.clear()
            self.settings.update(changed)
            self.session.apply_settings(changed)

    def listen_port(self, timeout: float = 5.0) -> int:
        """The TCP port peers connect to (0 if nothing listens)."""
        self._listening.wait(timeout)
        return self.session.listen_port()

    # -- listeners ----------------------------------------------------------

    def listen(self, info_hash: str, callback):
        """Send the alerts of ``info_hash`` to ``callback(event)``.

        ``event`` is an :class:`Event`; the callback runs on the alert
        thread and must return quickly.
        """
        with self._lock:
            self._listeners.setdefault(info_hash, []).append(callback)

    def unlisten(self, info_hash: str, callback):
        with self._lock:
            cbs = self._listeners.get(info_hash, [])
            if callback in cbs:
                cbs.remove(callback)
            if not cbs:
                self._listeners.pop(info_hash, None)

    def _alert_loop(self):
        lt = self.lt
        cpu0 = time.thread_time()
        while not self._stop.is_set():
            self.alert_cpu = time.thread_time() - cpu0
            try:
                if not self.session.wait_for_alert(500):
                    continue
                alerts = self.session.pop_alerts()
            except Exception:  # noqa: the thread must survive
                LOG.exception('bittorrent: reading alerts failed')
                continue
            for alert in alerts:
                if isinstance(alert, lt.listen_succeeded_alert):
                    LOG.info('bittorrent: %s', alert.message())
                    self._listening.set()
                    continue
                if isinstance(alert, lt.listen_failed_alert):
                    LOG.warning('bittorrent: %s', alert.message())
                    self.listen_errors.append(alert.message())
                    self._listening.set()
                    continue
                if isinstance(alert, lt.alerts_dropped_alert):
                    LOG.warning('bittorrent: libtorrent dropped alerts')
                key = alert_info_hash(alert)
                if key is None:
                    continue
                with self._lock:
                    callbacks = list(self._listeners.get(key, ()))
                if not callbacks:
                    continue
                event = self._event(alert, key)
                for cb in callbacks:
                    try:
                        cb(event)
                    except Exception:  # noqa: one listener must not
                        LOG.exception('bittorrent: alert listener failed')

    def _event(self, alert, key) -> Event:
        piece = getattr(alert, 'piece_index', None)
        data = None
        if isinstance(alert, self.lt.read_piece_alert):
            piece = alert.piece
            if not alert.error.value():
                data = bytes(alert.buffer)
        try:
            message = alert.message()
        except Exception:  # noqa: a message is only for logs
            message = ''
        return Event(kind=type(alert).__name__, info_hash=key,
                     piece=int(piece) if piece is not None else None,
                     message=message, data=data,
                     error=bool(alert.category() &
                                self.lt.alert.category_t.error_notification))

    # -- torrents -----------------------------------------------------------

    def find(self, info_hash: str):
        """The handle of ``info_hash`` in the session, or None."""
        h = self.session.find_torrent(self.lt.sha1_hash(
            bytes.fromhex(info_hash)))
        return h if h.is_valid() else None

    def add(self, params):
        """Add a torrent; libtorrent errors become ``TransferError``."""
        try:
            return self.session.add_torrent(params)
        except RuntimeError as exc:
            raise exceptions.ConnectionFailed(
                'libtorrent refused the torrent: %s' % exc) from exc

    def remove(self, handle, info_hash: str, timeout: float = 10.0):
        """Remove a torrent (files kept) and wait until libtorrent let go."""
        done = threading.Event()

        def on_alert(event):
            if event.kind == 'torrent_removed_alert':
                done.set()

        self.listen(info_hash, on_alert)
        try:
            try:
                self.session.remove_torrent(handle)
            except RuntimeError as exc:
                LOG.debug('bittorrent: remove %s: %s', info_hash, exc)
                return
            if not done.wait(timeout):
                LOG.warning('bittorrent: %s was not removed within %.0fs',
                            info_hash, timeout)
        finally:
            self.unlisten(info_hash, on_alert)

    def close(self):
        """Stop the alert thread, then pause and drop the session.

        Called at exit once nothing else uses the session, so that
        libtorrent's threads stop in order (not during interpreter
        teardown, while daemon threads may still be inside a call).
        """
        self._stop.set()
        self._thread.join(2.0)
        try:
            self.session.pause()
            for h in self.session.get_torrents():
                self.session.remove_torrent(h)
        except RuntimeError:
            pass
        self.session = None


_session = None
_session_lock = threading.Lock()


def get_session(opts) -> Session:
    """The process-wide :class:`Session`, made on first use."""
    global _session
    with _session_lock:
        if _session is None:
            _session = Session(opts)
            atexit.register(_close)
        else:
            _session.apply(opts)
        return _session


def current() -> Session | None:
    """The session if one was made, without making one."""
    return _session


def _close():
    global _session
    from oslo_transfer._drivers.bittorrent import seed as seed_mod
    seed_mod.SEEDS.shutdown()
    with _session_lock:
        s, _session = _session, None
    if s is not None:
        s.close()
