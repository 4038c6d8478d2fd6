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

"""Unit tests of the iscsi driver: no target, no network.

URL and credential handling, error translation, block alignment of reads
and writes (against an in-memory LUN) and a missing libiscsi.
"""

import ctypes
import subprocess
import sys

import pytest

from oslo_transfer._drivers import _common
from oslo_transfer._drivers.iscsi import driver as iscsi
from oslo_transfer._drivers.iscsi import libiscsi
from oslo_transfer import _utils
from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions as exc
from oslo_transfer import locations
from oslo_transfer import opts
from oslo_transfer import testing

Cap = driver_mod.Capability
IQN = 'iqn.2010-10.org.openstack:volume-1234'


def make_driver(**overrides):
    conf = testing.make_conf({('oslo_transfer_iscsi', k): v
                              for k, v in overrides.items()},
                             drivers=[iscsi.ISCSIDriver])
    return iscsi.ISCSIDriver(conf)


def target(url, credentials=None, **conf):
    drv = make_driver(**conf)
    return iscsi._Target(locations.Location(url, credentials=credentials),
                         drv.options)


# -- loading the library --------------------------------------------------

def test_missing_library_names_the_debian_package():
    drv = make_driver()
    drv.soname = 'libiscsi-does-not-exist.so.99'
    with pytest.raises(exc.MissingDependency) as ei:
        drv.check_available()
    assert 'libiscsi7' in str(ei.value)
    assert 'libiscsi-does-not-exist.so.99' in str(ei.value)


def test_missing_symbol_names_the_debian_package():
    with pytest.raises(exc.MissingDependency, match='libiscsi7'):
        libiscsi.load('libc.so.6')


def test_importing_the_driver_loads_no_c_library():
    code = ('import sys; import oslo_transfer._drivers.iscsi as i; '
            'from oslo_transfer import opts; opts.list_opts(); '
            'print("oslo_transfer._drivers._libiscsi" in sys.modules)')
    out = subprocess.run([sys.executable, '-c', code], check=True,
                         capture_output=True, text=True).stdout
    assert out.strip() == 'False'


def test_options():
    groups = dict(opts.list_opts())
    names = [o.name for o in groups['oslo_transfer_iscsi']]
    assert names == [o.name for o in iscsi.OPTS]
    password = [o for o in iscsi.OPTS if o.name == 'password'][0]
    assert password.secret


def test_capabilities():
    caps = iscsi.ISCSIDriver.capabilities
    for c in (Cap.READ, Cap.WRITE, Cap.RANGED_READ, Cap.RESUMABLE_WRITE,
              Cap.BLOCK_ACCESS, Cap.SAME_NETWORK_ONLY):
        assert c in caps
    assert Cap.ATOMIC_COMMIT not in caps


# -- URLs and credentials ---------------------------------------------------

def test_url_parts():
    t = target('iscsi://10.0.0.5/%s/3' % IQN)
    assert (t.portal, t.iqn, t.lun) == ('10.0.0.5:3260', IQN, 3)
    t = target('iscsi://10.0.0.5:3261/%s/0' % IQN)
    assert t.portal == '10.0.0.5:3261' and t.lun == 0
    t = target('iscsi://[fd00::5]:3260/%s/1' % IQN)
    assert t.portal == '[fd00::5]:3260'


@pytest.mark.parametrize('url', [
    'iscsi:///%s/1' % IQN,
    'iscsi://h/%s' % IQN,
    'iscsi://h/%s/x' % IQN,
    'iscsi://h/%s/1/2' % IQN,
    'iscsi://h//1',
])
def test_bad_urls(url):
    with pytest.raises(exc.InvalidLocation, match='iscsi://HOST'):
        target(url)


def test_credentials_precedence():
    url = 'iscsi://urluser:urlpass@h/%s/1' % IQN
    plain = 'iscsi://h/%s/1' % IQN
    conf = dict(username='confuser', password='confpass')
    t = target(url, credentials=('locuser', 'locpass'), **conf)
    assert (t.username, t.password) == ('locuser', 'locpass')
    t = target(url, **conf)
    assert (t.username, t.password) == ('urluser', 'urlpass')
    t = target(plain, **conf)
    assert (t.username, t.password) == ('confuser', 'confpass')
    t = target(plain)
    assert (t.username, t.password) == (None, None)


def test_sessions_with_other_secrets_are_not_shared():
    a = target('iscsi://u:one@h/%s/1' % IQN)
    b = target('iscsi://u:two@h/%s/1' % IQN)
    assert a.key != b.key
    assert 'one' not in repr(a.key) and 'two' not in repr(b.key)


def test_default_initiator(tmp_path, monkeypatch):
    f = tmp_path / 'initiatorname.iscsi'
    f.write_text('## comment\nInitiatorName=iqn.1993-08.org.debian:01:abc\n')
    monkeypatch.setattr(iscsi, '_INITIATOR_FILE', str(f))
    assert iscsi.default_initiator() == 'iqn.1993-08.org.debian:01:abc'
    monkeypatch.setattr(iscsi, '_INITIATOR_FILE', str(tmp_path / 'none'))
    assert iscsi.default_initiator().startswith(
        'iqn.2010-10.org.openstack:oslo-transfer:')
    drv = make_driver(initiator_name='iqn.2024-01.org.example:me')
    assert drv.initiator == 'iqn.2024-01.org.example:me'


