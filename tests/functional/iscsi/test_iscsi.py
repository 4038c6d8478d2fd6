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

"""The iscsi driver against a real tgtd on loopback.

Reads and writes through the driver API and through the engine
(``oslo_transfer.copy``), every failure a user can hit (wrong IQN, missing
LUN, CHAP, closed port, a hung target), a target killed mid-transfer, and
an independent check of what we wrote with ``qemu-img convert``.
"""

import hashlib
import logging
import os
import signal
import subprocess
import threading

import pytest

import oslo_transfer
from oslo_transfer._drivers.iscsi import ISCSIDriver
from oslo_transfer import _utils
from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions as exc
from oslo_transfer import locations
from oslo_transfer import testing
from tests.functional import conftest as fconf
from tests.functional import servers

MiB = fconf.MiB
CHAP = ('chapuser', 'chap-secret-0123')


def ctx(timeout=30.0):
    return driver_mod.Context(io_timeout=timeout)


def rand(size):
    data = bytearray(os.urandom(size))
    data[::4096] = b'\x01' * len(data[::4096])  # no all-zero 4 KiB block
    return bytes(data)


def read_all(drv, url, offset=0, length=None, context=None):
    loc = url if isinstance(url, locations.Location) else \
        locations.Location(url)
    return b''.join(drv.read(loc, offset, length, context or ctx()))


# -- the conformance suite ----------------------------------------------------

class TestConformance(testing.DriverConformance):
    driver_class = ISCSIDriver
    #: a LUN is whole blocks
    object_size = 3 * MiB + 25 * 512
    #: a LUN has no validator (a block device)
    has_validator = False

    @pytest.fixture(autouse=True)
    def _server(self, make_lun, tgtd):
        self._make_lun = make_lun
        self._tgtd = tgtd
        self._luns = {}

    def make_object(self, data):
        if len(data) % 512:
            data += b'\0' * (512 - len(data) % 512)
        lun = self._make_lun(data)
        self._luns[lun.url] = lun
        return lun.url

    def new_url(self):
        lun = self._make_lun(size=self.object_size)
        self._luns[lun.url] = lun
        return lun.url

    def read_back(self, url):
        return self._luns[url].contents()

    def missing_url(self):
        return self._tgtd.url('iqn.2024-01.org.test:missing-object')

    def wrong_credentials(self, url):
        lun = self._make_lun(b'\0' * 4096, chap=CHAP)
        return locations.Location(lun.url_with('%s:wrong-secret-4567'
                                               % CHAP[0]))


# -- reads --------------------------------------------------------------------

def test_read_whole_and_unaligned_ranges(make_lun, iscsi_driver):
    data = rand(4 * MiB)
    lun = make_lun(data)
    assert iscsi_driver.stat(locations.Location(lun.url), ctx()).size == \
        len(data)
    assert read_all(iscsi_driver, lun.url) == data
    for off, n in ((0, 511), (511, 2), (513, 1 * MiB + 3), (4095, 70000),
                   (len(data) - 513, 513), (3 * MiB + 1, None)):
        want = data[off:] if n is None else data[off:off + n]
        assert read_all(iscsi_driver, lun.url, off, n) == want, (off, n)


def test_read_beyond_the_end_is_refused(make_lun, iscsi_driver):
    lun = make_lun(rand(MiB))
    with pytest.raises(exc.SizeMismatch, match='beyond the end'):
        read_all(iscsi_driver, lun.url, MiB - 512, 1024)


def test_parallel_reads_from_threads(make_lun, iscsi_driver):
    """Several threads at once (the engine's segments) get right bytes.

    Each read borrows its own session from the pool.
    """
    data = rand(8 * MiB)
    lun = make_lun(data)
    results, errors = {}, []

    def worker(i):
        try:
            off = i * MiB
            results[i] = read_all(iscsi_driver, lun.url, off, MiB)
        except Exception as e:  # noqa: reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert b''.join(results[i] for i in range(8)) == data


