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

"""Corrupt web seeds, unsafe metadata, credentials of the web seed."""

import json
import os

import pytest

import oslo_transfer
from oslo_transfer._drivers.bittorrent import driver as bittorrent
from oslo_transfer._drivers.bittorrent import origin as origin_mod
from oslo_transfer._drivers.bittorrent import session as session_mod
from oslo_transfer import exceptions
from oslo_transfer import torrent as meta_mod
from tests.functional.bittorrent.conftest import ports
from tests.functional.bittorrent import webseed
from tests.functional import conftest as fconf
from tests.functional.http import nginx as nginx_mod

MiB = 1024 * 1024
PIECE = 256 * 1024


@pytest.fixture
def corrupt_seed():
    started = []

    def start(path, bad_start, bad_end):
        s = webseed.WebSeed(path, bad_start, bad_end).start()
        started.append(s)
        return s

    yield start
    for s in started:
        s.stop()


def _ctl(dest):
    with open(fconf.ctl_path(dest)) as f:
        return json.load(f)


def test_corrupt_web_seed_with_a_seeder(swarm, image, corrupt_seed,
                                        tmp_path):
    """The web seed lies about one range; the output is still right."""
    data = image(8 * MiB)
    torrent = str(tmp_path / 'x.torrent')
    with open(torrent, 'wb') as f:
        f.write(bittorrent.make_torrent(data.path, piece_size=PIECE))
    p_seed, p_us = ports(2)
    # The receiver's share of the origin's pieces (sorted by port): put the
    # lie inside it, so that the web seed is asked for those bytes.
    index = sorted([p_seed, p_us]).index(p_us)
    share = origin_mod.share_range(index, 2, data.size // PIECE)
    bad_start = (share.start + 3) * PIECE + 1000
    lie = corrupt_seed(data.path, bad_start, bad_start + 5000)
    swarm.seeder('seeder', data.path, torrent, p_seed)
    dest = str(tmp_path / 'out' / 'image.raw')
    os.makedirs(os.path.dirname(dest))
    recv = swarm.receiver('recv', torrent, dest, p_us, urls=[lie.url],
                          peers=['127.0.0.1:%d' % p for p in (p_seed, p_us)],
                          checksum=data.checksum(),
                          options={'seed_time': 0,
                                   'download_rate_limit': 4 * MiB})
    res = recv.json_line(timeout=90)
    assert res['ok'], res
    assert lie.corrupt_sent > 0, 'the lie never reached the receiver'
    assert res['stats']['hash_failures'] >= 1
    fconf.assert_only_dest(dest, data.data)


def test_corrupt_web_seed_alone_cannot_corrupt(make_transfer, image,
                                               corrupt_seed, dest):
    """Only a lying web seed: the copy fails, held bytes are all good."""
    data = image(4 * MiB)
    bad_piece = 5
    lie = corrupt_seed(data.path, bad_piece * PIECE + 10,
                       bad_piece * PIECE + 20)
    raw = bittorrent.make_torrent(data.path, web_seeds=[lie.url],
                                  piece_size=PIECE)
    tr = make_transfer(stall_timeout=3)
    with pytest.raises(exceptions.ConnectionFailed) as ei:
        tr.copy(oslo_transfer.Source(torrent=raw), dest,
                hints=oslo_transfer.Hints(peers=4))
    assert 'no piece arrived' in str(ei.value)
    assert tr.driver('bittorrent').last_stats['hash_failures'] >= 1
    ctl = fconf.assert_resumable(dest, size=data.size)
    ranges = [tuple(r) for r in ctl['ranges']]
    held = sum(e - s for s, e in ranges)
    # (the engine saves its control file at most once a second while a
    # whole-file driver runs: the last second of records may be missing)
    assert 0 < held <= data.size - PIECE
    assert not any(s <= bad_piece * PIECE + 10 < e for s, e in ranges)
    with open(fconf.part_path(dest), 'rb') as f:
        for s, e in ranges:
            f.seek(s)
            assert f.read(e - s) == data.data[s:e]


def _evil_torrent(name=b'ok.img', files=None):
    info = {b'name': name, b'piece length': PIECE,
            b'pieces': b'\x00' * 20}
    if files is None:
        info[b'length'] = 100
    else:
        info[b'files'] = [{b'length': 100, b'path': p} for p in files]
    return meta_mod.bencode({b'info': info})


@pytest.mark.parametrize('name,files', [
    (b'../../escape', None),
    (b'/etc/passwd', None),
    (b'..', None),
    (b'dir', [[b'..', b'..', b'escape']]),
    (b'dir', [[b'/abs']]),
    (b'dir', [[b'a', b'', b'b']]),
    (b'dir', [[b'a\\..\\..\\b']]),
])
def test_path_escape_refused(make_transfer, tmp_path, name, files):
    tr = make_transfer()
    dest = str(tmp_path / 'out' / 'image.raw')
    os.makedirs(os.path.dirname(dest))
    before = set(os.listdir(tmp_path))
    with pytest.raises(exceptions.InvalidLocation) as ei:
        tr.copy(oslo_transfer.Source(torrent=_evil_torrent(name, files)),
                dest, hints=oslo_transfer.Hints(peers=4))
    assert 'escape' in str(ei.value) or 'refused' in str(ei.value)
    assert set(os.listdir(tmp_path)) == before
    assert os.listdir(os.path.dirname(dest)) == []
    sess = session_mod.current()
    if sess is not None:
        assert sess.session.get_torrents() == []


def test_web_seed_gets_the_location_credentials(make_transfer, origin,
                                                image, dest):
    data = image(2 * MiB)
    url = origin.url(data.name, location='private')
    raw = bittorrent.make_torrent(data.path)
    tr = make_transfer()
    loc = oslo_transfer.Location(url, credentials=(nginx_mod.USER,
                                                   nginx_mod.PASSWORD))
    res = tr.copy(oslo_transfer.Source(urls=[loc], torrent=raw), dest,
                  checksum=data.checksum(),
                  hints=oslo_transfer.Hints(peers=4))
    assert res.driver == 'bittorrent'
    fconf.assert_only_dest(dest, data.data)
    assert any('auth=%s' % nginx_mod.USER in line and ' 206 ' in line
               for line in origin.requests_for(data.name))


def test_web_seed_wrong_password(make_transfer, origin, image, dest):
    data = image(1 * MiB)
    url = origin.url(data.name, location='private')
    raw = bittorrent.make_torrent(data.path)
    tr = make_transfer()
    loc = oslo_transfer.Location(url, credentials=(nginx_mod.USER,
                                                   'wrong-' +
                                                   nginx_mod.PASSWORD))
    with pytest.raises(exceptions.AuthenticationFailed) as ei:
        tr.copy(oslo_transfer.Source(urls=[loc], torrent=raw), dest,
                hints=oslo_transfer.Hints(peers=4))
    assert nginx_mod.PASSWORD not in str(ei.value)
    res_attempts = tr.driver('bittorrent').last_stats
    assert res_attempts['origin_pieces'] == 0
    fconf.assert_nothing_left(dest)
