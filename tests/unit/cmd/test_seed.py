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

"""Seeding from the command: ``copy`` then seed, and ``seed``.

The command sees only the public API: ``Result.seeding`` and
``Transfer.seed()``, faked here (libtorrent runs in the functional tests).
"""

import json
import os
import signal

import pytest

from oslo_transfer.cmd import main
from oslo_transfer import driver
from oslo_transfer import result as result_mod
from oslo_transfer import torrent as torrent_mod
from oslo_transfer import transfer as transfer_mod


class FakeSeeding(driver.Seeding):
    """Ends after ``rounds`` calls of ``wait()``; ``on_wait`` runs first."""

    def __init__(self, path, rounds=1, on_wait=None, reason='seed time is up'):
        super().__init__('cd' * 20, path, 1000, listen_port=6999)
        self.rounds = rounds
        self.on_wait = on_wait
        self.waits = []
        self.stops = 0
        self._end_reason = reason
        self._reason = None

    def wait(self, timeout=None):
        self.waits.append(timeout)
        if self.on_wait is not None:
            on_wait, self.on_wait = self.on_wait, None
            on_wait()
        if self._reason is None and len(self.waits) >= self.rounds:
            self._reason = self._end_reason
        return self._reason is not None

    def stop(self):
        self.stops += 1
        self._reason = self._reason or 'stopped by the caller'

    @property
    def reason(self):
        return self._reason


def run(capsys, *argv):
    rc = main.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# -- copy ---------------------------------------------------------------------

@pytest.fixture
def copy_seeds(monkeypatch, tmp_path):
    """``copy`` whose Result carries a FakeSeeding (set ``.seeding``)."""
    state = {'seeding': None}

    def copy(self, source, dest, **kwargs):
        state['seeding'] = state['make'](dest)
        return result_mod.Result(bytes_transferred=1000, driver='peer',
                                 url='http://origin/x', size=1000,
                                 elapsed=0.5, dest=dest,
                                 seeding=state['seeding'])
    monkeypatch.setattr(transfer_mod.Transfer, 'copy', copy)
    state['argv'] = ['copy', 'http://origin/x', str(tmp_path / 'x'),
                     '--json']
    return state


def test_copy_prints_the_result_then_seeds(copy_seeds, capsys):
    copy_seeds['make'] = lambda dest: FakeSeeding(dest)
    rc, out, err = run(capsys, *copy_seeds['argv'])
    assert rc == 0
    assert json.loads(out)['driver'] == 'peer'
    seeding = copy_seeds['seeding']
    assert 'seeding %s for the other hosts' % seeding.path in err
    assert seeding.waits == [None]      # until its own end
    assert seeding.stops == 0


def test_copy_without_seeding_returns_at_once(copy_seeds, capsys):
    copy_seeds['make'] = lambda dest: None
    rc, out, err = run(capsys, *copy_seeds['argv'])
    assert rc == 0 and json.loads(out)['bytes_transferred'] == 1000
    assert 'seeding' not in err


def test_ctrl_c_while_seeding_stops_it_and_succeeds(copy_seeds, capsys):
    def interrupt():
        raise KeyboardInterrupt()
    copy_seeds['make'] = lambda dest: FakeSeeding(dest, rounds=99,
                                                  on_wait=interrupt)
    rc, out, err = run(capsys, *copy_seeds['argv'])
    assert rc == 0                      # the copy itself succeeded
    seeding = copy_seeds['seeding']
    assert seeding.stops == 1
    assert seeding.waits == [None, 10.0]
    assert 'stopped seeding' in err


def test_sigterm_while_seeding_stops_it_and_succeeds(copy_seeds, capsys):
    fell_through = []
    before = signal.signal(signal.SIGTERM,
                           lambda *a: fell_through.append(a))
    try:
        copy_seeds['make'] = lambda dest: FakeSeeding(
            dest, rounds=99,
            on_wait=lambda: os.kill(os.getpid(), signal.SIGTERM))
        rc, out, err = run(capsys, *copy_seeds['argv'])
        # the command's handler was in place, and is gone again
        assert fell_through == []
        os.kill(os.getpid(), signal.SIGTERM)
        assert len(fell_through) == 1
    finally:
        signal.signal(signal.SIGTERM, before)
    assert rc == 0
    assert json.loads(out)['driver'] == 'peer'
    assert copy_seeds['seeding'].stops == 1
    assert 'stopped seeding' in err


def test_seed_time_reaches_the_bittorrent_option(copy_seeds, monkeypatch,
                                                 capsys):
    seen = []

    def make(dest):
        seen.append(copy_seeds['conf'].oslo_transfer_bittorrent.seed_time)
    copy_seeds['make'] = make
    real_init = transfer_mod.Transfer.__init__

    def init(self, conf=None, **kwargs):
        real_init(self, conf, **kwargs)
        copy_seeds['conf'] = self.conf
    monkeypatch.setattr(transfer_mod.Transfer, '__init__', init)
    rc, _, err = run(capsys, *copy_seeds['argv'], '--seed-time', '7.5')
    assert rc == 0, err
    assert seen == [7.5]


