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

"""FTP and explicit FTPS with ftplib: ranged reads, resumable uploads.

* ``stat``: ``SIZE`` and ``MDTM``; the validator is both together.
* ``read``: ``REST offset`` + ``RETR``; a ranged read stops after ``length``
  bytes, closes the data connection and reads the server's final reply, so
  the control connection stays usable.  Control connections are pooled per
  login (:mod:`.._common`); parallel segments each lease their own.
  ``stat`` caps the segments at ``max_segments`` (1 by default: one FTP
  stream is as fast as the server goes, each extra segment costs a login).
* ``write``: ``STOR`` into ``NAME.part`` and ``RNFR``/``RNTO`` onto
  ``NAME`` on commit (``stage_uploads``, the default: the object appears
  whole or not at all), or ``STOR`` in place.  An interrupted upload
  continues at the server's ``SIZE`` with ``REST`` + ``STOR`` (``APPE``
  when the server refuses ``REST`` for uploads).
* Paths are relative to the login directory as in RFC 1738:
  ``ftp://host/dir/f`` is ``dir/f``; ``ftp://host/%2Fsrv/f`` is ``/srv/f``.
* Passive mode only; the data connection always goes to the control
  connection's peer (see :mod:`.session`).
"""

import ftplib
import hashlib
import logging
import socket
import ssl

from oslo_config import cfg

from oslo_transfer._drivers import _common
from oslo_transfer._drivers.ftp import replies
from oslo_transfer._drivers.ftp import session as ftp_session
from oslo_transfer import _utils
from oslo_transfer import driver
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

Cap = driver.Capability

OPTS = [
    cfg.StrOpt('username',
               help='User name for FTP servers when neither the location '
                    'nor the URL names one.  Unset logs in anonymously.'
                    '\n\nRelated options:\n\n* password'),
    cfg.StrOpt('password', secret=True,
               help='Password that goes with "username".  Credentials of a '
                    'Location win, then the URL\'s user:password@, then '
                    'these options.\n\nRelated options:\n\n* username'),
    cfg.StrOpt('ca_file',
               help='CA bundle (PEM) that verifies ftps:// servers instead '
                    'of the system store.  Certificates and host names are '
                    'always verified.'),
    cfg.BoolOpt('stage_uploads', default=True,
                help='Upload into NAME.part and rename it to NAME '
                     '(RNFR/RNTO) once the data is complete and verified, '
                     'so that readers never see a partial object.  Turn off '
                     'for servers that refuse renames; uploads then write '
                     'NAME in place.'),
    _utils.IntOpt('pool_size', default=4, min=0, max=4096,
                  help='Idle logged-in control connections kept per server '
                       'and user for reuse.\n\nRelated options:\n\n'
                       '* [oslo_transfer] max_connections_per_origin'),
    _utils.FiniteFloatOpt(
        'idle_timeout', default=30.0, min=0.0, max=_utils.MAX_SECONDS,
        help='Seconds an idle pooled connection is kept.'),
    _common.max_segments_opt(
        'Most parallel ranged segments (each its own login, REST and '
        'RETR) for one download from an FTP server.  A server such as '
        'vsftpd sends one stream as fast as the disk and network allow, '
        'so extra segments only add logins, server connection slots and '
        'memory (on loopback 4 segments were no faster than 1).  Raise it '
        'for servers or links that cap the rate of each connection.',
        'stream', ('[oslo_transfer] max_connections_per_origin', 'pool_size')),
]

PART_SUFFIX = '.part'


def _close_quietly(conn):
    if conn is None:
        return
    try:
        conn.close()
    except OSError:
        pass


def _shutdown(conn):
    if conn is None:
        return
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


class _DataError(Exception):
    """Carries an exception raised by the caller's chunks through write()."""

    def __init__(self, error):
        super().__init__(str(error))
        self.error = error


