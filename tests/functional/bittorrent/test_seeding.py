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

"""Seeding after a copy (``Result.seeding``) and on demand
(``Transfer.seed``), metadata found next to the origin, the seed CLI."""

import os
import signal
import subprocess
import sys

import pytest

import oslo_transfer
from oslo_transfer._drivers.bittorrent import seed as seed_mod
from oslo_transfer._drivers.bittorrent import session as session_mod
from oslo_transfer import exceptions
from oslo_transfer import torrent as torrent_mod
from tests.functional.bittorrent.conftest import ports
from tests.functional.bittorrent.conftest import REPO
from tests.functional import conftest as fconf

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def _no_seeds_left():
    yield
    seed_mod.SEEDS.stop()


def test_seeds_after_commit(make_transfer, swarm, origin, image, tmp_path,
                            dest, caplog):
    """The renamed destination is seeded.

    The seed is the download's own torrent, told the new name (its peers
    stay connected); a later receiver, with no web seed, gets every piece
    from us: from the renamed file.
    """
    caplog.set_level('INFO', logger=seed_mod.__name__)
    data = image(6 * MiB)
    torrent = tmp_path / 'x.torrent'
    torrent.write_bytes(torrent_mod.make_torrent(data.path))
    tr = make_transfer(seed_time=120)
    res = tr.copy(oslo_transfer.Source(urls=[origin.url(data.name)],
                                       torrent=str(torrent)),
                  dest, checksum=data.checksum(),
                  hints=oslo_transfer.Hints(peers=4))
    assert res.driver == 'bittorrent'
    fconf.assert_only_dest(dest, data.data)
    seeding = res.seeding
    info_hash = torrent_mod.parse_file(str(torrent)).info_hash
    assert (seeding.info_hash, seeding.path, seeding.size) == (
        info_hash, dest, data.size)
    assert not seeding.wait(timeout=0.2)
    assert seeding.reason is None
    assert "the download's torrent, its peers kept" in caplog.text
    us = seeding.listen_port
    assert us == session_mod.current().listen_port()
    later = str(tmp_path / 'later' / 'image.raw')
    os.makedirs(os.path.dirname(later))
    recv = swarm.receiver('later', str(torrent), later, ports(1)[0],
                          peers=['127.0.0.1:%d' % us],
                          checksum=data.checksum(),
                          options={'seed_time': 0})
    out = recv.json_line(timeout=60)
    assert out['ok'], out
    assert out['stats']['peer_pieces'] == out['stats']['pieces']
    fconf.assert_only_dest(later, data.data)
    # ... and seeds on (no peer was named, so none ends it early).
    assert not seeding.wait(timeout=0)
    assert seed_mod.SEEDS.active() == [(info_hash, dest)]
    seeding.stop()
    assert seeding.wait(timeout=10)
    assert seeding.reason == 'stopped by the caller'
    assert seed_mod.SEEDS.active() == []


def test_seeding_stops_when_the_file_changes(make_transfer, origin, image,
                                             dest):
    data = image(1 * MiB)
    raw = torrent_mod.make_torrent(data.path)
    tr = make_transfer(seed_time=600)
    res = tr.copy(oslo_transfer.Source(urls=[origin.url(data.name)],
                                       torrent=raw),
                  dest, hints=oslo_transfer.Hints(peers=4))
    assert res.seeding.path == dest
    with open(dest, 'r+b') as f:
        f.write(b'changed')
    assert res.seeding.wait(timeout=30)
    assert res.seeding.reason == 'the file changed or disappeared'
    assert seed_mod.SEEDS.active() == []


def test_a_copy_the_engine_refuses_leaves_no_torrent_behind(
        make_transfer, origin, image, dest):
    """The complete download waits in the session for the commit.

    When the engine refuses the file (its checksum differs), the next copy
    of the same torrent still runs, and its seed is the new file.
    """
    data = image(1 * MiB)
    raw = torrent_mod.make_torrent(data.path)
    tr = make_transfer(seed_time=600)
    src = oslo_transfer.Source(urls=[origin.url(data.name)], torrent=raw)
    with pytest.raises(exceptions.ChecksumMismatch) as err:
        tr.copy(src, dest, checksum='sha256:' + '0' * 64,
                hints=oslo_transfer.Hints(peers=4))
    assert 'expected ' + '0' * 64 in str(err.value)
    assert not os.path.exists(dest) and not os.path.exists(dest + '.part')
    assert seed_mod.SEEDS.active() == []
    res = tr.copy(src, dest, checksum=data.checksum(),
                  hints=oslo_transfer.Hints(peers=4))
    assert res.driver == 'bittorrent'
    fconf.assert_only_dest(dest, data.data)
    assert res.seeding.path == dest
    assert seed_mod.SEEDS.active() == [(res.seeding.info_hash, dest)]


