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

"""The driver contract (:class:`oslo_transfer.testing.DriverConformance`)
for the s3 driver against moto_server."""

import itertools

import pytest

from oslo_transfer._drivers import s3
from oslo_transfer import locations
from oslo_transfer import testing

_n = itertools.count()


class TestConformance(testing.DriverConformance):
    """The contract against the session's moto server."""

    driver_class = s3.S3Driver
    #: more ``[oslo_transfer_s3]`` options
    extra_options = {}
    #: moto_server takes any key pair (its IAM checks are off by default)
    auth_errors = False

    @pytest.fixture(autouse=True)
    def _server(self, moto):
        self.server = moto
        self.bucket_name = getattr(type(self), 'bucket_name', None)
        if self.bucket_name is None:
            type(self).bucket_name = self.bucket_name = moto.bucket()
        self.conf_overrides = {('oslo_transfer_s3', k): v
                               for k, v in moto.options(
                                   **self.extra_options).items()}

    def make_object(self, data):
        return self.server.put(self.bucket_name, 'obj-%d' % next(_n), data)

    def rewrite_object(self, url, data):
        self.server.put(self.bucket_name, url.rsplit('/', 1)[1], data)

    def new_url(self):
        return 's3://%s/new-%d' % (self.bucket_name, next(_n))

    def read_back(self, url):
        return self.server.get(self.bucket_name, url.rsplit('/', 1)[1])

    def unresponsive_location(self, url, address):
        # The URL names a bucket; the endpoint is an option of the location.
        return locations.Location(url, options={
            'endpoint_url': 'http://%s:%d' % address})


class TestConformanceMultipart(TestConformance):
    """The same with writes as multipart uploads (5 MiB parts)."""

    object_size = 11 * 1024 * 1024 + 12345
    extra_options = {'multipart_threshold': 5 * 1024 * 1024,
                     'part_size': 5 * 1024 * 1024}
