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

"""FTP sessions for the ``ftp`` driver: login, passive mode, TLS, errors.

* **Passive mode never follows the server's address.**  ``EPSV`` is tried
  first (it carries only a port); when the server refuses it, ``PASV`` is
  used and the address in its 227 reply is ignored: the data connection
  goes to the address of the control connection's peer.  A server (or a
  man in the middle) cannot make us connect anywhere else.
* **Explicit FTPS** (``ftps://``): ``AUTH TLS`` before the login, ``PROT P``
  for data connections, certificates and host names verified against the
  system store or ``ca_file``.  Data connections reuse the control
  connection's TLS session (vsftpd requires it by default).
* Every ``ftplib`` error is translated into :mod:`oslo_transfer.exceptions`
  by :func:`translate`, with the URL masked and secrets removed from the
  server's text.
"""

import ftplib
import logging
import socket
import ssl
import urllib.parse

from oslo_transfer._drivers import _common
from oslo_transfer._drivers.ftp import replies
from oslo_transfer import exceptions
from oslo_transfer import locations

LOG = logging.getLogger(__name__)

__all__ = ['Session', 'connect', 'translate', 'remote_path', 'FTPReplyError',
           'RestRefused']

ANONYMOUS = ('anonymous', 'anonymous@')

# Replies whose text says the object is absent, or that access is refused.
_MISSING_WORDS = ('no such file', 'not found', 'does not exist',
                  'no such directory', "doesn't exist", 'not exist')
_DENIED_WORDS = ('permission', 'denied', 'not allowed', 'access',
                 'forbidden', 'read-only', 'read only')
_SPACE_WORDS = ('space', 'quota', 'disk full', 'storage', 'exceeded',
                'failure writing', 'write error', 'error writing')


class FTPReplyError(Exception):
    """An unexpected reply that ftplib did not turn into an exception."""


def remote_path(location) -> str:
    """The path to send to the server for ``location``.

    As in RFC 1738 (and curl), the path of ``ftp://host/dir/file`` is
    relative to the login directory: ``dir/file``.  An absolute path is
    written with an encoded slash: ``ftp://host/%2Fsrv/file`` is
    ``/srv/file``.
    """
    path = location.parts().path
    if path.startswith('/'):
        path = path[1:]
    path = urllib.parse.unquote(path)
    if not path or path.endswith('/'):
        raise exceptions.InvalidLocation(
            '%s does not name a file' % location.masked,
            url=location.masked)
    if '\r' in path or '\n' in path:
        raise exceptions.InvalidLocation(
            '%s: a path must not contain line breaks' % location.masked,
            url=location.masked)
    return path


class RestRefused(Exception):
    """The server refused ``REST`` (no ranged reads or resumed writes)."""


class _ClientMixin:
    """What our FTP clients change in ftplib's.

    * Passive data connections only, to the control connection's peer:
      ``EPSV`` first; ``PASV`` only with the control connection's peer
      address, whatever the 227 reply announces.
    * Replies are read as UTF-8 with undecodable bytes replaced (a
      Latin-1 banner raised ``UnicodeDecodeError`` in ftplib), and a
      multi-line reply is bounded (:class:`.replies.Lines`).
    * Numbers in replies are parsed by :mod:`.replies`.
    """

    #: set False after the server refused EPSV once
    epsv_ok = True

    #: set by :func:`connect`'s cancel before the socket existed
    aborted = False

    #: ``SO_RCVBUF`` of the data connections (the call's
    #: ``ctx.receive_buffer``); None: the kernel's autotuning
    receive_buffer = None

    def connect(self, host: str, port: int, timeout: float) -> str:
        """Connect and read the banner (as ftplib's, but tolerant text)."""
        self.host, self.port, self.timeout = host, port, timeout
        self.sock = socket.create_connection((host, port), timeout)
        if self.aborted:
            _shutdown_socket(self.sock)
        self.af = self.sock.family
        self._text_replies()
        self.welcome = self.getresp()
        return self.welcome

    def _text_replies(self):
        # ftplib reads replies through a text file of the socket, decoding
        # strictly; commands still go out as UTF-8 (self.encoding).
        self.file = self.sock.makefile('r', encoding=self.encoding,
                                       errors='replace')

    def getmultiline(self):
        first = self.getline()
        if first[3:4] != '-':
            return first
        reply = replies.Lines(first)
        while True:
            line = self.getline()
            reply.add(line)
            if line[:3] == first[:3] and line[3:4] != '-':
                return reply.text()

    def makepasv(self):
        peer = self.sock.getpeername()
        if self.epsv_ok:
            try:
                resp = self.sendcmd('EPSV')
            except ftplib.error_perm as exc:
                LOG.debug('EPSV refused (%s); using PASV', exc)
                self.epsv_ok = False
            else:
                return peer[0], replies.epsv_port(resp)
        announced, port = replies.pasv(self.sendcmd('PASV'))
        if announced != peer[0]:
            LOG.debug('the server announced %s in its PASV reply; '
                      'connecting to its control address %s instead',
                      announced, peer[0])
        return peer[0], port

    def ntransfercmd(self, cmd, rest=None):
        """Open a passive data connection and send ``cmd``.

        :raises RestRefused: ``REST rest`` was refused.
        :returns: ``(socket, size or None)``.
        """
        host, port = self.makepasv()
        conn = _common.create_connection((host, port), self.timeout,
                                         self.receive_buffer)
        try:
            if rest:
                try:
                    self.sendcmd('REST %d' % rest)
                except ftplib.error_perm as exc:
                    raise RestRefused(str(exc)) from exc
            resp = self.sendcmd(cmd)
            if resp[0] == '2':
                resp = self.getresp()
            if resp[0] != '1':
                raise ftplib.error_reply(resp)
            conn = self._wrap_data(conn)
        except BaseException:
            conn.close()
            raise
        return conn, replies.size_150(resp)

    def _wrap_data(self, conn):
        return conn


