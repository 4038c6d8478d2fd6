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

"""The service code of the services guide's example: a Nova-style cache.

A stand-in for a module of the service (``nova/virt/images.py``, say);
``test_doc_image_cache`` holds its unit tests, and
``doc/source/user/services.rst`` includes both files, so the example a
reader copies is the code that runs in this suite.
"""

import os

import oslo_transfer


class ImageUnacceptable(Exception):
    """The image's bytes are not the ones Glance describes."""


def fetch_image(transfer, glance_url, token, image, cache_dir):
    """Fetch a Glance image into the image cache; return its path.

    :param transfer: the service's ``oslo_transfer.Transfer``.
    :param image: the image's Glance record (``id``, ``os_hash_algo``,
        ``os_hash_value``).
    :raises ImageUnacceptable: the bytes do not match the image's hash;
        nothing is left in the cache.
    """
    url = '%s/v2/images/%s/file' % (glance_url, image['id'])
    path = os.path.join(cache_dir, image['id'])
    try:
        transfer.copy(oslo_transfer.Location(
            url, headers={'X-Auth-Token': token}), path,
            checksum={'os_hash_algo': image['os_hash_algo'],
                      'os_hash_value': image['os_hash_value']},
            mode=0o644)
    except oslo_transfer.exceptions.ChecksumMismatch as exc:
        raise ImageUnacceptable('image %s: %s' % (image['id'], exc)) from exc
    return path
