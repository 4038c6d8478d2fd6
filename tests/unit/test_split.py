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

"""The multi-source split (engine/split.py), on a fake clock.

A small simulation: each mirror's workers read their pieces at the
mirror's rate per connection, in steps of ``DT`` simulated seconds; the
splitter hands the pieces out.  Every test also checks that each byte
was delivered exactly once.
"""

from oslo_transfer import _utils
from oslo_transfer.engine import split

MiB = 1024 * 1024
DT = 0.01


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def simulate(size, rates, workers=4, holes=None, stall=None, align=1,
             piece_bytes=16 * MiB, drop=None, exactly_once=True,
             chunk=None, burst=0, measured=None):
    """Run the split to the end; returns (finish time, mirrors, pieces).

    :param rates: bytes/s per connection of each mirror.
    :param stall: ``(mirror index, time)``: that mirror sends nothing
        from then on.
    :param drop: ``(mirror index, time)``: that mirror is dropped then
        (its pieces given back, as a failing mirror's are).
    :param exactly_once: check that no byte is delivered twice (False:
        a stalled piece's last block is read again, see ``align``).
    :param chunk: bytes arrive ``chunk`` at a time (a driver's reads),
        not continuously; a reader whose piece was cut short by a steal
        keeps its connection until the chunk it asked for arrives (as a
        driver's read does), and only then stops; unless it was taken
        over whole, which ends its read at once (``Piece.abort``).
    :param burst: bytes each request receives at once before the rate
        applies (nginx's ``limit_rate`` sends a second's worth first).
    :param measured: each mirror's rate per connection as measured
        before (by an earlier piece), or None.

    Each mirror's ``wire`` counts the bytes its readers received,
    handed over or not.
    """
    clock = Clock()
    mirrors = [split.Mirror('m%d' % i, workers) for i in range(len(rates))]
    for i, m in enumerate(mirrors):
        m.wire = 0
        m.conn_rate = measured[i] if measured else None
    s = split.Splitter(holes or [(0, size)], size, mirrors, piece_bytes,
                       align=align, chunk_bytes=chunk or 64 * 1024,
                       clock=clock)
    pieces = []
    # [mirror, piece, bytes arrived not yet handed over, end requested,
    #  read aborted], in MultiFill's order: the first mirror's workers
    #  first
    slots = [[m, None, 0.0, 0, False] for m in mirrors
             for _ in range(workers)]
    got = _utils.RangeSet()
    delivered = 0
    while not s.done() or any(slot[1] for slot in slots):
        if clock.now > 3600:
            raise AssertionError('no end: %r %r' % (
                s.free, [(m, m.pieces) for m in mirrors]))
        for slot in slots:
            m, p = slot[:2]
            i = mirrors.index(m)
            if drop and i == drop[0] and clock.now >= drop[1] and \
                    not m.dropped:
                s.drop(m, 'failed')
            if p is None:
                p = s.take(m)
                if p is None:
                    continue
                slot[1:] = [p, float(min(burst, p.end - p.pos)), p.end,
                            False]
                # As MultiFill: a piece taken over whole ends its read.
                p.abort = lambda slot=slot: slot.__setitem__(4, True)
                pieces.append(p)
            if slot[4]:
                m.wire += int(slot[2])
                s.finish(p)
                slot[1] = None
                continue
            if m.dropped:
                s.give_back(p)
                slot[1] = None
                continue
            rate = rates[i]
            if stall and i == stall[0] and clock.now >= stall[1]:
                rate = 0
            want = int(rate * DT)
            if not chunk and slot[2]:
                want += int(slot[2])
                slot[2] = 0
            if chunk:
                # What arrived so far, handed over a whole chunk at a time
                # (of the range asked for, even if the piece was cut).
                slot[2] += want
                want = 0
                need = min(chunk, slot[3] - p.pos)
                if slot[2] >= need:
                    want = need
                    slot[2] -= need
            m.wire += want
            start = p.pos
            n = s.advance(p, want)
            if n:
                before = got.total()
                got.add(start, start + n)
                assert got.total() == before + n or not exactly_once, \
                    'a byte came twice'
                delivered += n
                s.credit(m, n)
            if p.pos >= p.end:
                if chunk and not want and slot[3] > p.pos:
                    # Cut short: still waiting for the chunk asked for.
                    continue
                s.finish(p)
                slot[1] = None
        clock.now += DT
    assert got.total() == sum(e - s_ for s_, e in (holes or [(0, size)]))
    assert delivered == got.total() or not exactly_once
    return clock.now, mirrors, pieces