def test_chunks_kept_by_the_reader_stay_intact(make_lun, iscsi_driver):
    """Every chunk is its own ``bytes`` (the engine keeps them to hash).

    Without aligned views, READs land in buffers that the read reuses and
    are copied out into ``bytes``: a chunk held by the caller never
    changes under it while later READs arrive.
    """
    data = rand(8 * MiB)
    lun = make_lun(data)
    chunks = list(iscsi_driver.read(locations.Location(lun.url), 0, None,
                                    ctx()))
    assert len(chunks) > 8  # more READs than buffers in flight
    assert all(type(c) is bytes for c in chunks)
    assert len({id(c) for c in chunks}) == len(chunks)
    assert b''.join(chunks) == data


def test_kept_aligned_views_stay_intact_and_the_rest_come_as_bytes(
        make_lun, iscsi_driver):
    """With ``aligned_views`` READs land in page-aligned blocks.

    A reader that keeps every chunk holds every block: once all are held
    the answers come as ``bytes`` (the read never waits for memory), and
    no held block is ever refilled.
    """
    data = rand(40 * MiB)
    lun = make_lun(data)
    c = ctx()
    c.aligned_views = True
    chunks = list(iscsi_driver.read(locations.Location(lun.url), 0, None, c))
    views = [ch for ch in chunks if _utils.is_aligned_view(ch)]
    assert views and len(views) < len(chunks)  # the pool ran out
    assert all(type(ch) in (bytes, memoryview) for ch in chunks)
    assert all(_utils.buffer_address(v) % 4096 == 0 for v in views)
    assert len({id(v.obj) for v in views}) == len(views)
    assert b''.join(chunks) == data


def test_one_stream_copy_writes_the_luns_blocks_without_a_copy(
        make_lun, tmp_path, direct_writes):
    """A durable one-stream copy writes the READs' blocks as they are.

    O_DIRECT from the driver's memory, the pool reused many times over.
    """
    data = rand(48 * MiB + 4096 + 512)      # ends with a short block
    lun = make_lun(data)
    dest = tmp_path / 'out' / 'image.raw'
    dest.parent.mkdir()
    conf = testing.make_conf({('oslo_transfer_iscsi', 'max_segments'): 1},
                             drivers=[ISCSIDriver])
    with oslo_transfer.Transfer(conf) as t:
        res = t.copy(lun.url, str(dest), checksum='sha256:%s'
                     % hashlib.sha256(data).hexdigest(),
                     hints=oslo_transfer.Hints(same_network=True))
    assert res.driver == 'iscsi' and res.size == len(data)
    fconf.assert_only_dest(dest, data)
    written, = direct_writes
    assert written['zero_copy'] == 48 * MiB + 4096
    assert written['buffered'] == 512


def test_dropped_chunks_free_their_blocks_and_are_right(make_lun,
                                                        monkeypatch):
    """Views dropped as they come free their blocks for later READs.

    A reader that drops each chunk (as the engine does) gets views of the
    same few page-aligned blocks over and over, refilled only once no
    view of them is left: the digest is right and far fewer blocks than
    chunks were made.
    """
    from oslo_transfer._drivers import _common
    pools = []

    class Counted(_common.BlockPool):
        def __init__(self, limit, size):
            super().__init__(limit, size)
            pools.append(self)

    monkeypatch.setattr(_common, 'BlockPool', Counted)
    conf = testing.make_conf({('oslo_transfer_iscsi', 'request_size'):
                              64 * 1024}, drivers=[ISCSIDriver])
    drv = ISCSIDriver(conf)
    data = rand(16 * MiB)
    lun = make_lun(data)
    c = ctx()
    c.aligned_views = True
    h = hashlib.sha256()
    count = views = 0
    try:
        for chunk in drv.read(locations.Location(lun.url), 0, None, c):
            h.update(chunk)
            count += 1
            views += _utils.is_aligned_view(chunk)
            del chunk
    finally:
        drv.close()
    assert h.hexdigest() == hashlib.sha256(data).hexdigest()
    assert count == views == 256
    # 256 views from the READs in flight and a few blocks (held_bytes is
    # 0: the reader keeps nothing)
    assert len(pools) == 1 and pools[0].made <= 16 + 4


