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

"""Host key checks, authentication order and error translation (no
network; paramiko objects and fakes)."""

import errno
import socket
import time

import paramiko
import pytest

from oslo_transfer._drivers.sftp import pipeline as sftp_pipeline
from oslo_transfer._drivers.sftp import session as sftp_session
from oslo_transfer import exceptions
from oslo_transfer import locations

LOC = locations.Location('sftp://nova:Pa55word@192.0.2.7:2222/var/disk')


@pytest.fixture(scope='module')
def keys():
    return paramiko.RSAKey.generate(1024), paramiko.RSAKey.generate(1024)


class FakeTransport:
    def __init__(self, key=None, accept=(), password=None):
        self.key = key
        self.accept = accept
        self.password = password
        self.authenticated = False
        self.tried = []

    def get_remote_server_key(self):
        return self.key

    def auth_publickey(self, user, pkey):
        self.tried.append(('key', user, pkey.get_fingerprint()))
        if pkey.get_fingerprint() in self.accept:
            self.authenticated = True
            return
        raise paramiko.AuthenticationException('refused')

    def auth_password(self, user, password):
        self.tried.append(('password', user))
        if password == self.password:
            self.authenticated = True
            return
        raise paramiko.AuthenticationException('refused')

    def is_authenticated(self):
        return self.authenticated


def _known(name, key):
    hk = paramiko.HostKeys()
    hk.add(name, key.get_name(), key)
    return hk.lookup(name)


def test_host_key_name():
    assert sftp_session.host_key_name('node2', 22) == 'node2'
    assert sftp_session.host_key_name('10.0.0.2', 2222) == '[10.0.0.2]:2222'


def test_known_key_passes(keys):
    name = '[192.0.2.7]:2222'
    sftp_session.check_host_key(FakeTransport(keys[0]),
                                _known(name, keys[0]), name, '/kh', LOC)


def test_unknown_host(keys):
    name = '[192.0.2.7]:2222'
    with pytest.raises(exceptions.AuthenticationFailed) as ei:
        sftp_session.check_host_key(FakeTransport(keys[0]), None, name,
                                    '/etc/kh', LOC)
    msg = str(ei.value)
    assert 'host key of [192.0.2.7]:2222 is unknown' in msg
    assert 'ssh-keyscan -t ssh-rsa -p 2222 192.0.2.7 >> /etc/kh' in msg
    assert 'SHA256:' in msg
    assert 'Pa55word' not in msg


def test_unknown_host_default_port(keys):
    with pytest.raises(exceptions.AuthenticationFailed) as ei:
        sftp_session.check_host_key(FakeTransport(keys[0]), None, 'node2',
                                    '/kh', LOC)
    assert 'ssh-keyscan -t ssh-rsa node2 >> /kh' in str(ei.value)


def test_changed_key(keys):
    name = '[192.0.2.7]:2222'
    with pytest.raises(exceptions.AuthenticationFailed) as ei:
        sftp_session.check_host_key(FakeTransport(keys[1]),
                                    _known(name, keys[0]), name, '/kh', LOC)
    msg = str(ei.value)
    assert 'has CHANGED' in msg
    assert "ssh-keygen -R '[192.0.2.7]:2222' -f /kh" in msg


def test_known_under_another_type(keys):
    """known_hosts holds an RSA key, the server shows another type."""
    name = 'node2'

    class Other:
        def get_name(self):
            return 'ssh-ed25519'

        def asbytes(self):
            return b'other'

    with pytest.raises(exceptions.AuthenticationFailed) as ei:
        sftp_session.check_host_key(FakeTransport(Other()),
                                    _known(name, keys[0]), name, '/kh', LOC)
    assert 'may have CHANGED' in str(ei.value)
    assert 'holds only ssh-rsa keys' in str(ei.value)


def test_known_key_types_are_offered_first(keys):
    a, b = socket.socketpair()
    try:
        t = paramiko.Transport(a)
        sftp_session._offer_known_types(t, _known('h', keys[0]))
        types = t.get_security_options().key_types
        assert types[0] == 'rsa-sha2-512'
        assert 'ssh-ed25519' in types
    finally:
        a.close()
        b.close()


def test_ciphers_preferred(keys):
    a, b = socket.socketpair()
    try:
        t = paramiko.Transport(a)
        sftp_session._prefer_ciphers(t, ['aes256-ctr', 'no-such-cipher'])
        ciphers = t.get_security_options().ciphers
        assert ciphers[0] == 'aes256-ctr'
        assert 'no-such-cipher' not in ciphers
    finally:
        a.close()
        b.close()


def _auth(transport, **kw):
    args = dict(user='nova', password=None, key_file=None, passphrase=None,
                allow_agent=False, look_for_keys=False)
    args.update(kw)
    sftp_session._auth(transport, LOC, args['user'], args['password'],
                       args['key_file'], args['passphrase'],
                       args['allow_agent'], args['look_for_keys'])


