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

"""Fixtures of the service-hygiene tests: cheap real servers for a module.

``web``
    an nginx (:mod:`tests.functional.http.nginx`) for the module; files go
    into ``web.docroot`` (``/slow/`` is limited to 4 MB/s per connection);
``ftp``
    an anonymous, read-only vsftpd for the module; files go into
    ``ftp.anon_root``;
``files``
    ``files(directory, name, size)`` writes a random
    :class:`~tests.functional.conftest.DataFile`.
"""

import os

import pytest

from tests.functional import conftest as fconf
from tests.functional.ftp import ftpservers
from tests.functional.http import nginx as nginx_mod


@pytest.fixture(scope='module')
def web(tmp_path_factory):
    base = tmp_path_factory.mktemp('hygiene-nginx')
    server = nginx_mod.Nginx(base / 'prefix', base / 'docroot',
                             base / 'upload', rate='4m')
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope='module')
def ftp():
    base = ftpservers.make_shared_base('oslo-transfer-hygiene-ftp-')
    anon = os.path.join(base, 'anon')
    os.makedirs(anon)
    os.chmod(anon, 0o755)
    root = os.path.join(base, 'vsftpd')
    os.makedirs(root)
    server = ftpservers.Vsftpd(root, anon)
    server.start()
    yield server
    server.stop()
    ftpservers.remove_tree(base)


@pytest.fixture
def files():
    def make(directory, name, size) -> fconf.DataFile:
        return fconf.make_data_file(directory, name, size)

    return make
