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

"""Fixtures of the NFS functional tests.

``ganesha``
    one NFSv4 ganesha for the whole session, on 127.0.0.1 and its own
    ports; tests put files with unique names into ``ganesha.export``;
``own_ganesha``
    an NFSv4 ganesha for one test, which it may kill and restart;
``nfs3``
    the NFSv3 namespace agent (:mod:`.nsagent`) for the whole session:
    rpcbind and ganesha (v3 and v4) in a private network namespace;
    ``nfs3.call(name, **kwargs)`` runs :mod:`.v3_ops` functions in there;
``put``
    ``put(server, size)`` writes a new random file into an export and
    returns a :class:`~tests.functional.conftest.DataFile`.
"""

import itertools
import os

import pytest

from oslo_transfer._drivers.nfs import NFSDriver
from oslo_transfer import testing
from tests.functional import conftest as fconf
from tests.functional.nfs import ganesha as ganesha_mod
from tests.functional.nfs import nsagent

_names = itertools.count(1)


@pytest.fixture(scope='session')
def ganesha(tmp_path_factory):
    base = tmp_path_factory.mktemp('ganesha4')
    server = ganesha_mod.Ganesha(base / 'server', base / 'export')
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_ganesha(tmp_path):
    server = ganesha_mod.Ganesha(tmp_path / 'ganesha', tmp_path / 'export')
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope='session')
def nfs3(tmp_path_factory):
    base = tmp_path_factory.mktemp('nfs3')
    agent = nsagent.NSAgent(base / 'ns', base / 'export').start()
    agent.ganesha_export = str(base / 'export')
    yield agent
    agent.stop()


def unique(prefix='obj'):
    return '%s-%d-%d.bin' % (prefix, os.getpid(), next(_names))


@pytest.fixture
def put():
    def make(export, size, name=None) -> fconf.DataFile:
        return fconf.make_data_file(export, name or unique(), size)

    return make


@pytest.fixture
def nfs_driver():
    drv = NFSDriver(testing.make_conf(drivers=[NFSDriver]))
    drv.check_available()
    yield drv
    drv.close()
