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

"""A torrent download onto a full disk (an 8 MiB tmpfs, root only).

libtorrent writes the pieces itself: its write error must come out as
``DestinationError`` naming the destination and the lack of space, with no
``DEST``; what the control file calls held must be the source's bytes, and
a rerun with room resumes it.
"""

import json
import os
import shutil

import pytest

import oslo_transfer
from oslo_transfer._drivers import bittorrent
from oslo_transfer import exceptions
from tests.functional import conftest as fconf
from tests.functional.ftp import ftpservers

MiB = 1024 * 1024


@pytest.fixture
def small(tmp_path):
    fs = ftpservers.Tmpfs(tmp_path / 'small', '8m').mount()
    yield fs.path
    fs.umount()


def test_torrent_download_to_a_full_disk(make_transfer, origin, image,
                                         small, tmp_path):
    data = image(16 * MiB)
    url = origin.url(data.name)
    raw = bittorrent.make_torrent(data.path, web_seeds=[url])
    src = oslo_transfer.Source(urls=[url], torrent=raw)
    hints = oslo_transfer.Hints(peers=4)
    dest = os.path.join(small, 'image.raw')
    tr = make_transfer(peer_wait=0.5)
    with pytest.raises(exceptions.DestinationError) as ei:
        tr.copy(src, dest, checksum=data.checksum(), hints=hints)
    message = str(ei.value)
    assert 'space' in message.lower(), message
    assert 'image.raw' in message, message
    assert not os.path.exists(dest)
    # What libtorrent wrote and verified before the error is recorded (the
    # last checkpoint made room for the control file), and checked in the
    # file first: a piece can pass its hash check in memory and not land.
    assert sorted(os.listdir(small)) == [
        'image.raw.part', 'image.raw.part.ctl', 'image.raw.part.lock']
    with open(dest + '.part.ctl') as f:
        ranges = json.load(f)['ranges']
    held = sum(e - s for s, e in ranges)
    assert 0 < held < 8 * MiB, ranges
    with open(dest + '.part', 'rb') as f:
        for s, e in ranges:
            f.seek(s)
            assert f.read(e - s) == data.data[s:e]
    # Room again: move the state to a bigger file system and rerun.
    big = tmp_path / 'big'
    big.mkdir()
    os.unlink(dest + '.part.lock')
    for name in ('image.raw.part', 'image.raw.part.ctl'):
        shutil.move(os.path.join(small, name), big / name)
    dest = str(big / 'image.raw')
    res = tr.copy(src, dest, checksum=data.checksum(), hints=hints)
    assert res.driver == 'bittorrent'
    assert res.bytes_resumed == held
    fconf.assert_only_dest(dest, data.data)
