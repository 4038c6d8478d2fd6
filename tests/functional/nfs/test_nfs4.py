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

"""The nfs driver over NFSv4 against a real nfs-ganesha on 127.0.0.1.

NFSv4 needs no rpcbind, so these tests run in the host's namespace with
ganesha on its own ports; NFSv3 is in :mod:`.test_nfs3`.
"""

import hashlib
import logging
import os
import signal
import subprocess
import threading

import pytest

import oslo_transfer
from oslo_transfer._drivers.nfs import NFSDriver
from oslo_transfer import _utils
from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions as exc
from oslo_transfer import locations
from oslo_transfer import testing
from tests.functional import conftest as fconf
from tests.functional.http import nginx as nginx_mod
from tests.functional.nfs import conftest as nconf
from tests.functional.nfs import ganesha as ganesha_mod
from tests.functional import servers

MiB = fconf.MiB


def ctx(timeout=30.0):
    return driver_mod.Context(io_timeout=timeout)


def loc(url):
    return locations.Location(url)


def read_all(drv, url, offset=0, length=None, context=None):
    return b''.join(drv.read(loc(url), offset, length, context or ctx()))


# -- the conformance suite -------------------------------------------------

class TestConformance(testing.DriverConformance):
    driver_class = NFSDriver
    #: NFS with AUTH_SYS: the server trusts the client's uid, no password
    auth_errors = False

    @pytest.fixture(autouse=True)
    def _server(self, ganesha):
        self._ganesha = ganesha

    def make_object(self, data):
        name = nconf.unique()
        with open(self._ganesha.path(name), 'wb') as f:
            f.write(data)
        return self._ganesha.url(name)

    def new_url(self):
        return self._ganesha.url(nconf.unique('new'))

    def read_back(self, url):
        name = url.split('?')[0].rsplit('/', 1)[1]
        with open(self._ganesha.path(name), 'rb') as f:
            return f.read()

    def missing_url(self):
        return self._ganesha.url(nconf.unique('missing-object'))


# -- reads ----------------------------------------------------------------

def test_read_whole_and_ranges(ganesha, put, nfs_driver):
    f = put(ganesha.export, 5 * MiB + 3)
    url = ganesha.url(f.name)
    st = nfs_driver.stat(loc(url), ctx())
    assert st.size == f.size and st.ranges and st.validator
    assert read_all(nfs_driver, url) == f.data
    for off, n in ((0, 1), (1, MiB), (MiB - 1, 2 * MiB + 5),
                   (f.size - 3, 3), (4 * MiB, None)):
        want = f.data[off:] if n is None else f.data[off:off + n]
        assert read_all(nfs_driver, url, off, n) == want, (off, n)


def test_ranged_read_of_a_changed_file_is_refused(ganesha, put,
                                                  nfs_driver):
    """Like HTTP's If-Range: the engine then re-stats and restarts."""
    f = put(ganesha.export, MiB)
    url = ganesha.url(f.name)
    c = ctx()
    c.validator = nfs_driver.stat(loc(url), c).validator
    assert read_all(nfs_driver, url, 10, 100, c) == f.data[10:110]
    nfs_driver.write(loc(url), iter([b'new'] * 10), ctx()).commit()
    with pytest.raises(exc.RangeNotSupported, match='changed'):
        read_all(nfs_driver, url, 10, 20, c)
    assert nfs_driver.stat(loc(url), ctx()).validator != c.validator


def test_read_past_the_end_raises(ganesha, put, nfs_driver):
    f = put(ganesha.export, MiB)
    with pytest.raises(exc.SizeMismatch, match='shrank'):
        read_all(nfs_driver, ganesha.url(f.name), MiB - 10, 20)


def test_parallel_reads_from_threads(ganesha, put, nfs_driver):
    f = put(ganesha.export, 8 * MiB)
    url = ganesha.url(f.name)
    results, errors = {}, []

    def worker(i):
        try:
            results[i] = read_all(nfs_driver, url, i * MiB, MiB)
        except Exception as e:  # noqa: reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert b''.join(results[i] for i in range(8)) == f.data


def test_reader_closed_early_does_not_spoil_the_pool(
        ganesha, put, nfs_driver):
    f = put(ganesha.export, 16 * MiB)
    url = ganesha.url(f.name)
    for _ in range(3):
        it = nfs_driver.read(loc(url), 0, None, ctx())
        next(it)
        it.close()  # READs were in flight: that connection is not reused
        idle = [c for entries in nfs_driver._pool._idle.values()
                for c, _ in entries]
        assert not [c for c in idle if c.broken]
    assert read_all(nfs_driver, url, MiB, 2 * MiB) == f.data[MiB:3 * MiB]