def test_reader_closed_early_does_not_spoil_the_pool(
        make_lun, iscsi_driver):
    data = rand(16 * MiB)
    lun = make_lun(data)
    for _ in range(3):
        it = iscsi_driver.read(locations.Location(lun.url), 0, None, ctx())
        next(it)
        it.close()  # READs were in flight: that session is not reused
        idle = [s for entries in iscsi_driver._pool._idle.values()
                for s, _ in entries]
        assert not [s for s in idle if s.broken]
    assert read_all(iscsi_driver, lun.url, MiB, 2 * MiB) == \
        data[MiB:3 * MiB]


@pytest.mark.parametrize('max_segments, sessions', [(1, 1), (0, 4)],
                         ids=['one-session', 'four-segments'])
def test_copy_with_checksum_and_parallel_segments(make_lun, tmp_path,
                                                  max_segments, sessions):
    """The engine asks for 4 segments; ``max_segments`` caps them."""
    data = rand(12 * MiB)
    lun = make_lun(data)
    dest = tmp_path / 'out' / 'image.raw'
    dest.parent.mkdir()
    conf = testing.make_conf(
        {('oslo_transfer', 'segment_threshold'): MiB,
         ('oslo_transfer', 'segment_size'): MiB,
         ('oslo_transfer', 'segments'): 4,
         ('oslo_transfer_iscsi', 'max_segments'): max_segments},
        drivers=[ISCSIDriver])
    with oslo_transfer.Transfer(conf) as t:
        res = t.copy(lun.url, str(dest), checksum='sha256:%s'
                     % hashlib.sha256(data).hexdigest(),
                     hints=oslo_transfer.Hints(same_network=True))
        # each segment logged in once and gave its session back
        assert t.driver('iscsi')._pool.idle_count() == sessions
    assert res.driver == 'iscsi'
    assert res.size == len(data)
    assert fconf.file_equals(dest, data)
    fconf.assert_only_dest(dest, data)


def test_copy_to_a_full_disk_keeps_what_landed(make_lun, small_ext4,
                                               tmp_path, direct_writes):
    """24 MiB into a 16 MiB ext4, durable: zero-copy O_DIRECT batches.

    DestinationError naming the ``.part``; the control file holds only
    the LUN's bytes; a rerun with room resumes them.
    """
    data = rand(24 * MiB)
    lun = make_lun(data)
    conf = testing.make_conf({('oslo_transfer', 'retries'): 0},
                             drivers=[ISCSIDriver])

    def copy(dest):
        with oslo_transfer.Transfer(conf) as t:
            return t.copy(lun.url, dest, checksum='sha256:%s'
                          % hashlib.sha256(data).hexdigest(),
                          hints=oslo_transfer.Hints(same_network=True))
    err, held, res = fconf.full_disk_then_resume(
        copy, small_ext4('16m'), str(tmp_path / 'room'), data)
    assert res.driver == 'iscsi'
    # the full disk was met by the O_DIRECT writer, on the driver's blocks
    assert direct_writes[0]['zero_copy'] > 0


