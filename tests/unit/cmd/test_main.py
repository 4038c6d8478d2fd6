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

"""The command line: exit codes, --json, plan (local files only)."""

import hashlib
import json
import sys

import pytest

from oslo_transfer.cmd import copy as copy_cmd
from oslo_transfer.cmd import main


def run(capsys, *argv):
    rc = main.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_copy_json(tmp_path, capsys):
    src = tmp_path / 'src'
    src.write_bytes(b'x' * 100000)
    digest = hashlib.sha256(src.read_bytes()).hexdigest()
    rc, out, err = run(capsys, 'copy', str(src), str(tmp_path / 'dst'),
                       '--checksum', 'sha256:' + digest, '--json')
    assert rc == 0, err
    res = json.loads(out)
    assert res['driver'] == 'file' and res['digest'] == digest
    assert res['plan']['candidates'][0]['driver'] == 'file'
    assert (tmp_path / 'dst').read_bytes() == src.read_bytes()


def test_exit_codes(tmp_path, capsys):
    src = tmp_path / 'src'
    src.write_bytes(b'abc')
    rc, _, err = run(capsys, 'copy', str(tmp_path / 'missing'),
                     str(tmp_path / 'd'))
    assert rc == main.EXIT_NOT_FOUND and 'SourceNotFound' in err
    rc, _, err = run(capsys, 'copy', str(src), str(tmp_path / 'd'),
                     '--checksum', 'sha256:' + '0' * 64)
    assert rc == main.EXIT_VERIFY and 'ChecksumMismatch' in err
    assert not (tmp_path / 'd').exists()
    rc, _, err = run(capsys, 'copy', str(src), str(tmp_path / 'd'),
                     '--checksum', 'sha256:zz')
    assert rc == main.EXIT_USAGE
    rc, _, _ = run(capsys, 'copy')
    assert rc == main.EXIT_USAGE
    (tmp_path / 'e').write_bytes(b'other')
    rc, _, err = run(capsys, 'copy', str(src), str(tmp_path / 'e'))
    assert rc == main.EXIT_EXISTS


def test_copy_in_place_keeps_the_destination_file(tmp_path, capsys):
    """--in-place writes into DST itself: same inode, size kept."""
    conf = tmp_path / 'c.conf'
    conf.write_text('[oslo_transfer]\nstate_path = %s\n' % (tmp_path / 's'))
    src = tmp_path / 'src'
    src.write_bytes(b'\0' * 8192 + b'y' * 4096)
    dst = tmp_path / 'vol'
    dst.write_bytes(b'v' * 65536)
    ino = dst.stat().st_ino
    rc, out, err = run(capsys, '--config-file', str(conf), 'copy',
                       '--in-place', str(src), str(dst), '--json')
    assert rc == 0, err
    assert json.loads(out)['dest'] == str(dst)
    assert dst.stat().st_ino == ino
    assert dst.read_bytes() == src.read_bytes() + b'v' * (65536 - 12288)
    # --assume-zeroed: the zero run is not written (the old bytes stay).
    dst.write_bytes(b'v' * 65536)
    rc, out, err = run(capsys, '--config-file', str(conf), 'copy',
                       '--in-place', '--assume-zeroed', str(src), str(dst))
    assert rc == 0, err
    assert dst.read_bytes()[:12288] == b'v' * 8192 + b'y' * 4096
    rc, _, err = run(capsys, '--config-file', str(conf), 'copy',
                     '--assume-zeroed', str(src), str(tmp_path / 'new'))
    assert rc == main.EXIT_USAGE and 'assume_zeroed' in err
    assert not (tmp_path / 'new').exists()


def test_plan_moves_nothing(tmp_path, capsys):
    rc, out, _ = run(capsys, 'plan', 'https://u:pw@origin.invalid/img',
                     str(tmp_path / 'd'), '--peers', '40')
    assert rc == 0
    assert 'via http' in out and 'pw' not in out.replace('pw@', '')
    assert ':***@' in out
    assert list(tmp_path.iterdir()) == []


def test_drivers(capsys):
    rc, out, _ = run(capsys, 'drivers', '--json')
    names = {r['name'] for r in json.loads(out)}
    assert {'http', 'file'} <= names


@pytest.mark.parametrize('text,value', [('50M', 50 * 2 ** 20),
                                        ('800k', 800 * 1024), ('0', 0),
                                        ('1.5G', int(1.5 * 2 ** 30))])
def test_parse_rate(text, value):
    assert copy_cmd.parse_rate(text) == value


def test_no_progress_bar_when_piped(tmp_path, capsys):
    src = tmp_path / 'src'
    src.write_bytes(b'x' * 1000)
    rc, out, err = run(capsys, 'copy', str(src), str(tmp_path / 'd'))
    assert rc == 0 and '\r' not in err


