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

"""SSH sessions for the ``sftp`` driver: host keys, login, errors.

This module imports paramiko; :mod:`.driver` imports it only when the driver
is first used.

* **Host keys are always checked** against ``known_hosts_file``, as
  OpenSSH's ``StrictHostKeyChecking=yes`` does: an unknown host and a
  changed key are both :class:`~oslo_transfer.exceptions.AuthenticationFailed`
  with a message that says which, and nothing is ever added to the file.
  Known key types are offered first in the key exchange, so that a host
  with several keys is checked against the one we know.
* Authentication tries, in order: the key file (the location's, else
  ``key_file``), the SSH agent (``allow_agent``), the default keys in
  ``~/.ssh`` (``look_for_keys``), and a password if the location or URL
  carries one.
* Each session is its own SSH connection (TCP, key exchange, one SFTP
  channel): parallel segments then run on separate server processes.
* paramiko's transport thread logs the errors it meets (a reset
  connection, a bad banner) at ERROR, with a traceback.  Every one of them
  also reaches the driver, which raises it (translated) or retries: our
  transports log to :data:`TRANSPORT_LOG`, where they are DEBUG records,
  so that a recovered error does not look like a failure in a service's
  log.
"""

import collections
import errno
import hashlib
import itertools
import logging
import os
import socket
import time

import paramiko
from paramiko import buffered_pipe
from paramiko import sftp as sftp_proto

from oslo_transfer._drivers.sftp import attrs as attrs_mod
from oslo_transfer._drivers.sftp import pipeline
from oslo_transfer import exceptions
from oslo_transfer import locations

LOG = logging.getLogger(__name__)

#: The log channel of our paramiko transports (below ``paramiko.transport``,
#: so an operator's settings for paramiko still apply).
TRANSPORT_LOG = 'paramiko.transport.oslo_transfer'


class _Demoted(logging.Filter):
    """ERROR records of our transports become DEBUG ones (see above)."""

    def filter(self, record):
        if record.levelno >= logging.ERROR:
            record.levelno, record.levelname = logging.DEBUG, 'DEBUG'
            return logging.getLogger(record.name).isEnabledFor(
                logging.DEBUG)
        return True


logging.getLogger(TRANSPORT_LOG).addFilter(_Demoted())

__all__ = ['Session', 'connect', 'translate',
           'host_key_name']

# Key types negotiated for a key of each type found in known_hosts.
_KEY_TYPES = {
    'ssh-rsa': ('rsa-sha2-512', 'rsa-sha2-256', 'ssh-rsa'),
}

_DEFAULT_KEYS = ('id_ed25519', 'id_ecdsa', 'id_rsa')

# Largest channel packet we accept.  OpenSSH then sends SFTP answers in
# fewer, larger packets than paramiko's default 32 KiB, which is less work
# per byte for paramiko's packet reader (the limit of SFTP speed here).
MAX_PACKET = 256 * 1024


def host_key_name(host: str, port: int) -> str:
    """The host's name in known_hosts: ``host`` or ``[host]:port``."""
    if port == 22:
        return host
    return '[%s]:%d' % (host, port)


class _Chunks:
    """Received bytes objects, queued as they arrived.

    Provides what ``BufferedPipe`` needs of its ``_buffer``: a length, the
    first bytes, dropping the first bytes.
    """

    def __init__(self):
        self.parts = collections.deque()
        self.head = 0           # bytes of parts[0] already consumed
        self.size = 0

    def __len__(self):
        return self.size

    def add(self, data):
        if data:
            self.parts.append(data)
            self.size += len(data)

    def peek(self, limit=None):
        """The first ``limit`` bytes (all by default), not removed."""
        if limit is None or limit > self.size:
            limit = self.size
        first = self.parts[0] if self.parts else b''
        if self.head == 0 and len(first) == limit:
            return first
        if len(first) - self.head >= limit:
            return first[self.head:self.head + limit]
        out = [memoryview(first)[self.head:]]
        n = len(out[0])
        for part in itertools.islice(self.parts, 1, None):
            take = memoryview(part)[:limit - n]
            out.append(take)
            n += len(take)
            if n >= limit:
                break
        return b''.join(out)

    def pieces(self, limit=None):
        """The first ``limit`` bytes as a list of bytes objects (no join).

        Only a part cut by ``limit`` or already partly consumed is
        sliced.
        """
        if limit is None or limit > self.size:
            limit = self.size
        out = []
        n = 0
        head = self.head
        for part in self.parts:
            if n >= limit:
                break
            take = min(len(part) - head, limit - n)
            if head == 0 and take == len(part):
                out.append(part)
            else:
                out.append(part[head:head + take])
            n += take
            head = 0
        return out

    def __delitem__(self, key):
        n = self.size if key.stop is None else min(key.stop, self.size)
        self.size -= n
        while n:
            left = len(self.parts[0]) - self.head
            if left <= n:
                self.parts.popleft()
                self.head = 0
                n -= left
            else:
                self.head += n
                n = 0


