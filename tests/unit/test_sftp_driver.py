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

"""The ftp and sftp drivers' declarations, options, paths, credentials and
lazy imports (no network)."""

import getpass
import subprocess
import sys

import pytest

from oslo_transfer._drivers.ftp import driver as ftp
from oslo_transfer._drivers.sftp import driver as sftp
from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import opts
from oslo_transfer import testing

Cap = driver_mod.Capability


def _sftp(**overrides):
    conf = testing.make_conf({('oslo_transfer_sftp', k): v
                              for k, v in overrides.items()},
                             [sftp.SFTPDriver])
    return sftp.SFTPDriver(conf)


def _ftp(**overrides):
    conf = testing.make_conf({('oslo_transfer_ftp', k): v
                              for k, v in overrides.items()},
                             [ftp.FTPDriver])
    return ftp.FTPDriver(conf)


def test_import_does_not_load_paramiko():
    """list_opts() and the driver modules work without paramiko."""
    code = ('import sys; import oslo_transfer._drivers.sftp, '
            'oslo_transfer._drivers.ftp, oslo_transfer.opts; '
            'oslo_transfer.opts.list_opts(); '
            'bad = [m for m in ("paramiko", "pyftpdlib") if m in '
            'sys.modules]; assert not bad, bad')
    subprocess.run([sys.executable, '-c', code], check=True)


def test_missing_paramiko(monkeypatch):
    monkeypatch.setitem(sys.modules, 'paramiko', None)
    with pytest.raises(exceptions.MissingDependency) as ei:
        _sftp().check_available()
    assert 'pip install paramiko' in str(ei.value)
    assert 'python3-paramiko' in str(ei.value)


@pytest.mark.parametrize('cls,schemes', [(ftp.FTPDriver, ('ftp', 'ftps')),
                                         (sftp.SFTPDriver, ('sftp',))])
def test_declarations(cls, schemes):
    assert cls.schemes == schemes
    for cap in (Cap.READ, Cap.WRITE, Cap.RANGED_READ, Cap.RESUMABLE_WRITE,
                Cap.ATOMIC_COMMIT):
        assert cap in cls.capabilities
    assert Cap.SAME_NETWORK_ONLY not in cls.capabilities


def test_accepts_by_scheme():
    ctx = driver_mod.Context()
    f, s = _ftp(), _sftp()
    assert f.accepts(locations.Location('ftps://h/x'), ctx)
    assert not f.accepts(locations.Location('sftp://h/x'), ctx)
    assert s.accepts(locations.Location('sftp://h/x'), ctx)
    assert not s.accepts(locations.Location('/local/x'), ctx)


def test_in_place_uploads_are_not_atomic():
    assert Cap.ATOMIC_COMMIT not in _ftp(stage_uploads=False).capabilities
    assert Cap.ATOMIC_COMMIT not in _sftp(stage_uploads=False).capabilities
    assert Cap.ATOMIC_COMMIT in _sftp().capabilities


def test_options_in_the_sample_config():
    groups = dict(opts.list_opts())
    ftp_names = {o.name for o in groups['oslo_transfer_ftp']}
    sftp_names = {o.name for o in groups['oslo_transfer_sftp']}
    assert {'username', 'password', 'ca_file'} <= ftp_names
    assert {'known_hosts_file', 'key_file', 'username'} <= sftp_names
    secret = {o.name for o in groups['oslo_transfer_ftp'] if o.secret}
    assert secret == {'password'}
    secret = {o.name for o in groups['oslo_transfer_sftp'] if o.secret}
    assert secret == {'key_passphrase'}


@pytest.mark.parametrize('url,path', [
    ('sftp://h/var/lib/nova/instances/u/disk',
     '/var/lib/nova/instances/u/disk'),
    ('sftp://h/~/images/x', 'images/x'),
    ('sftp://h/a%20b', '/a b'),
])
def test_sftp_paths(url, path):
    assert sftp.remote_path(locations.Location(url)) == path


@pytest.mark.parametrize('url', ['sftp://h/', 'sftp://h/~', 'sftp://h',
                                 'sftp://h/dir/'])
def test_sftp_paths_refused(url):
    with pytest.raises(exceptions.InvalidLocation):
        sftp.remote_path(locations.Location(url))


def test_sftp_user_precedence():
    d = _sftp(username='confuser', key_file='/conf/key')
    loc = locations.Location('sftp://h/x')
    assert d._login(loc) == ('confuser', None, '/conf/key')
    loc = locations.Location('sftp://urluser:pw@h/x')
    assert d._login(loc) == ('urluser', 'pw', '/conf/key')
    loc = locations.Location('sftp://urluser:pw@h/x',
                             credentials={'username': 'locuser',
                                          'key_file': '/loc/key'})
    assert d._login(loc) == ('locuser', None, '/loc/key')


