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

"""Topology hints, plans and the default selector.

The selector ranks every (location, driver) pair and says why in words.  It
is a stevedore plugin in the namespace ``oslo_transfer.selectors``
(``[oslo_transfer] selector``), so an operator can replace the policy; a
replacement implements :class:`Selector`.

The default rules, in order:

1. Drop pairs whose driver cannot serve the scheme or direction, is
   disabled in config, or is same-network-only while the networks are
   isolated (unknown topology counts as isolated).  Hints never drop a
   caller's only location: if the rules would leave nothing, the dropped
   pairs come back, last, with the reason.
2. Same network: zero-copy and block/NFS access first.
3. ``peers >= p2p_min_peers`` and torrent metadata known: BitTorrent first,
   with the HTTP origin as its web seed.
4. Otherwise each location's own driver, in the caller's order.
5. Everything else stays as a fallback, tried in rank order.
"""

import abc
import dataclasses

from oslo_transfer import driver as driver_mod

__all__ = ['Hints', 'Candidate', 'Plan', 'Selector', 'DefaultSelector']

Cap = driver_mod.Capability
# the scheduling classes, highest first (engine/throttle.CLASSES)
_PRIORITIES = ('interactive', 'normal', 'background')


@dataclasses.dataclass(frozen=True)
class Hints:
    """What the caller knows about the topology.

    :param same_network: True when source and destination hosts reach each
        other by IP (one cluster); False when isolated; None when unknown,
        then equal ``source_site``/``dest_site`` labels mean same network
        and anything else counts as isolated.
    :param peers: hosts fetching the same data at once, this one included.
    :param peer_addresses: ``"HOST:PORT"`` of those peers (BitTorrent).
    :param source_site: a label for where the source lives.
    :param dest_site: a label for where the destination lives.
    :param priority: the scheduling class of the call: ``"interactive"``
        (someone waits for these bytes now), ``"normal"`` (the default) or
        ``"background"`` (bulk work nobody waits for); see the user
        guide's "Flow control".
    :param deadline: seconds from the call by which the transfer should
        be done, or None.  Earliest deadline first within a class; a
        transfer whose deadline cannot be met is refused at once with
        :class:`~oslo_transfer.exceptions.DeadlineUnreachable` (nothing
        written).  A deadline never cancels a running transfer.
    """

    same_network: bool | None = None
    peers: int = 1
    peer_addresses: tuple = ()
    source_site: str | None = None
    dest_site: str | None = None
    priority: str = 'normal'
    deadline: float | None = None

    def __post_init__(self):
        if self.peers < 1:
            raise ValueError('peers counts this host too: it must be >= 1')
        if self.priority not in _PRIORITIES:
            raise ValueError('priority must be one of %s, not %r'
                             % (', '.join(_PRIORITIES), self.priority))
        if self.deadline is not None and not self.deadline > 0:
            raise ValueError('deadline is seconds from the call and must be '
                             '> 0, not %r' % (self.deadline,))
        object.__setattr__(self, 'peer_addresses',
                           tuple(self.peer_addresses or ()))

    @property
    def is_same_network(self) -> bool:
        if self.same_network is not None:
            return bool(self.same_network)
        return (self.source_site is not None and
                self.source_site == self.dest_site)

    def describe(self) -> str:
        if self.same_network is not None:
            net = 'same network' if self.same_network else 'isolated networks'
        elif self.is_same_network:
            net = 'same network (site %s)' % self.source_site
        elif self.source_site or self.dest_site:
            net = 'isolated networks (sites %s / %s)' % (self.source_site,
                                                         self.dest_site)
        else:
            net = 'unknown topology, treated as isolated'
        return '%s, %d peer(s)' % (net, self.peers)


@dataclasses.dataclass
class Candidate:
    """One ranked (location, driver) pair of a :class:`Plan`.

    :ivar url: the masked URL (no secrets).
    :ivar driver: the driver's entry-point name.
    :ivar rank: 0 is tried first.
    :ivar reason: why it got this rank, in words.
    """

    url: str
    driver: str
    rank: int
    reason: str
    location: object = dataclasses.field(default=None, repr=False,
                                         compare=False)
    driver_obj: object = dataclasses.field(default=None, repr=False,
                                           compare=False)

    def to_dict(self) -> dict:
        return {'rank': self.rank, 'url': self.url, 'driver': self.driver,
                'reason': self.reason}


@dataclasses.dataclass
class Plan:
    """The ranked candidates and the pairs that were dropped, with reasons."""

    candidates: list
    dropped: list = dataclasses.field(default_factory=list)
    hints: Hints | None = None
    direction: str = 'read'

    def to_dict(self) -> dict:
        return {'direction': self.direction,
                'hints': self.hints.describe() if self.hints else None,
                'candidates': [c.to_dict() for c in self.candidates],
                'dropped': [dict(url=u, driver=d, reason=r)
                            for u, d, r in self.dropped]}

    def explain(self) -> str:
        lines = ['plan (%s): %s' % (self.direction,
                                    self.hints.describe() if self.hints
                                    else '')]
        for c in self.candidates:
            lines.append('  %d. %s via %s: %s' % (c.rank + 1, c.url,
                                                  c.driver, c.reason))
        for u, d, r in self.dropped:
            lines.append('  -  %s via %s dropped: %s' % (u, d, r))
        return '\n'.join(lines)

    @property
    def first(self) -> Candidate:
        return self.candidates[0]


