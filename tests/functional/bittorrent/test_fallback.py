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

"""When peers do not answer: the origin, then the engine's HTTP fallback."""

import os
import time

import pytest

import oslo_transfer
from oslo_transfer._drivers.bittorrent import driver as bittorrent
from oslo_transfer._drivers.bittorrent import session as session_mod
from oslo_transfer import exceptions
from tests.functional.bittorrent.conftest import ports
from tests.functional.bittorrent import webseed
from tests.functional import conftest as fconf

MiB = 1024 * 1024


def _dead_peers(n):
    return tuple('127.0.0.1:%d' % p for p in ports(n))


def test_origin_serves_what_dead_peers_do_not(make_transfer, origin, image,
                                              dest):
    """Named peers never answer: this host fetches every piece itself."""
    data = image(6 * MiB)
    url = origin.url(data.name)
    raw = bittorrent.make_torrent(data.path, web_seeds=[url])
    tr = make_transfer(peer_wait=0.5)
    hints = oslo_transfer.Hints(peers=8, peer_addresses=_dead_peers(7))
    res = tr.copy(oslo_transfer.Source(urls=[url], torrent=raw), dest,
                  checksum=data.checksum(), hints=hints)
    assert res.driver == 'bittorrent'
    st = tr.driver('bittorrent').last_stats
    assert st['origin_pieces'] == st['pieces']
    assert st['share'].endswith('/8')
    fconf.assert_only_dest(dest, data.data)


def test_no_peer_and_no_web_seed_fails_retryable(make_transfer, image,
                                                 dest):
    data = image(2 * MiB)
    raw = bittorrent.make_torrent(data.path)
    tr = make_transfer(stall_timeout=2)
    hints = oslo_transfer.Hints(peers=4, peer_addresses=_dead_peers(2))
    with pytest.raises(exceptions.ConnectionFailed) as ei:
        tr.copy(oslo_transfer.Source(torrent=raw), dest, hints=hints)
    assert ei.value.retryable
    assert 'no piece arrived for 2s (0 of 8 pieces held' in str(ei.value)
    fconf.assert_nothing_left(dest)
    sess = session_mod.current()
    assert sess.find(bittorrent.parse_torrent(raw).info_hash) is None


def test_nothing_to_ask_fails_at_once(make_transfer, image, dest):
    """No web seed, tracker or peer: no waiting for a stall."""
    data = image(1 * MiB)
    raw = bittorrent.make_torrent(data.path)
    tr = make_transfer(stall_timeout=600)
    with pytest.raises(exceptions.ConnectionFailed) as ei:
        tr.copy(oslo_transfer.Source(torrent=raw), dest,
                hints=oslo_transfer.Hints(peers=4))
    assert 'nothing can send the data' in str(ei.value)


def test_engine_falls_back_to_http(make_transfer, origin, image, tmp_path,
                                   dest):
    """Stale metadata: the engine falls back on HTTP.

    The metadata describes another version of the image: every piece fails
    its hash check, the driver stalls, the engine reads the URL by HTTP.
    """
    data = image(3 * MiB)
    stale = fconf.make_data_file(tmp_path, 'stale.raw', data.size)
    raw = bittorrent.make_torrent(stale.path)
    url = origin.url(data.name)
    tr = make_transfer(stall_timeout=2, peer_wait=0.2)
    hints = oslo_transfer.Hints(peers=8, peer_addresses=_dead_peers(3))
    res = tr.copy(oslo_transfer.Source(urls=[url], torrent=raw), dest,
                  checksum=data.checksum(), hints=hints)
    assert res.driver == 'http'
    assert [a[1] for a in res.attempts] == ['bittorrent']
    assert 'no piece arrived' in res.attempts[0][2]
    assert tr.driver('bittorrent').last_stats['hash_failures'] > 0
    fconf.assert_only_dest(dest, data.data)


def test_cancel_keeps_resumable_state(make_transfer, image, dest):
    data = image(8 * MiB)
    slow = webseed.WebSeed(data.path, delay=0.1).start()
    try:
        raw = bittorrent.make_torrent(data.path)
        tr = make_transfer()
        src = oslo_transfer.Source(urls=[slow.url], torrent=raw)
        handle = tr.submit(src, dest, hints=oslo_transfer.Hints(peers=4))
        deadline = time.monotonic() + 30
        while not os.path.exists(fconf.part_path(dest)) or \
                handle.progress[0] < 1 * MiB:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        handle.cancel()
        with pytest.raises(exceptions.Cancelled):
            handle.result(timeout=30)
    finally:
        slow.stop()
    fconf.assert_resumable(dest, size=data.size)
    sess = session_mod.current()
    assert sess.find(bittorrent.parse_torrent(raw).info_hash) is None


def test_deadline(make_transfer, image, dest):
    """[oslo_transfer] total_timeout bounds a download that still moves."""
    data = image(8 * MiB)
    slow = webseed.WebSeed(data.path, delay=0.2).start()
    try:
        # metadata only (its web seed is the slow server): no HTTP
        # candidate to fall back on
        raw = bittorrent.make_torrent(data.path, web_seeds=[slow.url])
        tr = make_transfer(oslo_transfer={'total_timeout': 2})
        with pytest.raises(exceptions.TransferTimeout) as ei:
            tr.copy(oslo_transfer.Source(torrent=raw), dest,
                    hints=oslo_transfer.Hints(peers=4))
    finally:
        slow.stop()
    assert 'ran out of time' in str(ei.value)
    ctl = fconf.assert_resumable(dest, size=data.size)
    assert 0 < sum(e - s for s, e in ctl['ranges']) < data.size