def test_key_file_then_password(keys, tmp_path):
    path = str(tmp_path / 'id_rsa')
    keys[0].write_private_key_file(path)
    t = FakeTransport(password='right')
    _auth(t, key_file=path, password='right')
    assert [x[0] for x in t.tried] == ['key', 'password']


def test_key_file_accepted(keys, tmp_path):
    path = str(tmp_path / 'id_rsa')
    keys[0].write_private_key_file(path)
    t = FakeTransport(accept=[keys[0].get_fingerprint()])
    _auth(t, key_file=path, password='unused')
    assert [x[0] for x in t.tried] == ['key']


def test_everything_refused(keys, tmp_path):
    path = str(tmp_path / 'id_rsa')
    keys[0].write_private_key_file(path)
    with pytest.raises(exceptions.AuthenticationFailed) as ei:
        _auth(FakeTransport(), key_file=path, password='wrong')
    msg = str(ei.value)
    assert 'refused user nova' in msg
    assert 'key file %s, password' % path in msg
    assert 'wrong' not in msg


def test_nothing_to_try():
    with pytest.raises(exceptions.AuthenticationFailed) as ei:
        _auth(FakeTransport())
    assert 'set [oslo_transfer_sftp] key_file' in str(ei.value)


def test_missing_key_file(tmp_path):
    with pytest.raises(exceptions.AuthenticationFailed) as ei:
        _auth(FakeTransport(), key_file=str(tmp_path / 'nope'))
    assert 'does not exist' in str(ei.value)


def test_encrypted_key_without_passphrase(keys, tmp_path):
    path = str(tmp_path / 'id_rsa')
    keys[0].write_private_key_file(path, password='kp')
    with pytest.raises(exceptions.AuthenticationFailed) as ei:
        _auth(FakeTransport(), key_file=path)
    assert 'key_passphrase' in str(ei.value)
    t = FakeTransport(accept=[keys[0].get_fingerprint()])
    _auth(t, key_file=path, passphrase='kp')
    assert t.authenticated


S = sftp_pipeline.StatusError


@pytest.mark.parametrize('exc,writing,lost,expected', [
    (S(2, 'No such file'), False, False, exceptions.SourceNotFound),
    (S(2, 'No such file'), True, False, exceptions.DestinationError),
    (S(3, 'Permission denied'), False, False, exceptions.PermissionDenied),
    (S(4, 'Failure'), True, False, exceptions.DestinationError),
    (S(4, 'Failure'), False, False, exceptions.ProtocolError),
    (S(7, 'Connection lost'), False, False, exceptions.ConnectionFailed),
    (FileNotFoundError(errno.ENOENT, 'x'), False, False,
     exceptions.SourceNotFound),
    (PermissionError(errno.EACCES, 'x'), True, False,
     exceptions.PermissionDenied),
    (OSError('Failure'), True, False, exceptions.DestinationError),
    (OSError('Socket is closed'), True, True, exceptions.ConnectionFailed),
    (paramiko.SSHException('Server connection dropped'), False, False,
     exceptions.ConnectionFailed),
    (paramiko.AuthenticationException('no'), False, False,
     exceptions.AuthenticationFailed),
    (socket.timeout('timed out'), False, False, exceptions.TransferTimeout),
    (EOFError(), False, False, exceptions.ConnectionFailed),
    (sftp_pipeline.ShortFile('ended'), False, False,
     exceptions.ProtocolError),
    (sftp_pipeline.PipelineError('bad id'), False, False,
     exceptions.ProtocolError),
])
def test_translate(exc, writing, lost, expected):
    err = sftp_session.translate(exc, LOC, 'read', writing=writing,
                                 connection_lost=lost)
    assert type(err) is expected
    assert err.url == 'sftp://nova:***@192.0.2.7:2222/var/disk'
    assert 'Pa55word' not in str(err)


def test_translate_masks_secrets_in_text():
    err = sftp_session.translate(OSError('bad Pa55word and kp-secret'),
                                 LOC, 'read', extra_secrets=['kp-secret'])
    assert 'Pa55word' not in str(err) and 'kp-secret' not in str(err)


def test_short_file_is_final():
    err = sftp_session.translate(sftp_pipeline.ShortFile('x'), LOC, 'read')
    assert not err.retryable


