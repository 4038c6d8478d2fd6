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

"""Lazy images read through a BitTorrent swarm: real libtorrent peers.

``oslo-transfer nbd --torrent FILE --peers N`` with ``N >=
p2p_min_peers`` reads through the swarm, the nginx origin as web seed:
python3-libnbd reads through the export, our seeder (another process) or
other exports are the peers, and opentracker introduces them when no
``--peer`` is named.
"""

import os
import random
import re

from oslo_transfer import torrent as meta_mod
from tests.functional.bittorrent.conftest import image  # noqa: F401
from tests.functional.bittorrent.conftest import origin  # noqa: F401
from tests.functional.bittorrent.conftest import ports
from tests.functional.bittorrent.conftest import swarm  # noqa: F401
from tests.functional.bittorrent.conftest import tracker  # noqa: F401
from tests.functional import conftest as fconf
from tests.functional.lazy import conftest as lconf

KiB, MiB = lconf.KiB, lconf.MiB


def _conf(tmp_path, name, peers):
    return fconf.write_conf_file(tmp_path / ('%s.conf' % name), {
        'oslo_transfer': {'p2p_min_peers': peers, 'retry_backoff': 0.1},
        'oslo_transfer_bittorrent': {
            'listen_interfaces': '127.0.0.1:0',
            'allow_multiple_connections_per_ip': True,
            'seed_time': 60, 'peer_wait': 2}})


def _reads(seed, size, n=30):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.choice([512, 4 * KiB, 64 * KiB, 300 * KiB])
        out.append((rng.randrange(0, size - length), length))
    return out


def _sha(data, off, n):
    import hashlib
    return hashlib.sha256(data[off:off + n]).hexdigest()


def _stats(exp) -> dict:
    """The swarm reader's counters, from the export's log (at its close)."""
    text = open(exp.log_path, errors='replace').read()
    found = re.findall(r"bittorrent: lazy \S+: (\{.*\})", text)
    assert found, 'no swarm statistics in the log:\n%s' % exp.tail()
    pairs = re.findall(r"'(\w+)': (\d+)[,}]", found[-1])
    return {k: int(v) for k, v in pairs}


def test_random_reads_through_the_swarm_return_the_source(
        swarm, origin, image, export, nbd_client, tmp_path):  # noqa: F811
    """Pieces a peer has come from that peer, not from the origin."""
    data = image(8 * MiB)
    url = origin.url(data.name)
    torrent = tmp_path / 'image.torrent'
    torrent.write_bytes(meta_mod.make_torrent(data.path, web_seeds=[url],
                                              piece_size=256 * KiB))
    port = ports(1)[0]
    swarm.seeder('seed', data.path, str(torrent), port)
    cache = tmp_path / 'cache.raw'
    exp = export(url, cache, '--torrent', torrent, '--peers', 4,
                 '--peer', '127.0.0.1:%d' % port, '--no-prefetch',
                 '--config-file', _conf(tmp_path, 'recv', 4))
    lconf.wait_for(lambda: 'the peers have 32 of 32 pieces' in open(
        exp.log_path).read(), what='the seeder to be seen')
    reads = _reads(3, data.size)
    res = nbd_client(exp.uri, reads, connections=4)
    assert res['reads'] == [{'sha256': _sha(data.data, o, n)}
                            for o, n in reads]
    assert exp.stop() == 0
    stats = _stats(exp)
    touched = {i for o, n in reads
               for i in range(o // (256 * KiB), (o + n - 1) // (256 * KiB)
                              + 1)}
    # only the pieces read, each from the peer that has it
    assert stats['peer_pieces'] == len(touched), stats
    assert stats['origin_pieces'] == 0, stats
    assert origin.bytes_sent_for(data.name) == 0
    assert not os.path.exists(cache)


