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

"""Which bytes each of several mirrors reads next: the multi-source split.

Pure bookkeeping, with no I/O and an injectable clock, so that the policy
is tested without a network (see :mod:`oslo_transfer.engine.mirrors` for
the readers).  The rules:

* Every mirror has the same number of workers; a worker that finishes a
  piece asks for the next one, so a mirror's share follows its measured
  throughput.  A piece is sized to last about :data:`PIECE_SECONDS` at the
  mirror's measured rate per connection (between ``min_piece`` and
  ``piece_bytes``); the first piece of a mirror, unmeasured, is
  ``min_piece``.
* The last ``tail_fraction`` of the object is cut into ``tail_bytes``
  pieces, so that no mirror takes a large piece near the end.
* A mirror does not take a piece that it would finish after the other
  mirrors finished everything left, when one of them is faster per
  connection (a slow mirror gets less, down to none, near the end; the
  fastest always takes).
* When nothing is left to hand out, an idle worker takes the back of the
  piece that will end last (work stealing), split so that both should
  end together, or the whole rest of a piece that has not moved for
  :data:`STALLED` seconds plus two chunks' time at its mirror's measured
  rate (:data:`STALLED_UNMEASURED` before it is measured: a slow link
  delivers a chunk at a time, and two slow mirrors must not take each
  other's pieces forever); the slow reader stops at its new end.
* A reader receives whole chunks (``chunk_bytes``): the bytes of the
  chunk it is waiting for arrive at once, so a steal never cuts into
  them (the thief would read them again and the victim's chunk would
  come no sooner), and a piece that has not shown its first chunk yet
  is not taken for one that moves at no speed.  A piece taken over as
  stalled is given twice the wait before it can be taken over again
  (``patience``): a rate measured too high cannot make two mirrors take
  one piece from each other forever.  The reader of a piece taken over
  whole is stopped at once (``Piece.abort``), so that the copy need not
  wait for the chunk it asked for.
* A mirror's rate per connection is measured on every byte its readers
  received, also those a steal made useless; a piece of less than a
  chunk counts as taking at least :data:`LIVE_AFTER` (a server's first
  burst is not its rate).
* A dropped mirror (failed, or served a bad block) gets nothing more, and
  its unfinished pieces go back to the others.

Offsets of a split are multiples of ``align`` (a manifest's block), so
that every piece can be verified block by block.
"""

import threading
import time

KiB = 1024
MiB = 1024 * KiB

#: a piece lasts about this many seconds at its mirror's measured rate
PIECE_SECONDS = 2.0
#: the last tenth of the object goes in small pieces
TAIL_FRACTION = 0.1
#: the piece size in the tail
TAIL_BYTES = MiB
#: the smallest back of a piece that an idle worker takes over
MIN_STEAL = 64 * KiB
#: a piece that has not moved for this long is taken over whole
STALLED = 2.0
#: ... or for this long, when its mirror's rate is not measured yet
STALLED_UNMEASURED = 20.0
#: how much a new rate sample weighs against the mirror's past
EWMA = 0.5
#: a piece being read says something of its mirror's rate after this long
LIVE_AFTER = 0.5


class Mirror:
    """One location among several, and what was measured of it.

    :param name: the location as recorded and reported (masked URL).
    :param workers: how many workers read from it at once.
    """

    def __init__(self, name, workers=1):
        self.name = name
        self.workers = workers
        #: bytes of this mirror that were kept (see :meth:`Splitter.credit`)
        self.bytes = 0
        #: measured bytes/s per connection (None: not measured yet)
        self.conn_rate = None
        #: why it was dropped, or None while it is in use
        self.dropped = None
        self.pieces = []

    def __repr__(self):
        return '<Mirror %s %s>' % (self.name, self.dropped or 'in use')