class _ChunkPipe(buffered_pipe.BufferedPipe):
    """paramiko's channel buffer without its byte-by-byte array.

    ``BufferedPipe`` copies every byte into an ``array`` as it arrives and
    out again (twice) when read, and moves the rest of the array on each
    read; at hundreds of MB/s that is most of the CPU a download costs.
    This keeps the received ``bytes`` objects as they are and hands them
    out whole when a read asks for everything buffered.  Only the two
    buffer methods change; locking, timeouts and close are paramiko's.
    """

    #: Wake a waiting reader at least this often while data arrives, so
    #: that a slow server never looks like a hung one.
    WAKE_INTERVAL = 0.1

    def __init__(self):
        super().__init__()
        self._buffer = _Chunks()
        #: Bytes the reader waits for (set by the SFTP pipeline while it
        #: waits for the rest of an answer; 1 otherwise).
        self.want = 1
        #: The next read returns :class:`Pieces` rather than ``bytes``
        #: (set by the SFTP pipeline around its own reads only).
        self.as_pieces = False
        self._woken = 0.0

    def feed(self, data):
        """paramiko's ``feed``, waking the reader only when it can go on.

        SSH packets are 32 to 64 KiB, an answer is 255 KiB: waking the
        reading thread for every packet costs a thread switch, lock
        traffic and a ``recv`` per packet.  A reader that said how many
        bytes it needs (``want``) is woken once they are here, or after
        ``WAKE_INTERVAL`` seconds.
        """
        with self._lock:
            if self._event is not None:
                self._event.set()
            self._buffer_frombytes(data)
            now = time.monotonic()
            if (len(self._buffer) >= self.want or
                    now - self._woken >= self.WAKE_INTERVAL):
                self._woken = now
                self._cv.notify_all()

    def _buffer_frombytes(self, data):
        self._buffer.add(bytes(data))

    def _buffer_tobytes(self, limit=None):
        if self.as_pieces:
            return Pieces(self._buffer.pieces(limit))
        return self._buffer.peek(limit)


class Pieces:
    """Received bytes handed out as they came, not joined into one.

    ``len()`` is the number of bytes (what paramiko's ``Channel.recv``
    needs for its window accounting); ``pieces`` the bytes objects.
    """

    __slots__ = ('pieces', 'size')

    def __init__(self, pieces):
        self.pieces = pieces
        self.size = sum(len(p) for p in pieces)

    def __len__(self):
        return self.size


def _fast_pipe_ok() -> bool:
    cls = buffered_pipe.BufferedPipe
    return all(hasattr(cls, m) for m in ('_buffer_frombytes',
                                         '_buffer_tobytes', 'read', 'feed'))


def open_sftp(transport, window_size, max_packet):
    """Open the SFTP channel (with the leaner buffer when possible)."""
    chan = transport.open_session(window_size=window_size,
                                  max_packet_size=max_packet)
    if _fast_pipe_ok():
        pipe = _ChunkPipe()
        if all(hasattr(pipe, a) for a in ('_lock', '_cv', '_event')):
            chan.in_buffer = pipe
    chan.invoke_subsystem('sftp')
    return _SFTPClient(chan)


class _SFTPClient(paramiko.SFTPClient):
    """paramiko's client, whose ``stat()`` parses with every length bounded.

    (See :mod:`.attrs`: paramiko's parser loops for as many extended
    attributes as the server claims.)
    """

    def stat(self, path):
        path = self._adjust_cwd(path)
        ptype, msg = self._request(sftp_proto.CMD_STAT, path)
        if ptype != sftp_proto.CMD_ATTRS:
            raise paramiko.SFTPError('Expected attributes')
        return attrs_mod.parse(msg.get_remainder())


