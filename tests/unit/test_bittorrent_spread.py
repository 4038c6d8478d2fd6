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

"""Receivers with no peer list: hashed shares and runs (SpreadPlan)."""

import hypothesis
from hypothesis import strategies as st

from oslo_transfer._drivers.bittorrent import origin
from oslo_transfer._drivers.bittorrent import pieces


def test_endpoint_share_is_a_stable_hash():
    a = origin.endpoint_share('10.0.0.5:6881', 8)
    assert a == origin.endpoint_share('10.0.0.5:6881', 8)
    assert 0 <= a[0] < 8 and 0.0 <= a[1] < 1.0
    shares = {origin.endpoint_share('10.0.0.%d:6881' % i, 8)
              for i in range(64)}
    # 64 endpoints land in every slice of 8, at distinct starts
    assert {s[0] for s in shares} == set(range(8))
    assert len({s[1] for s in shares}) == 64
    # the SHA-256 of the text, not Python's salted hash(): the same on
    # every host (a known value)
    assert origin.endpoint_share('127.0.0.1:6881', 3)[0] == int.from_bytes(
        __import__('hashlib').sha256(b'127.0.0.1:6881').digest(),
        'big') % 3


def _drain(plan, n, held=None, avail=None, starving=False, limit=10000):
    held = set() if held is None else held
    got = []
    for _ in range(limit):
        found = plan.next(lambda i: i not in held, avail, held, starving)
        if found is None:
            break
        held.add(found[0])
        got.append(found)
    return got


@hypothesis.given(count=st.integers(1, 16), n=st.integers(1, 300),
                  start=st.floats(0.0, 1.0, exclude_max=True),
                  index=st.integers(0, 15))
def test_alone_every_piece_once(count, n, start, index):
    """A host that meets nobody fetches each piece once, from its home."""
    plan = pieces.SpreadPlan(index % count, count, n, start=start)
    got = _drain(plan, n)
    assert sorted(i for i, _ in got) == list(range(n))
    if n >= 4:
        assert got[0][0] == plan.home
    assert plan.taken == n


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(hosts=st.integers(2, 10), n=st.integers(8, 200),
                  seed=st.integers(0, 2 ** 32))
def test_swarm_that_sees_at_once_fetches_each_piece_once(hosts, n, seed):
    """Seen at once, nothing is fetched twice.

    And nobody takes much more than its part (pacing).
    """
    plans = []
    for h in range(hosts):
        index, start = origin.endpoint_share('10.1.%d.%d:6881' % (seed, h),
                                             hosts)
        plans.append(pieces.SpreadPlan(index, hosts, n, start=start))
    held = set()
    fetched = [0] * hosts
    now = 0.0
    for _ in range(20 * n):
        progress = False
        for h, plan in enumerate(plans):
            avail = [i in held for i in range(n)]
            plan.observe(now, avail, set(), fetchers=hosts)
            found = plan.next(lambda i: i not in held, avail, set(), False)
            if found is not None:
                assert found[0] not in held
                held.add(found[0])
                plan.fetched(0.1)
                fetched[h] += 1
                progress = True
        now += 0.01
        if not progress:
            break
    assert held == set(range(n))
    assert sum(fetched) == n
    # until three quarters are held, a host waits at its part + _LEAD
    assert max(fetched) <= n // 4 + 3 * n // (4 * hosts) + \
        pieces._LEAD + 1


def test_a_run_goes_on_until_it_meets_held_pieces():
    plan = pieces.SpreadPlan(0, 2, 100, start=0.5)
    assert plan.home == 25
    held = {28}
    avail = [i in held for i in range(100)]
    plan.observe(0.0, avail, set(), fetchers=1)
    out = [plan.next(lambda i: i not in held and i not in mine, avail,
                     set(), False)[0]
           for mine in [set()] for _ in range(4)]
    # 25, 26, 27, then not 28 (a peer has it): a new run elsewhere
    assert out[:3] == [25, 26, 27]
    assert out[3] != 28