def test_chunk_pipe_behaves_like_buffered_pipe():
    """Random feeds and reads give the same bytes as paramiko's pipe."""
    import random

    from paramiko import buffered_pipe

    rnd = random.Random(7)
    ours, theirs = sftp_session._ChunkPipe(), buffered_pipe.BufferedPipe()
    fed = bytearray()
    got_ours, got_theirs = bytearray(), bytearray()
    for _ in range(2000):
        if rnd.random() < 0.5:
            data = bytes(rnd.getrandbits(8) for _ in range(rnd.randint(0,
                                                                       300)))
            ours.feed(data)
            theirs.feed(data)
            fed += data
        else:
            n = rnd.choice((1, 4, 9, 100, 1000, 1 << 20))
            if len(theirs) == 0:
                continue
            a, b = ours.read(n, 0.1), theirs.read(n, 0.1)
            assert a == b
            got_ours += a
            got_theirs += b
        assert len(ours) == len(theirs)
    got_ours += ours.empty()
    assert got_ours == fed
    ours.close()
    assert ours.read(10) == b''


def test_chunk_pipe_timeout():
    from paramiko import buffered_pipe

    with pytest.raises(buffered_pipe.PipeTimeout):
        sftp_session._ChunkPipe().read(10, 0.05)


def test_chunk_pipe_whole_reads_do_not_copy():
    pipe = sftp_session._ChunkPipe()
    data = b'x' * 100000
    pipe.feed(data)
    assert pipe.read(1 << 20) is data


def _counting_pipe():
    pipe = sftp_session._ChunkPipe()
    woken = []
    real = pipe._cv.notify_all

    def notify_all():
        woken.append(len(pipe._buffer))
        real()

    pipe._cv.notify_all = notify_all
    return pipe, woken


def test_chunk_pipe_wakes_the_reader_once_what_it_wants_is_there():
    pipe, woken = _counting_pipe()
    pipe.want = 100
    pipe._woken = time.monotonic() + 3600      # no periodic wake-up here
    for _ in range(5):
        pipe.feed(b'x' * 10)
    assert woken == []
    pipe.feed(b'y' * 60)
    assert woken == [110]
    assert pipe.read(1000) == b'x' * 50 + b'y' * 60


def test_chunk_pipe_wakes_for_every_packet_by_default():
    pipe, woken = _counting_pipe()
    for _ in range(3):
        pipe.feed(b'z')
    assert woken == [1, 2, 3]


def test_chunk_pipe_wakes_a_waiting_reader_periodically():
    # A slow server: bytes keep coming but fewer than wanted; the reader
    # still hears of them, so its timeout counts silence only.
    pipe, woken = _counting_pipe()
    pipe.want = 1 << 20
    pipe._woken = time.monotonic() - 2 * pipe.WAKE_INTERVAL
    pipe.feed(b'a' * 10)
    assert woken == [10]


def test_chunk_pipe_hands_out_pieces_without_joining():
    pipe = sftp_session._ChunkPipe()
    parts = [b'a' * 10, b'b' * 20, b'c' * 30]
    for p in parts:
        pipe.feed(p)
    assert pipe.read(5) == b'aaaaa'          # bytes for everyone else
    pipe.as_pieces = True
    got = pipe.read(30)
    assert len(got) == 30
    assert got.pieces[0] == b'a' * 5 and got.pieces[1] is parts[1]
    got = pipe.read(1000)
    assert len(got) == 25 and b''.join(got.pieces) == b'c' * 25


def test_transport_errors_are_debug_records(tmp_path, caplog):
    """A bad banner, raised by the driver anyway, is a DEBUG record.

    paramiko's transport thread logs it at ERROR with a traceback.
    """
    import logging
    import threading
    import types

    srv = socket.socket()
    srv.bind(('127.0.0.1', 0))
    srv.listen(1)

    def serve():
        conn, _ = srv.accept()
        conn.sendall(b'HTTP/1.1 400 not ssh\r\n' * 3)
        conn.close()

    threading.Thread(target=serve, daemon=True).start()
    opts = types.SimpleNamespace(
        known_hosts_file=str(tmp_path / 'known_hosts'), key_passphrase=None,
        allow_agent=False, look_for_keys=False, ciphers=[],
        window_size=2 ** 21)
    loc = locations.Location('sftp://127.0.0.1:%d/x' % srv.getsockname()[1])
    for level in (logging.INFO, logging.DEBUG):
        caplog.clear()
        caplog.set_level(level)
        with pytest.raises(Exception):
            sftp_session.connect(loc, 'root', None, None, 5.0, opts)
        ours = [r for r in caplog.records
                if r.name.startswith(sftp_session.TRANSPORT_LOG)]
        assert all(r.levelno == logging.DEBUG for r in ours), ours
        assert not [r for r in caplog.records if r.levelno >= logging.ERROR
                    and r.name.startswith('paramiko')]
        if level == logging.DEBUG:
            assert any('banner' in r.getMessage().lower() for r in ours)
        else:
            assert ours == []
        if level == logging.INFO:
            threading.Thread(target=serve, daemon=True).start()
    srv.close()
