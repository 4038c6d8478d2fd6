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

"""Pieces from the HTTP origin (the web seed), and who fetches which.

libtorrent's own web-seed support picks pieces from the web seed as from any
peer, so every receiver of a boot storm pulls much of the image from the
origin.  Instead, each receiver fetches its *share* of the pieces from the
origin itself -- ranged GETs of whole pieces through the Transfer's own
``http`` driver (``Context.driver_for``), so the location's headers and
credentials, TLS options and the URL policy (every redirect checked) apply
as for any HTTP download -- and hands them to
libtorrent with ``add_piece``, which checks each piece against its hash
before it is written and offered to peers.  The other pieces come from the
peers that fetched them.

The share: the receivers are the hosts of ``Hints.peer_addresses`` (this
host included, or added when missing); sorted, this host's position ``i`` of
``n`` names the ``i``-th of ``n`` contiguous slices of the pieces.  When the
peers deliver nothing for ``peer_wait`` seconds (a receiver died, or none was
named), the origin is asked for the missing pieces too, each receiver
starting at its own offset so that they still mostly fetch different ones.

Without a peer list (receivers that meet through a tracker or local
discovery), no host knows the others' addresses in advance: its slice is
``hash(endpoint) mod peers`` (``endpoint_share``; ``Hints.peers`` counts
the receivers), and where in that slice it starts comes from the same
hash.  Two hosts may draw the same slice and some slices nobody;
:class:`~oslo_transfer._drivers.bittorrent.pieces.SpreadPlan` deals with
both.
"""

import hashlib

import ipaddress
import logging
import socket
import threading
import time

from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

__all__ = ['parse_peer', 'resolve_peers', 'my_share', 'slice_owners',
           'share_range',
           'steal_order', 'endpoint_share', 'own_endpoint', 'OriginFetcher']


def parse_peer(addr: str) -> tuple:
    """``"HOST:PORT"`` or ``"[V6]:PORT"`` -> ``(host, port)``.

    :raises InvalidLocation: not of that form.
    """
    text = str(addr).strip()
    host, sep, port = text.rpartition(':')
    if host.startswith('[') and host.endswith(']'):
        host = host[1:-1]
    try:
        port = int(port)
    except ValueError:
        port = -1
    if not sep or not host or not 0 < port < 65536:
        raise exceptions.InvalidLocation('peer address %r is not HOST:PORT'
                                         % (addr,))
    return host, port


def resolve(host: str) -> str:
    """The first IP address of ``host`` (itself if it is one)."""
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        pass
    try:
        return socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)[0][4][0]
    except OSError as exc:
        raise exceptions.ConnectionFailed('cannot resolve peer %s: %s'
                                          % (host, exc)) from exc


def resolve_peers(addresses) -> list:
    """``["HOST:PORT", ...]`` -> ``[(ip, port), ...]``; bad ones logged."""
    peers = []
    for addr in addresses or ():
        try:
            host, port = parse_peer(addr)
            peers.append((resolve(host), port))
        except exceptions.TransferError as exc:
            LOG.warning('bittorrent: ignoring peer %s: %s', addr, exc)
    return peers


def is_local_ip(ip: str) -> bool:
    """True if ``ip`` is an address of this host (binding to it works)."""
    family = socket.AF_INET6 if ':' in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((ip, 0))
            return True
        except OSError:
            return False


def _route_source(ip: str) -> str | None:
    """Our address on the route to ``ip`` (no packet is sent)."""
    family = socket.AF_INET6 if ':' in ip else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((ip, 9))
            return s.getsockname()[0]
        except OSError:
            return None


def my_share(peers, listen_port: int) -> tuple:
    """``(index, count, others)`` of this host among ``peers``.

    :param peers: ``[(ip, port), ...]`` from the hints (resolved).
    :param listen_port: the port this host's session listens on.
    :returns: this host's position in the sorted list of receivers, their
        number, and the peers that are not this host.
    """
    me, others, ordered = _receivers(peers, listen_port)
    if not ordered:
        return 0, 1, []
    return ordered.index(me), len(ordered), others