def test_sparse_lun_copies_to_sparse_file(make_lun, tmp_path):
    size = 64 * MiB
    islands = {0: rand(64 * 1024), 20 * MiB: rand(MiB),
               size - 4096: rand(4096)}
    lun = make_lun(size=size, sparse_data=islands)
    dest = tmp_path / 'sparse.raw'
    res = oslo_transfer.copy(lun.url, str(dest),
                             hints=oslo_transfer.Hints(same_network=True))
    assert res.driver == 'iscsi'
    with open(dest, 'rb') as f:
        got = f.read()
    want = bytearray(size)
    for off, chunk in islands.items():
        want[off:off + len(chunk)] = chunk
    assert got == bytes(want)
    allocated = os.stat(dest).st_blocks * 512
    # the zero chunks became holes: a few MiB at most are allocated
    assert allocated <= 4 * MiB, allocated


# -- writes -------------------------------------------------------------------

def test_write_at_unaligned_offset_keeps_the_bytes_around(make_lun,
                                                          iscsi_driver):
    before = rand(8 * MiB)
    lun = make_lun(before)
    data = rand(3 * MiB + 1)
    off = 777
    w = iscsi_driver.write(locations.Location(lun.url),
                           iter([data[:1000], data[1000:]]), ctx(),
                           offset=off, size=off + len(data))
    w.commit()
    assert w.bytes_written == len(data)
    after = lun.contents()
    assert after[off:off + len(data)] == data
    assert after[:off] == before[:off]
    assert after[off + len(data):] == before[off + len(data):]


def test_write_checked_by_qemu_img(make_lun, iscsi_driver, tmp_path):
    qemu_img = servers.require_binary('qemu-img', 'qemu-utils')
    lun = make_lun(size=6 * MiB)
    data = rand(6 * MiB)
    chunks = (data[i:i + 100000] for i in range(0, len(data), 100000))
    w = iscsi_driver.write(locations.Location(lun.url), chunks, ctx(),
                           size=len(data))
    w.commit()
    out = tmp_path / 'qemu.raw'
    subprocess.run([qemu_img, 'convert', '-O', 'raw', lun.url, str(out)],
                   check=True, capture_output=True, timeout=60)
    assert fconf.file_equals(out, data)


def test_write_larger_than_the_lun_is_refused(make_lun, iscsi_driver):
    before = rand(MiB)
    lun = make_lun(before)
    with pytest.raises(exc.DestinationError, match='do not fit'):
        iscsi_driver.write(locations.Location(lun.url), iter([b'x' * 10]),
                           ctx(), size=2 * MiB)
    assert lun.contents() == before
    with pytest.raises(exc.DestinationError, match='does not fit'):
        iscsi_driver.write(locations.Location(lun.url),
                           iter([rand(MiB), b'tail']), ctx())


def test_upload_through_the_api(make_lun, tmp_path):
    lun = make_lun(size=4 * MiB)
    data = rand(4 * MiB)
    src = tmp_path / 'src.raw'
    src.write_bytes(data)
    res = oslo_transfer.upload(str(src), lun.url, checksum='sha256:%s'
                               % hashlib.sha256(data).hexdigest())
    assert res.driver == 'iscsi'
    assert lun.contents() == data


# -- failures a user can hit --------------------------------------------------

def test_wrong_iqn(tgtd, iscsi_driver):
    url = tgtd.url('iqn.2024-01.org.test:no-such-target')
    with pytest.raises(exc.SourceNotFound) as ei:
        iscsi_driver.stat(locations.Location(url), ctx())
    assert 'no-such-target' in str(ei.value)
    assert 'Target not found' in str(ei.value)


def test_missing_lun(make_lun, iscsi_driver):
    lun = make_lun(rand(MiB))
    with pytest.raises(exc.SourceNotFound, match='has no LUN 7'):
        iscsi_driver.stat(locations.Location(lun.url_with(lun=7)), ctx())


def test_missing_lun_leaves_nothing_on_disk(make_lun, tmp_path):
    lun = make_lun(rand(MiB))
    dest = tmp_path / 'out' / 'dest.raw'
    dest.parent.mkdir()
    with pytest.raises(exc.SourceNotFound, match='has no LUN 3'):
        oslo_transfer.copy(lun.url_with(lun=3), str(dest))
    assert os.listdir(dest.parent) == []


