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

"""A complete download's torrent becomes the seed, without libtorrent.

Removing the download's torrent and adding a seed for the renamed file
dropped every peer connection of the host at the moment the last
receivers needed it; now the torrent waits in the session (``hold``)
and the seed of the renamed file is that torrent (its file renamed in
libtorrent only).
"""

import os
import types

import pytest

from oslo_transfer._drivers.bittorrent import download as download_mod
from oslo_transfer._drivers.bittorrent import seed as seed_mod

KEY = 'ab' * 20


class _Handle:
    def __init__(self, connected=1):
        self.connected_now = [object()] * connected
        self.renamed = []
        self.flags = []
        self.connected = []

    def set_flags(self, flags):
        self.flags.append(flags)

    def rename_file(self, index, name):
        self.renamed.append((index, name))

    def connect_peer(self, endpoint):
        self.connected.append(endpoint)

    def get_peer_info(self):
        return list(self.connected_now)


class _Session:
    lt = types.SimpleNamespace(
        torrent_flags=types.SimpleNamespace(upload_mode=16))

    def __init__(self):
        self.removed = []

    def remove(self, handle, key):
        self.removed.append(handle)


@pytest.fixture
def seeds(monkeypatch):
    s = seed_mod.Seeds()
    added = []

    def add(sess, meta, path, trackers, verify):
        h = _Handle()
        added.append((h, path))
        return h
    monkeypatch.setattr(s, '_add', add)
    monkeypatch.setattr(s, '_start_reaper', lambda: None)
    s.added = added
    return s


def _meta(size):
    return types.SimpleNamespace(info_hash=KEY, single_file=True,
                                 total_size=size, num_pieces=1)


def _part(tmp_path, data=b'x' * 100, mtime=None):
    part = tmp_path / 'image.raw.part'
    part.write_bytes(data)
    if mtime is not None:
        os.utime(part, ns=(mtime, mtime))
    return str(part)


def test_the_held_torrent_is_the_seed_of_the_renamed_file(tmp_path, seeds):
    sess, h = _Session(), _Handle()
    part = _part(tmp_path)
    assert seeds.hold(sess, _meta(100), part, h) is True
    assert h.flags == []        # not switched to upload mode
    dest = str(tmp_path / 'image.raw')
    os.rename(part, dest)                   # the engine's commit
    entry = seeds.start(sess, _meta(100), dest, 10.0,
                        peers=[('10.0.0.2', 6881)])
    assert entry.handle is h
    assert h.renamed == [(0, 'image.raw')]
    assert h.connected == [('10.0.0.2', 6881)]
    assert sess.removed == [] and seeds.added == []
    assert seeds.active() == [(KEY, dest)]


def test_another_file_under_the_name_gets_a_new_torrent(tmp_path, seeds):
    """The engine discarded the part file; another took its place."""
    sess, h = _Session(), _Handle()
    part = _part(tmp_path)
    seeds.hold(sess, _meta(100), part, h)
    os.unlink(part)
    dest = tmp_path / 'image.raw'
    dest.write_bytes(b'y' * 100)
    os.utime(dest, ns=(5 * 10 ** 9, 5 * 10 ** 9))
    entry = seeds.start(sess, _meta(100), str(dest), 10.0)
    assert sess.removed == [h]
    assert h.renamed == []
    assert entry.handle is seeds.added[0][0]


def test_a_seed_that_verifies_does_not_take_the_held_torrent(
        tmp_path, seeds):
    sess, h = _Session(), _Handle()
    part = _part(tmp_path)
    seeds.hold(sess, _meta(100), part, h)
    dest = str(tmp_path / 'image.raw')
    os.rename(part, dest)
    entry = seeds.start(sess, _meta(100), dest, 10.0, verify=True)
    assert sess.removed == [h]
    assert entry.handle is not h