class Session:
    """One SSH connection with an open SFTP channel.

    :ivar transport: the ``paramiko.Transport``.
    :ivar sftp: the ``paramiko.SFTPClient``.
    :ivar parked: a read that stopped at the end of its range with
        requests still in flight for the next one (see
        :class:`~oslo_transfer._drivers.sftp.pipeline.Reader`), or None.
        The driver drains it before the session serves anything else.
    """

    def __init__(self, transport, sftp):
        self.transport = transport
        self.sftp = sftp
        self.parked = None

    def set_timeout(self, timeout: float):
        self.sftp.get_channel().settimeout(timeout)

    def is_alive(self) -> bool:
        return self.transport.is_active()

    def close(self):
        """Close the connection; safe from another thread (cancel).

        A parked read's file is marked closed too (its CLOSE cannot be
        sent any more): otherwise paramiko sends it when the file is
        collected, on a dead channel, and at interpreter exit prints a
        traceback.
        """
        try:
            self.transport.close()
        except Exception:  # noqa: closing is best effort
            pass
        parked, self.parked = self.parked, None
        if parked is not None:
            try:
                parked.file.close()
            except Exception:  # noqa: the channel is closed already
                pass


def _offer_known_types(transport, known):
    """Put the key types we hold for the host first in the negotiation."""
    opts = transport.get_security_options()
    wanted = []
    for ktype in known.keys():
        wanted.extend(_KEY_TYPES.get(ktype, (ktype,)))
    available = list(opts.key_types)
    first = [k for k in wanted if k in available]
    if first:
        opts.key_types = first + [k for k in available if k not in first]


def _prefer_ciphers(transport, ciphers):
    opts = transport.get_security_options()
    available = list(opts.ciphers)
    first = [c for c in ciphers if c in available]
    if first:
        opts.ciphers = first + [c for c in available if c not in first]


def _fingerprint(key) -> str:
    import base64
    digest = hashlib.sha256(key.asbytes()).digest()
    return 'SHA256:' + base64.b64encode(digest).decode().rstrip('=')


def _load_known_hosts(path, location):
    keys = paramiko.HostKeys()
    try:
        keys.load(path)
    except FileNotFoundError:
        LOG.debug('known_hosts file %s does not exist', path)
    except (OSError, paramiko.SSHException) as exc:
        raise exceptions.AuthenticationFailed(
            '%s: cannot read the known_hosts file %s: %s'
            % (location.masked, path, exc), url=location.masked) from exc
    return keys


def check_host_key(transport, known, name, path, location):
    """Raise AuthenticationFailed unless the server's key is the known one."""
    key = transport.get_remote_server_key()
    ktype = key.get_name()
    url = location.masked
    if not known:
        raise exceptions.AuthenticationFailed(
            '%s: the host key of %s is unknown: %s has no entry for it.  '
            'Check the key\'s fingerprint (%s %s) with the host\'s '
            'administrator, then add it, e.g. "ssh-keyscan -t %s%s %s >> '
            '%s" ([oslo_transfer_sftp] known_hosts_file)'
            % (url, name, path, ktype, _fingerprint(key), ktype,
               '' if ':' not in name else ' -p %s' % name.rpartition(':')[2],
               name.split(']')[0].lstrip('['), path), url=url)
    expected = known.get(ktype)
    if expected is None:
        raise exceptions.AuthenticationFailed(
            '%s: the host key of %s may have CHANGED: the server offered a '
            '%s key (%s) but %s holds only %s keys for it; if the change '
            'is expected, remove the old entry ("ssh-keygen -R \'%s\' -f '
            '%s") and add the new key' % (url, name, ktype,
                                          _fingerprint(key), path,
                                          ', '.join(known.keys()), name,
                                          path), url=url)
    if expected != key:
        raise exceptions.AuthenticationFailed(
            '%s: the host key of %s has CHANGED (now %s %s): someone may be '
            'intercepting the connection, or the host was reinstalled.  '
            'Nothing was sent.  If the change is expected, remove the old '
            'key ("ssh-keygen -R \'%s\' -f %s") and add the new one'
            % (url, name, ktype, _fingerprint(key), name, path), url=url)


