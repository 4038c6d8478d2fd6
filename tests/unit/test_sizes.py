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

"""Sizes a server claims: checked once by the engine, for every driver.

A negative size, one past 2**63-1 (SFTP sizes are unsigned 64-bit), a
float or a bool must never reach ``ftruncate``; a size the destination's
file system cannot hold is a ``DestinationError``; and a copy that fails
before it holds a byte leaves nothing beside ``DEST``.
"""

import errno
import os

import hypothesis
from hypothesis import strategies as st
import paramiko
import pytest

import oslo_transfer
from oslo_transfer._drivers.sftp import driver as sftp_driver
from oslo_transfer import driver as driver_mod
from oslo_transfer.engine import sizes
from oslo_transfer import exceptions
from oslo_transfer import fixture
from oslo_transfer import locations
from tests.unit import fakes

MiB = 1024 * 1024
URL = 'memory://user:s3cret-pw@store/img'
MASKED = 'memory://user:***@store/img'


class _ClaimingDriver(fixture.MemoryDriver):
    """``stat()`` claims ``claimed`` as the size; the reads are honest."""

    claimed = None

    def stat(self, location, ctx):
        st = super().stat(location, ctx)
        return driver_mod.Stat(size=self.claimed, validator=st.validator,
                               ranges=True)


def _claiming(store, claimed):
    return fixture.make_driver_class(store, base=_ClaimingDriver,
                                     claimed=claimed)


@pytest.mark.parametrize('claimed', [
    -1, -2 ** 63, 2 ** 63, 2 ** 64 - 1, 2 ** 64, 4.0 * MiB, True, '4096'],
    ids=['-1', '-2**63', '2**63', '2**64-1', '2**64', 'float', 'bool',
         'str'])
def test_an_impossible_size_is_a_protocol_error(tmp_path, claimed):
    store = fixture.MemoryStore()
    store.put(URL, fakes.data(MiB))
    out = str(tmp_path / 'out')
    with fakes.make_transfer(store, driver_class=_claiming(store, claimed),
                             retries=3) as t:
        with pytest.raises(exceptions.ProtocolError) as ei:
            t.copy(URL, out)
    e = ei.value
    assert type(e) is exceptions.ProtocolError
    assert not e.retryable
    assert 'impossible size' in str(e)
    assert MASKED in str(e) and 's3cret' not in str(e)
    assert e.url == MASKED
    assert store.calls['stat'] == 1, 'a size that will not change: retried'
    assert store.calls['read'] == 0
    # Nothing was created: no .part, no control file, no lock file.
    assert os.listdir(tmp_path) == []


def test_an_impossible_size_is_refused_by_open_too():
    store = fixture.MemoryStore()
    store.put(URL, fakes.data(MiB))
    with fakes.make_transfer(store, driver_class=_claiming(
            store, 2 ** 64 - 1)) as t:
        with pytest.raises(exceptions.ProtocolError) as ei:
            with t.open(URL) as reader:
                reader.read()
    assert 'impossible size' in str(ei.value)
    assert store.calls['read'] == 0


@pytest.mark.parametrize('err', [errno.EFBIG, errno.EINVAL])
@pytest.mark.parametrize('preallocate', [False, True])
def test_a_size_the_file_system_cannot_hold(tmp_path, monkeypatch, err,
                                            preallocate):
    """2**62 bytes: a legal size, but not on this file system.

    ``ftruncate``/``posix_fallocate`` fail with EFBIG or EINVAL; before,
    the copy left an empty ``.part`` (and its lock file) behind.
    """
    store = fixture.MemoryStore()
    store.put(URL, fakes.data(MiB))
    out = str(tmp_path / 'out')

    def refuse(fd, *args):
        raise OSError(err, os.strerror(err))

    monkeypatch.setattr(os, 'posix_fallocate' if preallocate
                        else 'ftruncate', refuse)
    with fakes.make_transfer(store, driver_class=_claiming(store, 2 ** 62),
                             preallocate=preallocate) as t:
        with pytest.raises(exceptions.DestinationError) as ei:
            t.copy(URL, out)
    assert type(ei.value) is exceptions.DestinationError
    assert 'cannot hold a file of %d bytes' % 2 ** 62 in str(ei.value)
    assert out + '.part' in str(ei.value)
    assert os.listdir(tmp_path) == []