@pytest.mark.parametrize('max_segments, connections', [(1, 1), (0, 4)],
                         ids=['one-connection', 'four-segments'])
def test_copy_with_checksum_and_parallel_segments(ganesha, put, tmp_path,
                                                  max_segments, connections):
    """The engine asks for 4 segments; ``max_segments`` caps them."""
    f = put(ganesha.export, 12 * MiB + 77)
    dest = tmp_path / 'out' / 'copy.bin'
    dest.parent.mkdir()
    conf = testing.make_conf({('oslo_transfer', 'segment_threshold'): MiB,
                              ('oslo_transfer', 'segment_size'): MiB,
                              ('oslo_transfer', 'segments'): 4,
                              ('oslo_transfer_nfs', 'max_segments'):
                                  max_segments},
                             drivers=[NFSDriver])
    with oslo_transfer.Transfer(conf) as t:
        res = t.copy(ganesha.url(f.name), str(dest),
                     checksum=f.checksum('sha512'),
                     hints=oslo_transfer.Hints(same_network=True))
        # each segment mounted once and gave its connection back
        assert t.driver('nfs')._pool.idle_count() == connections
    assert res.driver == 'nfs'
    assert res.size == f.size
    fconf.assert_only_dest(dest, f.data)


def test_image_over_nfs_onto_a_loop_device(ganesha, put, loop_device,
                                           make_conf, tmp_path):
    """Cinder's image-to-volume from an NFS share: in place, verified."""
    vol = loop_device(16 * MiB, fill=0xC3)
    f = put(ganesha.export, 10 * MiB + 512)
    conf = make_conf(oslo_transfer={'segment_threshold': MiB,
                                    'segment_size': 2 * MiB})
    with oslo_transfer.Transfer(conf, drivers=['nfs', 'file']) as t:
        res = t.copy(ganesha.url(f.name), vol.dev, checksum=f.checksum(),
                     hints=oslo_transfer.Hints(same_network=True))
    assert res.driver == 'nfs' and res.dest == vol.dev
    assert vol.read(0, f.size) == f.data
    assert vol.read(f.size) == b'\xc3' * (vol.size - f.size)
    assert fconf.inplace_state(tmp_path / 'state') == []


def test_one_stream_copy_writes_the_answers_without_a_second_copy(
        ganesha, put, tmp_path, direct_writes):
    """A durable one-stream copy copies each READ answer once.

    From libnfs into a page-aligned block, written from there with
    O_DIRECT (the pool reused many times over).
    """
    f = put(ganesha.export, 40 * MiB + 4096 + 100)
    dest = tmp_path / 'out' / 'copy.bin'
    dest.parent.mkdir()
    conf = testing.make_conf({('oslo_transfer_nfs', 'max_segments'): 1},
                             drivers=[NFSDriver])
    with oslo_transfer.Transfer(conf) as t:
        res = t.copy(ganesha.url(f.name), str(dest),
                     checksum=f.checksum('sha256'),
                     hints=oslo_transfer.Hints(same_network=True))
    assert res.driver == 'nfs' and res.size == f.size
    fconf.assert_only_dest(dest, f.data)
    written, = direct_writes
    assert written['zero_copy'] == 40 * MiB + 4096
    assert written['buffered'] == 100


def test_copy_to_a_full_disk_keeps_what_landed(ganesha, put, small_ext4,
                                               tmp_path, direct_writes):
    """24 MiB into a 16 MiB ext4, durable: zero-copy O_DIRECT batches.

    DestinationError naming the ``.part``; the control file holds only
    the file's bytes; a rerun with room resumes them.
    """
    f = put(ganesha.export, 24 * MiB)
    conf = testing.make_conf({('oslo_transfer', 'retries'): 0},
                             drivers=[NFSDriver])

    def copy(dest):
        with oslo_transfer.Transfer(conf) as t:
            return t.copy(ganesha.url(f.name), dest,
                          checksum=f.checksum('sha256'),
                          hints=oslo_transfer.Hints(same_network=True))
    err, held, res = fconf.full_disk_then_resume(
        copy, small_ext4('16m'), str(tmp_path / 'room'), f.data)
    assert res.driver == 'nfs'
    assert direct_writes[0]['zero_copy'] > 0


