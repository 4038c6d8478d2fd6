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

"""Fixtures of the HTTP functional tests.

``nginx``
    one nginx for the whole session (plain, no-ranges, slow, dav, auth,
    403, 500, redirect and HTTPS variants; see :mod:`.nginx`); tests put
    their files into ``nginx.docroot`` with unique names;
``own_nginx``
    a fresh nginx for one test, which the test may stop and restart on the
    same port (server stopped mid-transfer, source replaced);
``badserver``
    the misbehaving server of :mod:`.badserver`;
``serve``
    ``serve(name, size)`` writes a random file into the session nginx's
    docroot and returns a :class:`~tests.functional.conftest.DataFile`.
"""

import itertools
import os

import pytest

from tests.functional import conftest as fconf
from tests.functional.http import badserver as badserver_mod
from tests.functional.http import nginx as nginx_mod

_names = itertools.count()


@pytest.fixture(scope='session')
def tls_cert(tmp_path_factory):
    """``(cert_file, key_file)`` of a self-signed cert for 127.0.0.1."""
    return nginx_mod.make_self_signed_cert(tmp_path_factory.mktemp('tls'))


@pytest.fixture(scope='session')
def nginx(tmp_path_factory, tls_cert):
    base = tmp_path_factory.mktemp('nginx')
    server = nginx_mod.Nginx(base / 'prefix', base / 'docroot',
                             base / 'upload', rate='4m', tls=True,
                             cert=tls_cert)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_nginx(tmp_path):
    """An nginx for this test only (``limit_rate 4m`` on ``/slow/``)."""
    server = nginx_mod.Nginx(tmp_path / 'nginx', tmp_path / 'docroot',
                             tmp_path / 'upload', rate='4m')
    server.start()
    yield server
    server.stop()


@pytest.fixture
def badserver():
    server = badserver_mod.BadServer().start()
    yield server
    server.stop()


@pytest.fixture
def serve(nginx):
    """``serve(size, name=None)`` -> DataFile in the session docroot."""

    def make(size, name=None, directory=None):
        name = name or 'obj-%d-%d.bin' % (os.getpid(), next(_names))
        return fconf.make_data_file(directory or nginx.docroot, name, size)

    return make


@pytest.fixture
def dest(tmp_path):
    """A destination path in a folder of its own (``out/image.raw``)."""
    d = tmp_path / 'out'
    d.mkdir()
    return str(d / 'image.raw')
