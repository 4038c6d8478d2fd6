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

"""Fixtures of the sftp driver's functional tests.

``ssh_base``
    a 0755 folder under /tmp for the session (client key, authorized_keys,
    known_hosts, the test user's home);
``client_key``
    path of an ed25519 client key, authorized for root and ``ssh_user``;
``ssh_user``
    a unique system user (with a password) for permission tests;
``sshd``
    one sshd for the session; ``own_sshd``: one for a test that kills it;
``known_hosts``
    a known_hosts file that holds both servers' keys;
``sftp_conf``
    ``sftp_conf(**sections)``: a ConfigOpts that logs in as root with the
    client key and checks host keys against ``known_hosts``;
``put``
    ``put(size, name=None, directory=None)`` -> a DataFile on the server
    (the servers share this host's filesystem).
"""

import itertools
import os

import pytest

from tests.functional import conftest as fconf
from tests.functional.ftp import ftpservers
from tests.functional.sftp import sshd as sshd_mod

_names = itertools.count()


@pytest.fixture(scope='session')
def ssh_base():
    base = ftpservers.make_shared_base('oslo-transfer-sftp-')
    yield base
    ftpservers.remove_tree(base)


@pytest.fixture(scope='session')
def client_key(ssh_base):
    key = os.path.join(ssh_base, 'id_ed25519')
    pub = sshd_mod.keygen(key)
    auth = os.path.join(ssh_base, 'authorized_keys')
    with open(auth, 'w') as f:
        f.write(pub + '\n')
    os.chmod(auth, 0o644)
    return key


@pytest.fixture(scope='session')
def ssh_user(ssh_base):
    home = os.path.join(ssh_base, 'home')
    os.makedirs(home)
    user = ftpservers.LocalUser(home).create()
    user.chown(home)
    yield user
    user.remove()


@pytest.fixture(scope='session')
def sshd(ssh_base, client_key):
    server = sshd_mod.Sshd(os.path.join(ssh_base, 'sshd'),
                           os.path.join(ssh_base, 'authorized_keys'))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_sshd(ssh_base, client_key, known_hosts):
    server = sshd_mod.Sshd(os.path.join(ssh_base,
                                        'own-sshd-%d' % next(_names)),
                           os.path.join(ssh_base, 'authorized_keys'))
    with open(known_hosts, 'a') as f:
        f.write(server.known_hosts_line())
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope='session')
def known_hosts(ssh_base, sshd):
    path = os.path.join(ssh_base, 'known_hosts')
    with open(path, 'w') as f:
        f.write(sshd.known_hosts_line())
    return path


@pytest.fixture
def sftp_conf(make_conf, known_hosts, client_key):
    """``sftp_conf(**sections)``: root, the client key, known_hosts."""

    def make(**sections):
        g = dict(sections.pop('oslo_transfer', {}))
        g.setdefault('retry_backoff', 0.1)
        g.setdefault('retries', 2)
        g.setdefault('io_timeout', 10.0)
        s = dict(sections.pop('oslo_transfer_sftp', {}))
        s.setdefault('known_hosts_file', known_hosts)
        s.setdefault('key_file', client_key)
        s.setdefault('username', 'root')
        s.setdefault('allow_agent', False)
        s.setdefault('look_for_keys', False)
        return make_conf(oslo_transfer=g, oslo_transfer_sftp=s, **sections)

    return make


@pytest.fixture
def remote_dir(tmp_path):
    """A folder the servers see (same host); root logs in."""
    d = tmp_path / 'remote'
    d.mkdir()
    return str(d)


@pytest.fixture
def put(remote_dir):
    """``put(size, name=None, directory=None)`` -> DataFile."""

    def make(size, name=None, directory=None):
        name = name or 'obj-%d-%d.bin' % (os.getpid(), next(_names))
        return fconf.make_data_file(directory or remote_dir, name, size)

    return make


@pytest.fixture
def dest(tmp_path):
    d = tmp_path / 'out'
    d.mkdir()
    return str(d / 'disk')
