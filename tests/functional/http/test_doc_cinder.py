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

"""The Cinder guide's example against nginx and real loop devices."""

import os

import pytest

import oslo_transfer
from oslo_transfer import exceptions
from tests.functional import conftest as fconf
from tests.functional.http import doc_cinder_volume as cinder

MiB = fconf.MiB


@pytest.fixture
def transfer(make_conf):
    with oslo_transfer.Transfer(make_conf()) as t:
        yield t


def test_image_to_volume_and_back(transfer, nginx, serve, loop_device):
    image = serve(6 * MiB)
    volume = loop_device(8 * MiB)
    link = os.path.join(os.path.dirname(volume.image), 'by-path-lun-0')
    os.symlink(volume.dev, link)

    r = cinder.image_to_volume(transfer, nginx.url(image.name), 'tok',
                               image.checksum(), link, new_volume=True)

    assert r.dest == volume.dev
    assert volume.read(0, image.size) == image.data

    url = nginx.url('images/from-volume.raw', 'dav')
    r = cinder.volume_to_image(transfer, volume.dev, url, 'tok')
    assert r.size == volume.size
    assert fconf.file_equals(
        os.path.join(nginx.upload_dir, 'images/from-volume.raw'),
        volume.read())

    with pytest.raises(exceptions.DestinationExists):
        cinder.volume_to_image(transfer, volume.dev, url, 'tok')


def test_image_larger_than_the_volume(transfer, nginx, serve, loop_device):
    image = serve(5 * MiB)
    volume = loop_device(4 * MiB, fill=0x01)
    with pytest.raises(exceptions.DestinationError) as ei:
        cinder.image_to_volume(transfer, nginx.url(image.name), 'tok',
                               image.checksum(), volume.dev)
    assert 'does not fit' in str(ei.value)
    assert volume.read() == b'\x01' * volume.size
