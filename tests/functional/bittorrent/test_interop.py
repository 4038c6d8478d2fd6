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

"""Interoperability with an independent client: aria2c."""

import os
import shutil
import subprocess
import sys

from oslo_transfer._drivers.bittorrent import driver as bittorrent
from tests.functional.bittorrent.conftest import ports
from tests.functional.bittorrent.conftest import REPO
from tests.functional import conftest as fconf
from tests.functional import servers

MiB = 1024 * 1024


def _torrent(tmp_path, data, **kwargs):
    path = tmp_path / (data.name + '.torrent')
    path.write_bytes(bittorrent.make_torrent(data.path, **kwargs))
    return str(path)


def test_aria2c_seeds_for_our_receiver(swarm, image, tmp_path):
    data = image(8 * MiB)
    torrent = _torrent(tmp_path, data)
    seed_dir = tmp_path / 'aria-seed'
    seed_dir.mkdir()
    shutil.copy(data.path, seed_dir / data.name)
    p_aria, p_us = ports(2)
    swarm.aria2c('aria2c-seed', torrent, seed_dir, p_aria, seed=True)
    dest = str(tmp_path / 'out' / 'image.raw')
    os.makedirs(os.path.dirname(dest))
    recv = swarm.receiver('recv', torrent, dest, p_us,
                          peers=['127.0.0.1:%d' % p_aria],
                          checksum=data.checksum(),
                          options={'seed_time': 0})
    res = recv.json_line(timeout=90)
    assert res['ok'], res
    assert res['result']['driver'] == 'bittorrent'
    assert res['stats']['peer_pieces'] == res['stats']['pieces']
    fconf.assert_only_dest(dest, data.data)


def test_aria2c_receives_from_our_seeder(swarm, image, tmp_path):
    data = image(8 * MiB)
    torrent = _torrent(tmp_path, data)
    get_dir = tmp_path / 'aria-get'
    get_dir.mkdir()
    p_aria, p_us = ports(2)
    aria = swarm.aria2c('aria2c-get', torrent, get_dir, p_aria)
    servers.wait_for_port('127.0.0.1', p_aria, timeout=30)
    seeder = swarm.seeder('seeder', data.path, torrent, p_us,
                          peers=['127.0.0.1:%d' % p_aria])
    assert aria.wait(90) == 0, aria.log_tail()
    assert fconf.file_equals(str(get_dir / data.name), data.data)
    # A clean stop on SIGTERM: status 0 and a last JSON line.
    seeder.stop()
    assert seeder.popen.returncode == 0, seeder.log_tail()
    assert seeder.json_line(timeout=5)['event'] == 'stopped'


def test_aria2c_reads_our_metadata(image, tmp_path):
    """make-torrent output: aria2c computes the same info-hash."""
    data = image(3 * MiB + 5)
    out = tmp_path / 'x.torrent'
    web = 'http://127.0.0.1:9/%s' % data.name
    subprocess.run([sys.executable, '-m', 'oslo_transfer.cmd.torrent',
                    'make-torrent', data.path, '--web-seed', web,
                    '-o', str(out)], cwd=REPO, check=True,
                   capture_output=True)
    meta = bittorrent.parse_torrent(out.read_bytes())
    aria = servers.require_binary('aria2c', 'aria2')
    shown = subprocess.run([aria, '-S', str(out)], check=True,
                           capture_output=True).stdout.decode()
    assert 'Info Hash: %s' % meta.info_hash in shown
    assert web in shown
    assert '(%s)' % format(data.size, ',') in shown