def _auth(transport, location, user, password, key_file, passphrase,
          allow_agent, look_for_keys):
    tried = []
    url = location.masked
    if isinstance(passphrase, str):
        # paramiko hands it to cryptography, which wants bytes.
        passphrase = passphrase.encode()

    def try_key(label, pkey):
        tried.append(label)
        try:
            transport.auth_publickey(user, pkey)
        except paramiko.AuthenticationException as exc:
            LOG.debug('%s: %s refused: %s', url, label, exc)
        return transport.is_authenticated()

    if key_file:
        path = os.path.expanduser(key_file)
        try:
            pkey = paramiko.PKey.from_path(path, passphrase)
        except FileNotFoundError as exc:
            raise exceptions.AuthenticationFailed(
                '%s: the key file %s does not exist' % (url, path),
                url=url) from exc
        except (paramiko.PasswordRequiredException, TypeError) as exc:
            # paramiko raises TypeError for an encrypted PEM key without
            # a passphrase.
            raise exceptions.AuthenticationFailed(
                '%s: the key file %s is encrypted; set [oslo_transfer_sftp] '
                'key_passphrase' % (url, path), url=url) from exc
        except (OSError, ValueError, paramiko.SSHException) as exc:
            raise exceptions.AuthenticationFailed(
                '%s: cannot load the key file %s: %s' % (url, path, exc),
                url=url) from exc
        if try_key('key file %s' % path, pkey):
            return
    if allow_agent:
        agent = paramiko.Agent()
        try:
            for pkey in agent.get_keys():
                if try_key('agent key %s' % _fingerprint(pkey), pkey):
                    return
        finally:
            agent.close()
    if look_for_keys:
        for name in _DEFAULT_KEYS:
            path = os.path.expanduser('~/.ssh/%s' % name)
            if not os.path.exists(path):
                continue
            try:
                pkey = paramiko.PKey.from_path(path, passphrase)
            except (OSError, ValueError, paramiko.SSHException) as exc:
                LOG.debug('skipping %s: %s', path, exc)
                continue
            if try_key('key file %s' % path, pkey):
                return
    if password:
        tried.append('password')
        try:
            transport.auth_password(user, password)
        except paramiko.AuthenticationException as exc:
            LOG.debug('%s: password refused: %s', url, exc)
        if transport.is_authenticated():
            return
    raise exceptions.AuthenticationFailed(
        '%s: the server refused user %s (tried: %s)'
        % (url, user, ', '.join(tried) or 'nothing: set [oslo_transfer_sftp] '
           'key_file or give a password'), url=url)


def connect(location, user, password, key_file, timeout, options,
            cancel=None) -> Session:
    """Open, check the host key, authenticate and start SFTP.

    :param options: the driver's option group (known_hosts_file,
        key_passphrase, allow_agent, look_for_keys, ciphers, window_size).
    :param cancel: the call's token (which ``total_timeout`` cancels too):
        a cancel shuts the socket down, so that a server that trickles
        its banner or its key exchange (each line within the timeout)
        cannot hold the login for longer than the call may run.
    """
    p = location.parts()
    host, port = p.hostname, p.port or 22
    if not host:
        raise exceptions.InvalidLocation('%s has no host' % location.masked,
                                         url=location.masked)
    name = host_key_name(host, port)
    known_path = os.path.expanduser(options.known_hosts_file)
    known = _load_known_hosts(known_path, location).lookup(name)
    sock = socket.create_connection((host, port), timeout)
    transport = None
    key = cancel.on_cancel(lambda: _shutdown(sock)) if cancel else None
    try:
        sock.settimeout(timeout)
        transport = paramiko.Transport(
            sock, default_window_size=options.window_size,
            default_max_packet_size=MAX_PACKET)
        transport.set_log_channel(TRANSPORT_LOG)
        transport.banner_timeout = timeout
        transport.auth_timeout = timeout
        _prefer_ciphers(transport, options.ciphers)
        if known:
            _offer_known_types(transport, known)
        transport.start_client(timeout=timeout)
        if not getattr(transport, 'initial_kex_done', True):
            # start_client() returns at its timeout without raising; the
            # next call would fail as "No existing session".
            raise exceptions.TransferTimeout(
                '%s: no SSH handshake within %.1fs (the server accepted the '
                'connection but did not answer)' % (location.masked,
                                                    timeout),
                url=location.masked)
        check_host_key(transport, known, name, known_path, location)
        _auth(transport, location, user, password, key_file,
              options.key_passphrase, options.allow_agent,
              options.look_for_keys)
        try:
            sftp = open_sftp(transport, options.window_size, MAX_PACKET)
        except paramiko.SSHException as exc:
            raise exceptions.ConnectionFailed(
                '%s: the server refused the sftp subsystem: %s'
                % (location.masked, exc), url=location.masked) from exc
        session = Session(transport, sftp)
        session.set_timeout(timeout)
        if cancel is not None:
            cancel.check()
    except BaseException:
        if transport is not None:
            transport.close()
        sock.close()
        raise
    finally:
        if key is not None:
            cancel.remove(key)
    LOG.debug('%s: connected as %s (cipher %s)', location.masked, user,
              transport.remote_cipher)
    return session


