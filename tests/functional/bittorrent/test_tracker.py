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

"""Receivers that meet through a real tracker (opentracker), no peer list."""

from oslo_transfer._drivers.bittorrent import driver as bittorrent
from oslo_transfer import torrent as meta_mod
from tests.functional.bittorrent.conftest import ports
from tests.functional import conftest as fconf

MiB = 1024 * 1024


def test_three_receivers_meet_through_a_tracker(swarm, origin, tracker,
                                                image, tmp_path):
    """Each draws its share of the origin from its endpoint's hash.

    Without it every receiver, knowing no peer, fetched the whole file
    from the origin (3x the size here).
    """
    data = image(16 * MiB)
    url = origin.url(data.name)
    raw = bittorrent.make_torrent(data.path, web_seeds=[url],
                                  trackers=[tracker.announce])
    torrent = tmp_path / 'image.torrent'
    torrent.write_bytes(raw)
    tracker.start(meta_mod.parse(raw).info_hash)
    dests = []
    for i in range(3):
        (tmp_path / ('host%d' % i)).mkdir()
        dests.append(str(tmp_path / ('host%d' % i) / 'image.raw'))
    recv = [swarm.receiver('recv%d' % i, str(torrent), dests[i], port,
                           urls=[url], peers_count=3,
                           checksum=data.checksum(),
                           options={'oslo_transfer.p2p_min_peers': 3})
            for i, port in enumerate(ports(3))]
    results = [r.json_line(timeout=90) for r in recv]
    for dest, res in zip(dests, results):
        assert res['ok'], res
        assert res['result']['driver'] == 'bittorrent'
        assert res['result']['digest'] == data.sha256
        fconf.assert_only_dest(dest, data.data)
        # no --peer: the others were found through the tracker
        assert res['stats']['peer_pieces'] > 0, res['stats']
    sent = origin.bytes_sent_for(data.name)
    assert data.size <= sent <= 1.3 * data.size, (
        'nginx sent %d bytes for %d bytes of data to 3 receivers that '
        'know no peer list' % (sent, data.size))


def test_a_receiver_that_meets_nobody_fetches_everything_once(
        swarm, origin, tracker, image, tmp_path):
    """Told of 3 receivers, it meets none, and still completes.

    The tracker refuses the torrent (not in its whitelist).  The host
    fetches its share, then the rest once no peer sends anything: each
    byte once.
    """
    data = image(4 * MiB)
    url = origin.url(data.name)
    raw = bittorrent.make_torrent(data.path, web_seeds=[url],
                                  trackers=[tracker.announce])
    torrent = tmp_path / 'image.torrent'
    torrent.write_bytes(raw)
    tracker.start('0' * 40)             # another torrent only
    dest = tmp_path / 'out'
    dest.mkdir()
    dest = str(dest / 'image.raw')
    recv = swarm.receiver('alone', str(torrent), dest, ports(1)[0],
                          urls=[url], peers_count=3,
                          checksum=data.checksum(),
                          options={'oslo_transfer.p2p_min_peers': 3,
                                   'seed_time': 0})
    res = recv.json_line(timeout=90)
    assert res['ok'], res
    assert res['result']['driver'] == 'bittorrent'
    assert res['stats']['peer_pieces'] == 0
    fconf.assert_only_dest(dest, data.data)
    assert origin.bytes_sent_for(data.name) == data.size
