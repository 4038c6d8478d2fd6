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

"""``make-torrent``, and the ``python -m`` entry points of the peers.

``python -m oslo_transfer.cmd.torrent`` and ``python -m
oslo_transfer.cmd.serve`` (the functional tests and the swarm benchmark
start peers that way) go through the command's one parser, option
registration and logging set-up.
"""

import os
import signal
import subprocess
import sys

import pytest

from oslo_transfer.cmd import main
from oslo_transfer import torrent as torrent_mod

KIB = 1024


def _config(tmp_path, piece_size):
    conf = tmp_path / 'bt.conf'
    conf.write_text('[oslo_transfer_bittorrent]\npiece_size = %d\n'
                    % piece_size)
    return str(conf)


@pytest.fixture
def data(tmp_path):
    path = tmp_path / 'image.raw'
    path.write_bytes(os.urandom(1024 * KIB + 1))
    return str(path)


@pytest.mark.parametrize('extra,piece', [
    ([], 256 * KIB),                                # chosen by size
    (['--config'], 512 * KIB),                      # the option
    (['--config', '--piece-size', str(128 * KIB)], 128 * KIB),  # the flag
])
def test_piece_size(tmp_path, capsys, data, extra, piece):
    out = tmp_path / 'x.torrent'
    argv = ['make-torrent', data, '-o', str(out)]
    if '--config' in extra:
        extra.remove('--config')
        argv += ['--config-file', _config(tmp_path, 512 * KIB)]
    rc = main.main(argv + extra)
    assert rc == 0, capsys.readouterr().err
    meta = torrent_mod.parse_file(str(out))
    assert meta.piece_length == piece
    assert '%d bytes in %d pieces of %d, info-hash %s' % (
        1024 * KIB + 1, meta.num_pieces, piece,
        meta.info_hash) in capsys.readouterr().out


def test_metadata_to_stdout(tmp_path, capsysbinary, data):
    rc = main.main(['make-torrent', data, '-o', '-', '--name', 'cirros.raw',
                    '--tracker', 'http://tracker/announce'])
    assert rc == 0
    meta = torrent_mod.parse(capsysbinary.readouterr().out)
    assert (meta.name, meta.trackers) == ('cirros.raw',
                                          ('http://tracker/announce',))


def _python_m(module, *argv):
    return subprocess.run([sys.executable, '-m', module] + list(argv),
                          capture_output=True, text=True, timeout=60)


def test_torrent_module_runs_the_command(tmp_path, data):
    out = tmp_path / 'x.torrent'
    # --config-file after the sub-command: only the command's own parser
    # takes global options there
    proc = _python_m('oslo_transfer.cmd.torrent', 'make-torrent', data,
                     '-o', str(out), '--config-file',
                     _config(tmp_path, 512 * KIB))
    assert proc.returncode == 0, proc.stderr
    assert torrent_mod.parse_file(str(out)).piece_length == 512 * KIB
    proc = _python_m('oslo_transfer.cmd.torrent', 'make-torrent', data,
                     '-o', str(out), '--piece-size', '0')
    assert proc.returncode == main.EXIT_USAGE
    assert 'usage: oslo-transfer make-torrent' in proc.stderr


def test_serve_module_runs_the_command(tmp_path):
    proc = _python_m('oslo_transfer.cmd.serve', '--ftp', str(tmp_path),
                     '--max-connections', '0')
    assert proc.returncode == main.EXIT_USAGE
    assert 'usage: oslo-transfer serve' in proc.stderr
    assert 'argument --max-connections' in proc.stderr


def test_serve_module_logs_as_the_command(tmp_path):
    pytest.importorskip('pyftpdlib')
    popen = subprocess.Popen(
        [sys.executable, '-m', 'oslo_transfer.cmd.serve', '-v', '--ftp',
         str(tmp_path), '--bind', '127.0.0.1:0'],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert popen.stdout.readline().startswith('serving %s on ftp://'
                                                  % tmp_path)
        popen.send_signal(signal.SIGTERM)
        out, err = popen.communicate(timeout=30)
    finally:
        if popen.poll() is None:
            popen.kill()
            popen.wait()
    assert popen.returncode == 0, err
    # -v: the command's logging set-up, its format
    assert 'INFO oslo_transfer.cmd.serve: signal 15: closing every ' \
        'connection' in err