class FTPDriver(driver.Driver):
    """``ftp://`` and ``ftps://`` (explicit TLS) with ftplib."""

    name = 'ftp'
    schemes = ('ftp', 'ftps')
    capabilities = (Cap.READ | Cap.WRITE | Cap.RANGED_READ |
                    Cap.RESUMABLE_WRITE | Cap.ATOMIC_COMMIT)

    def __init__(self, conf):
        super().__init__(conf)
        opts = self.options
        if not opts.stage_uploads:
            self.capabilities = type(self).capabilities & ~Cap.ATOMIC_COMMIT
        self._pool = _common.SessionPool(
            close=lambda s: s.close(), is_alive=lambda s: s.is_alive(),
            max_idle=opts.pool_size, max_idle_seconds=opts.idle_timeout)

    @classmethod
    def list_opts(cls):
        return OPTS

    # -- sessions -----------------------------------------------------------

    def _login(self, location):
        o = self.options
        creds = location.effective_credentials(username=o.username,
                                               password=o.password)
        return creds.username, creds.password

    def _key(self, location, user, password):
        p = location.parts()
        digest = hashlib.sha256((password or '').encode()).hexdigest()
        return (location.scheme, p.hostname, p.port or 21, user, digest)

    def _translate(self, exc, location, what, ctx, writing=False):
        return ftp_session.translate(exc, location, what, writing=writing,
                                     cancel=ctx.cancel,
                                     extra_secrets=[self.options.password])

    def _acquire(self, location, ctx):
        """Lease a logged-in session; returns ``(key, session)``."""
        user, password = self._login(location)
        key = self._key(location, user, password)
        timeout = ctx.timeout()

        def factory():
            return ftp_session.connect(location, user, password, timeout,
                                       self.options.ca_file,
                                       cancel=ctx.cancel)

        ctx.cancel.check()
        try:
            session = self._pool.acquire(key, factory)
        except (ftplib.Error, OSError, EOFError) as exc:
            raise self._translate(exc, location, 'login', ctx) from exc
        session.ftp.timeout = timeout
        # (Each transfer opens its own data connection: the call's class
        # sets the receive buffer of the ones it opens.)
        session.ftp.receive_buffer = ctx.receive_buffer
        if session.ftp.sock is not None:
            session.ftp.sock.settimeout(timeout)
        return key, session

    def _release(self, key, session, ctx):
        """Give ``session`` back, unless a cancel may have shut it down."""
        if ctx.cancel.cancelled:
            self._pool.discard(session)
        else:
            self._pool.release(key, session)

    def _missing_or_denied(self, session, location, path, exc, what, ctx):
        """Tell "not found" from "permission denied" after a 550."""
        err = self._translate(exc, location, what, ctx)
        text = ftp_session.clean(exc, location)
        if ftp_session.classify_550(text, writing=False) is not None:
            return err
        if self._exists(session, path):
            return exceptions.PermissionDenied(
                '%s: permission denied (%s)' % (location.masked, text),
                url=location.masked)
        return exceptions.SourceNotFound(
            '%s does not exist (%s)' % (location.masked, text),
            url=location.masked)

    @staticmethod
    def _exists(session, path) -> bool:
        ftp = session.ftp
        try:
            if 'MLST' in {f.split()[0] for f in session.features}:
                ftp.sendcmd('MLST ' + path)
                return True
            names = ftp.nlst(path)
        except (ftplib.Error, OSError, EOFError):
            return False
        base = path.rstrip('/').rpartition('/')[2]
        return any(n.rstrip('/').rpartition('/')[2] == base for n in names)

    # -- stat ---------------------------------------------------------------

    def stat(self, location, ctx):
        path = ftp_session.remote_path(location)
        key, session = self._acquire(location, ctx)
        # A reply trickled line by line keeps each read within the I/O
        # timeout: a cancel (or the deadline) shuts the socket down.
        cancel_key = ctx.cancel.on_cancel(session.abort_sockets)
        try:
            size = self._size(session, location, path, ctx)
            mtime = stamp = None
            try:
                mtime, stamp = replies.mdtm(
                    session.ftp.sendcmd('MDTM ' + path))
            except ftplib.error_perm as exc:
                if ftp_session.reply_code(exc) == 550:
                    raise self._missing_or_denied(session, location, path,
                                                  exc, 'MDTM', ctx) from exc
            except replies.ReplyError as exc:
                # MDTM is optional; the size still validates.
                LOG.debug('%s: %s; no modification time', location.masked,
                          exc)
        except exceptions.TransferError:
            self._release(key, session, ctx)
            raise
        except (ftplib.Error, OSError, EOFError) as exc:
            self._pool.discard(session)
            raise self._translate(exc, location, 'stat', ctx) from exc
        finally:
            ctx.cancel.remove(cancel_key)
        self._release(key, session, ctx)
        validator = None
        if size is not None or stamp is not None:
            validator = 'size=%s;mdtm=%s' % (size, stamp)
        return driver.Stat(size=size, validator=validator,
                           ranges=session.supports_rest and size is not None,
                           mtime=mtime,
                           max_segments=self.options.max_segments or None)

    def _size(self, session, location, path, ctx):
        """``SIZE path``, or None when the server does not know SIZE."""
        try:
            resp = session.ftp.sendcmd('SIZE ' + path)
        except ftplib.error_perm as exc:
            code = ftp_session.reply_code(exc)
            if code == 550:
                raise self._missing_or_denied(session, location, path, exc,
                                              'SIZE', ctx) from exc
            if code in (500, 501, 502, 504):
                return None
            raise
        return replies.size(resp)

    # -- read ---------------------------------------------------------------

    def read(self, location, offset, length, ctx):
        path = ftp_session.remote_path(location)
        if length == 0:
            return iter(())
        return self._read(location, path, offset, length, ctx)

    def _read(self, location, path, offset, length, ctx):
        key, session = self._acquire(location, ctx)
        ftp = session.ftp
        state = {'conn': None}

        def on_cancel():
            _shutdown(state['conn'])
            session.abort_sockets()

        cancel_key = ctx.cancel.on_cancel(on_cancel)
        clean = False
        got = 0
        try:
            try:
                conn, _size = ftp.ntransfercmd('RETR ' + path,
                                               offset or None)
            except ftp_session.RestRefused as exc:
                clean = True
                raise exceptions.RangeNotSupported(
                    '%s: the server refused REST %d: %s'
                    % (location.masked, offset, exc),
                    url=location.masked) from exc
            except ftplib.error_perm as exc:
                if ftp_session.reply_code(exc) == 550:
                    clean = True
                    raise self._missing_or_denied(
                        session, location, path, exc, 'RETR', ctx) from exc
                raise
            state['conn'] = conn
            for data in self._receive(conn, length, ctx):
                got += len(data)
                yield data
            complete = length is None or got == length
            if complete and length is not None:
                # A ranged read: we stop here; the server's reply to the
                # closed data connection is 226 or 426, both fine.
                _close_quietly(conn)
                state['conn'] = None
                self._final_reply(ftp, early=True)
            else:
                self._end_data(conn)
                state['conn'] = None
                ftp.voidresp()
            if not complete:
                raise exceptions.ProtocolError(
                    '%s: the data ended after %d of %d bytes'
                    % (location.masked, got, length), url=location.masked)
            clean = True
        except exceptions.TransferError as exc:
            if ctx.cancel.cancelled:
                raise self._translate(exc, location, 'RETR', ctx) from exc
            raise
        except (ftplib.Error, OSError, EOFError) as exc:
            raise self._translate(exc, location, 'RETR', ctx) from exc
        finally:
            ctx.cancel.remove(cancel_key)
            _close_quietly(state['conn'])
            if clean:
                self._pool.release(key, session)
            else:
                self._pool.discard(session)

    def _receive(self, conn, length, ctx):
        """Yield ``chunk_size`` pieces from the data connection.

        At most ``ctx.receive_buffer`` bytes each when the call's class
        has one: a paced consumer then stops the sender within a buffer.
        """
        size = min(self.chunk_size, ctx.receive_buffer or self.chunk_size)
        buf = bytearray(size)
        view = memoryview(buf)
        left = length
        while left is None or left > 0:
            want = size if left is None else min(size, left)
            n = 0
            while n < want:
                r = conn.recv_into(view[n:want])
                if not r:
                    break
                n += r
            if n:
                if left is not None:
                    left -= n
                yield bytes(view[:n])
            if n < want:
                return
            ctx.cancel.check()

    @staticmethod
    def _end_data(conn):
        """Close a data connection after its last byte (TLS: unwrap)."""
        if isinstance(conn, ssl.SSLSocket):
            try:
                conn.unwrap()
            except (OSError, ValueError):
                pass
        conn.close()

    @staticmethod
    def _final_reply(ftp, early):
        """Read the transfer's final reply; after an early close 4xx is ok."""
        try:
            ftp.voidresp()
        except ftplib.error_temp:
            if not early:
                raise

    # -- write --------------------------------------------------------------

    def _target(self, path):
        return path + PART_SUFFIX if self.options.stage_uploads else path

    def written_size(self, location, ctx):
        path = ftp_session.remote_path(location)
        target = self._target(path)
        with self._lease(location, ctx, 'SIZE', writing=True) as session:
            try:
                resp = session.ftp.sendcmd('SIZE ' + target)
            except ftplib.error_perm as exc:
                if ftp_session.reply_code(exc) == 550:
                    return 0
                raise
            return replies.size(resp)

    def _lease(self, location, ctx, what, writing=False):
        """Context manager: a session; errors translated, session dropped."""
        driver_self = self

        class _Lease:
            def __enter__(self):
                self.key, self.session = driver_self._acquire(location, ctx)
                self.cancel_key = ctx.cancel.on_cancel(
                    self.session.abort_sockets)
                return self.session

            def __exit__(self, etype, exc, tb):
                ctx.cancel.remove(self.cancel_key)
                if exc is None:
                    driver_self._release(self.key, self.session, ctx)
                    return False
                driver_self._pool.discard(self.session)
                if isinstance(exc, (ftplib.Error, OSError, EOFError)):
                    raise driver_self._translate(
                        exc, location, what, ctx, writing=writing) from exc
                return False

        return _Lease()

    def write(self, location, chunks, ctx, offset=0, size=None):
        path = ftp_session.remote_path(location)
        target = self._target(path)
        key, session = self._acquire(location, ctx)
        ftp = session.ftp
        state = {'conn': None}

        def on_cancel():
            _shutdown(state['conn'])
            session.abort_sockets()

        cancel_key = ctx.cancel.on_cancel(on_cancel)
        clean = False
        failed = None
        sent = 0
        try:
            conn = self._open_upload(session, location, target, offset, ctx)
            state['conn'] = conn
            it = iter(chunks)
            while True:
                try:
                    chunk = next(it)
                except StopIteration:
                    break
                except BaseException as exc:
                    # The data is bad (checksum) or the caller gave up:
                    # nothing complete-looking may stay on the server.
                    _close_quietly(conn)
                    state['conn'] = None
                    clean = self._discard_upload(ftp, target, location)
                    raise _DataError(exc) from exc
                try:
                    conn.sendall(chunk)
                except OSError as exc:
                    raise self._upload_failed(ftp, location, exc, ctx) \
                        from exc
                sent += len(chunk)
            self._end_data(conn)
            state['conn'] = None
            ftp.voidresp()
            clean = True
        except _DataError as wrapped:
            raise wrapped.error
        except exceptions.TransferError as err:
            failed = err
            raise
        except (ftplib.Error, OSError, EOFError) as exc:
            err = self._translate(exc, location, 'STOR', ctx, writing=True)
            failed = err
            raise err from exc
        finally:
            ctx.cancel.remove(cancel_key)
            _close_quietly(state['conn'])
            if clean:
                self._pool.release(key, session)
            else:
                self._pool.discard(session)
            if failed is not None and not failed.retryable and \
                    not ctx.cancel.cancelled:
                # Nothing to resume (disk full, permission): do not leave
                # a partial object, nor fill the server's disk with it.
                self._remove_quietly(location, target, ctx)
        LOG.debug('%s: stored %d bytes at offset %d into %s',
                  location.masked, sent, offset, target)
        return _FTPWriter(self, location, path, target, sent, ctx)

    def _open_upload(self, session, location, target, offset, ctx):
        ftp = session.ftp
        if not offset:
            return ftp.ntransfercmd('STOR ' + target)[0]
        try:
            have = replies.size(ftp.sendcmd('SIZE ' + target))
        except (ftplib.error_perm, replies.ReplyError) as exc:
            raise exceptions.ProtocolError(
                '%s: cannot resume the upload at %d: %s'
                % (location.masked, offset,
                   ftp_session.clean(exc, location)),
                url=location.masked, retryable=False) from exc
        if have < offset:
            raise exceptions.ProtocolError(
                '%s: cannot resume the upload at %d: the server holds %d '
                'bytes' % (location.masked, offset, have),
                url=location.masked, retryable=False)
        try:
            return ftp.ntransfercmd('STOR ' + target, offset)[0]
        except ftp_session.RestRefused:
            if have != offset:
                raise exceptions.ProtocolError(
                    '%s: the server refuses REST for uploads and holds %d '
                    'bytes, not %d' % (location.masked, have, offset),
                    url=location.masked, retryable=False) from None
            LOG.debug('%s: REST refused for STOR; appending with APPE',
                      location.masked)
            return ftp.ntransfercmd('APPE ' + target)[0]

    def _upload_failed(self, ftp, location, exc, ctx):
        """The data connection broke: ask the control connection why."""
        if not ctx.cancel.cancelled:
            try:
                ftp.sock.settimeout(min(5.0, ctx.io_timeout))
                ftp.voidresp()
            except ftplib.Error as reply:
                return self._translate(reply, location, 'STOR', ctx,
                                       writing=True)
            except (OSError, EOFError):
                pass
        return self._translate(exc, location, 'STOR', ctx, writing=True)

    def _discard_upload(self, ftp, target, location) -> bool:
        """Delete an aborted upload; True if the session is still clean."""
        try:
            self._final_reply(ftp, early=True)
            ftp.delete(target)
            return True
        except (ftplib.Error, OSError, EOFError) as exc:
            LOG.warning('%s: could not remove the aborted upload %s: %s',
                        location.masked, target,
                        ftp_session.clean(exc, location))
            return False

    def _remove_quietly(self, location, target, ctx):
        try:
            with self._lease(location, ctx, 'DELE', writing=True) as s:
                s.ftp.delete(target)
        except exceptions.TransferError as exc:
            LOG.debug('%s: could not remove %s: %s', location.masked,
                      target, exc)

    def close(self):
        self._pool.close_all()


