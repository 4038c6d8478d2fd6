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

"""Unit tests of the nfs driver: no server, no network.

URL handling, error translation, the connection pool, the libnfs callback
plumbing and what happens when libnfs is not installed.
"""

import ctypes
import errno
import subprocess
import sys

import pytest

from oslo_transfer._drivers import _common
from oslo_transfer._drivers.nfs import driver as nfs
from oslo_transfer._drivers.nfs import libnfs
from oslo_transfer import _utils
from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions as exc
from oslo_transfer import locations
from oslo_transfer import opts
from oslo_transfer import testing

Cap = driver_mod.Capability


def target(url):
    return nfs._Target(locations.Location(url))


def make_driver(**overrides):
    conf = testing.make_conf({('oslo_transfer_nfs', k): v
                              for k, v in overrides.items()},
                             drivers=[nfs.NFSDriver])
    return nfs.NFSDriver(conf)


# -- loading the library --------------------------------------------------

def test_missing_library_names_the_debian_package():
    drv = make_driver()
    drv.soname = 'libnfs-does-not-exist.so.99'
    with pytest.raises(exc.MissingDependency) as ei:
        drv.check_available()
    assert 'libnfs13' in str(ei.value)
    assert 'libnfs-does-not-exist.so.99' in str(ei.value)
    # the selector treats it as "no driver", not as a crash
    assert isinstance(ei.value, exc.NoDriverFound)


def test_missing_symbol_names_the_debian_package():
    # libc is there but has no nfs_* functions: a wrong or old library
    with pytest.raises(exc.MissingDependency, match='libnfs13'):
        libnfs.load('libc.so.6')