# -- error translation ----------------------------------------------------

def login(message, user='chapuser', password='pa55-word-xyz', **kw):
    url = 'iscsi://%s:%s@h/%s/2' % (user, password, IQN) if user else \
        'iscsi://h/%s/2' % IQN
    loc = locations.Location(url)
    t = iscsi._Target(loc, make_driver().options)
    return iscsi._login_error(libiscsi.ISCSIError(message, **kw), loc, t,
                              'iqn.me')


def test_login_errors():
    e = login('Failed to log in to target. Status: Target not found(515)')
    assert type(e) is exc.SourceNotFound and IQN in str(e)
    e = login('Failed to log in to target. Status: Target removed(516)')
    assert type(e) is exc.SourceNotFound
    e = login('Failed to log in to target. Status: Authentication '
              'failure(513)')
    assert type(e) is exc.AuthenticationFailed
    assert "user 'chapuser'" in str(e)
    e = login('Failed to log in to target. Status: Authentication '
              'failure(513)', user=None)
    assert 'requires CHAP credentials' in str(e)
    e = login('Failed to log in to target. Status: Authorization '
              'failure(514)')
    assert type(e) is exc.PermissionDenied and 'iqn.me' in str(e)
    e = login('SENSE KEY:ILLEGAL_REQUEST(5) '
              'ASCQ:LOGICAL_UNIT_NOT_SUPPORTED(0x2500)')
    assert type(e) is exc.SourceNotFound and 'has no LUN 2' in str(e)
    e = login('Connection refused (reconnect)')
    assert type(e) is exc.ConnectionFailed and e.retryable
    e = login('x', status=libiscsi.SCSI_STATUS_TIMEOUT)
    assert type(e) is exc.TransferTimeout
    assert type(iscsi._login_error(libiscsi.ISCSITimeout('slow'),
                                   locations.Location('iscsi://h/i/1'),
                                   target('iscsi://h/i/1'), 'me')) is \
        exc.TransferTimeout


def test_secrets_never_reach_messages():
    e = login('Status: Authentication failure(513) pa55-word-xyz')
    assert 'pa55-word-xyz' not in str(e)
    assert 'pa55-word-xyz' not in e.url
    assert '***' in str(e)


def test_command_errors():
    loc = locations.Location('iscsi://h/%s/1' % IQN)
    t = target(loc.url)
    e = iscsi._translate(libiscsi.ISCSIError(
        'check condition', 2, libiscsi.DATA_PROTECT, 0x2700), loc, t,
        'write')
    assert type(e) is exc.PermissionDenied and 'write protected' in str(e)
    e = iscsi._translate(libiscsi.ISCSIError(
        'LBA out of range', 2, libiscsi.ILLEGAL_REQUEST, 0x2100), loc, t,
        'read')
    assert type(e) is exc.ProtocolError and not e.retryable
    e = iscsi._translate(libiscsi.ISCSIError(
        'timed out', libiscsi.SCSI_STATUS_TIMEOUT), loc, t, 'read')
    assert type(e) is exc.TransferTimeout
    e = iscsi._translate(libiscsi.ISCSIError('POLLHUP'), loc, t, 'read')
    assert type(e) is exc.ConnectionFailed and e.retryable


# -- block alignment against an in-memory LUN -----------------------------

class FakeOp:
    def __init__(self, nbytes):
        self.nbytes = nbytes