def test_seed_time_zero_does_not_seed(make_transfer, origin, image, dest):
    data = image(1 * MiB)
    raw = torrent_mod.make_torrent(data.path)
    tr = make_transfer(seed_time=0)
    res = tr.copy(oslo_transfer.Source(urls=[origin.url(data.name)],
                                       torrent=raw),
                  dest, hints=oslo_transfer.Hints(peers=4))
    assert res.driver == 'bittorrent'
    assert res.seeding is None
    assert seed_mod.SEEDS.active() == []


def test_transfer_seed_serves_a_later_receiver(make_transfer, swarm, image,
                                               tmp_path):
    """``Transfer.seed``: no origin at all, every piece comes from us."""
    data = image(4 * MiB)
    torrent = tmp_path / 'x.torrent'
    torrent.write_bytes(torrent_mod.make_torrent(data.path))
    tr = make_transfer()        # seed_time = 0: seed() has its own time
    seeding = tr.seed(data.path, str(torrent), seconds=600)
    assert (seeding.path, seeding.size) == (data.path, data.size)
    assert seeding.info_hash == torrent_mod.parse_file(
        str(torrent)).info_hash
    later = str(tmp_path / 'later' / 'image.raw')
    os.makedirs(os.path.dirname(later))
    recv = swarm.receiver('later', str(torrent), later, ports(1)[0],
                          peers=['127.0.0.1:%d' % seeding.listen_port],
                          checksum=data.checksum(),
                          options={'seed_time': 0})
    out = recv.json_line(timeout=60)
    assert out['ok'], out
    assert out['stats']['peer_pieces'] == out['stats']['pieces']
    fconf.assert_only_dest(later, data.data)
    assert not seeding.wait(timeout=0)
    seeding.stop()
    assert seeding.wait(timeout=10)
    assert seeding.reason == 'stopped by the caller'


def test_transfer_seed_refuses_other_data(make_transfer, image, tmp_path):
    data = image(1 * MiB)
    other = fconf.make_data_file(tmp_path, 'other.raw', data.size)
    tr = make_transfer()
    with pytest.raises(exceptions.DestinationError) as err:
        tr.seed(other.path, torrent_mod.make_torrent(data.path))
    assert 'does not match torrent' in str(err.value)
    assert seed_mod.SEEDS.active() == []


@pytest.mark.parametrize('lookup', [True, False])
def test_torrent_next_to_origin(make_transfer, origin, image, dest, lookup):
    data = image(2 * MiB)
    url = origin.url(data.name)
    with open(data.path + '.torrent', 'wb') as f:
        f.write(torrent_mod.make_torrent(data.path, web_seeds=[url]))
    tr = make_transfer(lookup_torrent_next_to_origin=lookup)
    hints = oslo_transfer.Hints(peers=4)
    plan = tr.plan(url, dest, hints=hints)
    assert plan.first.driver == ('bittorrent' if lookup else 'http')
    res = tr.copy(url, dest, checksum=data.checksum(), hints=hints)
    assert res.driver == plan.first.driver
    fconf.assert_only_dest(dest, data.data)
    looked = origin.requests_for(data.name + '.torrent')
    assert len(looked) == (1 if lookup else 0)


def test_no_torrent_next_to_origin(make_transfer, origin, image, dest):
    data = image(1 * MiB)
    tr = make_transfer(lookup_torrent_next_to_origin=True)
    plan = tr.plan(origin.url(data.name), dest,
                   hints=oslo_transfer.Hints(peers=4))
    assert [c.driver for c in plan.candidates] == ['http']


def test_seed_command_refuses_other_data(image, tmp_path):
    data = image(2 * MiB)
    other = fconf.make_data_file(tmp_path, 'other.raw', data.size)
    torrent = tmp_path / 'x.torrent'
    torrent.write_bytes(torrent_mod.make_torrent(data.path))
    proc = subprocess.run(
        [sys.executable, '-m', 'oslo_transfer.cmd.torrent', 'seed',
         other.path, '--torrent', str(torrent),
         '--listen', '127.0.0.1:0'], cwd=REPO, capture_output=True,
        timeout=60)
    assert proc.returncode == 1
    assert b'does not match torrent' in proc.stderr
    assert b'0 of 8 pieces' in proc.stderr


def _cli_copy(swarm, name, conf, argv):
    """``oslo-transfer copy`` in a process of its own, as a script runs it."""
    return swarm._start([sys.executable, '-m', 'oslo_transfer.cmd.main',
                         '--config-file', conf, '-v', 'copy'] + argv
                        + ['--json', '--no-progress'], name)