def slice_owners(peers, listen_port: int) -> list:
    """The IP address of the owner of each slice, in slice order.

    The order of :func:`my_share`; None at this host's own slice.
    """
    me, _, ordered = _receivers(peers, listen_port)
    return [None if p == me else p[0] for p in ordered]


def _receivers(peers, listen_port):
    """``(me, others, ordered)``: this host, the others, all sorted."""
    me = None
    others = []
    for ip, port in peers:
        if me is None and port == listen_port and is_local_ip(ip):
            me = (ip, port)
        else:
            others.append((ip, port))
    everyone = set(others)
    if me is None and others:
        src = _route_source(others[0][0])
        me = (src or '0.0.0.0', listen_port)
    if me is not None:
        everyone.add(me)

    def key(p):
        ip = ipaddress.ip_address(p[0])
        return (ip.version, int(ip), p[1])

    return me, others, sorted(everyone, key=key)


def own_endpoint(listen_port: int, towards=()) -> str:
    """``"IP:PORT"`` of this host as the swarm sees it.

    The IP is our address on the route to the first of ``towards`` (host
    names or addresses: the origin, the trackers) that resolves; the port
    is the session's listen port.
    """
    for host in towards:
        try:
            ip = resolve(host)
        except exceptions.TransferError:
            continue
        src = _route_source(ip)
        if src:
            return '%s:%d' % (src, listen_port)
    return '%s:%d' % (socket.gethostname(), listen_port)


def endpoint_share(endpoint: str, count: int) -> tuple:
    """``(index, start)`` of the host at ``endpoint`` among ``count``.

    ``index`` is ``hash(endpoint) mod count``: the slice this host fetches
    from the origin when it knows no peer; ``start`` in ``[0, 1)`` is
    where in a run of free pieces it begins, from the same hash, so that
    two hosts that drew the same slice start apart.  The hash is SHA-256:
    the same on every host and Python.
    """
    h = int.from_bytes(hashlib.sha256(endpoint.encode('utf-8')).digest(),
                       'big')
    count = max(1, count)
    return h % count, ((h >> 64) & 0xFFFFFFFF) / 2.0 ** 32


