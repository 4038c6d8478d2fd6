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

"""The bittorrent driver's ``Seeding`` handles, without libtorrent.

A handle answers for its own seed only: ``wait()`` returns once that seed
ended and libtorrent let go of the file, ``stop()`` never stops a newer
seed of the same torrent.  The driver hands one out from ``after_commit()``
and ``seed()``.
"""

import threading
import types

import pytest

from oslo_transfer._drivers.bittorrent import seed as seed_mod
from oslo_transfer import driver
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import torrent as torrent_mod
from tests.unit.test_bittorrent_driver import drv  # noqa: F401 (fixture)


class _Handle:
    """A libtorrent torrent handle as much as the seeds ask of one."""

    def __init__(self):
        self.connected = []

    def connect_peer(self, endpoint):
        self.connected.append(endpoint)

    def status(self):
        return types.SimpleNamespace(
            errc=types.SimpleNamespace(value=lambda: 0, message=lambda: ''),
            total_payload_upload=0, num_peers=0, is_seeding=True)

    def get_peer_info(self):
        return []


class _Session:
    """The process session: ``remove()`` waits until the test lets go."""

    def __init__(self):
        flags = types.SimpleNamespace(apply_ip_filter=1, upload_mode=2,
                                      seed_mode=4)
        self.lt = types.SimpleNamespace(
            add_torrent_params=types.SimpleNamespace,
            torrent_info=lambda data: data, torrent_flags=flags)
        self.added = []
        self.removed = []
        self.release = threading.Event()
        self.release.set()

    def find(self, info_hash):
        return None

    def listen(self, info_hash, callback):
        pass

    def unlisten(self, info_hash, callback):
        pass

    def add(self, params):
        self.added.append(params)
        return _Handle()

    def remove(self, handle, info_hash):
        self.release.wait(10)
        self.removed.append(info_hash)

    def listen_port(self):
        return 7000


@pytest.fixture
def seeds():
    s = seed_mod.Seeds()
    yield s
    s.shutdown()


@pytest.fixture
def sess():
    return _Session()


def _data(tmp_path, name='image.raw', size=100000):
    path = tmp_path / name
    path.write_bytes(b'x' * size)
    return str(path), torrent_mod.parse(torrent_mod.make_torrent(str(path)))


def _seed(seeds, sess, path, meta, seconds=None):
    entry = seeds.start(sess, meta, path, seconds)
    return seed_mod.Handle(seeds, entry, sess.listen_port())


def test_handle_says_what_is_seeded(seeds, sess, tmp_path):
    path, meta = _data(tmp_path)
    handle = _seed(seeds, sess, path, meta)
    assert isinstance(handle, driver.Seeding)
    assert (handle.info_hash, handle.path, handle.size,
            handle.listen_port) == (meta.info_hash, path, 100000, 7000)
    assert handle.reason is None
    assert not handle.wait(timeout=0.1)


def test_wait_returns_once_the_file_is_let_go(seeds, sess, tmp_path):
    path, meta = _data(tmp_path)
    handle = _seed(seeds, sess, path, meta)
    sess.release.clear()            # libtorrent is slow to remove it
    handle.stop()
    assert handle.reason == 'stopped by the caller'
    assert seeds.active() == []
    assert not handle.wait(timeout=0.2)
    sess.release.set()
    assert handle.wait(timeout=5)
    assert sess.removed == [meta.info_hash]
    handle.stop()                   # twice: nothing more happens
    assert sess.removed == [meta.info_hash]


def test_seed_time_ends_the_seed(seeds, sess, tmp_path):
    path, meta = _data(tmp_path)
    handle = _seed(seeds, sess, path, meta, seconds=0.2)
    assert handle.wait(timeout=10)      # the reaper looks once a second
    assert handle.reason == 'seed time is up'


def test_a_changed_file_ends_the_seed(seeds, sess, tmp_path):
    path, meta = _data(tmp_path)
    handle = _seed(seeds, sess, path, meta)
    with open(path, 'ab') as f:
        f.write(b'more')
    assert handle.wait(timeout=10)
    assert handle.reason == 'the file changed or disappeared'