def test_a_collision_ends_the_run():
    plan = pieces.SpreadPlan(0, 4, 200, start=0.0)
    held = set()
    first = plan.next(lambda i: i not in held, None, held, False)[0]
    held.add(first)
    second = plan.next(lambda i: i not in held, None, held, False)[0]
    assert second == first + 1
    held.add(second)
    plan.collided(second)
    third = plan.next(lambda i: i not in held, None, held, False)[0]
    assert third != second + 1


def test_without_help_it_keeps_to_its_slice():
    plan = pieces.SpreadPlan(1, 4, 40, start=0.3, help_slower=False)
    got = _drain(plan, 40)
    assert sorted(i for i, _ in got) == list(range(10, 20))
    # starving: the rest too, ignoring what peers have
    avail = [True] * 40
    rest = _drain(plan, 40, held={i for i, _ in got}, avail=avail,
                  starving=True)
    assert sorted(i for i, _ in rest) == [
        i for i in range(40) if not 10 <= i < 20]
    assert {why for _, why in rest} == {'rest'}


def test_it_waits_while_ahead_of_its_part():
    plan = pieces.SpreadPlan(0, 4, 400, start=0.0)
    held = set()
    plan.observe(0.0, [False] * 400, held, fetchers=4)
    got = []
    for _ in range(50):
        found = plan.next(lambda i: i not in held, [False] * 400, held,
                          False)
        if found is None:
            break
        held.add(found[0])
        plan.fetched(0.1)
        got.append(found[0])
    # alone in a swarm of 4 expected hosts, where nothing is held yet:
    # _LEAD pieces, then it waits
    assert len(got) == pieces._LEAD
    # once the others have fetched their part, it goes on
    avail = [i in held or i >= 300 for i in range(400)]
    plan.observe(1.0, avail, held, fetchers=4)
    assert plan.next(lambda i: i not in held, avail, held, False) is not None


# -- ranked slices once every host is met ------------------------------------

def _ranked(endpoints, count, n=256):
    """Each host's plan after it met all the others.

    As libtorrent reports them: the IP, and a port that may be a source
    port.
    """
    plans = []
    for k, me in enumerate(endpoints):
        index, start = origin.endpoint_share(me, count)
        plan = pieces.SpreadPlan(index, count, n, start=start, endpoint=me)
        others = [(e.rsplit(':', 1)[0], 40000 + k)
                  for e in endpoints if e != me]
        assert plan.meet(others) is True
        plans.append(plan)
    return plans


def test_benchmark_endpoints_get_one_slice_each():
    """The benchmark's eight hosts, whose hashes share slices 1 and 8."""
    endpoints = ['10.77.0.%d:6881' % (10 + i) for i in range(8)]
    hashed = sorted(origin.endpoint_share(e, 8)[0] for e in endpoints)
    assert len(set(hashed)) < 8      # why the rank is needed
    plans = _ranked(endpoints, 8)
    assert [p.index for p in plans] == list(range(8))
    assert all(p.ranked for p in plans)
    for p in plans:
        assert p.home == p.slices[p.index].start


@hypothesis.given(st.sets(st.ip_addresses(v=4), min_size=2, max_size=24),
                  st.randoms(use_true_random=False))
def test_ranked_slices_have_exactly_one_owner(ips, rnd):
    endpoints = ['%s:6881' % ip for ip in ips]
    rnd.shuffle(endpoints)
    plans = _ranked(endpoints, len(endpoints), n=max(64, len(endpoints)))
    assert sorted(p.index for p in plans) == list(range(len(endpoints)))


