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

"""FTP paths, replies, passive mode and error translation (no network)."""

import ftplib
import socket
import ssl

import pytest

from oslo_transfer._drivers.ftp import session as ftp_session
from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions
from oslo_transfer import locations

LOC = locations.Location('ftp://alice:S3cret%21@192.0.2.5:2121/dir/f.img')


@pytest.mark.parametrize('url,path', [
    ('ftp://h/f', 'f'),
    ('ftp://h/dir/sub/f.img', 'dir/sub/f.img'),
    ('ftp://h/%2Fsrv/images/f', '/srv/images/f'),
    ('ftp://h//srv/f', '/srv/f'),
    ('ftp://h/a%20b', 'a b'),
])
def test_remote_path(url, path):
    assert ftp_session.remote_path(locations.Location(url)) == path


@pytest.mark.parametrize('url', ['ftp://h/', 'ftp://h', 'ftp://h/dir/',
                                 'ftp://h/a%0D%0ADELE%20x'])
def test_remote_path_refused(url):
    with pytest.raises(exceptions.InvalidLocation):
        ftp_session.remote_path(locations.Location(url))


class FakeControl(ftp_session._ClientMixin):
    """What makepasv needs: the peer of the control socket and replies."""

    def __init__(self, replies):
        self.replies = replies
        self.sent = []
        self.sock = self

    def getpeername(self):
        return ('127.0.0.1', 21)

    def sendcmd(self, cmd):
        self.sent.append(cmd)
        reply = self.replies[cmd]
        if isinstance(reply, Exception):
            raise reply
        return reply


def test_epsv_first():
    ctl = FakeControl({'EPSV': '229 Entering Extended Passive Mode '
                               '(|||6446|)'})
    assert ctl.makepasv() == ('127.0.0.1', 6446)
    assert ctl.sent == ['EPSV']


def test_pasv_address_is_never_followed():
    """The 227 reply names 10.0.0.9; the data goes to the control peer."""
    ctl = FakeControl({
        'EPSV': ftplib.error_perm('500 EPSV not understood'),
        'PASV': '227 Entering Passive Mode (10,0,0,9,4,1)'})
    assert ctl.makepasv() == ('127.0.0.1', 1025)
    # EPSV is not asked again on this connection.
    assert ctl.makepasv() == ('127.0.0.1', 1025)
    assert ctl.sent == ['EPSV', 'PASV', 'PASV']


def _err(cls, text):
    return cls(text)


@pytest.mark.parametrize('exc,writing,expected', [
    (ftplib.error_perm('530 Login incorrect.'), False,
     exceptions.AuthenticationFailed),
    (ftplib.error_perm('550 No such file or directory.'), False,
     exceptions.SourceNotFound),
    (ftplib.error_perm('550 Permission denied.'), False,
     exceptions.PermissionDenied),
    (ftplib.error_perm('550 Failed to open file.'), False,
     exceptions.SourceNotFound),
    (ftplib.error_perm('550 Failed to open file.'), True,
     exceptions.PermissionDenied),
    (ftplib.error_perm('553 Could not create file.'), True,
     exceptions.PermissionDenied),
    (ftplib.error_perm('552 Exceeded storage allocation.'), True,
     exceptions.DestinationError),
    (ftplib.error_temp('452 Insufficient storage space.'), True,
     exceptions.DestinationError),
    (ftplib.error_temp('451 Failure writing to local file.'), True,
     exceptions.DestinationError),
    (ftplib.error_temp('451 Requested action aborted.'), False,
     exceptions.ProtocolError),
    (ftplib.error_temp('421 Timeout.'), False, exceptions.ConnectionFailed),
    (ftplib.error_perm('500 Unknown command.'), False,
     exceptions.ProtocolError),
    (socket.timeout('timed out'), False, exceptions.TransferTimeout),
    (ConnectionResetError(104, 'Connection reset by peer'), False,
     exceptions.ConnectionFailed),
    (EOFError(), False, exceptions.ConnectionFailed),
    (ssl.SSLCertVerificationError('certificate verify failed'), False,
     exceptions.AuthenticationFailed),
])
def test_translate(exc, writing, expected):
    err = ftp_session.translate(exc, LOC, 'RETR', writing=writing)
    assert type(err) is expected
    assert err.url == 'ftp://alice:***@192.0.2.5:2121/dir/f.img'
    assert 'S3cret' not in str(err)


def test_retryable_flags():
    assert ftp_session.translate(ftplib.error_temp('450 busy'), LOC,
                                 'RETR').retryable
    assert not ftp_session.translate(ftplib.error_perm('501 no'), LOC,
                                     'RETR').retryable
    assert ftp_session.translate(OSError('x'), LOC, 'RETR').retryable


def test_secrets_are_masked_in_server_text():
    """A server that echoes the password back does not leak it."""
    exc = ftplib.error_perm('530 password S3cret! is wrong')
    err = ftp_session.translate(exc, LOC, 'login',
                                extra_secrets=['conf-secret'])
    assert 'S3cret!' not in str(err)
    exc = ftplib.error_perm('530 conf-secret is wrong')
    err = ftp_session.translate(exc, LOC, 'login',
                                extra_secrets=['conf-secret'])
    assert 'conf-secret' not in str(err)


def test_certificate_message_names_the_option():
    err = ftp_session.translate(ssl.SSLCertVerificationError('bad'), LOC,
                                'login')
    assert '[oslo_transfer_ftp] ca_file' in str(err)


def test_cancelled_wins():
    token = driver_mod.CancelToken()
    token.cancel('stop')
    err = ftp_session.translate(OSError('Bad file descriptor'), LOC, 'RETR',
                                cancel=token)
    assert isinstance(err, exceptions.Cancelled)


def test_tls_context_verifies():
    ctx = ftp_session.tls_context(None)
    assert ctx.verify_mode == ssl.CERT_REQUIRED
    assert ctx.check_hostname