class Piece:
    """``[start, end)`` read by one worker of ``mirror``; ``pos`` so far."""

    def __init__(self, mirror, start, end, now):
        self.mirror = mirror
        self.start = start
        self.pos = start
        self.end = end
        self.started = now
        #: when its last bytes arrived
        self.moved = now
        #: bytes its reader received, kept or not (see :meth:`advance`)
        self.received = 0
        #: how many times the usual wait before it counts as stalled
        #: (doubled each time its bytes are taken over as stalled)
        self.patience = 1
        #: ends its reader's read at once, or None (set by the reader):
        #: called when the piece is taken over whole
        self.abort = None

    def __repr__(self):
        return '<Piece %s [%d, %d) at %d>' % (self.mirror.name, self.start,
                                              self.end, self.pos)


class Splitter:
    """Hand out the holes of an object to the workers of several mirrors.

    Thread-safe.  :meth:`take` gives a worker its next piece;
    :meth:`advance` reserves the next bytes of a piece (so that a steal
    never hands out bytes a worker is writing); :meth:`finish` or
    :meth:`give_back` end a piece.

    :param holes: ``(start, end)`` ranges still to fetch, in order.
    :param size: the object's size.
    :param mirrors: the :class:`Mirror` objects.
    :param piece_bytes: the largest piece (``[oslo_transfer]
        segment_size``).
    :param align: piece boundaries are multiples of this (1, or a
        manifest's block size).
    :param clock: ``time.monotonic`` or a fake.
    """

    def __init__(self, holes, size, mirrors, piece_bytes, align=1,
                 min_piece=MiB, tail_bytes=TAIL_BYTES,
                 tail_fraction=TAIL_FRACTION, min_steal=MIN_STEAL,
                 chunk_bytes=MiB, clock=time.monotonic):
        self.size = size
        self.mirrors = list(mirrors)
        self.align = max(1, align)
        self.piece_bytes = self._up(max(piece_bytes, self.align))
        self.min_piece = min(self._up(min_piece), self.piece_bytes)
        self.tail_bytes = self._up(tail_bytes)
        self.tail_start = self._down(int(size * (1 - tail_fraction)))
        self.min_steal = self._up(min_steal)
        #: what a reader receives at once (its driver's chunk)
        self.chunk_bytes = chunk_bytes
        self.clock = clock
        self.lock = threading.Lock()
        # Unassigned ranges, in order (lowest offsets first: the digest
        # follows the contiguous prefix).
        self.free = [list(h) for h in holes if h[1] > h[0]]
        self.steals = 0
        # The aborts of pieces taken over whole, called once the lock is
        # released (a driver's cancel may take locks of its own).
        self._aborts = []

    # -- alignment ----------------------------------------------------------

    def _up(self, n):
        return -(-n // self.align) * self.align

    def _down(self, n):
        return n // self.align * self.align

    def _cut(self, offset):
        """``offset`` rounded up to a block boundary, at most the size."""
        return min(self.size, self._up(offset))

    # -- rates --------------------------------------------------------------

    def rate(self, mirror, now=None):
        """Measured bytes/s per connection of ``mirror``, or None.

        The pieces it finished, corrected downwards by the pieces it is
        reading: a mirror that stalls is seen before its piece ends.
        """
        now = self.clock() if now is None else now
        live = None
        for p in mirror.pieces:
            t = now - p.started
            if t < LIVE_AFTER or p.pos >= p.end:
                # Too soon to say; or cut short by a steal, its reader
                # only waiting for the chunk it asked for, to stop.
                continue
            # Its next chunk may be all but arrived: counted as if it
            # were, a reader that receives whole chunks is not taken
            # for a stalled one (nor its mirror for a slow one).
            r = (p.pos - p.start + self._in_flight(p)) / t
            live = r if live is None else min(live, r)
        if mirror.conn_rate is None:
            return live
        if live is not None and live < mirror.conn_rate:
            return live
        return mirror.conn_rate

    def _others(self, mirror, now):
        """The other mirrors in use: bytes/s, bytes they hold, best rate.

        (The best rate is per connection.)
        """
        speed = held = best = 0
        for m in self.mirrors:
            if m is mirror or m.dropped:
                continue
            r = self.rate(m, now)
            if r:
                speed += r * m.workers
                best = max(best, r)
            held += sum(p.end - p.pos for p in m.pieces)
        return speed, held, best

    # -- handing out ----------------------------------------------------------

    def take(self, mirror):
        """The next :class:`Piece` for a worker of ``mirror``, or None.

        None means nothing for this mirror now: everything is handed out
        (and stealing would not help), the mirror would end its piece
        after the others ended everything, or it was dropped.  A worker
        that gets None waits for :meth:`done` or for pieces given back.
        """
        with self.lock:
            if mirror.dropped:
                return None
            now = self.clock()
            if self.free:
                return self._take_free(mirror, now)
            piece = self._steal(mirror, now)
            aborts, self._aborts = self._aborts, []
        for abort in aborts:
            abort()
        return piece

    def _piece_size(self, mirror, start, rate):
        if start >= self.tail_start:
            return self.tail_bytes
        if rate is None:
            return self.min_piece
        want = self._up(int(rate * PIECE_SECONDS))
        return max(self.min_piece, min(self.piece_bytes, want))

    def _take_free(self, mirror, now):
        hole = self.free[0]
        start = hole[0]
        rate = self.rate(mirror, now)
        n = self._piece_size(mirror, start, rate)
        end = min(hole[1], self._cut(start + n))
        if start < self.tail_start < end:
            end = self.tail_start
        if rate:
            speed, held, best = self._others(mirror, now)
            left = sum(e - s for s, e in self.free)
            if best > rate and (end - start) / rate > (left + held) / speed:
                # A faster mirror will be free before this piece is done.
                return None
        piece = Piece(mirror, start, end, now)
        if end >= hole[1]:
            self.free.pop(0)
        else:
            hole[0] = end
        mirror.pieces.append(piece)
        return piece

    def _steal(self, thief, now):
        """The back of the piece that will end last, or None."""
        stalled = self._stalled(thief, now)
        if stalled is not None:
            piece = self._split(stalled, thief, now,
                                self._stall_cut(stalled))
            if piece is not None:
                # Its rate may have been measured too high (a server
                # that sends a burst before its limit): the thief, if as
                # slow, gets twice the wait, so that two such mirrors
                # cannot take a piece from each other forever.
                piece.patience = 2 * stalled.patience
            return piece
        mine = self.rate(thief, now)
        best = None
        for m in self.mirrors:
            if m is thief:
                continue
            r = self.rate(m, now)
            for p in m.pieces:
                left = p.end - p.pos
                if left - self._in_flight(p) < self.min_steal:
                    continue
                eta = left / r if r else float('inf')
                if best is None or eta > best[0]:
                    best = (eta, p, r)
        if best is None:
            return None
        eta, victim, r = best
        if r is None:
            # Neither measured: halves.
            r = mine or 1.0
        speed = mine or r or 1.0
        left = victim.end - victim.pos
        # The victim keeps at least the chunk it is receiving: its reader
        # gets those bytes at once, and a thief would read them again.
        keep = max(self._in_flight(victim), left * r / (r + speed))
        cut = self._cut(victim.pos + int(keep))
        if victim.end - cut < self.min_steal:
            return None
        if mine and (victim.end - cut) / mine >= eta:
            return None
        return self._split(victim, thief, now, cut)

    def _in_flight(self, piece):
        """The bytes of ``piece`` its reader is receiving as one chunk."""
        return min(self.chunk_bytes, piece.end - piece.pos)

    def _stalled(self, thief, now):
        """Another mirror's piece that has not moved for too long.

        Too long: :data:`STALLED` seconds plus two chunks at its mirror's
        measured rate per connection, or :data:`STALLED_UNMEASURED`; times
        the piece's ``patience``.
        """
        for m in self.mirrors:
            if m is thief:
                continue
            rate = m.conn_rate
            wait = (STALLED + 2 * self.chunk_bytes / rate if rate
                    else STALLED_UNMEASURED)
            for p in m.pieces:
                if p.end > p.pos and now - p.moved >= wait * p.patience:
                    return p
        return None

    def _stall_cut(self, piece):
        """Where a stalled ``piece`` is cut: the start of its current block.

        Its reader may have written part of that block; the thief reads
        all of it again (a block is verified whole), and the reader,
        when it wakes, stops at once.
        """
        return max(piece.start, self._down(piece.pos))

    def _split(self, victim, thief, now, cut):
        """``[cut, victim.end)`` becomes ``thief``'s piece."""
        if cut >= victim.end:
            return None
        piece = Piece(thief, cut, victim.end, now)
        piece.patience = victim.patience
        victim.end = cut
        if cut <= victim.pos and victim.abort is not None:
            # Nothing more for its reader: rather than wait for the chunk
            # it asked for, it stops now (the copy ends only when every
            # reader has).
            self._aborts.append(victim.abort)
        thief.pieces.append(piece)
        self.steals += 1
        return piece

    # -- progress -------------------------------------------------------------

    def advance(self, piece, n):
        """Reserve the next ``n`` bytes of ``piece``; returns how many.

        Fewer (down to 0) when the piece was cut short by a steal: the
        worker writes only those and stops.
        """
        with self.lock:
            piece.received += n
            n = max(0, min(n, piece.end - piece.pos))
            if n:
                piece.pos += n
                piece.moved = self.clock()
            return n

    def finish(self, piece):
        """``piece`` is read to its end; measure its mirror's rate.

        The rate counts every byte its reader received, also those past
        a steal's cut: a reader whose piece was taken over still tells
        how fast its mirror is (and a rate measured too high, on a
        server's first burst, is corrected).  The bytes count for the
        mirror through :meth:`credit`, as they are written or once they
        are verified.
        """
        with self.lock:
            m = piece.mirror
            self._remove(piece)
            t = self.clock() - piece.started
            n = piece.received
            if n < self.chunk_bytes:
                # Less than a chunk says more of the server's first burst
                # (nginx's limit_rate sends a second's worth at once) and
                # of latency than of its rate: such a piece counts as if
                # it had taken at least LIVE_AFTER, so that its mirror is
                # not taken for a fast one whose pieces then all look
                # stalled.
                t = max(t, LIVE_AFTER)
            if t > 0 and n > 0:
                sample = n / t
                m.conn_rate = sample if m.conn_rate is None else (
                    EWMA * sample + (1 - EWMA) * m.conn_rate)

    def credit(self, mirror, n):
        """``n`` bytes of ``mirror`` were verified and kept."""
        with self.lock:
            mirror.bytes += n

    def give_back(self, piece, upto=None):
        """``piece`` ends unfinished: ``[upto, end)`` is free again.

        :param upto: the first byte not kept (default: what was read).
        """
        with self.lock:
            self._remove(piece)
            start = piece.pos if upto is None else upto
            if start < piece.end:
                self._free(start, piece.end)

    def give_back_range(self, start, end):
        """``[start, end)`` is free again (its bytes were bad)."""
        with self.lock:
            self._free(start, end)

    def drop(self, mirror, reason):
        """Give ``mirror`` nothing more."""
        with self.lock:
            if mirror.dropped is None:
                mirror.dropped = reason

    def _remove(self, piece):
        try:
            piece.mirror.pieces.remove(piece)
        except ValueError:
            pass

    def _free(self, start, end):
        self.free.append([start, end])
        self.free.sort()
        merged = []
        for s, e in self.free:
            if merged and s <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], e)
            else:
                merged.append([s, e])
        self.free = merged

    # -- state ----------------------------------------------------------------

    def done(self) -> bool:
        """Nothing is left to hand out and nothing is being read."""
        with self.lock:
            return not self.free and not any(m.pieces for m in self.mirrors)

    def alive(self):
        """The mirrors not dropped."""
        with self.lock:
            return [m for m in self.mirrors if not m.dropped]