def test_closed_port(iscsi_driver):
    url = 'iscsi://127.0.0.1:%d/iqn.2024-01.org.test:x/1' % \
        servers.free_port()
    with pytest.raises(exc.ConnectionFailed, match='Connection refused') \
            as ei:
        iscsi_driver.stat(locations.Location(url), ctx())
    assert ei.value.retryable


def test_chap_required_but_none_given(make_lun, iscsi_driver):
    lun = make_lun(rand(MiB), chap=CHAP)
    with pytest.raises(exc.AuthenticationFailed, match='requires CHAP'):
        iscsi_driver.stat(locations.Location(lun.url), ctx())


def test_chap_wrong_secret_is_masked(make_lun, iscsi_driver, caplog):
    caplog.set_level(logging.DEBUG)
    lun = make_lun(rand(MiB), chap=CHAP)
    wrong = 'wrong-secret-4567'
    url = lun.url_with('%s:%s' % (CHAP[0], wrong))
    with pytest.raises(exc.AuthenticationFailed) as ei:
        iscsi_driver.stat(locations.Location(url), ctx())
    text = str(ei.value)
    assert 'CHAP authentication failed' in text
    assert wrong not in text and '***' in text
    assert wrong not in ei.value.url
    assert wrong not in caplog.text


def test_chap_from_location_wins_over_url_and_config(make_lun, caplog):
    caplog.set_level(logging.DEBUG)
    data = rand(MiB)
    lun = make_lun(data, chap=CHAP)
    conf = testing.make_conf({('oslo_transfer_iscsi', 'username'): 'nobody',
                              ('oslo_transfer_iscsi', 'password'):
                                  'config-secret-999'},
                             drivers=[ISCSIDriver])
    drv = ISCSIDriver(conf)
    try:
        # config alone: wrong
        with pytest.raises(exc.AuthenticationFailed):
            drv.stat(locations.Location(lun.url), ctx())
        # URL beats config; Location beats URL
        url = lun.url_with('%s:%s' % CHAP)
        assert read_all(drv, url) == data
        bad_url = lun.url_with('%s:%s' % (CHAP[0], 'url-secret-bad'))
        loc = locations.Location(bad_url, credentials=CHAP)
        assert read_all(drv, loc) == data
    finally:
        drv.close()
    assert CHAP[1] not in caplog.text
    assert 'config-secret-999' not in caplog.text


def test_chap_from_config(make_lun):
    data = rand(MiB)
    lun = make_lun(data, chap=CHAP)
    conf = testing.make_conf({('oslo_transfer_iscsi', 'username'): CHAP[0],
                              ('oslo_transfer_iscsi', 'password'): CHAP[1]},
                             drivers=[ISCSIDriver])
    drv = ISCSIDriver(conf)
    try:
        assert read_all(drv, lun.url) == data
    finally:
        drv.close()


