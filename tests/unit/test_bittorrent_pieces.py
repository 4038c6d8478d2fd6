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

"""Who fetches which piece from the origin: shares, help, fallback."""

import ipaddress
import socket

import hypothesis
from hypothesis import strategies
import pytest

from oslo_transfer._drivers.bittorrent import origin
from oslo_transfer._drivers.bittorrent import pieces
from oslo_transfer import exceptions


@pytest.mark.parametrize('text,expected', [
    ('10.0.0.5:6881', ('10.0.0.5', 6881)),
    ('[::1]:80', ('::1', 80)),
    ('compute-1:7000', ('compute-1', 7000)),
])
def test_parse_peer(text, expected):
    assert origin.parse_peer(text) == expected


@pytest.mark.parametrize('text', ['10.0.0.5', '10.0.0.5:0', 'h:x', ':80',
                                  'h:70000'])
def test_parse_peer_refuses(text):
    with pytest.raises(exceptions.InvalidLocation):
        origin.parse_peer(text)


def test_resolve_peers_skips_bad_ones():
    assert origin.resolve_peers(['127.0.0.1:5', 'nonsense', '::1']) == [
        ('127.0.0.1', 5)]


@pytest.mark.parametrize('n,count', [(256, 8), (10, 3), (3, 8), (1, 1),
                                     (1000, 16)])
def test_shares_cover_every_piece_once(n, count):
    seen = []
    for j in range(count):
        seen.extend(origin.share_range(j, count, n))
    assert seen == list(range(n))


@pytest.mark.parametrize('n,count', [(256, 8), (24, 4), (10, 3), (7, 5)])
def test_helpers_of_a_slice_take_different_pieces(n, count):
    orders = {i: origin.steal_order(i, count, n) for i in range(count)}
    for j in range(count):
        own = list(origin.share_range(j, count, n))
        assert not set(orders[j]) & set(own)
        taken = []
        for i in range(count):
            if i != j:
                taken.extend(p for p in orders[i] if p in own)
        # every piece of the slice by exactly one helper
        assert sorted(taken) == own
    # with slices of count pieces or more, a helper starts at the back of
    # the next slice
    nxt = list(origin.share_range(1, count, n))
    if len(nxt) >= count:
        assert orders[0][0] in nxt[-(count - 1):]


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_my_share_finds_this_host():
    port = _free_port()
    peers = [('127.0.0.1', port + 1), ('127.0.0.1', port),
             ('127.0.0.1', port - 1)]
    index, count, others = origin.my_share(peers, port)
    assert (index, count) == (1, 3)
    assert sorted(others) == [('127.0.0.1', port - 1),
                              ('127.0.0.1', port + 1)]


def test_my_share_adds_this_host_when_missing(monkeypatch):
    monkeypatch.setattr(origin, 'is_local_ip', lambda ip: False)
    monkeypatch.setattr(origin, '_route_source', lambda ip: '10.0.0.2')
    peers = [('10.0.0.3', 6881), ('10.0.0.1', 6881)]
    index, count, others = origin.my_share(peers, 6881)
    assert (index, count) == (1, 3)
    assert others == peers


def test_my_share_without_peers():
    assert origin.my_share([], 6881) == (0, 1, [])


class _State:
    """have / in flight bookkeeping of a download, for PiecePlan.next."""

    def __init__(self, n):
        self.n = n
        self.have = set()
        self.busy = set()

    def wanted(self, i):
        return i not in self.have and i not in self.busy


def test_own_share_first_in_order():
    plan = pieces.PiecePlan(1, 4, 16)
    st = _State(16)
    assert plan.next(st.wanted, None, st.have, False) == (4, 'share')
    st.busy.add(4)
    st.have.add(5)
    assert plan.next(st.wanted, None, st.have, False) == (6, 'share')


def test_own_pieces_a_peer_has_are_left_to_the_peers():
    # a helper fetched piece 4 from the origin: the owner does not fetch it
    # again, libtorrent takes it from that peer
    plan = pieces.PiecePlan(1, 4, 16)
    st = _State(16)
    avail = [0] * 16
    avail[4] = 1
    assert plan.next(st.wanted, avail, st.have, False) == (5, 'share')
    avail[5:8] = [1, 2, 1]
    assert plan.next(st.wanted, avail, st.have, False) is None
    # starving (the peers send nothing): the origin is asked after all
    assert plan.next(st.wanted, avail, st.have, True) == (4, 'share')


def test_held_pieces_are_not_in_the_share():
    plan = pieces.PiecePlan(0, 2, 8, have={0, 1, 2})
    assert plan.share == [3]


def test_nothing_more_without_help_or_starving():
    plan = pieces.PiecePlan(0, 2, 8, help_slower=False)
    st = _State(8)
    st.have.update(range(4))
    assert plan.next(st.wanted, [0] * 8, st.have, False) is None