def share_range(index: int, count: int, num_pieces: int) -> range:
    """The pieces of slice ``index`` of ``count``."""
    return range(index * num_pieces // count,
                 (index + 1) * num_pieces // count)


def steal_order(index: int, count: int, num_pieces: int) -> list:
    """Pieces of the other slices, in the order this host may take them.

    Slices are visited from the next one on; in each, from the back (its
    owner fetches from the front), this host takes every ``count - 1``-th
    piece starting at its own rank among the other hosts, so that hosts
    helping the same slow slice take different pieces.
    """
    order = []
    for step in range(1, count):
        j = (index + step) % count
        rank = (index - j - 1) % count
        pieces = share_range(j, count, num_pieces)
        if rank < len(pieces):
            order.extend(pieces[:len(pieces) - rank][::-1][::count - 1])
    return order


class OriginFetcher:
    """Threads that fetch pieces from the origins and add them to a torrent.

    An origin that no loaded driver serves (``ctx.driver_for`` raises
    ``NoDriverFound``) counts as dead from the start, with that error.

    :param job: the download (``next_origin_piece()``, ``origin_done()``,
        ``handle``, ``meta``).
    :param origins: ``Location`` list, tried in order.
    :param ctx: the transfer's context (cancel, timeouts, URL policy, the
        drivers that read the origins).
    """

    def __init__(self, job, origins, ctx, connections: int = 2):
        self.job = job
        self.origins = list(origins)
        self.token = driver_mod.CancelToken()
        self.ctx = driver_mod.Context(
            cancel=self.token, io_timeout=ctx.io_timeout,
            expires_at=ctx.expires_at, hints=ctx.hints,
            check_url=ctx.check_url, driver_for=ctx.driver_for,
            priority=ctx.priority, deadline_at=ctx.deadline_at,
            scheduler=ctx.scheduler)
        self._key = ctx.cancel.on_cancel(self.token.cancel)
        self._parent = ctx.cancel
        self.connections = max(1, connections)
        self.bytes = 0
        #: CPU seconds the fetcher threads used (diagnostics)
        self.cpu = 0.0
        self.errors = {}
        self.dead = set()
        #: origin URL -> the driver that reads it
        self.readers = {}
        self._lock = threading.Lock()
        self._threads = []
        self._kick = threading.Event()
        for loc in self.origins:
            try:
                self.readers[loc.url] = ctx.driver_for(loc)
            except exceptions.NoDriverFound as exc:
                LOG.warning('bittorrent: not using web seed %s: %s',
                            loc.masked, exc)
                self.errors[loc.url] = exc
                self.dead.add(loc.url)

    @property
    def started(self) -> bool:
        return bool(self._threads)

    def start(self):
        for i in range(self.connections):
            t = threading.Thread(target=self._worker, args=(i,),
                                 name='oslo-transfer-origin-%d' % i,
                                 daemon=True)
            t.start()
            self._threads.append(t)

    def wake(self):
        """Look for work now (an urgent piece), not at the next poll."""
        self._kick.set()

    def stop(self, timeout: float = 5.0):
        self.token.cancel('download finished')
        self._kick.set()
        self._parent.remove(self._key)
        for t in self._threads:
            t.join(timeout)

    @property
    def all_dead(self) -> bool:
        with self._lock:
            return len(self.dead) >= len(self.origins)

    def last_error(self):
        with self._lock:
            for loc in self.origins:
                if loc.url in self.errors:
                    return self.errors[loc.url]
        return None

    def _pick_origin(self, turn):
        with self._lock:
            alive = [o for o in self.origins if o.url not in self.dead]
        if not alive:
            return None
        return alive[turn % len(alive)]

    def _worker(self, turn):
        cpu0 = time.thread_time()
        try:
            self._work(turn)
        except Exception:  # noqa: never die silently
            LOG.exception('bittorrent: web seed fetcher failed')
            with self._lock:
                self.errors['fetcher'] = exceptions.ConnectionFailed(
                    'the web seed fetcher failed; see the log')
        finally:
            with self._lock:
                self.cpu += time.thread_time() - cpu0

    def _work(self, turn):
        failures = 0
        while not self.token.cancelled:
            loc = self._pick_origin(turn)
            if loc is None:
                return
            index = self.job.next_origin_piece()
            if index is None:
                self._kick.wait(0.1)
                self._kick.clear()
                continue
            offset, length = self.job.meta.piece_range(index)
            started = time.monotonic()
            try:
                data = self._fetch(loc, offset, length)
                LOG.debug('bittorrent: piece %d from %s in %.3fs', index,
                          loc.masked, time.monotonic() - started)
            except exceptions.Cancelled:
                self.job.origin_done(index, None)
                return
            except exceptions.TransferError as exc:
                self.job.origin_done(index, None)
                if self.token.cancelled:
                    return          # the download ended: reads were cut
                with self._lock:
                    self.errors[loc.url] = exc
                if not exc.retryable:
                    LOG.warning('bittorrent: web seed %s refused: %s; not '
                                'using it again', loc.masked, exc)
                    with self._lock:
                        self.dead.add(loc.url)
                    continue
                failures += 1
                turn += 1
                delay = min(10.0, 0.5 * (2 ** min(failures, 5)))
                LOG.info('bittorrent: web seed %s: %s; retry in %.1fs',
                         loc.masked, exc, delay)
                self.token.wait(delay)
                continue
            failures = 0
            with self._lock:
                self.bytes += len(data)
            self.job.origin_done(index, data, time.monotonic() - started)

    def _fetch(self, loc, offset, length) -> bytes:
        buf = bytearray()
        # The caller's class and the Transfer's limits apply to the web
        # seeds' connections and bytes as to any other read.
        origin = '%s://%s' % (loc.scheme,
                              loc.parts().netloc.rpartition('@')[2])
        with self.ctx.slot(origin):
            for chunk in self.readers[loc.url].read(loc, offset, length,
                                                    self.ctx):
                self.ctx.consume(len(chunk), origin)
                buf += chunk
                if self.token.cancelled:
                    raise exceptions.Cancelled('download finished')
        if len(buf) != length:
            raise exceptions.ProtocolError(
                '%s sent %d bytes for a piece of %d' % (loc.masked, len(buf),
                                                        length),
                url=loc.masked)
        return bytes(buf)