def test_hung_target_times_out(own_tgtd, make_lun, iscsi_driver):
    # more than the READs in flight: the target must still owe us bytes
    data = rand(32 * MiB)
    lun = make_lun(data, server=own_tgtd)
    it = iter(iscsi_driver.read(locations.Location(lun.url), 0, None,
                                ctx(timeout=1.0)))
    got = next(it)
    os.kill(own_tgtd.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(exc.TransferTimeout):
            for chunk in it:
                got += chunk
    finally:
        os.kill(own_tgtd.process.pid, signal.SIGCONT)
    assert data.startswith(got)


def test_target_that_does_not_answer_the_login(own_tgtd, make_lun,
                                               iscsi_driver):
    lun = make_lun(rand(MiB), server=own_tgtd)
    os.kill(own_tgtd.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(exc.TransferTimeout, match='no answer') as ei:
            iscsi_driver.stat(locations.Location(lun.url), ctx(timeout=1.0))
    finally:
        os.kill(own_tgtd.process.pid, signal.SIGCONT)
    assert ei.value.retryable
    assert iscsi_driver.stat(locations.Location(lun.url), ctx()).size == MiB


def test_cancel_during_a_hung_read(own_tgtd, make_lun, iscsi_driver):
    lun = make_lun(rand(32 * MiB), server=own_tgtd)
    c = ctx(timeout=3600)
    it = iter(iscsi_driver.read(locations.Location(lun.url), 0, None, c))
    next(it)
    os.kill(own_tgtd.process.pid, signal.SIGSTOP)
    try:
        threading.Timer(0.3, c.cancel.cancel).start()
        with pytest.raises(exc.Cancelled):
            for _ in it:
                pass
    finally:
        os.kill(own_tgtd.process.pid, signal.SIGCONT)


# -- the target dies mid-transfer ---------------------------------------------

def test_read_resumes_after_the_target_was_killed(own_tgtd, make_lun,
                                                  iscsi_driver):
    data = rand(16 * MiB)
    lun = make_lun(data, server=own_tgtd)
    loc = locations.Location(lun.url)
    it = iter(iscsi_driver.read(loc, 0, None, ctx(timeout=5)))
    got = b''
    while len(got) < 4 * MiB:
        got += next(it)
    own_tgtd.kill()
    with pytest.raises(exc.ConnectionFailed) as ei:
        for chunk in it:
            got += chunk
    assert ei.value.retryable
    assert 0 < len(got) < len(data)
    own_tgtd.start()
    rest = read_all(iscsi_driver, loc, len(got))
    assert got + rest == data


def _copy_killed_midway(server, url, dest, size, checksum):
    """Copy at 8 MiB/s; kill the target after a third, expect a failure."""
    killed = threading.Event()

    def progress(done, total):
        if done >= size // 3 and not killed.is_set():
            killed.set()
            server.kill()

    conf = testing.make_conf({('oslo_transfer', 'retries'): 0,
                              ('oslo_transfer', 'io_timeout'): 5.0})
    with oslo_transfer.Transfer(conf) as t:
        with pytest.raises(exc.ConnectionFailed):
            t.copy(url, str(dest), checksum=checksum, progress=progress,
                   rate=8 * MiB,
                   hints=oslo_transfer.Hints(same_network=True))
    assert killed.is_set()


def test_copy_resumes_after_the_target_was_killed(own_tgtd, make_lun,
                                                  tmp_path):
    data = rand(24 * MiB)
    lun = make_lun(data, server=own_tgtd)
    dest = tmp_path / 'out' / 'resumed.raw'
    dest.parent.mkdir()
    checksum = 'sha256:%s' % hashlib.sha256(data).hexdigest()
    _copy_killed_midway(own_tgtd, lun.url, dest, len(data), checksum)
    assert os.path.exists(fconf.part_path(dest))
    own_tgtd.start()
    res = oslo_transfer.copy(lun.url, str(dest), checksum=checksum,
                             hints=oslo_transfer.Hints(same_network=True))
    # no validator on a LUN: the held bytes count because size and
    # checksum are known
    assert res.bytes_resumed > 0
    assert res.bytes_transferred < len(data)
    assert fconf.file_equals(dest, data)
    fconf.assert_only_dest(dest, data)


def test_copy_without_checksum_restarts_after_the_target_was_killed(
        own_tgtd, make_lun, tmp_path):
    data = rand(24 * MiB)
    lun = make_lun(data, server=own_tgtd)
    dest = tmp_path / 'restarted.raw'
    _copy_killed_midway(own_tgtd, lun.url, dest, len(data), None)
    own_tgtd.start()
    res = oslo_transfer.copy(lun.url, str(dest),
                             hints=oslo_transfer.Hints(same_network=True))
    # a LUN has no validator: without a checksum nothing is spliced
    assert res.bytes_resumed == 0
    assert fconf.file_equals(dest, data)