def test_three_lazy_receivers_meet_through_a_tracker(
        origin, image, tracker, export, nbd_client, tmp_path):  # noqa: F811
    """No --peer list: opentracker introduces the three receivers.

    The origin sends each byte about once (at most 1.3 x the image), and
    each image completes.
    """
    data = image(8 * MiB)
    url = origin.url(data.name)
    raw = meta_mod.make_torrent(data.path, web_seeds=[url],
                                trackers=[tracker.announce],
                                piece_size=128 * KiB)
    torrent = tmp_path / 'image.torrent'
    torrent.write_bytes(raw)
    tracker.start(meta_mod.parse(raw).info_hash)
    caches, exports = [], []
    for i in range(3):
        (tmp_path / ('host%d' % i)).mkdir()
        caches.append(tmp_path / ('host%d' % i) / 'image.raw')
        exports.append(export(
            url, caches[-1], '--torrent', torrent, '--peers', 3,
            '--checksum', data.checksum(), '--config-file',
            _conf(tmp_path, 'recv%d' % i, 3), name='recv%d' % i))
    for i, exp in enumerate(exports):
        reads = _reads(10 + i, data.size, n=10)
        res = nbd_client(exp.uri, reads, connections=2)
        assert res['reads'] == [{'sha256': _sha(data.data, o, n)}
                                for o, n in reads]
    for cache in caches:
        lconf.wait_for(lambda: os.path.exists(cache), timeout=60,
                       what='%s to complete' % cache)
    for exp in exports:
        assert exp.stop() == 0
    for cache in caches:
        fconf.assert_only_dest(str(cache), data.data)
    stats = [_stats(exp) for exp in exports]
    # they found each other with no --peer list
    assert sum(s['peer_pieces'] for s in stats) > 0, stats
    sent = origin.bytes_sent_for(data.name)
    assert data.size <= sent <= 1.3 * data.size, (
        'nginx sent %d bytes for %d bytes of data to 3 lazy receivers '
        'that know no peer list (%s)' % (sent, data.size, stats))


def test_no_peer_and_a_failing_web_seed_is_eio_then_served(
        own_nginx, lazy_image, export, nbd_client, tmp_path):
    """A piece nobody can send fails its read (EIO); nothing is cached.

    Corrupt on the origin's disk: ``ChecksumMismatch``; origin stopped:
    ``ConnectionFailed``, and the next read, once it is back, is served.
    """
    piece = 64 * KiB
    img = lazy_image(own_nginx, 1 * MiB)
    torrent = tmp_path / 'image.torrent'
    torrent.write_bytes(meta_mod.make_torrent(img.path, web_seeds=[img.url],
                                              piece_size=piece))
    with open(img.path, 'r+b') as f:        # the origin's disk rots
        f.seek(5 * piece + 100)
        f.write(b'\x00rot')
    cache = tmp_path / 'cache.raw'
    conf = fconf.write_conf_file(tmp_path / 'recv.conf', {
        'oslo_transfer': {'p2p_min_peers': 2, 'retries': 0,
                          'retry_backoff': 0.1},
        'oslo_transfer_bittorrent': {'listen_interfaces': '127.0.0.1:0'}})
    exp = export(img.url, cache, '--torrent', torrent, '--peers', 2,
                 '--no-prefetch', '--config-file', conf)
    res = nbd_client(exp.uri, [(5 * piece, 4 * KiB), (0, 4 * KiB)])
    assert res['reads'][0]['errno'] == 5            # EIO
    assert res['reads'][1] == {'sha256': img.sha(0, 4 * KiB)}
    assert 'ChecksumMismatch: piece 5 of torrent %s: no peer has it and ' \
           'the web seed sent it corrupt 2 times' % meta_mod.parse(
               torrent.read_bytes()).info_hash in exp.tail(), exp.tail()
    own_nginx.stop()
    res = nbd_client(exp.uri, [(9 * piece, 4 * KiB)])
    assert res['reads'][0]['errno'] == 5
    assert 'ConnectionFailed: piece 9 of torrent' in exp.tail(), exp.tail()
    own_nginx.start()
    res = nbd_client(exp.uri, [(9 * piece, 4 * KiB)])
    assert res['reads'][0] == {'sha256': img.sha(9 * piece, 4 * KiB)}
    assert exp.stop() == 0
    # the corrupt piece never reached the cache, and the map holds only
    # the two pieces served
    assert lconf.cached(cache, 5 * piece, piece) == bytes(piece)
    bits = lconf.present_map(cache)
    assert bits[:2] == bytes([0b1, 0b10]), bits
    assert _stats(exp)['urgent_origin_pieces'] == 2