def test_shares_follow_measured_throughput():
    # 50 and 150 Mbit/s, 4 connections each: 1.5625 and 4.6875 MB/s each.
    size = 512 * MiB
    slow, fast = 50e6 / 8 / 4, 150e6 / 8 / 4
    t, mirrors, _ = simulate(size, [slow, fast])
    ideal = size / (4 * (slow + fast))
    share = mirrors[1].bytes / size
    assert 0.72 <= share <= 0.78, share
    assert sum(m.bytes for m in mirrors) == size
    # The link-bound ideal, within 5 %: no mirror holds the tail.
    assert t <= ideal * 1.05, (t, ideal)


def test_tail_is_cut_into_small_pieces():
    size = 200 * MiB
    _, _, pieces = simulate(size, [2 * MiB, 6 * MiB])
    tail = int(size * 0.9)
    in_tail = [p for p in pieces if p.start >= tail]
    assert in_tail
    assert all(p.end - p.start <= MiB for p in in_tail)
    # Before the tail, pieces grow with the measured rate.
    assert max(p.end - p.start for p in pieces if p.start < tail) > MiB


def test_a_slow_mirror_gets_less_down_to_none_at_the_end():
    size = 256 * MiB
    fast, slow = 25 * MiB, 25 * MiB / 100
    t, mirrors, pieces = simulate(size, [fast, slow])
    ideal = size / (4 * (fast + slow))
    assert mirrors[1].bytes < size * 0.02
    assert t <= ideal * 1.1, (t, ideal)
    # It took nothing in the last 10 %.
    late = [p for p in pieces if p.mirror is mirrors[1] and
            p.start >= size * 0.9]
    assert late == []


def test_a_stalled_mirror_loses_its_pieces_to_the_others():
    size = 128 * MiB
    t, mirrors, _ = simulate(size, [4 * MiB, 4 * MiB], stall=(0, 1.0))
    # Without stealing, the stalled mirror's pieces would never end.
    assert mirrors[1].bytes > size * 0.8
    assert t < 3600


def test_a_dropped_mirror_s_pieces_go_to_the_others():
    size = 64 * MiB
    _, mirrors, _ = simulate(size, [4 * MiB, 4 * MiB], drop=(0, 0.5))
    assert mirrors[0].dropped == 'failed'
    assert mirrors[0].bytes + mirrors[1].bytes == size
    assert mirrors[1].bytes > size / 2


def test_only_the_holes_are_handed_out_on_block_boundaries():
    size = 40 * MiB + 123
    holes = [(0, 4 * MiB), (10 * MiB, size)]
    block = 256 * 1024
    _, _, pieces = simulate(size, [3 * MiB, 5 * MiB], holes=holes,
                            align=block)
    for p in pieces:
        assert p.start % block == 0
        assert p.end % block == 0 or p.end == size
        assert any(s <= p.start and p.end <= e for s, e in holes), p


def test_a_stalled_piece_is_taken_over_on_block_boundaries():
    # The thief reads the stalled reader's current block again (a block
    # is verified whole); nothing empty is handed out.
    size = 64 * MiB + 4096
    block = 256 * 1024
    _, mirrors, pieces = simulate(size, [3 * MiB, 3 * MiB],
                                  stall=(0, 1.0), align=block,
                                  exactly_once=False)
    assert all(p.end >= p.start for p in pieces)
    assert all(p.start % block == 0 for p in pieces)
    assert mirrors[1].bytes > size * 0.8
    again = sum(m.bytes for m in mirrors) - size
    assert 0 < again < 4 * block, again


def test_two_slow_links_sending_whole_chunks_keep_their_pieces():
    # 256 KiB/s per connection, 1 MiB chunks: 4 s between two moves of a
    # piece.  Taking over "stalled" pieces must not go round forever.
    size = 32 * MiB
    t, mirrors, _ = simulate(size, [256 * 1024, 256 * 1024], chunk=MiB,
                             exactly_once=False)
    ideal = size / (8 * 256 * 1024)
    assert t <= ideal * 1.5, (t, ideal)
    assert sum(m.bytes for m in mirrors) <= size * 1.1


# -- whole chunks: what a reader waits for arrives at once -------------------

TAIL = int(8 * MiB * 0.9)