def test_a_failed_prepare_keeps_bytes_held_from_before(tmp_path,
                                                       monkeypatch):
    """Only an empty .part goes: held bytes stay for a later attempt."""
    store = fixture.MemoryStore()
    payload = fakes.data(4 * MiB)
    store.put(URL, payload)
    out = str(tmp_path / 'out')
    store.fail_after('read', 2 * MiB)
    with fakes.make_transfer(store, segments=1, retries=0) as t:
        with pytest.raises(exceptions.ConnectionFailed):
            t.copy(URL, out)
    store.clear_faults()

    def refuse(fd, offset, length):
        raise OSError(errno.EFBIG, os.strerror(errno.EFBIG))

    monkeypatch.setattr(os, 'posix_fallocate', refuse)
    with fakes.make_transfer(store, preallocate=True) as t:
        with pytest.raises(exceptions.DestinationError):
            t.copy(URL, out)
    assert sorted(os.listdir(tmp_path)) == ['out.part', 'out.part.ctl',
                                            'out.part.lock']


def test_a_refused_part_is_left_alone(tmp_path):
    """A symlink at DEST.part is refused, and not removed either."""
    store = fixture.MemoryStore()
    store.put(URL, fakes.data(MiB))
    out = str(tmp_path / 'out')
    os.symlink('/etc/passwd', out + '.part')
    with fakes.make_transfer(store) as t:
        with pytest.raises(exceptions.DestinationError) as ei:
            t.copy(URL, out)
    assert 'symlink' in str(ei.value)
    assert os.path.islink(out + '.part')


@pytest.mark.parametrize('size', [-1, 2 ** 63, 1.5, True])
def test_a_caller_size_out_of_range_is_a_value_error(tmp_path, size):
    with pytest.raises(ValueError):
        oslo_transfer.Source(urls=['memory://h/x'], size=size)
    store = fixture.MemoryStore()
    with fakes.make_transfer(store) as t:
        with pytest.raises(ValueError):
            t.upload(b'data', 'memory://h/x', size=size)
    assert store.calls['write'] == 0


class _LyingWrittenSize(fixture.MemoryDriver):
    """A server that says an upload already holds ``held`` bytes."""

    held = None

    def written_size(self, location, ctx):
        super().written_size(location, ctx)
        return self.held


@pytest.mark.parametrize('held', [-5, 2 ** 64, 1.5, 10 * MiB],
                         ids=['negative', '2**64', 'float', 'past-size'])
def test_an_impossible_written_size_restarts_the_upload(held):
    store = fixture.MemoryStore()
    payload = fakes.data(2 * MiB)
    drv = fixture.make_driver_class(store, base=_LyingWrittenSize,
                                    held=held)
    store.fail_after('write', MiB)
    with fixture.TransferFixture(store=store, driver_class=drv,
                                 retries=2) as fix:
        res = fix.transfer.upload(payload, 'memory://h/up',
                                  checksum=fakes.sha(payload))
    assert store.get('memory://h/up') == payload
    assert res.bytes_resumed == 0


# -- SFTP attributes built by hand --------------------------------------------

def _attrs(size=None, mode=None, mtime=None):
    a = paramiko.SFTPAttributes()
    a.st_size, a.st_mode, a.st_mtime = size, mode, mtime
    return a


_SFTP = locations.Location('sftp://user:pw-77@host/img')


@pytest.mark.parametrize('size', [2 ** 63, 2 ** 64 - 1])
def test_sftp_sizes_past_off_t_are_refused(size):
    """paramiko reads a size as uint64: the engine check refuses it."""
    st = sftp_driver.stat_result(_attrs(size, 0o100644, 1700000000), _SFTP)
    with pytest.raises(exceptions.ProtocolError) as ei:
        sizes.checked_stat(st, _SFTP)
    assert 'impossible size' in str(ei.value)
    assert 'pw-77' not in str(ei.value)


def test_sftp_attributes_of_a_regular_file():
    st = sftp_driver.stat_result(_attrs(5, 0o100600, 17), _SFTP, 2)
    assert sizes.checked_stat(st, _SFTP) == driver_mod.Stat(
        size=5, validator='size=5;mtime=17', ranges=True, mtime=17.0,
        max_segments=2)


@pytest.mark.parametrize('mode', [0o040755, 0o120777, 0o020666])
def test_sftp_attributes_of_something_else(mode):
    with pytest.raises(exceptions.SourceNotFound):
        sftp_driver.stat_result(_attrs(5, mode, 17), _SFTP)


_ints = st.none() | st.integers(min_value=-2 ** 70, max_value=2 ** 70)


@hypothesis.given(size=_ints | st.floats() | st.text(max_size=5),
                  mode=_ints | st.floats(), mtime=_ints | st.floats())
def test_sftp_attributes_give_a_stat_or_a_transfer_error(size, mode, mtime):
    try:
        st = sizes.checked_stat(
            sftp_driver.stat_result(_attrs(size, mode, mtime), _SFTP), _SFTP)
    except exceptions.TransferError as exc:
        assert 'pw-77' not in str(exc)
        return
    assert st.size is None or 0 <= st.size <= sizes.MAX_SIZE
    assert st.mtime is None or isinstance(st.mtime, float)