class _FTP(_ClientMixin, ftplib.FTP):
    tls = False


class _FTPTLS(_ClientMixin, ftplib.FTP_TLS):
    tls = True

    def auth(self):
        resp = super().auth()
        self._text_replies()    # ftplib made a strict one for the TLS socket
        return resp

    def _wrap_data(self, conn):
        # The data connection resumes the control connection's TLS
        # session, which vsftpd requires (require_ssl_reuse=YES) and which
        # ties the two connections together.
        if not self._prot_p:
            return conn
        return self.context.wrap_socket(conn, server_hostname=self.host,
                                        session=self.sock.session)


class Session:
    """One logged-in control connection and what we learnt about it.

    :ivar ftp: the ``ftplib.FTP`` object.
    :ivar features: upper-case FEAT lines (``{'REST STREAM', 'SIZE', ...}``).
    """

    def __init__(self, ftp, features):
        self.ftp = ftp
        self.features = features

    @property
    def supports_rest(self) -> bool:
        return any(f.startswith('REST') for f in self.features)

    def close(self):
        try:
            self.ftp.close()
        except Exception:  # noqa: closing is best effort
            pass

    def is_alive(self) -> bool:
        try:
            self.ftp.voidcmd('NOOP')
            return True
        except (ftplib.Error, OSError, EOFError):
            return False

    def abort_sockets(self):
        """Shut the control socket down (cancel from another thread)."""
        _abort(self.ftp)