def test_a_resumed_copy_s_holes_are_each_read_once():
    # A resumed copy's last holes, none more than a chunk, and idle
    # workers on both mirrors: each hole is read once and the copy ends
    # in one chunk's time.  (It used to hand the tail from one mirror to
    # the other forever: a piece that had not shown its first chunk
    # after 0.5 s was taken over whole.)
    size = 8 * MiB
    holes = [(0, MiB), (3 * MiB, 4 * MiB), (TAIL, size)]
    need = sum(e - s for s, e in holes)
    rate = 256 * 1024
    t, mirrors, _ = simulate(size, [rate, rate], holes=holes, chunk=MiB,
                             exactly_once=False)
    assert sum(m.wire for m in mirrors) == need
    assert t <= MiB / rate * 1.05, t


def test_a_server_s_first_burst_is_not_taken_for_its_rate():
    # nginx's limit_rate sends a second's worth at once: a small piece
    # ends at once, and its mirror must not look so fast that its other
    # pieces, still waiting for their one chunk, seem stalled.
    size = 8 * MiB
    rate = 256 * 1024
    t, mirrors, _ = simulate(size, [rate, rate], chunk=MiB, burst=rate,
                             exactly_once=False)
    assert sum(m.wire for m in mirrors) <= size * 1.05
    assert t <= size / (8 * rate), t


def test_a_piece_taken_over_as_stalled_waits_longer_each_time():
    # Rates measured far too high (a burst, or a link that slowed down):
    # the tail piece looks stalled to the other mirror, whose reader is
    # no faster.  Each takeover doubles the wait before the next, so the
    # piece is read a few times, not forever.
    size = 8 * MiB
    rate = 256 * 1024
    t, mirrors, _ = simulate(size, [rate, rate], holes=[(TAIL, size)],
                             chunk=MiB, measured=[50 * MiB, 50 * MiB],
                             exactly_once=False)
    assert sum(m.wire for m in mirrors) <= 3 * (size - TAIL)
    assert t <= 4 * (size - TAIL) / rate, t


def _one_piece_of_two():
    """A splitter of two mirrors on a fake clock; ``a`` took a piece.

    :returns: ``(clock, splitter, (a, b), the piece)``.
    """
    clock = Clock()
    a, b = split.Mirror('a', 1), split.Mirror('b', 1)
    s = split.Splitter([(0, 4 * MiB)], 4 * MiB, [a, b], 16 * MiB,
                       chunk_bytes=MiB, clock=clock)
    return clock, s, (a, b), s.take(a)


def test_a_reader_waiting_for_its_chunk_does_not_make_its_mirror_slow():
    clock, s, (a, b), p = _one_piece_of_two()
    clock.now = 2.0
    # Nothing arrived yet, but its 1 MiB chunk may be about to: at most
    # that over the time so far, not 0 bytes/s.
    assert s.rate(a) == MiB / 2.0
    # A piece cut to nothing by a takeover says nothing of its mirror.
    s._split(p, b, clock.now, p.pos)
    assert p.end == p.pos
    assert s.rate(a) is None


def test_a_reader_whose_piece_was_taken_over_still_measures_its_mirror():
    clock, s, (a, b), p = _one_piece_of_two()
    s._split(p, b, clock.now, p.pos)
    clock.now = 4.0
    # Its chunk arrives: none of it is kept, all of it is measured.
    assert s.advance(p, MiB) == 0
    s.finish(p)
    assert a.conn_rate == MiB / 4.0
    # Less than a chunk in less than LIVE_AFTER: a burst, not a rate.
    c = split.Mirror('c', 1)
    s = split.Splitter([(0, 100000)], 8 * MiB, [c], 16 * MiB,
                       chunk_bytes=MiB, clock=clock)
    q = s.take(c)
    clock.now += 0.01
    assert s.advance(q, 100000) == 100000
    s.finish(q)
    assert c.conn_rate == 100000 / split.LIVE_AFTER


def test_a_reader_whose_piece_is_taken_over_stops_at_once():
    # A mirror stops sending in the middle of its chunks: its pieces go
    # to the other mirror, and its readers, which would wait for their
    # chunks until the driver's I/O timeout, stop at once (the copy ends
    # only when every reader has).
    size = 32 * MiB
    rate = 4 * MiB
    t, mirrors, _ = simulate(size, [rate, rate], stall=(0, 0.5),
                             chunk=MiB, exactly_once=False)
    assert mirrors[1].bytes > size * 0.8
    # Two seconds to see the stall (plus two chunks at 4 MiB/s), then one
    # mirror's four connections.
    assert t <= 2.5 + size / (4 * rate) * 1.1, t
