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

"""The swarm reader's bookkeeping: which urgent piece fails its read, when.

No libtorrent here (the reader is not started): the web seed's answers are
fed as its fetcher threads would (``next_origin_piece``/``origin_done``);
the functional tests (tests/functional/lazy/test_swarm.py) run it for real.
"""

import types

import pytest

from oslo_transfer._drivers.bittorrent import lazy
from oslo_transfer._drivers.bittorrent import pieces
from oslo_transfer import driver
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import torrent

PIECE = 16 * 1024


class _Fetcher:
    """What the reader asks of its urgent web-seed fetcher."""

    all_dead = False
    bytes = 0

    def __init__(self):
        self.woken = 0
        self.error = None

    def wake(self):
        self.woken += 1

    def last_error(self):
        return self.error


@pytest.fixture
def reader(tmp_path):
    data = bytes(range(256)) * (4 * PIECE // 256)
    src = tmp_path / 'image.raw'
    src.write_bytes(data)
    meta = torrent.parse(torrent.make_torrent(str(src), piece_size=PIECE))
    got = []
    r = lazy.SwarmReader(
        types.SimpleNamespace(lt=None), meta, str(tmp_path / 'c.part'),
        driver.Context(), types.SimpleNamespace(peer_wait=5.0),
        origins=[locations.Location('http://127.0.0.1:9/image.raw')],
        trackers=[], held=[3], deliver=lambda i, d: got.append((i, d)),
        retries=1)
    r.plan = pieces.PiecePlan(0, 1, meta.num_pieces)
    r.fetchers = [_Fetcher()]
    r.data, r.got = data, got
    return r


def _piece(r, i):
    return r.data[i * PIECE:(i + 1) * PIECE]


def test_a_piece_the_web_seed_keeps_sending_corrupt_fails_its_read(reader):
    reader.want(PIECE + 10, 100, urgent=True)
    assert reader.fetchers[0].woken == 1            # at once, not polled
    for _ in range(lazy._MAX_ORIGIN_FAILURES):
        assert reader.failed(1) is None
        assert reader.next_origin_piece(urgent=True) == 1
        reader.origin_done(1, b'x' * PIECE)
    exc = reader.failed(1)
    assert isinstance(exc, exceptions.ChecksumMismatch)
    assert str(exc).startswith(
        'piece 1 of torrent %s: no peer has it and the web seed sent it '
        'corrupt 2 times' % reader.key)
    assert reader.next_origin_piece(urgent=True) is None  # left alone
    assert reader.got == []                           # nothing delivered
    # the next read tries the origin again, and this time it is right
    reader.want(PIECE, 1, urgent=True)
    assert reader.failed(1) is None
    assert reader.next_origin_piece(urgent=True) == 1
    reader.origin_done(1, _piece(reader, 1))
    assert reader.got == [(1, _piece(reader, 1))]
    assert reader.failed(1) is None
    assert reader.stats['urgent_origin_pieces'] == 1
    assert reader.stats['hash_failures'] == 2


def test_an_unreachable_web_seed_fails_the_read_after_the_retries(reader):
    reader.want(0, 1, urgent=True)
    reader.fetchers[0].error = exceptions.ConnectionFailed(
        'connection refused', url='http://127.0.0.1:9/image.raw')
    for _ in range(2):                              # retries=1: 2 tries
        assert reader.failed(0) is None
        assert reader.next_origin_piece(urgent=True) == 0
        reader.origin_done(0, None)
    exc = reader.failed(0)
    assert isinstance(exc, exceptions.ConnectionFailed) and exc.retryable
    assert 'piece 0 of torrent %s: no peer has it and the web seed failed ' \
           '(connection refused' % reader.key in str(exc)
    assert exc.__cause__ is reader.fetchers[0].error


def test_a_piece_a_peer_has_waits_for_the_peer(reader):
    reader.want(2 * PIECE, 1, urgent=True)
    reader._avail = [0, 0, 1, 0]                    # as _refresh sees it
    assert reader.next_origin_piece(urgent=True) is None   # its grace
    reader.origin_done(2, None)
    reader.origin_done(2, None)
    reader.origin_done(2, None)
    assert reader.failed(2) is None


def test_held_and_unwanted_pieces_never_fail(reader):
    reader.want(3 * PIECE, PIECE, urgent=True)      # held already
    assert reader.failed(3) is None
    assert reader.failed(0) is None                 # nobody waits for it
    assert reader.next_origin_piece(urgent=True) is None