def test_starving_takes_the_rest_after_own_slice():
    plan = pieces.PiecePlan(1, 4, 16, help_slower=False)
    st = _State(16)
    st.have.update(range(4, 8))
    assert plan.next(st.wanted, None, st.have, True) == (8, 'rest')
    st.have.update(range(8, 16))
    assert plan.next(st.wanted, None, st.have, True) == (0, 'rest')


def _observe(plan, avail, have, times):
    for t, a in zip(times, avail):
        plan.observe(t, a, have)


def _plan(n, count, held):
    """Slice 0 of ``count`` over ``n`` pieces, holding the first ``held``."""
    plan = pieces.PiecePlan(0, count, n)
    st = _State(n)
    st.have.update(range(held))
    return plan, st


def test_help_a_slow_present_receiver_from_the_back():
    n, count = 16, 2
    plan, st = _plan(n, count, 8)              # own share done
    plan.fetched(0.1)
    # slice 1's owner has piece 8 and then nothing for 2 s: it is slow
    a = [0] * n
    a[8] = 1
    _observe(plan, [a, a, a], st.have, [0.0, 1.0, 2.5])
    assert plan.next(st.wanted, a, st.have, False) == (15, 'helped')


def test_no_help_for_a_fast_receiver():
    n, count = 16, 2
    plan, st = _plan(n, count, 8)
    plan.fetched(1.0)
    # the owner gets 3 pieces a second; the last one is 6 pieces away:
    # 2 s for it, this host needs 2 x 1 s + slack
    before = [0] * n
    after = [0] * n
    for i in (8, 9):
        after[i] = 1
    before[8] = 1
    plan.observe(0.0, [0] * n, st.have)
    plan.observe(0.5, before, st.have)
    plan.observe(0.67, after, st.have)
    rate = plan.rate(1)
    assert rate > 2.5
    assert plan.next(st.wanted, after, st.have, False) is None


def test_no_help_for_an_absent_receiver():
    """A receiver that has shown nothing may not have started yet.

    Its slice is left to it (and to the peer_wait fallback).
    """
    n = 16
    plan = pieces.PiecePlan(0, 2, n)
    st = _State(n)
    st.have.update(range(8))
    _observe(plan, [[0] * n] * 3, st.have, [0.0, 1.0, 2.5])
    assert plan.next(st.wanted, [0] * n, st.have, False) is None


def test_help_skips_pieces_peers_have():
    n = 16
    plan = pieces.PiecePlan(0, 2, n)
    st = _State(n)
    st.have.update(range(8))
    a = [0] * n
    a[8] = a[15] = 1
    _observe(plan, [a, a], st.have, [0.0, 3.0])
    assert plan.next(st.wanted, a, st.have, False)[0] == 14


def _slice_avail(n, count, shown):
    """Availability where slice j shows its first ``shown[j]`` pieces."""
    a = [0] * n
    for j, k in enumerate(shown):
        for i in list(origin.share_range(j, count, n))[:k]:
            a[i] = 1
    return a


def _shown(plan, st, now, shown, n=64, count=4):
    """What slice 0 fetches next once the slices show ``shown`` pieces."""
    a = _slice_avail(n, count, shown)
    plan.observe(now, a, st.have)
    return plan.next(st.wanted, a, st.have, False)


def test_a_receiver_does_not_run_ahead_of_the_others():
    # 4 receivers, 16 pieces each; this host (slice 0) holds 4 of its
    # pieces while the others show nothing yet: it waits for them
    n, count = 64, 4
    plan, st = _plan(n, count, 4)
    assert _shown(plan, st, 0.0, [0, 0, 0, 0]) is None
    # the median receiver shows one piece: this host may fetch again
    assert _shown(plan, st, 0.5, [0, 1, 1, 0]) == (4, 'share')
    # pieces in flight count as this host's progress
    st.busy.update(range(4, 5))
    assert _shown(plan, st, 0.6, [0, 1, 1, 0]) is None


def test_a_slice_nobody_shows_leaves_the_median_after_a_while():
    n, count = 64, 4
    plan, st = _plan(n, count, 8)
    assert _shown(plan, st, 0.0, [0, 0, 0, 1]) is None
    # receivers 1 and 2 never showed a piece (dead?): after a while only
    # receiver 3 counts; it is more than 4 pieces behind, then it is not
    assert _shown(plan, st, pieces._ABSENT + 0.1, [0, 0, 0, 1]) is None
    later = pieces._ABSENT + 0.5
    assert _shown(plan, st, later, [0, 0, 0, 5]) == (8, 'share')