def _shutdown_socket(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _abort(ftp):
    """Shut ``ftp``'s control socket down, now or as soon as it exists."""
    ftp.aborted = True
    sock = ftp.sock
    if sock is not None:
        _shutdown_socket(sock)


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """A client context that verifies certificates and host names."""
    ctx = ssl.create_default_context(cafile=ca_file or None)
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def connect(location, username, password, timeout: float,
            ca_file: str | None = None, cancel=None) -> Session:
    """Open, secure (``ftps``) and log in; binary mode; read FEAT.

    ``username=None`` logs in anonymously.  A cancel of ``cancel`` (the
    call's token, which the deadline cancels too) shuts the control
    socket down, so that a banner or a reply trickled line by line cannot
    hold the login for longer than the call may run.
    """
    p = location.parts()
    host, port = p.hostname, p.port or 21
    if not host:
        raise exceptions.InvalidLocation('%s has no host' % location.masked,
                                         url=location.masked)
    if location.scheme == 'ftps':
        ftp = _FTPTLS(context=tls_context(ca_file), timeout=timeout)
    else:
        ftp = _FTP(timeout=timeout)
    user, pwd = (username, password or '') if username else ANONYMOUS
    key = cancel.on_cancel(lambda: _abort(ftp)) if cancel else None
    try:
        ftp.connect(host, port, timeout=timeout)
        if ftp.tls:
            ftp.auth()
        ftp.login(user, pwd)
        if ftp.tls:
            ftp.prot_p()
        ftp.voidcmd('TYPE I')
        features = _features(ftp)
    except BaseException:
        try:
            ftp.close()
        except Exception:  # noqa: the first error is the one to report
            pass
        raise
    finally:
        if key is not None:
            cancel.remove(key)
    if cancel is not None and cancel.cancelled:
        ftp.close()
        cancel.check()
    LOG.debug('logged in to %s as %s (features: %s)', location.masked,
              user, ', '.join(sorted(features)))
    return Session(ftp, features)


def _features(ftp) -> set:
    try:
        resp = ftp.sendcmd('FEAT')
    except ftplib.error_perm:
        return set()
    return replies.features(resp)


def reply_code(exc) -> int | None:
    """The 3-digit reply code of an ftplib error, if any."""
    return replies.code(str(exc))


def _secrets(location):
    creds = location.effective_credentials()
    secrets = [creds.password]
    if location.credentials is not None:
        secrets.append(location.credentials.password)
    return [s for s in secrets if s]


def clean(exc, location, extra_secrets=()) -> str:
    """The text of ``exc`` with every secret of ``location`` masked."""
    text = str(exc) or type(exc).__name__
    secrets = _secrets(location) + [s for s in extra_secrets if s]
    text = locations.mask_text(text, secrets)
    return locations.mask_text(
        text, [urllib.parse.quote(s, safe='') for s in secrets])


def classify_550(text: str, writing: bool):
    """SourceNotFound or PermissionDenied for an ambiguous 550 reply."""
    low = text.lower()
    if any(w in low for w in _MISSING_WORDS):
        return exceptions.SourceNotFound
    if any(w in low for w in _DENIED_WORDS):
        return exceptions.PermissionDenied
    return exceptions.PermissionDenied if writing else None


def translate(exc, location, what: str, writing: bool = False,
              cancel=None, extra_secrets=()):
    """Map an ftplib/socket/ssl error to an :mod:`exceptions` instance.

    :param what: the operation, for the message (``"RETR"``, ``"login"``).
    :param writing: the operation writes (an ambiguous 550 then means
        "permission denied" rather than "not found").
    :param cancel: the transfer's CancelToken; a socket error after a
        cancel becomes ``Cancelled``.
    """
    url = location.masked
    text = clean(exc, location, extra_secrets)
    if cancel is not None and cancel.cancelled:
        return exceptions.Cancelled(cancel.reason or 'cancelled', url=url)
    if isinstance(exc, exceptions.TransferError):
        return exc
    msg = '%s: %s failed: %s' % (url, what, text)
    if isinstance(exc, replies.ReplyError):
        return exceptions.ProtocolError(msg, url=url, retryable=False)
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exceptions.AuthenticationFailed(
            '%s: TLS certificate verification failed (set '
            '[oslo_transfer_ftp] ca_file to the CA that signed the '
            'server certificate): %s' % (url, text), url=url)
    if isinstance(exc, ssl.SSLError):
        return exceptions.ConnectionFailed('%s: TLS error during %s: %s'
                                           % (url, what, text), url=url)
    if isinstance(exc, ftplib.Error):
        code = reply_code(exc)
        if code == 530:
            return exceptions.AuthenticationFailed(
                '%s: the server refused the login: %s' % (url, text),
                url=url)
        full = exceptions.DestinationError(
            '%s: the server cannot store the data (disk full or over '
            'quota?): %s' % (url, text), url=url)
        if code in (552, 452):
            return full
        if code == 550:
            cls = classify_550(text, writing)
            if cls is None:
                cls = exceptions.SourceNotFound
            return cls(msg, url=url)
        if code == 553:
            return exceptions.PermissionDenied(msg, url=url)
        if code in (451, 426) and writing and any(w in text.lower()
                                                  for w in _SPACE_WORDS):
            return full
        if code == 421:
            return exceptions.ConnectionFailed(msg, url=url)
        if code is not None and 400 <= code < 500:
            return exceptions.ProtocolError(msg, url=url, retryable=True)
        return exceptions.ProtocolError(msg, url=url, retryable=False)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return exceptions.TransferTimeout('%s: %s timed out' % (url, what),
                                          url=url)
    if isinstance(exc, (OSError, EOFError, FTPReplyError)):
        return exceptions.ConnectionFailed(msg, url=url)
    return exceptions.ProtocolError(msg, url=url, retryable=False)
