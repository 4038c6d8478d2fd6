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

"""``oslo-transfer serve --ftp``: arguments, permissions, error replies."""

import argparse
import errno

import pytest

from oslo_transfer.cmd import main
from oslo_transfer.cmd import serve


def _args(argv):
    p = argparse.ArgumentParser()
    serve.add_arguments(p)
    return p.parse_args(argv)


@pytest.mark.parametrize('text,expected', [
    ('127.0.0.1:2121', ('127.0.0.1', 2121)),
    ('0.0.0.0:0', ('0.0.0.0', 0)),
    ('[::1]:21', ('::1', 21)),
    ('node2.example:2121', ('node2.example', 2121)),
])
def test_parse_bind(text, expected):
    assert serve.parse_bind(text) == expected


@pytest.mark.parametrize('text', ['2121', ':21', 'h:', 'h:70000', 'h:x'])
def test_parse_bind_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        serve.parse_bind(text)


def test_port_range():
    assert serve.parse_port_range('60000-60002') == [60000, 60001, 60002]
    for bad in ('60000', '5-4', '0-10', 'a-b'):
        with pytest.raises(argparse.ArgumentTypeError):
            serve.parse_port_range(bad)


def test_defaults_are_safe(tmp_path):
    args = _args(['--ftp', str(tmp_path)])
    assert args.bind == ('127.0.0.1', 2121)
    assert not args.writable and args.user is None


def test_registered_in_the_cli():
    parser = main.build_parser()
    args = parser.parse_args(['serve', '--ftp', '/srv'])
    assert args.func is serve.run


def test_writable_needs_user(tmp_path, capsys):
    assert serve.run(_args(['--ftp', str(tmp_path), '--writable'])) == 2
    assert '--writable needs --user' in capsys.readouterr().err


def test_missing_directory(tmp_path, capsys):
    assert serve.run(_args(['--ftp', str(tmp_path / 'nope')])) == 2
    assert 'not a directory' in capsys.readouterr().err


def test_password_from_env_or_file(tmp_path, monkeypatch):
    monkeypatch.setenv(serve.PASSWORD_ENV, 'from-env')
    assert serve._password(_args(['--ftp', '.'])) == 'from-env'
    pw = tmp_path / 'pw'
    pw.write_text('from-file\nignored\n')
    args = _args(['--ftp', '.', '--password-file', str(pw)])
    assert serve._password(args) == 'from-file'


def _server(tmp_path, argv):
    args = _args(['--ftp', str(tmp_path), '--bind', '127.0.0.1:0'] + argv)
    args.password = 'pw' if args.user else None
    return serve.build_server(args)


def test_permissions(tmp_path):
    server, root = _server(tmp_path, [])
    try:
        auth = server.handler.authorizer
        assert auth.get_perms('anonymous') == serve.READ_PERMS
        assert server.socket.getsockname()[0] == '127.0.0.1'
    finally:
        server.close_all()
    server, _ = _server(tmp_path, ['--user', 'peer', '--writable'])
    try:
        auth = server.handler.authorizer
        assert auth.get_perms('peer') == serve.WRITE_PERMS
        assert not auth.has_user('anonymous')
        assert 'M' not in serve.WRITE_PERMS      # never chmod
    finally:
        server.close_all()


def test_settings_do_not_leak_into_pyftpdlib(tmp_path):
    from pyftpdlib import handlers
    server, _ = _server(tmp_path, ['--masquerade-address', '192.0.2.1'])
    server.close_all()
    assert handlers.FTPHandler.masquerade_address is None
    assert server.handler.masquerade_address == '192.0.2.1'


class _FakeDTP:
    def __init__(self):
        self._resp = None
        self.closed = False

    def close(self):
        self.closed = True


class _Wrapped(Exception):
    pass


@pytest.mark.parametrize('code,reply', [(errno.ENOSPC, '452 '),
                                        (errno.EDQUOT, '452 '),
                                        (errno.EIO, '451 ')])
def test_write_errors_are_explained(code, reply):
    dtp = _FakeDTP()
    try:
        try:
            raise OSError(code, 'x')
        except OSError as err:
            raise _Wrapped() from err
    except _Wrapped:
        serve._dtp_handle_error(dtp)
    assert dtp._resp[0].startswith(reply)
    assert dtp.closed