def test_starving_ignores_the_others_progress():
    n, count = 64, 4
    plan, st = _plan(n, count, 4)
    a = _slice_avail(n, count, [0, 0, 0, 0])
    plan.observe(0.0, a, st.have)
    assert plan.next(st.wanted, a, st.have, True) == (4, 'share')


def test_no_help_for_a_receiver_that_just_appeared():
    """A receiver seen for less than a rate window started late.

    It is not slow: its slice is left to it.
    """
    n, count = 16, 2
    plan, st = _plan(n, count, 8)
    plan.fetched(0.1)
    a = [0] * n
    a[8] = 1
    _observe(plan, [[0] * n, a, a], st.have, [0.0, 1.0, 2.5])
    assert plan.next(st.wanted, a, st.have, False) is None
    plan.observe(3.1, a, st.have)
    assert plan.next(st.wanted, a, st.have, False) == (15, 'helped')


# -- an owner that is connected but shows nothing ----------------------------

def _owned(owners=(None, '10.0.0.2')):
    """Slice 0 of 2 over 16 pieces, its own slice held."""
    plan = pieces.PiecePlan(0, 2, 16, owners=owners)
    st = _State(16)
    st.have.update(range(8))
    plan.fetched(0.1)
    return plan, st


def test_help_a_connected_owner_that_shows_nothing():
    """Its origin connection is starved: it is slow, not absent.

    Seen in the benchmark: a host whose first origin pieces took 2 s each
    showed nothing of its slice for 5 s, and fetched all of it at the end.
    """
    plan, st = _owned()
    zero = [0] * 16
    plan.observe(0.0, zero, st.have, peers=['10.0.0.2'])
    plan.observe(1.0, zero, st.have, peers=['10.0.0.2'])
    # connected for less than a rate window: it may just have started
    assert plan.next(st.wanted, zero, st.have, False) is None
    plan.observe(2.5, zero, st.have, peers=['10.0.0.2'])
    assert plan.next(st.wanted, zero, st.have, False) == (15, 'helped')


def test_no_help_for_a_slice_whose_owner_never_connected():
    plan, st = _owned()
    zero = [0] * 16
    # another host is connected, not the owner of slice 1
    _observe(plan, [zero] * 3, st.have, [0.0, 1.0, 2.5])
    plan.observe(3.0, zero, st.have, peers=['10.0.0.7'])
    assert plan.next(st.wanted, zero, st.have, False) is None


def test_an_address_that_owns_two_slices_tells_nothing():
    """Receivers that share an address cannot be told apart."""
    plan = pieces.PiecePlan(0, 3, 24, owners=[None, '10.0.0.2',
                                              '10.0.0.2'])
    st = _State(24)
    st.have.update(range(8))
    plan.fetched(0.1)
    zero = [0] * 24
    for t in (0.0, 1.0, 2.5, 3.0):
        plan.observe(t, zero, st.have, peers=['10.0.0.2'])
    assert plan.next(st.wanted, zero, st.have, False) is None


def test_slice_owners_follow_the_order_of_the_shares(monkeypatch):
    monkeypatch.setattr(origin, 'is_local_ip', lambda ip: ip == '10.0.0.2')
    peers = [('10.0.0.3', 6881), ('10.0.0.1', 6881), ('10.0.0.2', 6881)]
    index, count, _ = origin.my_share(peers, 6881)
    assert (index, count) == (1, 3)
    assert origin.slice_owners(peers, 6881) == ['10.0.0.1', None,
                                                '10.0.0.3']
    assert origin.slice_owners([], 6881) == []


_IPS = strategies.ip_addresses()
_ADDRESSES = strategies.one_of(
    strategies.none(), strategies.text(max_size=60), _IPS.map(str),
    strategies.tuples(_IPS, strategies.integers(0, 65535)).map(
        lambda t: ('[%s]:%d' if t[0].version == 6 else '%s:%d') % t),
    strategies.tuples(_IPS.map(str), strategies.integers()))


@hypothesis.given(owners=strategies.lists(_ADDRESSES, max_size=6),
                  peers=strategies.lists(_ADDRESSES, max_size=10))
def test_owners_and_peers_of_any_shape_are_taken_or_ignored(owners, peers):
    # Owners and connected peers come from a peer list and from
    # libtorrent: an address that is not IP[:PORT] is ignored, never an
    # exception, and a connected owner makes its slice present.
    for address in owners + peers:
        ip = pieces._ip_of(address)
        assert ip is None or isinstance(
            ip, (ipaddress.IPv4Address, ipaddress.IPv6Address))
    count = max(1, len(owners))
    plan = pieces.PiecePlan(0, count, 4 * count, owners=owners)
    plan.observe(0.0, None, set(), peers=peers)
    connected = {pieces._ip_of(p) for p in peers} - {None}
    for ip, j in plan._owner_of.items():
        assert j != 0
        assert (plan._connected[j] is not None) == (ip in connected)