def test_sftp_default_user_is_the_local_user():
    assert _sftp()._login(locations.Location('sftp://h/x'))[0] == \
        getpass.getuser()


def test_ftp_credential_precedence():
    d = _ftp(username='cu', password='cp')
    assert d._login(locations.Location('ftp://h/x')) == ('cu', 'cp')
    assert d._login(locations.Location('ftp://u:p@h/x')) == ('u', 'p')
    loc = locations.Location('ftp://u:p@h/x', credentials=('lu', 'lp'))
    assert d._login(loc) == ('lu', 'lp')
    assert _ftp()._login(locations.Location('ftp://h/x')) == (None, None)


def test_pool_keys_differ_by_secret():
    d = _ftp()
    loc = locations.Location('ftp://h/x')
    assert d._key(loc, 'u', 'S3cret-a') != d._key(loc, 'u', 'S3cret-b')
    assert 'S3cret' not in repr(d._key(loc, 'u', 'S3cret-a'))


def test_parallel_reads_share_the_requests_in_flight():
    d = _sftp(requests_in_flight=128)
    assert d._depth(+1) == (128, 1)    # alone
    assert d._depth(+1) == (32, 2)     # two share half of 128
    assert d._depth(+1) == (21, 3)
    assert d._depth(+1) == (16, 4)     # four segments: 16 each
    for _ in range(4):
        d._depth(-1)
    assert d._depth(+1) == (128, 1)
    assert _sftp(requests_in_flight=4)._depth(+1) == (4, 1)
    # never fewer than 8 each (or requests_in_flight, when that is less)
    d = _sftp(requests_in_flight=32)
    assert [d._depth(+1)[0] for _ in range(4)] == [32, 8, 8, 8]
    assert _sftp(requests_in_flight=4)._depth(+1) == (4, 1)


def test_a_receive_buffer_bounds_the_requests_in_flight():
    # At most the buffer's worth requested and not yet answered, at least
    # one request; also below the share of parallel reads.
    d = _sftp(requests_in_flight=128, request_size=32 * 1024)
    assert d._depth(+1, 256 * 1024) == (8, 1)
    d._depth(-1)
    assert d._depth(+1, 16 * 1024) == (1, 1)
    d._depth(-1)
    assert d._depth(+1, None) == (128, 1)
    d = _sftp(requests_in_flight=16, request_size=32 * 1024)
    assert [d._depth(+1, 4 << 20)[0] for _ in range(3)] == [16, 8, 8]


def test_plan_ranks_ftp_and_sftp_beside_http():
    """Installed by entry point; ranked with HTTP in the caller's order."""
    from oslo_transfer import selector
    from oslo_transfer import transfer

    with transfer.Transfer(testing.make_conf()) as t:
        assert {'ftp', 'sftp'} <= {d.name for d in t.drivers}
        source = locations.Source(urls=['ftp://a/x', 'https://b/x',
                                        'sftp://c/x'])
        plan = t.plan(source)
        assert [c.driver for c in plan.candidates] == ['ftp', 'http',
                                                       'sftp']
        same = t.plan(source, hints=selector.Hints(same_network=True))
        assert {c.driver for c in same.candidates} == {'ftp', 'http',
                                                       'sftp'}


def test_paramiko_is_imported_without_invoke():
    """invoke stays unloaded, and importable by whoever wants it later."""
    code = ('import sys\n'
            'from oslo_transfer._drivers.sftp import driver as sftp\n'
            'paramiko = sftp._import_paramiko_without_invoke()\n'
            'assert paramiko.Transport\n'
            'import paramiko.config\n'
            'assert paramiko.config.invoke is None\n'
            'print("invoke" in sys.modules)\n'
            'try:\n'
            '    import invoke  # noqa\n'
            'except ImportError as exc:\n'
            '    print("absent" if "No module" in str(exc) else exc)\n'
            'else:\n'
            '    print("importable")\n')
    out = subprocess.run([sys.executable, '-c', code], check=True,
                         capture_output=True, text=True).stdout.split()
    assert out[0] == 'False'
    assert out[1] in ('importable', 'absent')


def test_paramiko_import_leaves_a_loaded_invoke_alone():
    pytest.importorskip('invoke')
    code = ('import sys\n'
            'import invoke\n'
            'from oslo_transfer._drivers.sftp import driver as sftp\n'
            'paramiko = sftp._import_paramiko_without_invoke()\n'
            'import paramiko.config\n'
            'print(sys.modules["invoke"] is invoke,\n'
            '      paramiko.config.invoke is invoke)\n')
    out = subprocess.run([sys.executable, '-c', code], check=True,
                         capture_output=True, text=True).stdout.split()
    assert out == ['True', 'True']