def test_stop_leaves_a_newer_seed_of_the_torrent_alone(seeds, sess,
                                                       tmp_path):
    path, meta = _data(tmp_path)
    first = _seed(seeds, sess, path, meta)
    other = tmp_path / 'copy'
    other.mkdir()
    other_path, _ = _data(other)
    second = _seed(seeds, sess, other_path, meta)
    assert first.wait(timeout=5)
    assert first.reason == 'replaced by %s' % other_path
    first.stop()
    assert not second.wait(timeout=0.1)
    assert seeds.active() == [(meta.info_hash, other_path)]


def test_seeding_the_same_file_again_shares_one_seed(seeds, sess, tmp_path):
    path, meta = _data(tmp_path)
    first = _seed(seeds, sess, path, meta)
    again = _seed(seeds, sess, path, meta)
    assert len(sess.added) == 1
    again.stop()
    assert first.wait(timeout=5)
    assert first.reason == 'stopped by the caller'


# -- the driver hands the handles out -----------------------------------------

def _fake_seeds(monkeypatch, entry_for):
    started = []

    def start(sess, meta, path, seconds, **kwargs):
        started.append(dict(kwargs, meta=meta, path=path, seconds=seconds))
        return entry_for(meta, path)
    monkeypatch.setattr(seed_mod.SEEDS, 'start', start)
    return started


def _entry(meta, path):
    return types.SimpleNamespace(meta=meta, path=path)


def test_after_commit_returns_the_handle(
        drv, monkeypatch, tmp_path):  # noqa: F811 (the fixture)
    path, meta = _data(tmp_path)
    monkeypatch.setattr(drv, '_session', _Session)
    started = _fake_seeds(monkeypatch, _entry)
    drv.conf.set_override('seed_time', 30, drv.group)
    loc = locations.Location('torrent://metadata')
    handle = drv.after_commit(loc, path, driver.Context(torrent=meta))
    assert (handle.info_hash, handle.path, handle.listen_port) == (
        meta.info_hash, path, 7000)
    assert started[0]['seconds'] == 30
    drv.conf.set_override('seed_time', 0, drv.group)
    assert drv.after_commit(loc, path, driver.Context(torrent=meta)) is None
    assert len(started) == 1


def test_seed_makes_metadata_with_the_configured_piece_size(
        drv, monkeypatch, tmp_path):  # noqa: F811 (the fixture)
    path, _ = _data(tmp_path, size=3 * 512 * 1024)
    monkeypatch.setattr(drv, '_session', _Session)
    started = _fake_seeds(monkeypatch, _entry)
    drv.conf.set_override('piece_size', 512 * 1024, drv.group)
    handle = drv.seed(path, None, driver.Context(), seconds=5,
                      peers=['127.0.0.1:7000', '127.0.0.1:7001'],
                      verify=False)
    meta = started[0]['meta']
    assert (meta.piece_length, meta.num_pieces) == (512 * 1024, 3)
    assert handle.info_hash == meta.info_hash
    assert started[0]['seconds'] == 5 and started[0]['verify'] is False
    # this host (port 7000) is not a peer of its own
    assert started[0]['peers'] == [('127.0.0.1', 7001)]


def test_seed_refuses_a_torrent_this_process_downloads(
        drv, monkeypatch, tmp_path):  # noqa: F811 (the fixture)
    path, meta = _data(tmp_path)
    monkeypatch.setattr(drv, '_session', _Session)
    _fake_seeds(monkeypatch, lambda meta, path: None)
    with pytest.raises(exceptions.DestinationError) as err:
        drv.seed(path, meta, driver.Context())
    assert 'being downloaded by this process' in str(err.value)


def test_seed_checks_the_metadata_trackers(
        drv, monkeypatch, tmp_path):  # noqa: F811 (the fixture)
    data = tmp_path / 'image.raw'
    data.write_bytes(b'y' * 1000)
    raw = torrent_mod.make_torrent(str(data), trackers=[
        'http://tracker.example/announce', 'http://10.0.0.1/announce'])
    monkeypatch.setattr(drv, '_session', _Session)
    started = _fake_seeds(monkeypatch, _entry)

    def check(url):
        if '10.0.0.1' in url:
            raise exceptions.URLNotAllowed('%s is denied' % url)
        return url
    drv.seed(str(data), raw, driver.Context(check_url=check))
    assert started[0]['trackers'] == ['http://tracker.example/announce']
