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


import pytest

import oslo_transfer
from oslo_transfer._drivers.bittorrent import driver as bittorrent
from tests.functional import conftest as fconf

MiB = 1024 * 1024


@pytest.fixture
def small(tmpfs):
    return tmpfs('8m')


def test_torrent_download_to_a_full_disk(make_transfer, origin, image,
                                         small, tmp_path):
    data = image(16 * MiB)
    url = origin.url(data.name)
    raw = bittorrent.make_torrent(data.path, web_seeds=[url])
    src = oslo_transfer.Source(urls=[url], torrent=raw)
    hints = oslo_transfer.Hints(peers=4)
    tr = make_transfer(peer_wait=0.5)

    def copy(dest):
        res = tr.copy(src, dest, checksum=data.checksum(), hints=hints)
        assert res.driver == 'bittorrent'
        return res
    # What libtorrent wrote and verified before the error is recorded (the
    # last checkpoint made room for the control file), and checked in the
    # file first: a piece can pass its hash check in memory and not land.
    err, held, res = fconf.full_disk_then_resume(
        copy, small, str(tmp_path / 'big'), data.data)
    assert 'image.raw.part' in str(err)
