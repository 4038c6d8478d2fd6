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

"""Swarms of real peers on loopback: seeder, web seed, kill and resume."""

import json
import os
import signal
import time

import pytest

from oslo_transfer._drivers.bittorrent import driver as bittorrent
from tests.functional.bittorrent.conftest import ports
from tests.functional.bittorrent import webseed
from tests.functional import conftest as fconf

MiB = 1024 * 1024


def _torrent(tmp_path, data, web_seeds=(), piece_size=None):
    path = tmp_path / (data.name + '.torrent')
    path.write_bytes(bittorrent.make_torrent(data.path, web_seeds=web_seeds,
                                             piece_size=piece_size))
    return str(path)


def _dests(tmp_path, n):
    out = []
    for i in range(n):
        d = tmp_path / ('host%d' % i)
        d.mkdir()
        out.append(str(d / 'image.raw'))
    return out


def _seeded(swarm, image, tmp_path):
    """A seeder of 12 MiB; ``start(i, **kw)`` starts receiver ``i`` of 3.

    Every peer names all four; the receivers seed for up to 600 s.
    :returns: ``(data, dests, start)``.
    """
    data = image(12 * MiB)
    torrent = _torrent(tmp_path, data)
    p_seed, *p_recv = ports(4)
    everyone = ['127.0.0.1:%d' % p for p in [p_seed] + p_recv]
    swarm.seeder('seeder', data.path, torrent, p_seed)
    dests = _dests(tmp_path, 3)

    def start(i, **kwargs):
        return swarm.receiver('recv%d' % i, torrent, dests[i], p_recv[i],
                              peers=everyone, checksum=data.checksum(),
                              options={'seed_time': 600}, **kwargs)
    return data, dests, start


def test_seeder_and_three_receivers(swarm, image, tmp_path):
    data, dests, start = _seeded(swarm, image, tmp_path)
    recv = [start(i) for i in range(3)]
    results = [r.json_line(timeout=90) for r in recv]
    for dest, res in zip(dests, results):
        assert res['ok'], res
        assert res['result']['driver'] == 'bittorrent'
        assert res['result']['digest'] == data.sha256
        assert res['stats']['origin_pieces'] == 0
        assert res['stats']['peer_pieces'] == res['stats']['pieces']
        fconf.assert_only_dest(dest, data.data)
    # Every receiver stops seeding long before its 600 s: all the peers it
    # was told about are complete.
    for r in recv:
        assert r.wait(60) == 0, r.log_tail()
        assert 'every named peer has the whole file' in r.log_tail()


def test_last_receiver_with_a_slow_disk_stops_seeding(swarm, image,
                                                      tmp_path):
    """A seed does not wait for peers that left while it flushed.

    The others see the last receiver complete and leave while it still
    flushes; they are not coming back.
    """
    data, dests, start = _seeded(swarm, image, tmp_path)
    early = [start(0), start(1)]
    for r in early:
        assert r.json_line(timeout=90)['ok']
    # Both seed now, waiting for the last one: it completes, and they see
    # it complete and leave during its 6 s "flush" (longer than the 3 s a
    # seed lingers).
    last = start(2, slow_final_flush=6)
    res = last.json_line(timeout=90)
    assert res['ok'], res
    fconf.assert_only_dest(dests[2], data.data)
    for r in early:
        assert r.wait(60) == 0
        assert 'every named peer has the whole file' in r.log_tail()
    assert last.wait(60) == 0
    log = last.log_tail(20000)
    assert 'final flush waits 6.0s' in log
    assert 'every named peer has the whole file' in log


def test_web_seed_only_three_receivers(swarm, origin, image, tmp_path):
    """No seeder: nginx is the only source, and sends each byte ~once."""
    data = image(16 * MiB)
    url = origin.url(data.name)
    torrent = _torrent(tmp_path, data, web_seeds=[url])
    p = ports(3)
    everyone = ['127.0.0.1:%d' % x for x in p]
    dests = _dests(tmp_path, 3)
    recv = [swarm.receiver('recv%d' % i, torrent, dests[i], p[i],
                           urls=[url], peers=everyone,
                           checksum=data.checksum())
            for i in range(3)]
    results = [r.json_line(timeout=90) for r in recv]
    shares = set()
    for dest, res in zip(dests, results):
        assert res['ok'], res
        assert res['result']['driver'] == 'bittorrent'
        fconf.assert_only_dest(dest, data.data)
        # each receiver took part of the data from the others
        assert res['stats']['peer_pieces'] > 0, res['stats']
        shares.add(res['stats']['share'])
    assert shares == {'1/3', '2/3', '3/3'}
    sent = origin.bytes_sent_for(data.name)
    assert data.size <= sent <= 1.5 * data.size, (
        'nginx sent %d bytes for %d bytes of data to 3 receivers'
        % (sent, data.size))


def _held(dest) -> int:
    try:
        with open(fconf.ctl_path(dest)) as f:
            ctl = json.load(f)
    except (OSError, ValueError):
        return 0
    return sum(e - s for s, e in ctl.get('ranges', ()))


@pytest.fixture
def slow_seed():
    servers = []

    def start(path, delay):
        s = webseed.WebSeed(path, delay=delay).start()
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


def test_resume_after_kill(swarm, origin, image, slow_seed, tmp_path):
    """SIGKILL mid-download; the rerun fetches only what was not held."""
    data = image(24 * MiB)
    # Slow enough that the first records (about once a second) hold a
    # part of the image, not all of it.
    slow = slow_seed(data.path, delay=0.2)
    torrent = _torrent(tmp_path, data)
    dest = _dests(tmp_path, 1)[0]
    first = swarm.receiver('first', torrent, dest, ports(1)[0],
                           urls=[slow.url], checksum=data.checksum())
    deadline = time.monotonic() + 60
    while _held(dest) < 4 * MiB:
        assert first.popen.poll() is None, first.log_tail()
        assert time.monotonic() < deadline, 'no progress: ' + first.log_tail()
        time.sleep(0.05)
    first.signal(signal.SIGKILL)
    first.wait()
    held = _held(dest)
    time.sleep(0.5)             # let the answers in flight at the kill end
    sent_before = slow.bytes_sent
    assert 0 < held < data.size
    assert not os.path.exists(dest)

    second = swarm.receiver('second', torrent, dest, ports(1)[0],
                            urls=[slow.url], checksum=data.checksum())
    res = second.json_line(timeout=90)
    assert res['ok'], res
    fconf.assert_only_dest(dest, data.data)
    st = res['stats']
    piece = data.size // st['pieces']
    assert st['resumed_pieces'] * piece == held
    assert res['result']['bytes_resumed'] == held
    # Nothing held was fetched again: the origin sent exactly the missing
    # pieces.
    assert st['origin_bytes'] == data.size - held
    assert slow.bytes_sent - sent_before == data.size - held
    assert st['origin_pieces'] + st['resumed_pieces'] == st['pieces']
