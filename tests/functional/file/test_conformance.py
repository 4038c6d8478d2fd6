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

"""The driver contract (:mod:`oslo_transfer.testing`) for the file driver."""

import itertools
import os

import pytest

from oslo_transfer._drivers import file as file_drv
from oslo_transfer import testing

_n = itertools.count()


class _FileConformance(testing.DriverConformance):
    driver_class = file_drv.FileDriver
    #: local files: no server to log in to, or to wait for
    auth_errors = False
    timeout_errors = False

    @pytest.fixture(autouse=True)
    def _directory(self, tmp_path):
        self.directory = tmp_path / 'objects'
        self.directory.mkdir()
        self._scratch = str(tmp_path)

    def path(self, name):
        return str(self.directory / name)

    def url(self, path):
        return path

    def make_object(self, data):
        path = self.path('obj-%d-%d.bin' % (os.getpid(), next(_n)))
        with open(path, 'wb') as f:
            f.write(data)
        return self.url(path)

    def new_url(self):
        return self.url(self.path('new-%d-%d.bin' % (os.getpid(),
                                                     next(_n))))

    def read_back(self, url):
        with open(url.replace('file://', '', 1), 'rb') as f:
            return f.read()


class TestConformancePaths(_FileConformance):
    """The contract with plain local paths."""


class TestConformanceFileURLs(_FileConformance):
    """The contract with ``file://`` URLs."""

    def url(self, path):
        return 'file://' + path