class Selector(abc.ABC):
    """Interface of a selector plugin (``oslo_transfer.selectors``)."""

    def __init__(self, conf):
        self.conf = conf

    @abc.abstractmethod
    def plan(self, locations, drivers, hints: Hints, direction: str,
             ctx) -> Plan:
        """Rank the (location, driver) pairs.

        :param locations: :class:`~oslo_transfer.locations.Location` list in
            the caller's order.
        :param drivers: loaded driver objects, in registration order.
        :param direction: ``"read"`` (a source) or ``"write"`` (a
            destination).
        :returns: a :class:`Plan`; an empty ``candidates`` list makes the
            caller raise ``NoDriverFound`` with the dropped reasons.
        """


class DefaultSelector(Selector):
    """The rules of the module docstring."""

    def plan(self, locations, drivers, hints, direction, ctx):
        hints = hints or Hints()
        gconf = self.conf.oslo_transfer
        disabled = set(gconf.disabled_drivers or ())
        min_peers = gconf.p2p_min_peers
        same_net = hints.is_same_network
        need = Cap.READ if direction == 'read' else Cap.WRITE
        kept, dropped, fallback = [], [], []
        for li, loc in enumerate(locations):
            for di, drv in enumerate(drivers):
                try:
                    ok = drv.accepts(loc, ctx)
                except Exception as exc:  # noqa: a broken plugin is skipped
                    dropped.append((loc.masked, drv.name,
                                    'driver failed to answer: %s' % exc))
                    continue
                if not ok:
                    continue
                caps = drv.capabilities
                if need not in caps:
                    dropped.append((loc.masked, drv.name,
                                    'cannot %s' % direction))
                    continue
                if drv.name in disabled:
                    dropped.append((loc.masked, drv.name,
                                    'disabled by [oslo_transfer] '
                                    'disabled_drivers'))
                    continue
                if Cap.SAME_NETWORK_ONLY in caps and not same_net:
                    why = ('same-network-only driver, and the hints say '
                           '%s' % hints.describe())
                    dropped.append((loc.masked, drv.name, why))
                    fallback.append((li, di, loc, drv, why))
                    continue
                tier, reason = self._tier(loc, drv, caps, hints, same_net,
                                          min_peers, direction, ctx)
                kept.append(((tier, li, di), loc, drv, reason))
        if not kept and fallback:
            # Hints rank; they never drop a caller's only locations.
            for li, di, loc, drv, why in fallback:
                kept.append(((9, li, di), loc, drv,
                             'kept although %s: it is the only way to the '
                             'data' % why))
            dropped = [d for d in dropped
                       if not any(d[0] == f[2].masked and d[1] == f[3].name
                                  for f in fallback)]
        kept.sort(key=lambda k: k[0])
        cands = [Candidate(url=loc.masked, driver=drv.name, rank=i,
                           reason=reason, location=loc, driver_obj=drv)
                 for i, (_, loc, drv, reason) in enumerate(kept)]
        return Plan(candidates=cands, dropped=dropped, hints=hints,
                    direction=direction)

    @staticmethod
    def _tier(loc, drv, caps, hints, same_net, min_peers, direction, ctx):
        native = loc.scheme in drv.schemes
        if Cap.PEER_TO_PEER in caps:
            if direction == 'read' and hints.peers >= min_peers:
                return 1, ('%d peers >= p2p_min_peers (%d) and torrent '
                           'metadata is known: peers share the bytes, the '
                           'origin serves as web seed' % (hints.peers,
                                                          min_peers))
            return 5, ('peer-to-peer kept as a fallback: %d peer(s) < '
                       'p2p_min_peers (%d)' % (hints.peers, min_peers))
        if loc.scheme == 'file':
            return 0, 'local path: read in place%s' % (
                ' with zero-copy' if Cap.ZERO_COPY in caps else '')
        if same_net and (Cap.BLOCK_ACCESS in caps or
                         Cap.ZERO_COPY in caps):
            return 0, ('same network: %s reads the data where it lives '
                       'instead of through an application server' % drv.name)
        if not native:
            return 4, '%s serves %s URLs only as a fallback' % (drv.name,
                                                                loc.scheme)
        how = ''
        if Cap.RANGED_READ in caps and direction == 'read':
            how = ', parallel ranged segments where the server allows'
        if same_net:
            return 2, 'the scheme\'s own driver%s' % how
        return 2, ('%s: an application protocol that crosses isolated '
                   'networks%s' % (hints.describe(), how))