def _conf_file(tmp_path, name, disabled):
    path = tmp_path / name
    path.write_text('[oslo_transfer]\ndisabled_drivers = %s\n' % disabled)
    return str(path)


@pytest.mark.parametrize('where', ['before', 'after'])
def test_config_file_before_or_after_command(tmp_path, capsys, where):
    src = tmp_path / 'src'
    src.write_bytes(b'y' * 1000)
    conf = _conf_file(tmp_path, 'c.conf', 'file')
    argv = ['copy', str(src), str(tmp_path / 'dst')]
    if where == 'before':
        argv = ['--config-file', conf] + argv
    else:
        argv += ['--config-file', conf]
    rc, out, err = run(capsys, *argv)
    # The file says that no driver may read a local path.
    assert rc == main.EXIT_ERROR
    assert 'NoDriverFound' in err and 'disabled_drivers' in err
    assert not (tmp_path / 'dst').exists()


def test_config_files_on_both_sides_are_merged(tmp_path, capsys):
    src = tmp_path / 'src'
    src.write_bytes(b'z' * 1000)
    first = _conf_file(tmp_path, 'first.conf', 'file')
    last = _conf_file(tmp_path, 'last.conf', 'ftp')
    argv = ['copy', str(src), str(tmp_path / 'dst'), '--json']
    rc, out, err = run(capsys, '--config-file', last, *argv,
                       '--config-file', first)
    assert rc == main.EXIT_ERROR and 'disabled_drivers' in err
    # Both files are read, in command-line order: the last one wins.
    rc, out, err = run(capsys, '--config-file', first, *argv,
                       '--config-file', last)
    assert rc == 0, err
    assert json.loads(out)['driver'] == 'file'


@pytest.mark.parametrize('argv,verbose', [
    (['copy', 'a', 'b'], 0),
    (['-v', 'copy', 'a', 'b'], 1),
    (['copy', 'a', 'b', '-v'], 1),
    (['-v', 'plan', 'a', '-vv'], 3),
])
def test_verbose_before_or_after_command(argv, verbose):
    args = main._merge_global_args(main.build_parser().parse_args(argv))
    assert args.verbose == verbose
    assert not hasattr(args, 'sub_verbose')


@pytest.mark.parametrize('argv,option', [
    (['copy', 'SRC', 'DST', '--segments', '0'], '--segments'),
    (['copy', 'SRC', 'DST', '--segments', '-1'], '--segments'),
    (['copy', 'SRC', 'DST', '--segments', 'four'], '--segments'),
    (['copy', 'SRC', 'DST', '--peers', '0'], '--peers'),
    (['plan', 'SRC', '--peers', '-3'], '--peers'),
    (['copy', 'SRC', 'DST', '--rate', '-1'], '--rate'),
    (['copy', 'SRC', 'DST', '--seed-time', '-1'], '--seed-time'),
    (['make-torrent', 'SRC', '-o', 'DST', '--piece-size', '0'],
     '--piece-size'),
    (['serve', '--ftp', 'SRC', '--max-connections', '0'],
     '--max-connections'),
])
def test_numeric_options_are_checked(tmp_path, capsys, argv, option):
    src = tmp_path / 'src'
    src.write_bytes(b'abc')
    dst = tmp_path / 'dst'
    argv = [{'SRC': str(src), 'DST': str(dst)}.get(a, a) for a in argv]
    rc, out, err = run(capsys, *argv)
    assert rc == main.EXIT_USAGE
    assert 'usage:' in err and 'argument %s' % option in err
    assert not dst.exists()


@pytest.fixture
def switch_interval():
    """Restore the interpreter's switch interval after the test."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(0.005)
    yield
    sys.setswitchinterval(before)


@pytest.mark.parametrize('configured,expected', [
    (None, main.CLI_SWITCH_INTERVAL),   # the command's own default
    (0.002, 0.002),                     # what the config file says
])
def test_command_sets_the_switch_interval(tmp_path, capsys, switch_interval,
                                          configured, expected):
    src = tmp_path / 'src'
    src.write_bytes(b'z' * 1000)
    argv = ['copy', str(src), str(tmp_path / 'dst')]
    if configured is not None:
        path = tmp_path / 'si.conf'
        path.write_text('[oslo_transfer]\nswitch_interval = %s\n'
                        % configured)
        argv += ['--config-file', str(path)]
    rc, _, err = run(capsys, *argv)
    assert rc == 0, err
    assert sys.getswitchinterval() == pytest.approx(expected)


def test_library_leaves_the_switch_interval_alone(switch_interval):
    from oslo_transfer import testing
    from oslo_transfer import transfer
    with transfer.Transfer(testing.make_conf()):
        assert sys.getswitchinterval() == pytest.approx(0.005)
    conf = testing.make_conf({('oslo_transfer', 'switch_interval'): 0.001})
    with transfer.Transfer(conf):
        assert sys.getswitchinterval() == pytest.approx(0.001)
