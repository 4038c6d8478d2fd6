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

"""The service code of the Cinder guide's example: images and volumes.

A stand-in for the part of a volume service that ``cinder/image/
image_utils.py`` holds today (``fetch_to_raw`` and ``upload_volume``
around ``qemu-img convert``); ``test_doc_cinder`` runs it against nginx
and real loop devices, and ``doc/source/user/cinder.rst`` includes both
files, so the example a reader copies is the code that runs in the suite.
"""

import oslo_transfer


def image_to_volume(transfer, image_url, token, checksum, device_path,
                    new_volume=False):
    """Write a raw image into an attached volume.

    ``device_path`` is what os-brick's ``connect_volume()`` returned (a
    ``/dev/disk/by-path/...`` link, followed).  A block device is written
    in place: no ``.part``, no rename, ``O_DIRECT``, ``fsync`` at the end,
    and the bytes are read back and checked against ``checksum``.  A killed
    copy resumes when called again.  A volume that was just created reads
    as zeros, so the zero runs of a sparse image need not be written.

    :raises DestinationError: the image does not fit the volume (nothing
        was written).
    :raises ChecksumMismatch: the image is not what Glance described; the
        volume holds its bytes and must not be handed out.
    """
    image = oslo_transfer.Location(image_url,
                                   headers={'X-Auth-Token': token})
    return transfer.copy(image, device_path, checksum=checksum,
                         assume_zeroed=new_volume)


def volume_to_image(transfer, device_path, image_url, token):
    """Upload an attached volume as a new raw image.

    The device is sized with ``lseek``; an object already at ``image_url``
    is refused rather than overwritten (a stat before the write).

    :raises DestinationExists: something is at ``image_url`` already.
    """
    image = oslo_transfer.Location(image_url,
                                   headers={'X-Auth-Token': token})
    return transfer.upload(device_path, image, if_exists='error')