def test_kept_aligned_views_stay_intact(ganesha, put, nfs_driver):
    f = put(ganesha.export, 40 * MiB)
    c = ctx()
    c.aligned_views = True
    chunks = list(nfs_driver.read(loc(ganesha.url(f.name)), 0, None, c))
    views = [ch for ch in chunks if _utils.is_aligned_view(ch)]
    assert views and len(views) < len(chunks)  # the pool ran out
    assert len({id(v.obj) for v in views}) == len(views)
    assert b''.join(chunks) == f.data


def test_sparse_file_copies_to_sparse_file(ganesha, tmp_path):
    name = nconf.unique('sparse')
    size = 48 * MiB
    island = os.urandom(MiB)
    with open(ganesha.path(name), 'wb') as fh:
        fh.truncate(size)
        fh.seek(16 * MiB)
        fh.write(island)
    dest = tmp_path / 'sparse.bin'
    res = oslo_transfer.copy(ganesha.url(name), str(dest),
                             hints=oslo_transfer.Hints(same_network=True))
    assert res.driver == 'nfs'
    want = bytearray(size)
    want[16 * MiB:17 * MiB] = island
    assert fconf.file_equals(dest, bytes(want))
    assert os.stat(dest).st_blocks * 512 <= 4 * MiB


# -- writes (NFSv4: small WRITEs, see the driver) ----------------------------

def test_write_checked_by_nfs_cat(ganesha, nfs_driver):
    nfs_cat = servers.require_binary('nfs-cat', 'libnfs-utils')
    name = nconf.unique('written')
    data = os.urandom(2 * MiB + 1)
    url = ganesha.url(name)
    w = nfs_driver.write(loc(url), iter([data[:MiB], data[MiB:]]), ctx(),
                         size=len(data))
    w.commit()
    assert w.bytes_written == len(data)
    # an independent reader: libnfs' own tool, URL in its syntax
    out = subprocess.run(
        [nfs_cat, 'nfs://127.0.0.1%s/%s?version=4&nfsport=%d'
         % (ganesha_mod.PSEUDO, name, ganesha.nfs_port)],
        check=True, capture_output=True, timeout=60).stdout
    assert out == data
    assert oct(os.stat(ganesha.path(name)).st_mode & 0o777) == '0o644'


def test_overwrite_replaces_a_longer_file(ganesha, put, nfs_driver):
    f = put(ganesha.export, 3 * MiB)
    url = ganesha.url(f.name)
    data = os.urandom(100000)
    nfs_driver.write(loc(url), iter([data]), ctx(), size=len(data)).commit()
    assert read_all(nfs_driver, url) == data
    assert nfs_driver.written_size(loc(url), ctx()) == len(data)


def test_resumed_write_continues_at_written_size(ganesha, nfs_driver):
    url = ganesha.url(nconf.unique('resumed'))
    data = os.urandom(MiB + 4321)
    assert nfs_driver.written_size(loc(url), ctx()) == 0

    def failing():
        yield data[:600000]
        raise exc.ChecksumMismatch('the engine held back the rest')

    with pytest.raises(exc.ChecksumMismatch):
        nfs_driver.write(loc(url), failing(), ctx(), size=len(data))
    held = nfs_driver.written_size(loc(url), ctx())
    # abort() keeps what the server acknowledged, and nothing complete
    assert 0 < held <= 600000
    w = nfs_driver.write(loc(url), iter([data[held:]]), ctx(), offset=held,
                         size=len(data))
    w.commit()
    assert read_all(nfs_driver, url) == data


def test_write_beyond_the_end_is_refused(ganesha, put, nfs_driver):
    f = put(ganesha.export, 1000)
    with pytest.raises(exc.InvalidLocation, match='has 1000 bytes'):
        nfs_driver.write(loc(ganesha.url(f.name)), iter([b'x']), ctx(),
                         offset=5000)
    with open(f.path, 'rb') as fh:
        assert fh.read() == f.data


def test_upload_through_the_api(ganesha, tmp_path):
    data = os.urandom(MiB + 5)
    src = tmp_path / 'src.bin'
    src.write_bytes(data)
    name = nconf.unique('upload')
    res = oslo_transfer.upload(str(src), ganesha.url(name),
                               checksum='sha256:%s'
                               % hashlib.sha256(data).hexdigest())
    assert res.driver == 'nfs'
    with open(ganesha.path(name), 'rb') as f:
        assert f.read() == data


# -- failures a user can hit ----------------------------------------------

def test_missing_export_path(ganesha, nfs_driver):
    url = 'nfs://127.0.0.1:%d/no-such-export/file?version=4' % \
        ganesha.nfs_port
    with pytest.raises(exc.SourceNotFound) as ei:
        nfs_driver.stat(loc(url), ctx())
    assert 'no-such-export' in str(ei.value)


