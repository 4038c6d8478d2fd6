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

"""The nfs driver over NFSv3, in a private network namespace.

rpcbind, ganesha and the client run inside the namespace of the ``nfs3``
agent (:mod:`.nsagent`); the test writes source files into the shared
export, asks the agent to run :mod:`.v3_ops` functions, and asserts on
what they return and on the files they leave.
"""

import hashlib
import os

import pytest

from tests.functional import conftest as fconf
from tests.functional.nfs import conftest as nconf
from tests.functional.nfs import ganesha as ganesha_mod
from tests.functional.nfs import v3_ops

MiB = fconf.MiB


def url(nfs3, name, **kw):
    """A v3 URL: the real path of the export, ports from the portmapper."""
    path = '%s/%s' % (nfs3.ganesha_export, name)
    query = '&'.join('%s=%s' % kv for kv in sorted(kw.items()))
    return 'nfs://127.0.0.1%s%s' % (path, '?' + query if query else '')


def ok(answer):
    assert 'ok' in answer, answer
    return answer['ok']


def error(answer):
    assert 'error' in answer, answer
    return answer['error']


def test_read_whole_and_ranges(nfs3, put):
    f = put(nfs3.ganesha_export, 3 * MiB + 11)
    u = url(nfs3, f.name)
    st = ok(nfs3.call('stat', url=u))
    assert st['size'] == f.size and st['validator']
    assert ok(nfs3.call('read', url=u)) == {'md5': f.md5, 'size': f.size}
    for off, n in ((0, 1), (MiB - 1, MiB + 2), (f.size - 5, None)):
        want = f.data[off:] if n is None else f.data[off:off + n]
        got = ok(nfs3.call('read', url=u, offset=off, length=n))
        assert got == {'md5': hashlib.md5(want).hexdigest(),
                       'size': len(want)}


def test_read_with_explicit_ports(nfs3, put):
    """nfsport= and mountport= (or HOST:PORT) skip the portmapper."""
    f = put(nfs3.ganesha_export, MiB)
    u = url(nfs3, f.name, nfsport=2049, mountport=20048)
    assert ok(nfs3.call('read', url=u))['md5'] == f.md5
    u = url(nfs3, f.name).replace('127.0.0.1', '127.0.0.1:2049')
    assert ok(nfs3.call('read', url=u))['md5'] == f.md5


def test_write_checked_by_qemu_img_and_nfs_cat(nfs3):
    name = nconf.unique('written3')
    u = url(nfs3, name)
    size = 5 * MiB + 3
    want = v3_ops.data_for(name, size)
    res = ok(nfs3.call('write', url=u, seed=name, size=size))
    assert res == {'bytes_written': size, 'written_size': size}
    with open(os.path.join(nfs3.ganesha_export, name), 'rb') as f:
        assert f.read() == want
    md5 = hashlib.md5(want).hexdigest()
    for tool in ('qemu-img', 'nfs-cat'):
        assert ok(nfs3.call('independent_md5', url=u, tool=tool,
                            size=size)) == md5, tool


def test_write_aborted_then_resumed(nfs3):
    name = nconf.unique('resumed3')
    u = url(nfs3, name)
    size = 4 * MiB + 1
    res = ok(nfs3.call('write_aborted', url=u, seed=name, size=size))
    assert res['raised'] == 'ChecksumMismatch'
    held = res['written_size']
    # the WRITEs already sent land; never the complete object
    assert held == size // 2
    res = ok(nfs3.call('write', url=u, seed=name, size=size, offset=held))
    assert res == {'bytes_written': size - held, 'written_size': size}
    with open(os.path.join(nfs3.ganesha_export, name), 'rb') as f:
        assert f.read() == v3_ops.data_for(name, size)


def test_missing_export_path(nfs3):
    e = error(nfs3.call('stat', url='nfs://127.0.0.1/no/such/export/f'))
    assert e['class'] == 'SourceNotFound'
    assert 'does not let this host mount /no/such/export' in e['message']


def test_missing_file(nfs3):
    e = error(nfs3.call('read', url=url(nfs3, 'no-such-file')))
    assert e['class'] == 'SourceNotFound'
    assert 'no-such-file' in e['message']


def test_closed_port(nfs3, put):
    f = put(nfs3.ganesha_export, 10)
    e = error(nfs3.call('stat', url=url(nfs3, f.name, nfsport=1,
                                        mountport=1)))
    assert e['class'] == 'ConnectionFailed'
    assert e['retryable'] is True
    assert 'Connection refused' in e['message']


def test_read_resumes_after_the_server_was_killed(nfs3, put):
    f = put(nfs3.ganesha_export, 16 * MiB)
    res = ok(nfs3.call('read_resume_after_kill', url=url(nfs3, f.name),
                       kill_at=4 * MiB))
    assert res['error'] and res['error']['class'] == 'ConnectionFailed'
    assert res['error']['retryable']
    assert 0 < res['held'] < f.size
    assert res['size'] == f.size and res['md5'] == f.md5


def test_write_resumes_after_the_server_was_killed(nfs3):
    name = nconf.unique('killed3')
    size = 12 * MiB
    res = ok(nfs3.call('write_killed_midway', url=url(nfs3, name),
                       seed=name, size=size, kill_at=6 * MiB))
    assert res['error'] == {'class': 'ConnectionFailed', 'retryable': True}
    assert 0 < res['held'] <= 6 * MiB
    with open(os.path.join(nfs3.ganesha_export, name), 'rb') as f:
        assert f.read() == v3_ops.data_for(name, size)


def test_copy_with_checksum(nfs3, put, tmp_path):
    f = put(nfs3.ganesha_export, 6 * MiB)
    dest = str(tmp_path / 'copy3.bin')
    res = ok(nfs3.call('copy', url=url(nfs3, f.name), dest=dest,
                       checksum=f.checksum()))
    assert res['driver'] == 'nfs' and res['digest'] == f.sha256
    fconf.assert_only_dest(dest, f.data)


def test_copy_resumes_after_the_server_was_killed(nfs3, put, tmp_path):
    f = put(nfs3.ganesha_export, 24 * MiB)
    u = url(nfs3, f.name)
    dest = str(tmp_path / 'resumed3.bin')
    res = ok(nfs3.call('copy_killed_midway', url=u, dest=dest, size=f.size,
                       checksum=f.checksum()))
    assert res['killed'] and res['part_exists']
    assert res['error']['class'] == 'ConnectionFailed'
    res = ok(nfs3.call('copy', url=u, dest=dest, checksum=f.checksum()))
    assert res['bytes_resumed'] > 0
    assert res['bytes_transferred'] < f.size
    fconf.assert_only_dest(dest, f.data)


def test_v4_alongside_v3_in_the_namespace(nfs3, put):
    """The same export by its NFSv4 pseudo path."""
    f = put(nfs3.ganesha_export, MiB)
    u = 'nfs://127.0.0.1%s/%s?version=4' % (ganesha_mod.PSEUDO, f.name)
    assert ok(nfs3.call('read', url=u))['md5'] == f.md5


@pytest.fixture(autouse=True)
def _agent_alive(nfs3):
    yield
    assert nfs3.popen.poll() is None, 'the NFSv3 namespace died; log:\n' + \
        nfs3.log_tail()
