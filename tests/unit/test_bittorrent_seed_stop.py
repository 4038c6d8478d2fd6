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

"""When a seed stops for its named peers, without libtorrent.

A peer that was complete while this host downloaded may stop seeding while
this host verifies and commits: the seed that follows must not wait for it
(it would seed for the whole ``seed_time``).  The download remembers the
complete peers it saw, and the seed starts from them.
"""

import types

import pytest

from oslo_transfer._drivers.bittorrent import download as download_mod
from oslo_transfer._drivers.bittorrent import seed as seed_mod
from oslo_transfer._drivers.bittorrent import session as session_mod
from oslo_transfer import driver
from oslo_transfer import locations
from tests.unit.test_bittorrent_driver import drv  # noqa: F401 (fixture)

A = ('127.0.0.1', 6881)
B = ('127.0.0.1', 6882)


class _Peer:
    """Like libtorrent's ``peer_info``.

    ``seed`` is the flag's value (a class constant); the state is a bit of
    ``flags``.
    """

    seed = 1024

    def __init__(self, ip, seed):
        self.ip = ip
        self.flags = self.seed if seed else 0
        self.progress = 1.0 if seed else 0.5


def test_the_fake_peer_info_is_libtorrents_shape():
    import libtorrent   # a requirement of oslo.transfer
    assert libtorrent.peer_info.seed == _Peer.seed
    assert not session_mod.is_seed(libtorrent.peer_info())


class _Handle:
    """What ``_why_stop`` and the download ask of a torrent handle."""

    def __init__(self, peers=()):
        self.peers = list(peers)

    def get_peer_info(self):
        return list(self.peers)

    def status(self):
        return types.SimpleNamespace(
            errc=types.SimpleNamespace(value=lambda: 0, message=lambda: ''),
            total_payload_upload=0, total_payload_download=0, num_peers=0)


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    c = _Clock()
    monkeypatch.setattr(seed_mod.time, 'monotonic', c)
    return c


def _entry(tmp_path, handle, seen=()):
    path = tmp_path / 'image.raw'
    path.write_bytes(b'x' * 10)
    meta = types.SimpleNamespace(total_size=10)
    return seed_mod._Entry(meta, str(path), handle, until=None, ratio=0.0,
                           peers=[A, B], seen_complete=seen)


def _ask(entry, clock, seconds):
    """``_why_stop`` once a second for ``seconds``; the first reason."""
    for _ in range(int(seconds)):
        why = seed_mod.Seeds._why_stop(entry)
        if why:
            return why
        clock.now += 1.0
    return None


def test_peers_that_left_before_the_seed_started_are_not_waited_for(
        tmp_path, clock):
    # Both named peers were seen complete by the download and left: the
    # seed sees nobody, and still stops once it lingered.
    entry = _entry(tmp_path, _Handle(), seen={A, B})
    assert _ask(entry, clock, seed_mod._LINGER) is None
    assert _ask(entry, clock, 2) == 'every named peer has the whole file'


def test_without_what_the_download_saw_the_seed_waits(tmp_path, clock):
    entry = _entry(tmp_path, _Handle())
    assert _ask(entry, clock, 60) is None


def test_one_peer_seen_by_the_download_and_one_by_the_seed(tmp_path, clock):
    handle = _Handle([_Peer(B, seed=False)])
    entry = _entry(tmp_path, handle, seen={A})
    assert _ask(entry, clock, 10) is None
    handle.peers = [_Peer(B, seed=True)]
    clock.now += 1.0
    assert seed_mod.Seeds._why_stop(entry) is None
    handle.peers = []          # B leaves at once: it was remembered
    assert _ask(entry, clock, seed_mod._LINGER + 2) == (
        'every named peer has the whole file')


def test_an_incomplete_peer_does_not_stop_the_seed(tmp_path, clock):
    """Both named peers connected, neither complete: the seed goes on.

    libtorrent's ``peer_info.seed`` is 1024 on every peer; taking it for
    the peer's flag stopped the seed ``_LINGER`` seconds after its peers
    connected (found by the kill-and-resume soak: the copies then waited
    for a seed that was gone).
    """
    import libtorrent as lt
    real = lt.peer_info()       # flags 0, seed 1024 (its ip cannot be set)
    peers = [types.SimpleNamespace(ip=ip, flags=real.flags, seed=real.seed,
                                   progress=0.5) for ip in (A, B)]
    assert peers[0].seed and not peers[0].flags
    entry = _entry(tmp_path, _Handle(peers))
    assert _ask(entry, clock, 30) is None


def _job(peers, handle):
    meta = types.SimpleNamespace(info_hash='ab' * 20, num_pieces=4)
    job = download_mod.TorrentDownload(
        types.SimpleNamespace(lt=None), meta, target=None,
        ctx=driver.Context(), opts=None)
    job.peers = list(peers)
    job.handle = handle
    return job


def test_download_remembers_complete_peers_until_its_last_look():
    handle = _Handle([_Peer(A, seed=True), _Peer(B, seed=False)])
    job = _job([A, B], handle)
    job._note_complete_peers()
    assert job.seen_complete == {A}
    # A leaves; B completes just before the download leaves the session:
    # the statistics taken before the removal look once more.
    handle.peers = [_Peer(B, seed=True)]
    job._collect_stats()
    assert job.seen_complete == {A, B}


def test_download_without_named_peers_does_not_ask():
    class Refuse(_Handle):
        def get_peer_info(self):
            raise AssertionError('no named peer: nothing to remember')
    job = _job([], Refuse())
    job._note_complete_peers()
    assert job.seen_complete == set()


def test_driver_hands_what_the_download_saw_to_the_seed(
        drv,  # noqa: F811 (the fixture imported above)
        monkeypatch, tmp_path):
    meta = types.SimpleNamespace(info_hash='cd' * 20, single_file=True,
                                 total_size=10, trackers=[], web_seeds=[])
    monkeypatch.setattr(drv, '_require_meta', lambda loc, ctx: meta)
    sess = types.SimpleNamespace(listen_port=lambda: 7000)
    monkeypatch.setattr(drv, '_session', lambda: sess)

    class Job:
        def __init__(self, *args, **kwargs):
            self.stats = {}
            self.seen_complete = set()

        def run(self):
            self.seen_complete.add(A)
    monkeypatch.setattr(download_mod, 'TorrentDownload', Job)
    started = []
    monkeypatch.setattr(seed_mod.SEEDS, 'start',
                        lambda *a, **kw: started.append(kw))
    loc = locations.Location('torrent://metadata')
    ctx = driver.Context(hints=types.SimpleNamespace(
        peer_addresses=('127.0.0.1:6881', '127.0.0.1:7000')))
    target = types.SimpleNamespace(path=str(tmp_path / 'x.part'), size=10,
                                   progress=None)
    drv.copy_to_path(loc, target, ctx)
    drv.after_commit(loc, str(tmp_path / 'x'), ctx)
    assert started[0]['seen_complete'] == {A}
    assert started[0]['peers'] == [A]
    # Used once: a later seed of the same torrent starts afresh.
    drv.after_commit(loc, str(tmp_path / 'x'), ctx)
    assert started[1]['seen_complete'] == ()