def _shutdown(sock):
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


def _secrets(location, extra):
    creds = location.effective_credentials()
    out = [creds.password] + list(extra)
    if location.credentials is not None:
        out.append(location.credentials.password)
    return [s for s in out if s]


def translate(exc, location, what, writing=False, cancel=None,
              extra_secrets=(), connection_lost=False):
    """Map a paramiko/socket/SFTP error to an :mod:`exceptions` instance.

    :param connection_lost: the SSH connection is no longer active; an
        error without a clearer cause is then ``ConnectionFailed``
        (paramiko reports a closed channel as a bare ``OSError``, like an
        SFTP failure status).
    """
    url = location.masked
    if cancel is not None and cancel.cancelled:
        return exceptions.Cancelled(cancel.reason or 'cancelled', url=url)
    if isinstance(exc, exceptions.TransferError):
        return exc
    text = locations.mask_text(str(exc) or type(exc).__name__,
                               _secrets(location, extra_secrets))
    msg = '%s: %s failed: %s' % (url, what, text)
    if connection_lost and not isinstance(
            exc, (paramiko.AuthenticationException, pipeline.StatusError,
                  pipeline.ShortFile)):
        return exceptions.ConnectionFailed(
            '%s: the connection was lost during %s: %s' % (url, what, text),
            url=url)
    if isinstance(exc, paramiko.BadHostKeyException):
        return exceptions.AuthenticationFailed(
            '%s: the host key has CHANGED: %s' % (url, text), url=url)
    if isinstance(exc, paramiko.AuthenticationException):
        return exceptions.AuthenticationFailed(msg, url=url)
    if isinstance(exc, pipeline.StatusError):
        return _status(exc.code, msg, url, writing)
    if isinstance(exc, pipeline.PipelineError):
        return exceptions.ProtocolError(msg, url=url, retryable=False)
    if isinstance(exc, pipeline.ShortFile):
        return exceptions.ProtocolError(
            '%s: %s (did the file shrink?)' % (url, text), url=url,
            retryable=False)
    if isinstance(exc, (socket.timeout, TimeoutError)):
        return exceptions.TransferTimeout('%s: %s timed out' % (url, what),
                                          url=url)
    if isinstance(exc, paramiko.SSHException) and isinstance(
            exc.__cause__ or exc.__context__, (socket.timeout, TimeoutError)):
        # paramiko's banner reader wraps the socket's timeout
        return exceptions.TransferTimeout('%s: %s timed out: %s'
                                          % (url, what, text), url=url)
    if isinstance(exc, (paramiko.SSHException, EOFError)):
        return exceptions.ConnectionFailed(msg, url=url)
    if isinstance(exc, OSError):
        code = exc.errno
        if code == errno.ENOENT:
            if writing:
                return exceptions.DestinationError(
                    '%s: the directory does not exist (%s)' % (url, text),
                    url=url)
            return exceptions.SourceNotFound('%s does not exist' % url,
                                             url=url)
        if code in (errno.EACCES, errno.EPERM):
            return exceptions.PermissionDenied(
                '%s: permission denied (%s)' % (url, what), url=url)
        if code is None and not isinstance(exc, ConnectionError):
            # An SFTP status without errno (SSH_FX_FAILURE, ...).
            if writing:
                return exceptions.DestinationError(
                    '%s: the server could not write (disk full or quota?): '
                    '%s' % (url, text), url=url)
            return exceptions.ProtocolError(msg, url=url, retryable=False)
        return exceptions.ConnectionFailed(msg, url=url)
    return exceptions.ProtocolError(msg, url=url, retryable=False)


def _status(code, msg, url, writing):
    if code == sftp_proto.SFTP_NO_SUCH_FILE:
        if writing:
            return exceptions.DestinationError(msg, url=url)
        return exceptions.SourceNotFound(msg, url=url)
    if code == sftp_proto.SFTP_PERMISSION_DENIED:
        return exceptions.PermissionDenied(msg, url=url)
    if code in (sftp_proto.SFTP_NO_CONNECTION,
                sftp_proto.SFTP_CONNECTION_LOST):
        return exceptions.ConnectionFailed(msg, url=url)
    if code == sftp_proto.SFTP_FAILURE and writing:
        return exceptions.DestinationError(
            '%s (disk full or quota?)' % msg, url=url)
    return exceptions.ProtocolError(msg, url=url, retryable=False)