def test_missing_file_leaves_nothing_on_disk(ganesha, tmp_path):
    dest = tmp_path / 'out' / 'dest.bin'
    dest.parent.mkdir()
    with pytest.raises(exc.SourceNotFound, match='no-such-file'):
        oslo_transfer.copy(ganesha.url('no-such-file'), str(dest))
    assert os.listdir(dest.parent) == []


def test_directory_is_not_an_object(ganesha, nfs_driver):
    os.makedirs(ganesha.path('adir'), exist_ok=True)
    with pytest.raises(exc.InvalidLocation, match='directory'):
        nfs_driver.stat(loc(ganesha.url('adir')), ctx())


def test_closed_port(nfs_driver):
    url = 'nfs://127.0.0.1:%d/export/x?version=4' % servers.free_port()
    with pytest.raises(exc.ConnectionFailed, match='Connection refused') \
            as ei:
        nfs_driver.stat(loc(url), ctx())
    assert ei.value.retryable


def test_password_in_url_is_refused_and_masked(ganesha, nfs_driver,
                                               caplog):
    caplog.set_level(logging.DEBUG)
    url = 'nfs://user:hunter2secret@127.0.0.1:%d/export/x?version=4' % \
        ganesha.nfs_port
    with pytest.raises(exc.InvalidLocation, match='uid= and gid=') as ei:
        nfs_driver.stat(loc(url), ctx())
    assert 'hunter2secret' not in str(ei.value)
    assert 'hunter2secret' not in caplog.text


def test_bad_version(ganesha, nfs_driver):
    url = ganesha.url('x').replace('version=4', 'version=2')
    with pytest.raises(exc.InvalidLocation, match='version must be 3 or 4'):
        nfs_driver.stat(loc(url), ctx())