class FakeSession:
    """A LUN in memory with the Session calls the driver uses."""

    def __init__(self, size, block_size=512):
        self.block_size = block_size
        self.blocks = size // block_size
        self.disk = bytearray(bytes(range(256)) * (size // 256))
        self.writes = []
        self.broken = False
        self.max_pending = 0
        self._pending = 0

    def read_iter(self, lba, nblocks, per, window, cancel=None,
                  blocks=None):
        bs = self.block_size
        assert lba + nblocks <= self.blocks
        pos, end = lba, lba + nblocks
        while pos < end:
            n = min(per, end - pos)
            yield bytes(self.disk[pos * bs:(pos + n) * bs])
            pos += n

    def write_blocks(self, lba, data, cancel=None):
        bs = self.block_size
        assert len(data) % bs == 0, 'a WRITE(16) must be whole blocks'
        assert (lba + len(data) // bs) <= self.blocks
        self.disk[lba * bs:lba * bs + len(data)] = data
        self.writes.append((lba, len(data)))
        self._pending += 1
        self.max_pending = max(self.max_pending, self._pending)
        return FakeOp(len(data))

    def wait(self, op, cancel=None):
        self._pending -= 1


def block_write(session, offset, chunks, per=4, window=2):
    w = iscsi._BlockWriter(session, offset, session.blocks *
                           session.block_size, per, window, None)
    for c in chunks:
        w.add(c)
    w.finish()
    return w


@pytest.mark.parametrize('offset, size', [
    (0, 4096), (0, 1000), (100, 50), (511, 2), (512, 512 * 9 + 1),
    (1000, 5000), (0, 64 * 1024)])
def test_unaligned_writes_keep_the_bytes_around(offset, size):
    lun = FakeSession(128 * 1024)
    before = bytes(lun.disk)
    data = bytes([0xAB]) * size
    w = block_write(lun, offset, [data[:size // 3], data[size // 3:]])
    assert w.total == size
    assert bytes(lun.disk) == before[:offset] + data + \
        before[offset + size:]
    assert lun.max_pending <= 2


def test_write_past_the_end_of_the_lun():
    lun = FakeSession(4096)
    with pytest.raises(iscsi._TooLarge):
        block_write(lun, 4000, [b'x' * 97])


def test_writes_use_request_sized_commands():
    lun = FakeSession(64 * 1024)
    block_write(lun, 0, [b'z' * 10000] * 3, per=8)
    assert [n for _, n in lun.writes] == [4096] * 7 + [512 * 3]


class FakeLease:
    def __init__(self, session):
        self.session = session
        self.released = False

    def release(self):
        self.released = True


@pytest.mark.parametrize('offset, length', [
    (0, 1), (1, 511), (511, 2), (600, 5000), (0, 65536), (65535, 1)])
def test_reads_are_trimmed_to_the_bytes_asked(offset, length):
    lun = FakeSession(65536)
    drv = make_driver(request_size=4096)
    lease = FakeLease(lun)
    loc = locations.Location('iscsi://h/%s/1' % IQN)
    chunks = list(drv._read(loc, target(loc.url), lease, offset, length,
                            driver_mod.Context()))
    assert b''.join(chunks) == bytes(lun.disk[offset:offset + length])
    assert all(chunks)
    assert lease.released


@pytest.mark.parametrize('conf, cap', [({}, 1), ({'max_segments': 3}, 3),
                                       ({'max_segments': 0}, None)])
def test_stat_caps_the_segments_at_one_session(monkeypatch, conf, cap):
    drv = make_driver(**conf)
    lun = FakeSession(65536)
    lease = FakeLease(lun)
    monkeypatch.setattr(drv, '_session', lambda loc, ctx: (None, lease))
    st = drv.stat(locations.Location('iscsi://h/%s/1' % IQN),
                  driver_mod.Context())
    assert st.size == 65536
    assert st.max_segments == cap
    assert lease.released


def test_written_size_is_unknown_on_a_lun():
    drv = make_driver()
    assert drv.written_size(locations.Location('iscsi://h/%s/1' % IQN),
                            driver_mod.Context()) == 0


def test_struct_layouts_match_the_headers():
    import ctypes
    assert ctypes.sizeof(libiscsi._Sense) == 16
    assert libiscsi._Sense.key.offset == 4
    assert libiscsi._Sense.ascq.offset == 8
    assert ctypes.sizeof(libiscsi._Capacity16) == 24
    assert libiscsi._Capacity16.block_length.offset == 8
    assert libiscsi._Capacity16.lbpme.offset == 16
    assert ctypes.sizeof(libiscsi._IOVec) == 16


# -- READ buffers ------------------------------------------------------------

def _read_op(keep, n=8192):
    """A READ(16) of ``n`` bytes into ``keep``, answered by the target."""
    op = libiscsi._Op(None, 'read', 0, n, keep=keep)
    op._task_done(None, libiscsi.SCSI_STATUS_GOOD, None)
    return op.result()


def test_a_read_lands_in_a_free_block_and_is_yielded_as_it_is():
    blocks = _common.BlockPool(2, 8192)
    view, iov = libiscsi.Session._buffer(8192, blocks, [])
    assert _utils.is_aligned_view(view)
    assert iov.base == _utils.buffer_address(view) and iov.len == 8192
    ctypes.memset(iov.base, ord('a'), 8192)     # the target's data
    assert _read_op((view, iov)) is view
    assert bytes(view) == b'a' * 8192


def test_without_a_free_block_a_read_is_copied_out_of_a_reused_buffer():
    blocks = _common.BlockPool(1, 8192)
    held, _ = blocks.take(8192)                 # the only block is held
    spare = []
    keep = libiscsi.Session._buffer(8192, blocks, spare)
    assert type(keep[0]) is not memoryview
    ctypes.memset(keep[1].base, ord('a'), 8192)
    first = _read_op(keep)
    spare.append(keep)                          # as read_iter does
    again = libiscsi.Session._buffer(8192, None, spare)
    assert again[0] is keep[0] and not spare
    ctypes.memset(again[1].base, ord('b'), 8192)
    second = _read_op(again)
    assert type(first) is bytes and first == b'a' * 8192
    assert second == b'b' * 8192
    assert blocks.made == 1 and len(held) == 8192


def test_a_spare_buffer_of_another_size_is_not_reused():
    spare = [libiscsi.Session._buffer(16384, None, [])]
    big = spare[0][0]
    small = libiscsi.Session._buffer(8192, None, spare)
    assert small[0] is not big and len(small[0]) == 8192
