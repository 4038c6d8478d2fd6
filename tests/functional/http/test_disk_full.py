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

"""A destination on a full disk: http downloads and local copies.

The destination is an 8 MiB tmpfs (mounted by the test, root only, as in
the FTP tests).  Expected: ``DestinationError`` naming the destination and
the lack of space, the password masked, no ``DEST``, and the partial data
either gone or kept with its control file (and lock file) so that a rerun,
once there is room, resumes instead of starting over.
"""

import json
import os
import shutil

import pytest

import oslo_transfer
from oslo_transfer import exceptions as exc
from tests.functional import conftest as fconf

MiB = fconf.MiB


@pytest.fixture
def small(tmpfs):
    return tmpfs('8m')


def _state(dest):
    return sorted(os.listdir(os.path.dirname(dest)))


@pytest.mark.parametrize('segments', [1, 4])
def test_http_download_to_a_full_disk(nginx, serve, small, make_conf,
                                      segments):
    src = serve(16 * MiB)
    dest = os.path.join(small, 'image.raw')
    url = nginx.url(src.name, userinfo='glance:Disk-s3cret')
    conf = make_conf(oslo_transfer={'retries': 1, 'retry_backoff': 0,
                                    'segment_threshold': 0,
                                    'segment_size': MiB,
                                    'checkpoint_bytes': MiB})
    with oslo_transfer.Transfer(conf) as t:
        with pytest.raises(exc.DestinationError) as ei:
            t.copy(url, dest, checksum=src.checksum(), segments=segments)
    message = str(ei.value)
    assert 'space' in message.lower(), message
    assert 'image.raw' in message
    assert 'Disk-s3cret' not in message
    assert not os.path.exists(dest)
    left = _state(dest)
    # Partial data stays only together with its control file (and the
    # lock file, which goes with the resumable state).
    assert left in ([], ['image.raw.part', 'image.raw.part.ctl',
                         'image.raw.part.lock']), left
    if left:
        with open(dest + '.part.ctl') as f:
            ctl = f.read()
        assert 'Disk-s3cret' not in ctl
        ranges = json.loads(ctl)['ranges']
        held = sum(e - s for s, e in ranges)
        assert held < 8 * MiB
        # What the control file calls held is the source's bytes.
        with open(dest + '.part', 'rb') as f:
            for s, e in ranges:
                f.seek(s)
                assert f.read(e - s) == src.data[s:e]


def test_http_download_resumes_once_there_is_room(nginx, serve, small,
                                                  make_conf, tmp_path):
    src = serve(16 * MiB)
    dest = os.path.join(small, 'image.raw')
    conf = make_conf(oslo_transfer={'retries': 0, 'segment_threshold': 0,
                                    'segment_size': MiB,
                                    'checkpoint_bytes': MiB})
    with oslo_transfer.Transfer(conf) as t:
        with pytest.raises(exc.DestinationError):
            t.copy(nginx.url(src.name), dest, checksum=src.checksum(),
                   segments=1)
    if not os.path.exists(dest + '.part.ctl'):
        pytest.fail('no resumable state after a full disk: %s'
                    % _state(dest))
    # Room again: move the state to a bigger filesystem and rerun.
    big = tmp_path / 'big'
    big.mkdir()
    os.unlink(os.path.join(small, 'image.raw.part.lock'))
    for name in ('image.raw.part', 'image.raw.part.ctl'):
        shutil.move(os.path.join(small, name), big / name)
    dest2 = str(big / 'image.raw')
    with oslo_transfer.Transfer(conf) as t:
        res = t.copy(nginx.url(src.name), dest2, checksum=src.checksum())
    assert res.bytes_resumed > 0
    fconf.assert_only_dest(dest2, src.data)


def test_no_checkpoint_before_the_disk_filled_still_resumes(
        nginx, serve, small, make_conf, tmp_path, caplog):
    # No checkpoint is due before the disk is full (checkpoint_bytes is
    # larger than the image), so the control file is first rewritten when
    # there is no block left for it: the end of the held data is given back
    # to make room, and the rest is resumed.
    src = serve(16 * MiB)
    conf = make_conf(oslo_transfer={'retries': 0, 'segment_threshold': 0,
                                    'checkpoint_bytes': 64 * MiB})

    def copy(dest):
        with oslo_transfer.Transfer(conf) as t:
            return t.copy(nginx.url(src.name), dest,
                          checksum=src.checksum(), segments=1)
    fconf.full_disk_then_resume(copy, small, str(tmp_path / 'big'),
                                src.data)
    assert 'the disk is full: dropped' in caplog.text


def test_local_copy_to_a_full_disk(small, tmp_path):
    src = fconf.make_data_file(tmp_path, 'src.raw', 16 * MiB)
    dest = os.path.join(small, 'copy.raw')
    with pytest.raises(exc.DestinationError) as ei:
        oslo_transfer.copy(src.path, dest, checksum=src.checksum())
    assert 'space' in str(ei.value).lower()
    assert 'copy.raw' in str(ei.value)
    assert not os.path.exists(dest)
    assert _state(dest) in ([], ['copy.raw.part', 'copy.raw.part.ctl',
                                 'copy.raw.part.lock'])
