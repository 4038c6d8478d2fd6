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

"""Which piece this host asks the origin (web seed) for next.

The pieces are cut into ``count`` contiguous slices, one per receiver
(``origin.my_share``).  A receiver asks the origin for:

1. its own slice, front to back, leaving out the pieces that a connected
   peer already has (a receiver that helped this slice fetched them, and
   libtorrent takes them from that peer) -- unless the peers are starving
   this host.  A receiver does not run ahead of the others: it waits while
   it holds ``_LEAD`` pieces of its slice more than the median receiver's
   slice shows at the peers.  Otherwise the receiver that reached the
   origin first (TCP gives an early flow most of a shared link) fetches
   its whole slice in the first second, every other host then wants its
   pieces, its uplink is full and its own download starves: it finished
   last in most runs;
2. once that is fetched or in flight, and if ``help_slower_peers``: pieces
   of a slower receiver's slice, from the back, that no connected peer has
   yet -- only when that receiver is present (some of its slice has been
   visible, or the receiver has been connected, for ``_WINDOW`` seconds: a
   receiver that got the origin later than this one is not slow; one
   connected whose origin connection is starved shows nothing and is),
   and only pieces it would not reach before
   this host could fetch them: the owner's rate (its slice's pieces
   appearing at the peers) against this host's own time per origin piece.
   Receivers helping the same slice take different pieces
   (``steal_order``).  On a fast origin nobody lags and nothing is taken
   twice;
3. when the peers have sent nothing for ``peer_wait`` seconds (a receiver
   died before it fetched anything, or no peer was named): any missing
   piece, starting after its own slice.

That is the plan of a host told every receiver's address.  A host told
none (peers found through a tracker) uses :class:`SpreadPlan`.
"""

import collections
import ipaddress
import logging
import math
import urllib.parse

from oslo_transfer._drivers.bittorrent import origin as origin_mod

LOG = logging.getLogger(__name__)

__all__ = ['PiecePlan', 'SpreadPlan', 'plan_for']

#: seconds of history behind a slice's rate
_WINDOW = 2.0
#: pieces of its slice a receiver may hold beyond the median receiver's
_LEAD = 4
#: seconds after which a slice that no peer has shown is left out of that
#: median (its receiver may be dead)
_ABSENT = 5.0
#: a piece is taken from a slower receiver when that receiver would need
#: more than twice this host's time per piece plus this many seconds
_SLACK = 0.5
#: SpreadPlan: a new run does not start in a free stretch shorter than this
#: while the swarm still gains pieces (another host's run is in it)
_MIN_JUMP = 4
#: SpreadPlan: seconds without a new piece in the swarm after which any
#: free stretch will do
_STILL = 0.5


