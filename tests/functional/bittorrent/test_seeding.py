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

"""Seeding after a copy, metadata found next to the origin, the seed CLI."""

import os
import subprocess
import sys

import pytest

import oslo_transfer
from oslo_transfer._drivers import _torrent_session
from oslo_transfer._drivers import bittorrent
from tests.functional.bittorrent.conftest import ports
from tests.functional.bittorrent.conftest import REPO
from tests.functional import conftest as fconf

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _no_seeds_left():
    yield
    bittorrent.stop_seeding()


def test_seeds_after_commit(make_transfer, swarm, origin, image, tmp_path,
                            dest):
    """The renamed destination is seeded.

    A later receiver, with no web seed, gets every piece from us.
    """
    data = image(6 * MiB)
    torrent = tmp_path / 'x.torrent'
    torrent.write_bytes(bittorrent.make_torrent(data.path))
    tr = make_transfer(seed_time=120)
    res = tr.copy(oslo_transfer.Source(urls=[origin.url(data.name)],
                                       torrent=str(torrent)),
                  dest, checksum=data.checksum(),
                  hints=oslo_transfer.Hints(peers=4))
    assert res.driver == 'bittorrent'
    fconf.assert_only_dest(dest, data.data)
    assert [p for _, p in bittorrent.seeding()] == [dest]
    assert not bittorrent.wait_for_seeding(timeout=0.2)
    us = _torrent_session.current().listen_port()
    later = str(tmp_path / 'later' / 'image.raw')
    os.makedirs(os.path.dirname(later))
    recv = swarm.receiver('later', str(torrent), later, ports(1)[0],
                          peers=['127.0.0.1:%d' % us],
                          checksum=data.checksum(),
                          options={'seed_time': 0})
    out = recv.json_line(timeout=60)
    assert out['ok'], out
    assert out['stats']['peer_pieces'] == out['stats']['pieces']
    fconf.assert_only_dest(later, data.data)
    assert bittorrent.seeding() == [(bittorrent.parse_torrent(
        torrent.read_bytes()).info_hash, dest)]


def test_seeding_stops_when_the_file_changes(make_transfer, origin, image,
                                             dest):
    data = image(1 * MiB)
    raw = bittorrent.make_torrent(data.path)
    tr = make_transfer(seed_time=600)
    tr.copy(oslo_transfer.Source(urls=[origin.url(data.name)], torrent=raw),
            dest, hints=oslo_transfer.Hints(peers=4))
    assert [p for _, p in bittorrent.seeding()] == [dest]
    with open(dest, 'r+b') as f:
        f.write(b'changed')
    assert bittorrent.wait_for_seeding(timeout=30)
    assert bittorrent.seeding() == []


def test_seed_time_zero_does_not_seed(make_transfer, origin, image, dest):
    data = image(1 * MiB)
    raw = bittorrent.make_torrent(data.path)
    tr = make_transfer(seed_time=0)
    tr.copy(oslo_transfer.Source(urls=[origin.url(data.name)], torrent=raw),
            dest, hints=oslo_transfer.Hints(peers=4))
    assert bittorrent.seeding() == []


@pytest.mark.parametrize('lookup', [True, False])
def test_torrent_next_to_origin(make_transfer, origin, image, dest, lookup):
    data = image(2 * MiB)
    url = origin.url(data.name)
    with open(data.path + '.torrent', 'wb') as f:
        f.write(bittorrent.make_torrent(data.path, web_seeds=[url]))
    tr = make_transfer(lookup_torrent_next_to_origin=lookup)
    hints = oslo_transfer.Hints(peers=4)
    plan = tr.plan(url, dest, hints=hints)
    assert plan.first.driver == ('bittorrent' if lookup else 'http')
    res = tr.copy(url, dest, checksum=data.checksum(), hints=hints)
    assert res.driver == plan.first.driver
    fconf.assert_only_dest(dest, data.data)
    looked = origin.requests_for(data.name + '.torrent')
    assert len(looked) == (1 if lookup else 0)


def test_no_torrent_next_to_origin(make_transfer, origin, image, dest):
    data = image(1 * MiB)
    tr = make_transfer(lookup_torrent_next_to_origin=True)
    plan = tr.plan(origin.url(data.name), dest,
                   hints=oslo_transfer.Hints(peers=4))
    assert [c.driver for c in plan.candidates] == ['http']


def test_seed_command_refuses_other_data(image, tmp_path):
    data = image(2 * MiB)
    other = fconf.make_data_file(tmp_path, 'other.raw', data.size)
    torrent = tmp_path / 'x.torrent'
    torrent.write_bytes(bittorrent.make_torrent(data.path))
    proc = subprocess.run(
        [sys.executable, '-m', 'oslo_transfer.cmd.torrent', 'seed',
         other.path, '--torrent', str(torrent),
         '--listen', '127.0.0.1:0'], cwd=REPO, capture_output=True,
        timeout=60)
    assert proc.returncode == 1
    assert b'does not match torrent' in proc.stderr
    assert b'0 of 8 pieces' in proc.stderr