def test_hung_server_times_out(own_ganesha, put, nfs_driver):
    f = put(own_ganesha.export, 32 * MiB)
    it = iter(nfs_driver.read(loc(own_ganesha.url(f.name)), 0, None,
                              ctx(timeout=1.0)))
    got = next(it)
    os.kill(own_ganesha.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(exc.TransferTimeout):
            for chunk in it:
                got += chunk
    finally:
        os.kill(own_ganesha.process.pid, signal.SIGCONT)
    assert f.data.startswith(got)


def test_server_that_does_not_answer_the_mount(own_ganesha, put,
                                               nfs_driver):
    f = put(own_ganesha.export, 1000)
    os.kill(own_ganesha.process.pid, signal.SIGSTOP)
    try:
        with pytest.raises(exc.TransferTimeout, match='no answer') as ei:
            nfs_driver.stat(loc(own_ganesha.url(f.name)), ctx(timeout=1.0))
    finally:
        os.kill(own_ganesha.process.pid, signal.SIGCONT)
    assert ei.value.retryable
    assert nfs_driver.stat(loc(own_ganesha.url(f.name)), ctx()).size == 1000


def test_cancel_during_a_hung_read(own_ganesha, put, nfs_driver):
    f = put(own_ganesha.export, 32 * MiB)
    c = ctx(timeout=3600)
    it = iter(nfs_driver.read(loc(own_ganesha.url(f.name)), 0, None, c))
    next(it)
    os.kill(own_ganesha.process.pid, signal.SIGSTOP)
    try:
        threading.Timer(0.3, c.cancel.cancel).start()
        with pytest.raises(exc.Cancelled):
            for _ in it:
                pass
    finally:
        os.kill(own_ganesha.process.pid, signal.SIGCONT)


# -- the server dies mid-transfer ---------------------------------------------

def test_read_resumes_after_the_server_was_killed(own_ganesha, put,
                                                  nfs_driver):
    f = put(own_ganesha.export, 16 * MiB)
    url = own_ganesha.url(f.name)
    st1 = nfs_driver.stat(loc(url), ctx())
    it = iter(nfs_driver.read(loc(url), 0, None, ctx(timeout=5)))
    got = b''
    while len(got) < 4 * MiB:
        got += next(it)
    own_ganesha.kill()
    with pytest.raises(exc.ConnectionFailed) as ei:
        for chunk in it:
            got += chunk
    assert ei.value.retryable
    assert 0 < len(got) < f.size
    own_ganesha.start()
    # same object, same validator: the bytes held may be joined
    assert nfs_driver.stat(loc(url), ctx()).validator == st1.validator
    rest = read_all(nfs_driver, url, len(got))
    assert got + rest == f.data


def test_write_resumes_after_the_server_was_killed(own_ganesha,
                                                   nfs_driver):
    name = nconf.unique('killed-write')
    url = own_ganesha.url(name)
    data = os.urandom(6 * MiB)
    step = 256 * 1024

    def chunks():
        for i in range(0, len(data), step):
            if i == 3 * MiB:
                own_ganesha.kill()
            yield data[i:i + step]

    with pytest.raises(exc.ConnectionFailed) as ei:
        nfs_driver.write(loc(url), chunks(), ctx(timeout=5), size=len(data))
    assert ei.value.retryable
    own_ganesha.start()
    held = nfs_driver.written_size(loc(url), ctx())
    assert 0 < held <= 3 * MiB
    # what written_size reports is there, without a gap
    with open(own_ganesha.path(name), 'rb') as f:
        assert f.read() == data[:held]
    w = nfs_driver.write(loc(url), iter([data[held:]]), ctx(), offset=held,
                         size=len(data))
    w.commit()
    with open(own_ganesha.path(name), 'rb') as f:
        assert f.read() == data


def test_copy_resumes_after_the_server_was_killed(own_ganesha, put,
                                                  tmp_path):
    f = put(own_ganesha.export, 24 * MiB)
    url = own_ganesha.url(f.name)
    dest = tmp_path / 'out' / 'resumed.bin'
    dest.parent.mkdir()
    killed = threading.Event()

    def progress(done, total):
        if done >= f.size // 3 and not killed.is_set():
            killed.set()
            own_ganesha.kill()

    conf = testing.make_conf({('oslo_transfer', 'retries'): 0,
                              ('oslo_transfer', 'io_timeout'): 5.0})
    with oslo_transfer.Transfer(conf) as t:
        with pytest.raises(exc.ConnectionFailed):
            t.copy(url, str(dest), progress=progress, rate=8 * MiB,
                   hints=oslo_transfer.Hints(same_network=True))
    assert killed.is_set()
    assert os.path.exists(fconf.part_path(dest))
    own_ganesha.start()
    # no checksum: the validator (ino, size, mtime, ctime) allows resuming
    res = oslo_transfer.copy(url, str(dest),
                             hints=oslo_transfer.Hints(same_network=True))
    assert res.bytes_resumed > 0
    assert res.bytes_transferred < f.size
    fconf.assert_only_dest(dest, f.data)


# -- the selector ---------------------------------------------------------

@pytest.fixture
def nginx(tmp_path):
    server = nginx_mod.Nginx(tmp_path / 'nginx', tmp_path / 'docroot')
    server.start()
    yield server
    server.stop()


def test_same_network_prefers_nfs_over_http(ganesha, put, nginx, tmp_path):
    f = put(ganesha.export, 2 * MiB)
    os.link(f.path, os.path.join(nginx.docroot, f.name))
    source = oslo_transfer.Source(urls=[nginx.url(f.name),
                                        ganesha.url(f.name)])
    dest = tmp_path / 'same.bin'
    res = oslo_transfer.copy(source, str(dest), checksum=f.checksum(),
                             hints=oslo_transfer.Hints(same_network=True))
    assert res.driver == 'nfs'
    assert res.plan.candidates[0].driver == 'nfs'
    assert 'same network' in res.plan.candidates[0].reason
    assert [c.driver for c in res.plan.candidates][1:] == ['http']
    assert nginx.requests_for(f.name) == []
    assert fconf.file_equals(dest, f.data)


def test_isolated_networks_never_use_nfs(ganesha, put, nginx, tmp_path):
    f = put(ganesha.export, 2 * MiB)
    os.link(f.path, os.path.join(nginx.docroot, f.name))
    source = oslo_transfer.Source(urls=[ganesha.url(f.name),
                                        nginx.url(f.name)])
    dest = tmp_path / 'isolated.bin'
    res = oslo_transfer.copy(source, str(dest), checksum=f.checksum(),
                             hints=oslo_transfer.Hints(same_network=False))
    assert res.driver == 'http'
    assert 'nfs' not in [c.driver for c in res.plan.candidates]
    dropped = [d for d in res.plan.dropped if d[1] == 'nfs']
    assert dropped and 'same-network-only' in dropped[0][2]
    assert nginx.requests_for(f.name)
    assert fconf.file_equals(dest, f.data)
    # plan() says the same without moving bytes
    plan = oslo_transfer.plan(source,
                              hints=oslo_transfer.Hints(same_network=False))
    assert [c.driver for c in plan.candidates] == ['http']