class PiecePlan:
    """The origin's pieces for receiver ``index`` of ``count``.

    :param have: pieces already held (left out of every order).
    :param help_slower: take pieces of slower receivers' slices.
    """

    def __init__(self, index: int, count: int, num_pieces: int, have=(),
                 help_slower: bool = True, owners=()):
        self.index = index
        self.count = count
        self.num_pieces = num_pieces
        self.help_slower = help_slower and count > 1
        self.slices = [origin_mod.share_range(j, count, num_pieces)
                       for j in range(count)]
        self.slice_of = [0] * num_pieces
        for j, r in enumerate(self.slices):
            for i in r:
                self.slice_of[i] = j
        have = set(have)
        own = self.slices[index]
        self.share = [i for i in own if i not in have]
        # The rest, starting after this host's slice: receivers that fall
        # back on the origin begin at different pieces.
        start = own.stop % num_pieces if num_pieces else 0
        self.rest = [(start + k) % num_pieces for k in range(num_pieces)
                     if (start + k) % num_pieces not in own]
        self.steal = origin_mod.steal_order(index, count, num_pieces)
        self._history = [collections.deque() for _ in range(count)]
        #: when some of slice j was first seen at a peer (None: not yet)
        self._present = [None] * count
        #: when the owner of slice j was first seen connected
        self._connected = [None] * count
        #: IP address -> the slice of its owner (addresses that own one)
        self._owner_of = {}
        seen = collections.Counter(_ip_of(o) for o in owners)
        for j, o in enumerate(owners):
            ip = _ip_of(o)
            if ip is not None and seen[ip] == 1 and j != index:
                self._owner_of[ip] = j
        self._now = 0.0
        self._t0 = None
        self._counts = None
        self.fetch_time = None

    # -- observations ---------------------------------------------------------

    def observe(self, now: float, avail, have, fetchers: int | None = None,
                peers=()):
        """Record how many pieces of each slice the peers or we hold.

        :param peers: the IP addresses of the peers connected now.  A
            slice whose owner is connected is present from then on, even
            if none of its pieces shows yet: an owner whose origin
            connection is starved (TCP gives the flows that started first
            most of a shared link) shows nothing for seconds and would
            otherwise be left alone with its whole slice until the end.
        """
        for p in peers:
            j = self._owner_of.get(_ip_of(p))
            if j is not None and self._connected[j] is None:
                self._connected[j] = now
        if avail is None:
            return
        self._now = now
        if self._t0 is None:
            self._t0 = now
        counts = [0] * self.count
        for i, a in enumerate(avail):
            if a or i in have:
                counts[self.slice_of[i]] += 1
        for j, c in enumerate(counts):
            hist = self._history[j]
            hist.append((now, c))
            while len(hist) > 2 and hist[1][0] <= now - _WINDOW:
                hist.popleft()
            if c and j != self.index and self._present[j] is None:
                self._present[j] = now
        self._counts = counts

    def fetched(self, seconds: float):
        """This host fetched one piece from the origin in ``seconds``."""
        if self.fetch_time is None:
            self.fetch_time = seconds
        else:
            self.fetch_time = 0.7 * self.fetch_time + 0.3 * seconds

    def given_back(self):
        """A piece taken with :meth:`next` was not fetched after all."""

    def collided(self, index: int):
        """Piece ``index``, fetched here, was already at a peer."""

    def meet(self, addresses) -> bool:
        """Peers connected now: nothing to do, the slices are ranked."""
        return False

    def rate(self, j: int) -> float:
        """Pieces of slice ``j`` appearing per second, lately."""
        hist = self._history[j]
        if len(hist) < 2:
            return 0.0
        (t0, c0), (t1, c1) = hist[0], hist[-1]
        return (c1 - c0) / (t1 - t0) if t1 > t0 else 0.0

    # -- the choice -----------------------------------------------------------

    def next(self, wanted, avail, have, starving: bool):
        """``(piece, why)`` to fetch from the origin, or None.

        :param wanted: ``wanted(i)``: not held, not in flight, not bad.
        :param avail: libtorrent's piece availability among peers, or None.
        :param starving: the peers sent nothing for ``peer_wait`` seconds.
        """
        if not starving and self._ahead(wanted, avail):
            return None
        for i in self.share:
            if wanted(i) and (starving or avail is None or not avail[i]):
                return i, 'share'
        if self.help_slower and avail is not None:
            i = self._help(wanted, avail, have)
            if i is not None:
                return i, 'helped'
        if starving:
            for i in self.rest:
                if wanted(i):
                    return i, 'rest'
        return None

    def _ahead(self, wanted, avail) -> bool:
        """This host's slice is ``_LEAD`` pieces ahead of the median's."""
        if self.count < 2:
            return False
        own = self.slices[self.index]
        mine = sum(1 for i in own
                   if not wanted(i) or (avail is not None and avail[i]))
        if mine >= len(own):
            return False
        counts = self._counts or [0] * self.count
        early = self._t0 is None or self._now - self._t0 < _ABSENT
        others = sorted(c for j, c in enumerate(counts)
                        if j != self.index and
                        (early or self._present[j] is not None))
        if not others:
            return False
        return mine >= others[len(others) // 2] + _LEAD

    def _help(self, wanted, avail, have):
        mine = self.fetch_time if self.fetch_time is not None else 1.0
        missing = {}
        for i in self.steal:
            if avail[i] or not wanted(i):
                continue
            j = self.slice_of[i]
            seen = min((t for t in (self._present[j], self._connected[j])
                        if t is not None), default=None)
            if seen is None or self._now - seen < _WINDOW:
                # Absent, or present for too short a time to have a rate:
                # a receiver that started late is not a slow one.
                continue
            if j not in missing:
                missing[j] = [q for q in self.slices[j]
                              if not avail[q] and q not in have]
            rate = self.rate(j)
            ahead = missing[j].index(i) + 1
            eta = ahead / rate if rate > 0 else math.inf
            if eta > 2 * mine + _SLACK:
                return i
        return None


def _stretch(pos: int, free, area: range):
    """The first free stretch of ``area`` from ``pos`` on.

    :returns: ``(start, stop, open)``, wrapping at the end of ``area`` and
        cut there; None if nothing is free.  ``open`` is True when
        ``pos`` is inside the stretch, after a free piece: no run is
        coming from its front.
    """
    n = len(area)
    if not n:
        return None
    k0 = (pos - area.start) % n
    for k in range(n):
        i = area.start + (k0 + k) % n
        if free(i):
            j = i + 1
            while j < area.stop and free(j):
                j += 1
            return i, j, k == 0 and i > area.start and free(i - 1)
    return None


class SpreadPlan:
    """The origin's pieces for a host that knows no peer's address.

    Receivers that meet through a tracker (or local discovery) cannot agree
    on slices in advance.  Each draws slice ``hash(endpoint) mod count``
    (``origin.endpoint_share``), and a *home* in it from the same hash, so
    that hosts that drew the same slice start apart; together the homes
    are spread over the file.  The hash leaves some slices with several
    owners and some with none; so once the host has met ``count - 1``
    other hosts at distinct IP addresses (:meth:`meet`), it takes the
    slice of its own address's rank among those ``count`` -- what a peer
    list would have given it, every slice with exactly one owner -- and
    the driver goes on with the :class:`PiecePlan` of that slice
    (:meth:`piece_plan`), as if it had been told the peers.  Pieces
    fetched before are kept; only what is fetched from then on changes.

    Until then, a host fetches *runs* of free pieces -- not held, not in
    flight here, not at a connected peer, not being downloaded from one --
    going forward from its home:

    1. a run goes on while its next piece is free;
    2. when it is not (the run met the pieces of another host's run), the
       next run starts in the first free stretch after it (wrapping at the
       end of the file): at its start if the stretch follows a free piece,
       otherwise a quarter to three quarters in (the fraction from the
       hash), since the front of such a stretch is most likely another
       host's run, whose pieces in flight no peer can see;
    3. while other hosts are met and the swarm gained a piece in the last
       ``_STILL`` seconds, a new run never starts in a stretch that follows
       held pieces and is shorter than ``_MIN_JUMP`` pieces or one per host
       still fetching: another host's run is fetching it; otherwise every
       host near the end would fetch the same last pieces;
    4. a piece of this host's run that a peer turns out to have before
       this host holds it means the run is treading on another host's (the
       pieces are visible only after their fetch, a hash check and a
       message): the run ends there, and the next starts as in 2;
    5. near the end -- fewer free pieces left than four per host still
       fetching -- a new run starts at the piece of that rank among them
       given by the hash (the runs of hosts that ended at the same place
       would otherwise all take the same last piece); first among those
       that are ``_MIN_JUMP`` or more past held pieces, then, once the
       swarm is still, among all;
    6. without ``help_slower``, runs stay within its own slice;
    7. when the peers have sent nothing for ``peer_wait`` seconds: any
       piece not held here, ignoring what the peers have.

    It does not run ahead: until the swarm holds three quarters of the
    pieces, while it has fetched ``_LEAD`` pieces more than its fair part
    of what the swarm holds (the pieces held here or at a peer, divided by
    ``count`` for the first ``_ABSENT`` seconds, then by the hosts met that
    still fetch, at most ``count``), it waits.
    Otherwise the first host to reach the origin takes a large part of the
    file and its uplink is what every other host waits for.

    :param index: this host's slice.
    :param start: where in its slice its home is, and how far into a
        stretch a run may begin, in ``[0, 1)``.
    :param have: pieces already held.
    :param endpoint: ``"IP:PORT"`` of this host as the swarm sees it
        (``origin.own_endpoint``); without an IP address there, the
        hashed slice is kept.
    """

    def __init__(self, index: int, count: int, num_pieces: int,
                 start: float = 0.0, have=(), help_slower: bool = True,
                 endpoint: str | None = None):
        self.index = index
        self.count = max(1, count)
        self.num_pieces = num_pieces
        self.start = min(max(start, 0.0), 1.0 - 1e-9)
        self.help_slower = help_slower and self.count > 1
        self.slices = [origin_mod.share_range(j, self.count, num_pieces)
                       for j in range(self.count)]
        own = self.slices[index]
        self.home = own.start + int(len(own) * self.start)
        have = set(have)
        self._have0 = have
        self.share = [i for i in own if i not in have]
        self.fetch_time = None
        #: pieces this host took from the origin, and fetched
        self.taken = 0
        self.done = 0
        self._present = len(have)
        self._fetchers = 1
        self._t0 = None
        self._now = 0.0
        self._changed = 0.0
        self._cursor = None
        self._jump = False
        self._started = False
        self._why = 'share'
        self._me = _ip_of(endpoint)
        #: IP addresses of the other hosts met so far
        self.met = set()
        #: True once the slice is the rank's, not the hash's
        self.ranked = False
        #: once ranked: the IP address of each slice's owner
        self.owners = []

    def meet(self, addresses) -> bool:
        """Note the peers connected now; rank the slices once all are met.

        When this returns True the caller replaces this plan with
        :meth:`piece_plan`.

        :param addresses: the peers' ``(ip, port)`` (or ``ip``) as
            libtorrent reports them.  Only the IP counts: a connection the
            other host opened shows its source port, not its listen port.
        :returns: True when this call switched to the ranked slice.

        The switch happens once, when this host and the hosts met make
        exactly ``count`` distinct addresses.  More than that (hosts that
        share an address cannot be told apart, and a host that is not a
        receiver may have been met) and the hashed slice stays: the sets
        the hosts rank would differ.
        """
        if self.ranked or self._me is None or self.count < 2:
            return False
        before = len(self.met)
        for a in addresses:
            ip = _ip_of(a[0] if isinstance(a, (tuple, list)) else a)
            if ip is not None and ip != self._me:
                self.met.add(ip)
        if len(self.met) != before:
            LOG.debug('bittorrent: met %s', sorted(map(str, self.met)))
        if len(self.met) != self.count - 1:
            return False
        order = sorted(self.met | {self._me},
                       key=lambda ip: (ip.version, int(ip)))
        old = self.index
        self.index = order.index(self._me)
        self.owners = [None if ip == self._me else str(ip) for ip in order]
        own = self.slices[self.index]
        self.home = own.start
        self.share = [i for i in own if i not in self._have0]
        self.ranked = True
        # The next run starts at the new home; the pieces fetched or in
        # flight under the hashed slice stay this host's.
        self._cursor = None
        self._started = False
        self._jump = False
        LOG.info('bittorrent: met %d other host(s): slice %d of %d by '
                 'rank (was %d by hash)', len(self.met), self.index + 1,
                 self.count, old + 1)
        return True

    def piece_plan(self, have) -> PiecePlan:
        """The plan of this host's ranked slice, for a host that met all.

        Its own slice front to back, pacing on the median slice, helping
        slower slices from the back: the plan of a host told the peers.
        The hashed runs are made for slices that may have several owners
        or none; kept once the ranks are known, they overlap the owners'
        pieces in flight (origin pieces 296-306 of 256 in the tracker
        benchmark, against 259-266 with this plan).

        :param have: the pieces held now (left out).
        """
        return PiecePlan(self.index, self.count, self.num_pieces, have=have,
                         help_slower=self.help_slower, owners=self.owners)

    def observe(self, now: float, avail, have, fetchers: int | None = None,
                peers=()):
        """Note what the swarm holds and how many hosts still fetch.

        :param fetchers: this host plus the connected peers that are not
            complete.
        :param peers: not used (the slices have no known owners).
        """
        if self._t0 is None:
            self._t0 = now
        self._now = now
        if avail is not None:
            present = sum(1 for i, a in enumerate(avail) if a or i in have)
            if present != self._present:
                self._changed = now
            self._present = present
        if fetchers is not None:
            self._fetchers = max(1, fetchers)

    def fetched(self, seconds: float):
        self.done += 1
        if self.fetch_time is None:
            self.fetch_time = seconds
        else:
            self.fetch_time = 0.7 * self.fetch_time + 0.3 * seconds

    def given_back(self):
        """A piece taken with :meth:`next` was not fetched after all."""
        self.taken = max(0, self.taken - 1)

    def collided(self, index: int):
        """Piece ``index``, fetched here, was already at a peer."""
        if self._cursor is not None and index < self._cursor:
            self._jump = True

    def ahead(self) -> bool:
        """Fetched ``_LEAD`` pieces more than a fair part of what is held.

        Fetched, not taken: the pieces in flight here are not counted, as
        the others' are not visible.

        For the first ``_ABSENT`` seconds every expected host counts, met
        or not (the others may not have found this one yet); then only
        the hosts met that still fetch.  Once the swarm holds three
        quarters of the pieces, nobody waits: a paused host's run would
        hold up the last pieces.
        """
        if self._present >= 3 * self.num_pieces // 4:
            return False
        if self._t0 is None or self._now - self._t0 < _ABSENT:
            k = self.count
        else:
            k = min(self.count, self._fetchers)
        return k > 1 and self.done >= self._present / k + _LEAD

    def _busy_swarm(self) -> bool:
        return self._fetchers > 1 and self._now - self._changed < _STILL

    def next(self, wanted, avail, have, starving: bool):
        """``(piece, why)`` to fetch from the origin, or None."""
        if starving:
            free = wanted
        else:
            if self.ahead():
                return None

            def free(i):
                return wanted(i) and (avail is None or not avail[i])
        own = self.slices[self.index]
        c = self._cursor
        if c is not None and not self._jump and c < self.num_pieces and \
                free(c) and (self.help_slower or starving or c in own):
            self._cursor = c + 1
            self.taken += 1
            return c, self._why
        area = (range(self.num_pieces) if self.help_slower or starving
                else own)
        k = min(self.count, self._fetchers)
        left = [i for i in area if free(i)]
        nfree = len(left)
        if left and not starving and nfree < 4 * k:
            # The end: spread the hosts over what is left by their hash,
            # first over the pieces that no run is likely to be fetching
            # (a run's pieces in flight follow the last it showed).
            cold, front, prev = [], None, None
            for i in left:
                if prev is None or i != prev + 1:
                    # a stretch begins: does it follow held pieces?
                    front = i if i > area.start else None
                prev = i
                if front is None or i - front >= _MIN_JUMP:
                    cold.append(i)
            pick = cold or (left if not self._busy_swarm() else None)
            if not pick:
                return None
            i = pick[int(len(pick) * self.start)]
            self._started, self._jump, self._cursor = True, False, i + 1
            self._why = 'share' if i in own else 'helped'
            self.taken += 1
            return i, self._why
        pos = self.home if c is None else c
        first = not self._started
        found = None
        scan, scanned = pos, 0
        while scanned < len(area):
            st = _stretch(scan, free, area)
            if st is None:
                break
            s, e, open_front = st
            if open_front or first or starving or \
                    e - s >= max(_MIN_JUMP, k) or not self._busy_swarm():
                found = st
                break
            # a short stretch at another host's front: leave it to that
            # host and look further on
            scanned += (s - scan) % len(area) + (e - s)
            scan = e if e < area.stop else area.start
        if found is None:
            return None
        s, e, open_front = found
        if open_front or first:
            i = s
        else:
            i = s + int((e - s) * (0.25 + 0.5 * self.start))
        LOG.debug('bittorrent: new run at piece %d in [%d, %d) (%d free, %d '
                  'fetching, busy %s, taken %d, present %d)', i, s, e, nfree,
                  k, self._busy_swarm(), self.taken, self._present)
        self._started = True
        self._jump = False
        self._cursor = i + 1
        self._why = 'rest' if starving else (
            'share' if i in own else 'helped')
        self.taken += 1
        return i, self._why


def _ip_of(address):
    """The ``ipaddress`` object of ``"IP"``, ``"IP:PORT"`` or None."""
    if address is None:
        return None
    if not isinstance(address, str):
        address = str(address)
    text = address.strip()
    for cand in (text, text.rsplit(':', 1)[0].strip('[]')):
        try:
            return ipaddress.ip_address(cand)
        except ValueError:
            continue
    return None


def _host_of(url: str) -> str | None:
    try:
        return urllib.parse.urlsplit(url).hostname
    except ValueError:
        return None


def plan_for(hints, port: int, num_pieces: int, have, help_slower: bool,
             towards=(), key: str = '') -> tuple:
    """This host's origin plan, for a download or a lazy image.

    :param hints: the call's ``Hints`` (``peer_addresses``, ``peers``).
    :param port: the session's listen port.
    :param towards: URLs of the origins and trackers (the route to the
        first that resolves names this host's endpoint).
    :returns: ``(plan, peers, share)``: a :class:`PiecePlan` (peers
        named) or a :class:`SpreadPlan` (none named, more receivers
        expected), the ``(ip, port)`` peers to connect to, and
        ``"INDEX/COUNT"`` for the statistics.  The caller passes the
        connected peers' addresses to ``plan.meet`` as it learns them,
        and when that returns True goes on with ``plan.piece_plan(have)``.
    """
    named = getattr(hints, 'peer_addresses', ())
    expected = getattr(hints, 'peers', 1) or 1
    if not named and expected > 1:
        # No peer list: the receivers meet through a tracker or local
        # discovery, and each draws its slice from its own endpoint.
        hosts = [h for h in map(_host_of, towards) if h]
        endpoint = origin_mod.own_endpoint(port, hosts)
        index, start = origin_mod.endpoint_share(endpoint, expected)
        plan = SpreadPlan(index, expected, num_pieces, start=start,
                          have=have, help_slower=help_slower,
                          endpoint=endpoint)
        LOG.info('bittorrent: %s: no peer list; %s draws slice %d of %d '
                 '(hash of the endpoint) for the origin', key, endpoint,
                 index + 1, expected)
        return plan, [], '%d/%d' % (index + 1, expected)
    peers = origin_mod.resolve_peers(named)
    index, count, others = origin_mod.my_share(peers, port)
    plan = PiecePlan(index, count, num_pieces, have=have,
                     help_slower=help_slower,
                     owners=origin_mod.slice_owners(peers, port))
    LOG.info('bittorrent: %s: this host fetches slice %d of %d (%d pieces) '
             'from the origin; %d peer(s) named', key, index + 1, count,
             len(plan.slices[index]), len(others))
    return plan, others, '%d/%d' % (index + 1, count)
