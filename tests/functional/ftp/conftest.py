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

"""Fixtures of the ftp driver's functional tests.

``ftp_base``
    a 0755 folder under /tmp for the session (the local user must be able
    to traverse it; pytest's tmp_path is 0700);
``ftp_user``
    a unique system user whose home is ``ftp_base/home``;
``vsftpd``
    one vsftpd for the session: anonymous read-only on ``anon/``, the
    local user on its home, explicit FTPS with a self-signed certificate
    (``vsftpd.cert`` is its CA file);
``serve_ftp``
    one ``oslo-transfer serve --ftp`` (pyftpdlib) for the session, writable
    by a user with a password;
``own_vsftpd`` / ``own_serve``
    servers for one test, which the test may kill and restart;
``put``
    ``put(server, size, name=None)`` writes a random file where the server
    serves it and returns a :class:`~tests.functional.conftest.DataFile`;
``conf``
    ``conf(**sections)``: a ConfigOpts with fast retries.
"""

import itertools
import os

import pytest

from tests.functional import conftest as fconf
from tests.functional.ftp import ftpservers

_names = itertools.count()


@pytest.fixture(scope='session')
def ftp_base():
    base = ftpservers.make_shared_base('oslo-transfer-ftp-')
    yield base
    ftpservers.remove_tree(base)


@pytest.fixture(scope='session')
def ftp_user(ftp_base):
    home = os.path.join(ftp_base, 'home')
    os.makedirs(home)
    user = ftpservers.LocalUser(home).create()
    user.chown(home)
    yield user
    user.remove()


def _anon_root(base, name):
    d = os.path.join(base, name)
    os.makedirs(d)
    os.chmod(d, 0o755)
    return d


@pytest.fixture(scope='session')
def vsftpd(ftp_base, ftp_user):
    root = os.path.join(ftp_base, 'vsftpd')
    os.makedirs(root)
    cert = ftpservers.make_cert(root)
    server = ftpservers.Vsftpd(root, _anon_root(ftp_base, 'anon'),
                               user=ftp_user, cert=cert)
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope='session')
def serve_ftp(ftp_base):
    root = os.path.join(ftp_base, 'serve')
    data = os.path.join(ftp_base, 'serve-data')
    os.makedirs(data)
    server = ftpservers.ServeFTP(root, data, user='peer',
                                 password='s3cret-Pa55', writable=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_vsftpd(tmp_path, ftp_base, ftp_user):
    root = os.path.join(ftp_base, 'own-vsftpd-%d' % next(_names))
    os.makedirs(root)
    server = ftpservers.Vsftpd(root, _anon_root(root, 'anon'),
                               user=ftp_user)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_serve(tmp_path):
    data = tmp_path / 'served'
    data.mkdir()
    server = ftpservers.ServeFTP(tmp_path / 'serve', data, user='peer',
                                 password='own-s3cret', writable=True)
    server.start()
    yield server
    server.stop()


def server_dir(server, anonymous=False):
    """The local folder behind a server's URLs."""
    if isinstance(server, ftpservers.Vsftpd):
        return server.anon_root if anonymous else server.user.home
    return server.directory


@pytest.fixture
def put():
    """``put(server, size, name=None, anonymous=False)`` -> DataFile."""

    def make(server, size, name=None, anonymous=False):
        name = name or 'obj-%d-%d.bin' % (os.getpid(), next(_names))
        directory = server_dir(server, anonymous)
        df = fconf.make_data_file(directory, name, size)
        if isinstance(server, ftpservers.Vsftpd) and not anonymous:
            server.user.chown(df.path)
        return df

    return make


def vsftpd_url(server, name, password=None, scheme='ftp'):
    """URL of ``name`` in the local user's home (password defaults)."""
    user = server.user
    return server.url(name, user.name,
                      user.password if password is None else password,
                      scheme=scheme)


@pytest.fixture
def conf(make_conf):
    """``conf(**sections)`` with quick retries for tests."""

    def make(**sections):
        g = dict(sections.pop('oslo_transfer', {}))
        g.setdefault('retry_backoff', 0.1)
        g.setdefault('retries', 2)
        g.setdefault('io_timeout', 10.0)
        return make_conf(oslo_transfer=g, **sections)

    return make


@pytest.fixture
def dest(tmp_path):
    d = tmp_path / 'out'
    d.mkdir()
    return str(d / 'image.raw')