def test_hash_kept_until_count_minus_one_met():
    me = '10.0.0.9:6881'
    index, start = origin.endpoint_share(me, 4)
    plan = pieces.SpreadPlan(index, 4, 100, start=start, endpoint=me)
    home = plan.home
    # itself, and the same address twice, do not count
    assert plan.meet([('10.0.0.9', 6881), ('10.0.0.1', 6881),
                      ('10.0.0.1', 51234)]) is False
    assert (plan.index, plan.home, plan.ranked) == (index, home, False)
    # met over several calls: the peers seen before still count
    assert plan.meet([('10.0.0.2', 6881)]) is False
    assert plan.index == index
    assert plan.meet([('10.0.0.3', 6881)]) is True
    assert plan.index == 3 and plan.ranked
    # once: later peers change nothing
    assert plan.meet([('10.0.0.4', 6881)]) is False
    assert plan.index == 3


def test_no_switch_without_an_address_or_with_too_many_hosts():
    plan = pieces.SpreadPlan(1, 3, 90, endpoint='myhost:6881')
    assert plan.meet([('10.0.0.1', 1), ('10.0.0.2', 1)]) is False
    assert plan.index == 1
    plan = pieces.SpreadPlan(1, 3, 90, endpoint='10.0.0.5:6881')
    # three others at once for three receivers: someone is not one
    assert plan.meet([('10.0.0.1', 1), ('10.0.0.2', 1),
                      ('10.0.0.3', 1)]) is False
    assert plan.index == 1 and not plan.ranked
    # a PiecePlan (peer list) is ranked from the start
    assert pieces.PiecePlan(0, 2, 10).meet([('10.0.0.1', 1)]) is False


def test_switch_keeps_fetched_pieces_and_moves_the_runs():
    """Pieces fetched under the hashed slice stay.

    The next run starts at the front of the ranked slice.
    """
    me = '10.0.0.1:6881'
    plan = pieces.SpreadPlan(3, 4, 40, start=0.5, endpoint=me)
    held = set()
    for _ in range(3):
        i, _why = plan.next(lambda i: i not in held, None, held, False)
        held.add(i)
    assert held == {35, 36, 37}
    assert plan.meet(['10.0.0.2', '10.0.0.3', '10.0.0.4']) is True
    assert plan.index == 0
    got = _drain(plan, 40, held=held)
    assert got[0] == (0, 'share')
    # every other piece once, none of those already held
    assert sorted(i for i, _ in got) == [i for i in range(40)
                                         if i not in {35, 36, 37}]


def test_piece_plan_of_the_rank_leaves_out_held_pieces():
    plan = pieces.SpreadPlan(3, 4, 40, start=0.5, endpoint='10.0.0.2:1')
    assert plan.meet(['10.0.0.1', '10.0.0.3', '10.0.0.4'])
    held = {10, 11, 35}
    pp = plan.piece_plan(held)
    assert isinstance(pp, pieces.PiecePlan)
    assert (pp.index, pp.count, pp.num_pieces) == (1, 4, 40)
    assert pp.share == list(range(12, 20))
    # its slice front to back, after the pieces it holds (then it paces
    # on the others' slices, none of which is visible here)
    got = _drain(pp, 40, held=set(held))
    assert [i for i, _ in got] == [12, 13]


def test_piece_plan_of_the_rank_knows_the_owners():
    """The ranked plan can tell a connected slow owner from an absent one."""
    plan = pieces.SpreadPlan(3, 4, 40, start=0.5, endpoint='10.0.0.2:1')
    assert plan.meet([('10.0.0.4', 50000), '10.0.0.1', '10.0.0.3'])
    assert plan.owners == ['10.0.0.1', None, '10.0.0.3', '10.0.0.4']
    pp = plan.piece_plan(set(range(10, 20)))
    zero = [0] * 40
    for t in (0.0, 2.5):
        pp.observe(t, zero, set(range(10, 20)), peers=['10.0.0.4'])
    # slice 3 (10.0.0.4) is connected for 2.5 s and shows nothing: helped
    # from its back; slices 0 and 2, never connected, are not
    found = pp.next(lambda i: i not in range(10, 20), zero,
                    set(range(10, 20)), False)
    assert found is not None and found[1] == 'helped'
    assert found[0] in range(30, 40)