def test_importing_the_driver_loads_no_c_library():
    code = ('import sys; import oslo_transfer._drivers.nfs as n; '
            'from oslo_transfer import opts; opts.list_opts(); '
            'n.NFSDriver.list_opts(); '
            'print("oslo_transfer._drivers._libnfs" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == 'False'


def test_options_are_listed_in_their_group():
    groups = dict(opts.list_opts())
    names = [o.name for o in groups['oslo_transfer_nfs']]
    assert names == [o.name for o in nfs.OPTS]
    assert 'outstanding_requests' in names and 'request_size' in names
    assert 'max_segments' in names


def test_one_segment_per_read_by_default():
    drv = make_driver()
    assert drv.options.max_segments == 1
    assert make_driver(max_segments=0).options.max_segments == 0


def test_capabilities():
    caps = nfs.NFSDriver.capabilities
    for c in (Cap.READ, Cap.WRITE, Cap.RANGED_READ, Cap.RESUMABLE_WRITE,
              Cap.BLOCK_ACCESS, Cap.SAME_NETWORK_ONLY):
        assert c in caps
    assert Cap.ATOMIC_COMMIT not in caps
    assert nfs.NFSDriver.schemes == ('nfs',)


# -- URLs -------------------------------------------------------------------

def test_port_becomes_nfsport():
    t = target('nfs://server:2050/exports/vol/image.raw?version=4')
    assert t.url == ('nfs://server/exports/vol/image.raw?version=4&'
                     'nfsport=2050')
    assert t.version == 4
    assert t.file == '/image.raw'


def test_port_wins_over_an_nfsport_argument():
    t = target('nfs://server:2050/e/f?nfsport=1&mountport=20048')
    assert t.url == 'nfs://server/e/f?mountport=20048&nfsport=2050'
    assert t.version == 3


def test_libnfs_arguments_pass_through():
    t = target('nfs://h/e/f?uid=1000&gid=1000&readahead=0')
    assert t.url == 'nfs://h/e/f?uid=1000&gid=1000&readahead=0'


def test_files_of_one_directory_share_a_pool_key():
    a = target('nfs://h/e/dir/a?version=4')
    b = target('nfs://h/e/dir/b?version=4')
    c = target('nfs://h/e/other/a?version=4')
    d = target('nfs://h/e/dir/a?version=3')
    assert a.key == b.key
    assert a.key != c.key and a.key != d.key
    assert (a.file, b.file) == ('/a', '/b')


@pytest.mark.parametrize('url, why', [
    ('nfs:///e/f', 'no NFS server'),
    ('nfs://h/e/', 'must name a file'),
    ('nfs://h/f', 'must name a file'),
    ('nfs://h', 'must name a file'),
    ('nfs://h/e/f?version=2', 'version must be 3 or 4'),
])
def test_bad_urls(url, why):
    with pytest.raises(exc.InvalidLocation, match=why):
        target(url)


def test_credentials_in_the_url_are_refused_and_masked():
    with pytest.raises(exc.InvalidLocation) as ei:
        target('nfs://admin:s3cret-pw@h/e/f')
    assert 's3cret-pw' not in str(ei.value)
    assert 'admin:***@h' in str(ei.value)


# -- error translation ----------------------------------------------------

LOC = locations.Location('nfs://h/e/f')


@pytest.mark.parametrize('err, msg, cls', [
    (errno.ENOENT, 'NFS4ERR_NOENT', exc.SourceNotFound),
    (errno.EACCES, 'NFS3ERR_ACCES', exc.PermissionDenied),
    (errno.EPERM, 'NFS3ERR_PERM', exc.PermissionDenied),
    (errno.EISDIR, 'is a directory', exc.InvalidLocation),
    (errno.ENOSPC, 'NFS3ERR_NOSPC', exc.DestinationError),
    (errno.EROFS, 'NFS3ERR_ROFS', exc.DestinationError),
    (errno.ENODATA, 'end of file', exc.SizeMismatch),
    (errno.ECONNRESET, 'Socket failed with POLLHUP', exc.ConnectionFailed),
    (errno.ECONNREFUSED, 'refused', exc.ConnectionFailed),
    (errno.ETIMEDOUT, 'timed out', exc.TransferTimeout),
    (errno.EIO, 'ZDR error: Failed to encode COMPOUND4args',
     exc.DestinationError),
    (errno.EXDEV, 'something else', exc.ProtocolError),
])
def test_translate(err, msg, cls):
    e = nfs._translate(libnfs.NFSError(err, msg), LOC, 'read')
    assert type(e) is cls
    assert msg in str(e) or cls is exc.SourceNotFound
    assert LOC.masked in str(e)
    assert e.url == LOC.masked


def test_translate_retryable():
    assert nfs._translate(libnfs.NFSError(errno.ECONNRESET, 'x'), LOC,
                          'read').retryable
    assert nfs._translate(libnfs.NFSTimeout('x'), LOC, 'read').retryable
    assert not nfs._translate(libnfs.NFSError(errno.EXDEV, 'x'), LOC,
                              'read').retryable
    assert not nfs._translate(libnfs.NFSError(errno.ENOENT, 'x'), LOC,
                              'read').retryable


def test_v4_write_limit_error_says_what_to_do():
    e = nfs._translate(libnfs.NFSError(
        errno.EIO, 'ZDR error: Failed to encode COMPOUND4args'), LOC,
        'write')
    assert 'version=3' in str(e)


# -- libnfs callbacks -------------------------------------------------------

def test_read_callback_copies_the_data():
    buf = ctypes.create_string_buffer(b'hello world')
    op = libnfs._Op('read', 0, 11)
    op.owner = set()
    op.complete(11, ctypes.addressof(buf))
    assert op.done and op.result() == b'hello world'


_SOURCES = []


def c_buffer(fill, n=8192):
    """The address of ``n`` bytes of ``fill`` that libnfs would hand over."""
    buf = ctypes.create_string_buffer(fill * n, n)
    _SOURCES.append(buf)  # alive until the test module goes
    return ctypes.addressof(buf)


def _answer(blocks, fill, n=8192):
    """What a READ callback of ``n`` bytes of ``fill`` yields."""
    op = libnfs._Op('read', 0, n, into=blocks)
    op.owner = set()
    op.complete(n, c_buffer(fill, n))
    return op.result()


def test_read_callback_without_a_pool_makes_bytes():
    first = _answer(None, b'a')
    second = _answer(None, b'b')
    assert type(first) is bytes and first == b'a' * 8192
    assert second == b'b' * 8192 and first == b'a' * 8192


def test_read_callback_fills_a_free_block_of_the_pool():
    blocks = _common.BlockPool(2, 8192)
    first = _answer(blocks, b'a')
    assert _utils.is_aligned_view(first) and bytes(first) == b'a' * 8192
    block = id(first.obj)
    del first
    second = _answer(blocks, b'b')
    assert id(second.obj) == block and blocks.made == 1
    assert bytes(second) == b'b' * 8192


def test_read_callback_never_changes_a_chunk_that_is_still_held():
    blocks = _common.BlockPool(2, 8192)
    kept = [_answer(blocks, bytes([65 + i])) for i in range(6)]
    # two blocks, both held: the other answers came as bytes
    assert [type(k) for k in kept] == [memoryview] * 2 + [bytes] * 4
    assert [bytes(k) for k in kept] == [bytes([65 + i]) * 8192
                                        for i in range(6)]


def test_short_answers_come_as_bytes():
    blocks = _common.BlockPool(2, 8192)
    small = _answer(blocks, b'x', 100)
    assert type(small) is bytes and small == b'x' * 100
    assert blocks.made == 0


def test_error_callback_carries_errno_and_text():
    text = ctypes.create_string_buffer(b'NFS3ERR_NOENT')
    op = libnfs._Op('read')
    op.complete(-errno.ENOENT, ctypes.addressof(text))
    with pytest.raises(libnfs.NFSError) as ei:
        op.result()
    assert ei.value.errno == errno.ENOENT
    assert ei.value.message == 'NFS3ERR_NOENT'


def test_stat_callback_copies_the_struct():
    st = libnfs.Stat64(size=12345, ino=7, mtime=99, mtime_nsec=5)
    op = libnfs._Op('stat')
    op.complete(0, ctypes.addressof(st))
    got = op.result()
    st.size = 0  # the library frees its struct after the callback
    assert (got.size, got.ino, got.mtime, got.mtime_nsec) == \
        (12345, 7, 99, 5)
    assert ctypes.sizeof(libnfs.Stat64) == 136


def test_dispatch_survives_a_broken_callback():
    class Broken(libnfs._Op):
        def complete(self, status, data):
            raise ValueError('cannot decode')

    op = Broken('stat')
    op.owner = {424242}
    libnfs._OPS[424242] = op
    libnfs._dispatch(0, None, None, 424242)  # must not raise into C
    assert op.done and not op.owner
    with pytest.raises(libnfs.NFSError, match='cannot decode'):
        op.result()