def test_a_named_peer_not_connected_gets_a_new_torrent(tmp_path, seeds):
    """libtorrent gives up an address after 3 failed attempts.

    The download may have spent them on a peer that was not up yet: a new
    torrent tries every named peer again.
    """
    sess, h = _Session(), _Handle(connected=1)
    part = _part(tmp_path)
    seeds.hold(sess, _meta(100), part, h)
    dest = str(tmp_path / 'image.raw')
    os.rename(part, dest)
    entry = seeds.start(sess, _meta(100), dest, 10.0,
                        peers=[('10.0.0.2', 6881), ('10.0.0.3', 6881)])
    assert sess.removed == [h] and h.renamed == []
    assert entry.handle is seeds.added[0][0]
    assert entry.handle.connected == [('10.0.0.2', 6881),
                                      ('10.0.0.3', 6881)]


def test_a_torrent_nobody_takes_leaves_once_its_file_is_gone(
        tmp_path, seeds, monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(seed_mod.time, 'monotonic', lambda: clock[0])
    sess, h = _Session(), _Handle()
    part = _part(tmp_path)
    seeds.hold(sess, _meta(100), part, h)
    held = seeds._held[KEY]
    clock[0] += 60.0
    assert seed_mod.Seeds._why_release(held) is None    # still there
    # a copy whose checksum failed: the engine removed the part file
    os.unlink(part)
    assert seed_mod.Seeds._why_release(held) is None
    clock[0] += seed_mod._GONE
    assert 'gone' in seed_mod.Seeds._why_release(held)
    # another file under the same name is not it
    held.gone_since = None
    _part(tmp_path, b'z' * 100, mtime=5 * 10 ** 9)
    assert seed_mod.Seeds._why_release(held) is None
    clock[0] += seed_mod._GONE
    assert 'gone' in seed_mod.Seeds._why_release(held)
    seeds.release(KEY, 'test')
    assert sess.removed == [h] and seeds._held == {}


def test_a_torrent_nobody_takes_leaves_after_a_while(tmp_path, seeds,
                                                     monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(seed_mod.time, 'monotonic', lambda: clock[0])
    sess = _Session()
    seeds.hold(sess, _meta(100), _part(tmp_path), _Handle())
    clock[0] += seed_mod._HOLD
    assert 'not committed' in seed_mod.Seeds._why_release(
        seeds._held[KEY])


def test_stop_and_shutdown_release_held_torrents(tmp_path, seeds):
    sess, h = _Session(), _Handle()
    seeds.hold(sess, _meta(100), _part(tmp_path), h)
    seeds.stop()
    assert sess.removed == [h]
    h2 = _Handle()
    seeds.hold(sess, _meta(100), _part(tmp_path), h2)
    seeds.shutdown()
    assert sess.removed == [h, h2]
    # closed: nothing more is held (the caller removes its torrent)
    assert seeds.hold(sess, _meta(100), _part(tmp_path), _Handle()) is False


def _job(tmp_path, seeds, have, seed_time=60.0, idle=True):
    job = download_mod.TorrentDownload.__new__(download_mod.TorrentDownload)
    job.seeds = seeds
    job.opts = types.SimpleNamespace(seed_time=seed_time)
    job.recorder = types.SimpleNamespace(idle=idle)
    job.meta = _meta(100)
    job.meta.num_pieces = 4
    job.have = set(have)
    job._lock = __import__('threading').Lock()
    job.sess = _Session()
    job.handle = _Handle()
    job.target = types.SimpleNamespace(path=_part(tmp_path))
    return job


@pytest.mark.parametrize('have,seed_time,idle,held', [
    (range(4), 60.0, True, True),
    (range(3), 60.0, True, False),          # incomplete
    (range(4), 0.0, True, False),           # no seeding
    (range(4), 60.0, False, False),         # not all durable
])
def test_which_downloads_are_held(tmp_path, seeds, have, seed_time, idle,
                                  held):
    job = _job(tmp_path, seeds, have, seed_time, idle)
    assert job._hold() is held
    assert (KEY in seeds._held) is held
