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

"""The unit tests of the services guide's example, with TransferFixture.

``doc/source/user/services.rst`` includes this file and
``doc_image_cache.py`` (the service code under test).
"""

import hashlib
import os

import fixtures
import testtools

import oslo_transfer
from oslo_transfer import fixture as transfer_fixture
from tests.unit import doc_image_cache as images

GLANCE = 'https://glance.example.com:9292'
DATA = b'QFI\xfb' + os.urandom(3 * 1024 * 1024)
IMAGE = {'id': '7c1e', 'os_hash_algo': 'sha512',
         'os_hash_value': hashlib.sha512(DATA).hexdigest()}
IMAGE_URL = GLANCE + '/v2/images/7c1e/file'


class TestFetchImage(testtools.TestCase):

    def setUp(self):
        super().setUp()
        # The memory driver answers for https:// URLs, as Glance would.
        fix = self.useFixture(transfer_fixture.TransferFixture(
            schemes=('https',), retries=2))
        self.transfer, self.glance = fix.transfer, fix.store
        self.glance.put(IMAGE_URL, DATA)
        self.cache = self.useFixture(fixtures.TempDir()).path

    def fetch(self):
        return images.fetch_image(self.transfer, GLANCE, 'a-token', IMAGE,
                                  self.cache)

    def test_fetch(self):
        path = self.fetch()
        with open(path, 'rb') as f:
            self.assertEqual(DATA, f.read())
        self.assertEqual(0o644, os.stat(path).st_mode & 0o777)

    def test_a_dropped_connection_resumes(self):
        self.glance.fail_after('read', 1024 * 1024)
        path = self.fetch()
        with open(path, 'rb') as f:
            self.assertEqual(DATA, f.read())
        # two reads, and no byte sent twice
        self.assertEqual(2, self.glance.calls['read'])
        self.assertEqual(len(DATA), self.glance.bytes_served)

    def test_glance_down_is_retried_then_raised(self):
        self.glance.fail('stat', times=3)
        self.assertRaises(oslo_transfer.exceptions.ConnectionFailed,
                          self.fetch)
        self.assertEqual(3, self.glance.calls['stat'])   # 1 + 2 retries
        self.assertEqual([], os.listdir(self.cache))

    def test_a_corrupt_image_leaves_nothing_behind(self):
        self.glance.put(IMAGE_URL, DATA[:-1] + b'\0')
        self.assertRaises(images.ImageUnacceptable, self.fetch)
        self.assertEqual([], os.listdir(self.cache))
