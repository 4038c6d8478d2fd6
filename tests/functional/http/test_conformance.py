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
for the HTTP driver against nginx: reads from ``/``, writes by PUT to the
dav location."""

import itertools
import os

import pytest

from oslo_transfer._drivers import http
from oslo_transfer import locations
from oslo_transfer import testing
from tests.functional.http import nginx

_n = itertools.count()


class TestConformance(testing.DriverConformance):
    """The contract against the session nginx."""

    driver_class = http.HTTPDriver

    @pytest.fixture(autouse=True)
    def _server(self, nginx):
        self.server = nginx

    def make_object(self, data):
        name = 'conformance-%d-%d.bin' % (os.getpid(), next(_n))
        with open(os.path.join(self.server.docroot, name), 'wb') as f:
            f.write(data)
        return self.server.url(name)

    def rewrite_object(self, url, data):
        name = url.rsplit('/', 1)[1]
        path = os.path.join(self.server.docroot, name)
        with open(path + '.tmp', 'wb') as f:
            f.write(data)
        os.replace(path + '.tmp', path)

    def new_url(self):
        return self.server.url('conformance/new-%d-%d.bin'
                               % (os.getpid(), next(_n)), 'dav')

    def read_back(self, url):
        name = url.split('/dav/', 1)[1]
        with open(os.path.join(self.server.upload_dir, name), 'rb') as f:
            return f.read()

    def wrong_credentials(self, url):
        # /private/ (plain HTTP) serves the same files behind auth_basic
        return locations.Location(
            self.server.url(url.rsplit('/', 1)[1], 'private'),
            credentials=(nginx.USER, 'wrong-' + nginx.PASSWORD))


class TestConformanceTLS(TestConformance):
    """The same over HTTPS, verified with the test CA."""

    @pytest.fixture(autouse=True)
    def _server(self, nginx):
        self.server = nginx
        self.conf_overrides = {
            ('oslo_transfer_http', 'ca_file'): nginx.cert_file}

    def make_object(self, data):
        return self._tls(super().make_object(data))

    def new_url(self):
        return self._tls(super().new_url())

    def _tls(self, url):
        return url.replace('http://127.0.0.1:%d/' % self.server.port,
                           'https://127.0.0.1:%d/' % self.server.tls_port)
