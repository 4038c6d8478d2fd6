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

"""Fixtures of the iSCSI functional tests.

``tgtd``
    one tgtd for the whole session; tests add their own targets;
``own_tgtd``
    a tgtd for one test, which the test may kill and restart;
``make_lun``
    ``make_lun(data=None, size=None, sparse_data=None, chap=None,
    server=None)`` writes a backing file and exports it; returns a
    :class:`Lun` (``url``, ``path``, ``iqn``, ``data``).
"""

import itertools
import os

import pytest

from oslo_transfer._drivers.iscsi import ISCSIDriver
from oslo_transfer import testing
from tests.functional.iscsi import tgt

_names = itertools.count(1)


@pytest.fixture(scope='session')
def tgtd(tmp_path_factory):
    server = tgt.Tgtd(tmp_path_factory.mktemp('tgtd')).start()
    yield server
    server.stop()


@pytest.fixture
def own_tgtd(tmp_path):
    server = tgt.Tgtd(tmp_path / 'own-tgtd').start()
    yield server
    server.stop()


class Lun:
    """An exported backing file."""

    def __init__(self, server, iqn, path, data):
        self.server = server
        self.iqn = iqn
        self.path = path
        self.data = data

    @property
    def url(self) -> str:
        return self.server.url(self.iqn)

    def url_with(self, userinfo='', lun=1) -> str:
        return self.server.url(self.iqn, lun, userinfo)

    def contents(self) -> bytes:
        with open(self.path, 'rb') as f:
            return f.read()


def write_backing(path, data=None, size=None, sparse_data=None):
    """Write a backing file.

    Either ``data``, or ``size`` bytes of holes with ``sparse_data``
    (``{offset: bytes}``) written into them.
    """
    with open(path, 'wb') as f:
        if data is not None:
            f.write(data)
        else:
            f.truncate(size)
            for off, chunk in (sparse_data or {}).items():
                f.seek(off)
                f.write(chunk)
    return path


@pytest.fixture
def make_lun(tgtd, tmp_path):
    def make(data=None, size=None, sparse_data=None, chap=None,
             server=None, name=None):
        server = server or tgtd
        n = next(_names)
        path = write_backing(str(tmp_path / ('lun-%d.img' % n)), data, size,
                             sparse_data)
        iqn = server.add_target(path, name='%s-%d-%d' % (
            name or 'lun', os.getpid(), n), chap=chap)
        return Lun(server, iqn, path, data)

    return make


@pytest.fixture
def iscsi_driver():
    """An :class:`ISCSIDriver` on a fresh configuration."""
    drv = ISCSIDriver(testing.make_conf(drivers=[ISCSIDriver]))
    drv.check_available()
    yield drv
    drv.close()