class _FTPWriter(driver.Writer):
    """Renames ``NAME.part`` onto ``NAME`` on commit; deletes it on abort.

    Without ``stage_uploads`` the data is already in place: ``commit()``
    does nothing and ``abort()`` leaves the partial object (the engine
    reports the failure).
    """

    def __init__(self, drv, location, path, target, nbytes, ctx):
        self._drv = drv
        self._loc = location
        self._path = path
        self._target = target
        self._ctx = ctx
        self.bytes_written = nbytes

    def commit(self, ctx=None):
        if self._target == self._path:
            return
        drv, loc = self._drv, self._loc
        with drv._lease(loc, self._ctx, 'RNFR/RNTO', writing=True) as s:
            try:
                s.ftp.rename(self._target, self._path)
            except ftplib.error_perm as exc:
                # Some servers refuse to rename onto an existing name.
                if ftp_session.reply_code(exc) not in (550, 553):
                    raise
                LOG.debug('%s: rename refused (%s); replacing the old '
                          'object', loc.masked, exc)
                try:
                    s.ftp.delete(self._path)
                except ftplib.error_perm:
                    raise exc from None
                s.ftp.rename(self._target, self._path)

    def abort(self, ctx=None):
        if self._target == self._path:
            LOG.warning('%s: an in-place upload cannot be undone; the '
                        'partial object stays', self._loc.masked)
            return
        try:
            with self._drv._lease(self._loc, self._ctx, 'DELE',
                                  writing=True) as s:
                s.ftp.delete(self._target)
        except exceptions.TransferError as exc:
            LOG.warning('%s: could not remove %s: %s', self._loc.masked,
                        self._target, exc)