# -- seed ---------------------------------------------------------------------

@pytest.fixture
def seeds(monkeypatch):
    """``Transfer.seed`` faked: records its calls and the conf it saw."""
    calls = []

    def seed(self, path, torrent=None, seconds=None, peers=(), verify=True,
             cancel=None):
        calls.append({'path': path, 'torrent': torrent, 'seconds': seconds,
                      'peers': list(peers), 'verify': verify,
                      'listen': self.conf.oslo_transfer_bittorrent
                      .listen_interfaces})
        calls[-1]['handle'] = FakeSeeding(os.path.abspath(path))
        return calls[-1]['handle']
    monkeypatch.setattr(transfer_mod.Transfer, 'seed', seed)
    return calls


def _lines(out):
    return [json.loads(line) for line in out.splitlines()]


def test_seed_prints_what_it_seeds_and_why_it_stopped(seeds, tmp_path,
                                                      capsys):
    data = tmp_path / 'image.raw'
    data.write_bytes(b'd' * 1000)
    rc, out, err = run(capsys, 'seed', data, '--seed-time', '60',
                       '--peer', '10.0.0.2:6881', '--listen',
                       '127.0.0.1:7001', '--no-verify')
    assert rc == 0, err
    (call,) = seeds
    assert call['torrent'] is None      # made by the driver
    assert (call['seconds'], call['peers'], call['verify']) == (
        60.0, ['10.0.0.2:6881'], False)
    assert call['listen'] == ['127.0.0.1:7001']
    assert _lines(out) == [
        {'event': 'seeding', 'info_hash': 'cd' * 20, 'listen_port': 6999,
         'path': str(data), 'size': 1000},
        {'event': 'stopped', 'info_hash': 'cd' * 20,
         'reason': 'seed time is up'}]
    assert call['handle'].stops == 1


def test_seed_time_zero_seeds_until_stopped(seeds, tmp_path, capsys):
    data = tmp_path / 'image.raw'
    data.write_bytes(b'd' * 10)
    rc, _, err = run(capsys, 'seed', data)
    assert rc == 0, err
    assert seeds[0]['seconds'] is None
    assert seeds[0]['verify'] is True


def test_seed_makes_and_saves_metadata_with_web_seeds(seeds, tmp_path,
                                                      capsys):
    data = tmp_path / 'image.raw'
    data.write_bytes(os.urandom(3 * 512 * 1024))
    conf = tmp_path / 'bt.conf'
    conf.write_text('[oslo_transfer_bittorrent]\npiece_size = 524288\n')
    saved = tmp_path / 'saved.torrent'
    rc, _, err = run(capsys, '--config-file', conf, 'seed', data,
                     '--web-seed', 'http://origin/image.raw',
                     '--save-torrent', saved)
    assert rc == 0, err
    meta = torrent_mod.parse_file(str(saved))
    assert meta.web_seeds == ('http://origin/image.raw',)
    assert meta.piece_length == 524288
    assert seeds[0]['torrent'] == saved.read_bytes()


def test_seed_a_torrent_whose_data_lies_beside_it(seeds, tmp_path, capsys):
    data = tmp_path / 'image.raw'
    data.write_bytes(b'e' * 1000)
    torrent = tmp_path / 'image.torrent'
    torrent.write_bytes(torrent_mod.make_torrent(str(data)))
    rc, _, err = run(capsys, 'seed', torrent)
    assert rc == 0, err
    assert seeds[0]['path'] == str(data)
    assert isinstance(seeds[0]['torrent'], torrent_mod.TorrentMeta)
    other = tmp_path / 'elsewhere.raw'
    rc, _, err = run(capsys, 'seed', torrent, '--data', other)
    assert seeds[1]['path'] == str(other)


def test_seed_hands_a_torrent_url_to_the_transfer(seeds, tmp_path, capsys):
    data = tmp_path / 'image.raw'
    data.write_bytes(b'e' * 1000)
    rc, _, err = run(capsys, 'seed', data, '--torrent',
                     'https://glance/v2/images/1/torrent')
    assert rc == 0, err
    assert seeds[0]['torrent'] == 'https://glance/v2/images/1/torrent'


def test_seed_refuses_unreadable_metadata(tmp_path, capsys):
    bad = tmp_path / 'bad.torrent'
    bad.write_bytes(b'not bencoded')
    rc, _, err = run(capsys, 'seed', bad)
    assert rc == main.EXIT_USAGE
    assert 'InvalidLocation: invalid torrent metadata' in err