def _cli_conf(tmp_path, name, port, **options):
    opts = {'listen_interfaces': '127.0.0.1:%d' % port,
            'allow_multiple_connections_per_ip': True,
            'stall_timeout': 30, 'peer_wait': 1}
    opts.update(options)
    conf = tmp_path / ('%s.conf' % name)
    fconf.write_conf_file(conf, {
        'oslo_transfer': {'state_path': str(tmp_path / ('%s-state' % name))},
        'oslo_transfer_bittorrent': opts})
    return conf


def test_cli_copy_seeds_before_it_returns(swarm, origin, image, tmp_path):
    """``oslo-transfer copy`` prints its result, then seeds, then exits.

    The later host gets every piece from the script's process (it has no
    web seed); the script stops seeding, and exits 0, once its only
    ``--peer`` is complete.
    """
    data = image(6 * MiB)
    torrent = tmp_path / 'x.torrent'
    torrent.write_bytes(torrent_mod.make_torrent(data.path))
    cli_port, later_port = ports(2)
    dest = str(tmp_path / 'cli' / 'image.raw')
    os.makedirs(os.path.dirname(dest))
    cli = _cli_copy(swarm, 'cli', _cli_conf(tmp_path, 'cli', cli_port), [
        origin.url(data.name), dest, '--torrent', str(torrent),
        '--peers', '4', '--peer', '127.0.0.1:%d' % later_port,
        '--checksum', data.checksum(), '--seed-time', '600'])
    out = cli.json_line(timeout=90)
    assert out['driver'] == 'bittorrent', out
    fconf.assert_only_dest(dest, data.data)
    assert cli.popen.poll() is None, 'returned without seeding'

    later = str(tmp_path / 'later' / 'image.raw')
    os.makedirs(os.path.dirname(later))
    # The later host seeds too (as it would in a boot storm), so that the
    # script sees it complete.
    recv = swarm.receiver('later', str(torrent), later, later_port,
                          peers=['127.0.0.1:%d' % cli_port],
                          checksum=data.checksum(),
                          options={'seed_time': 60})
    got = recv.json_line(timeout=90)
    assert got['ok'], got
    assert got['stats']['peer_pieces'] == got['stats']['pieces']
    fconf.assert_only_dest(later, data.data)
    assert cli.wait(timeout=90) == 0, cli.log_tail()
    log = cli.log_tail(20000)
    assert 'seeding %s' % dest in log
    assert 'every named peer has the whole file' in log
    fconf.assert_only_dest(dest, data.data)


def test_cli_copy_sigterm_while_seeding(swarm, origin, image, tmp_path):
    data = image(2 * MiB)
    torrent = tmp_path / 'x.torrent'
    torrent.write_bytes(torrent_mod.make_torrent(data.path))
    (cli_port,) = ports(1)
    dest = str(tmp_path / 'cli' / 'image.raw')
    os.makedirs(os.path.dirname(dest))
    cli = _cli_copy(swarm, 'cli', _cli_conf(tmp_path, 'cli', cli_port,
                                            seed_time=600), [
        origin.url(data.name), dest, '--torrent', str(torrent),
        '--peers', '4', '--checksum', data.checksum()])
    out = cli.json_line(timeout=90)
    assert out['driver'] == 'bittorrent', out
    assert cli.popen.poll() is None, 'seed_time from the config was ignored'
    cli.signal(signal.SIGTERM)
    assert cli.wait(timeout=30) == 0, cli.log_tail()
    assert 'stopped seeding' in cli.log_tail()
    fconf.assert_only_dest(dest, data.data)


def test_cli_copy_seed_time_zero_returns_at_once(swarm, origin, image,
                                                 tmp_path):
    data = image(2 * MiB)
    torrent = tmp_path / 'x.torrent'
    torrent.write_bytes(torrent_mod.make_torrent(data.path))
    (cli_port,) = ports(1)
    dest = str(tmp_path / 'cli' / 'image.raw')
    os.makedirs(os.path.dirname(dest))
    cli = _cli_copy(swarm, 'cli', _cli_conf(tmp_path, 'cli', cli_port,
                                            seed_time=600), [
        origin.url(data.name), dest, '--torrent', str(torrent),
        '--peers', '4', '--checksum', data.checksum(), '--seed-time', '0'])
    out = cli.json_line(timeout=90)
    assert out['driver'] == 'bittorrent', out
    assert cli.wait(timeout=60) == 0, cli.log_tail()
    assert 'seeding' not in cli.log_tail(20000).replace('seeding=', '')
    fconf.assert_only_dest(dest, data.data)
