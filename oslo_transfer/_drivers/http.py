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

"""HTTP and HTTPS with requests: ranged GET with If-Range, streamed PUT.

* Ranged reads send ``Range`` and ``If-Range`` (the validator from
  ``stat``); a 200 where a 206 was asked for, or a ``Content-Range`` that is
  not the one asked for, raises ``RangeNotSupported`` and the engine reads
  the object as one stream instead.  An error page is never data.
* Redirects are followed by hand, at most ``max_redirects``; each target
  goes through the URL policy, and credentials (basic auth, token header,
  the location's headers) are dropped when the host changes or the scheme
  goes from https to http.
* ``stat`` sends HEAD; a server that refuses HEAD (405, 501, and the 400
  or 403 of presigned GET-only URLs) is asked for ``bytes=0-0`` by GET.
* Requests take a session from a small shared pool for as long as their
  response is open: a session is never used by two requests at once, and
  the sockets kept open do not grow with the number of calling threads.
  A call whose class has a receive buffer (``ctx.receive_buffer``: the
  background class) takes its sessions from a pool of their own, whose
  connections set ``SO_RCVBUF`` before they connect: a kept-alive
  connection never passes from one buffer size to another, and its body
  is handed over a buffer's worth at a time.
* Query parameters that carry secrets (signatures, tokens) are masked in
  every message and log line, like passwords: requests and urllib3 put the
  URL being fetched, with its query, into their error text and their own
  DEBUG lines, and presigned URLs (S3, Swift temp URLs, Azure SAS) carry
  their signature there.
* TLS verification is on; ``ca_file`` names a CA bundle, ``insecure``
  turns verification off (never in production).
"""

import logging
import re
import socket
import threading
import urllib.parse

from oslo_config import cfg

from oslo_transfer import _utils
from oslo_transfer import driver
from oslo_transfer import exceptions
from oslo_transfer import locations

LOG = logging.getLogger(__name__)

# requests is imported on first use (_requests()): it costs ~80 ms of
# start-up that a command copying local files or from FTP need not pay.
requests = None


def _requests():
    global requests
    if requests is None:
        import requests.adapters  # noqa: F401 (binds the global)
        logging.getLogger('urllib3.connectionpool').addFilter(
            _QueryMaskFilter())
    return requests


OPTS = [
    cfg.StrOpt('ca_file',
               help='CA bundle (PEM) that verifies HTTPS servers, instead of '
                    'the system store.\n\nRelated options:\n\n* insecure'),
    cfg.BoolOpt('insecure', default=False,
                help='Do not verify HTTPS certificates.  Never use this in '
                     'production: anyone on the path can then alter the '
                     'data (a checksum still catches it).'),
    _utils.IntOpt('max_redirects', default=5, min=0, max=100,
                  help='Redirects followed per request; each target must pass '
                       '[oslo_transfer] allowed_schemes and denied_networks.'),
    cfg.StrOpt('token_header', default='X-Auth-Token',
               help='Header that carries a Location\'s token credential '
                    '(Glance and Swift use X-Auth-Token).  "Authorization" '
                    'sends "Bearer TOKEN".'),
    cfg.StrOpt('user_agent', default='oslo.transfer',
               help='User-Agent header of every request.'),
    _utils.IntOpt('pool_connections', default=16, min=1, max=4096,
                  help='Idle sessions kept for later requests, each with at '
                       'most one keep-alive connection per host; sessions '
                       'beyond this number are closed when their request '
                       'ends, so the sockets kept open do not grow with the '
                       'number of calling threads.'),
]


class _QueryMaskFilter(logging.Filter):
    """Mask query secrets in urllib3's own DEBUG lines.

    urllib3 logs every request line (``"GET /obj?X-Amz-Signature=..."``);
    a service that logs at DEBUG would write presigned signatures and
    temporary URL keys into its logs.  Only the arguments change.
    """

    def filter(self, record):
        args = record.args
        if isinstance(args, tuple) and args:
            record.args = tuple(
                locations.mask_query_text(a) if isinstance(a, str) else a
                for a in args)
        elif isinstance(record.msg, str) and not args:
            record.msg = locations.mask_query_text(record.msg)
        return True


#: request headers whose values are secrets even when their name does not
#: say so (see :func:`oslo_transfer.locations.is_secret_key`)
_SECRET_HEADERS = ('authorization', 'proxy-authorization', 'cookie')


def _clean(exc, loc, url=None):
    """``str(exc)`` without passwords, tokens and query secrets.

    urllib3's messages carry the raw path and query of the request
    (``url``: the URL that was being fetched, after redirects).
    """
    return _mask(str(exc), loc, url)


def _mask(text, loc, url=None):
    """``text`` (a server's words, say) without the location's secrets.

    A server may echo what it was sent: the password, the token header,
    the query's signature.
    """
    text = locations.mask_query_text(text)
    creds = loc.credentials
    password = urllib.parse.urlsplit(loc.url).password
    secrets = [urllib.parse.unquote(password)] if password else []
    if creds:
        secrets += [creds.password, creds.token]
    for name, value in (loc.headers or {}).items():
        if locations.is_secret_key(name) or name.lower() in _SECRET_HEADERS:
            secrets.append(value)
    secrets += locations.query_secrets(loc.url)
    if url:
        secrets += locations.query_secrets(url)
    # Longest first: a secret that contains another is masked whole.
    for s in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(s, '***')
        text = text.replace(urllib.parse.quote(s, safe=''), '***')
        text = text.replace(urllib.parse.quote_plus(s, safe=''), '***')
    return text


#: the largest size or offset a header may give: a file's size on Linux is
#: an off_t (2**63 - 1)
MAX_SIZE = 2 ** 63 - 1
_DIGITS = re.compile(r'[0-9]{1,19}\Z')
_CONTENT_RANGE = re.compile(
    r'bytes ([0-9]{1,19})-([0-9]{1,19})/([0-9]{1,19}|\*)\Z')


def _uint(text, what, loc):
    """A header's non-negative integer: ASCII digits only, at most 2**63-1.

    ``str.isdigit()`` also takes superscripts and other scripts' digits,
    which ``int()`` then refuses or reads as another number.
    """
    if not _DIGITS.match(text) or int(text) > MAX_SIZE:
        raise exceptions.ProtocolError(
            '%s sent an invalid %s: %r' % (loc.masked, what, text[:64]),
            url=loc.masked, retryable=False)
    return int(text)


def content_length(headers, loc) -> int | None:
    """The ``Content-Length`` of ``headers``, None when absent.

    A repeated header (``"5, 5"`` once urllib3 joined them) counts only
    when every value agrees (RFC 9110, 8.6).

    :raises ProtocolError: a malformed or contradictory value.
    """
    value = headers.get('content-length')
    if value is None:
        return None
    values = {v.strip() for v in value.split(',')}
    if len(values) != 1:
        raise exceptions.ProtocolError(
            '%s sent contradictory Content-Length values: %r'
            % (loc.masked, value[:64]), url=loc.masked, retryable=False)
    return _uint(values.pop(), 'Content-Length', loc)


def content_range(value) -> tuple | None:
    """``(first, last, total_or_None)`` of ``bytes F-L/T``; None if not that.

    A range whose last byte comes before its first, or lies past the
    total, is not a range either.
    """
    m = _CONTENT_RANGE.match(value.strip()) if value else None
    if m is None:
        return None
    first, last = int(m.group(1)), int(m.group(2))
    total = None if m.group(3) == '*' else int(m.group(3))
    if last < first or max(first, last, total or 0) > MAX_SIZE or (
            total is not None and last >= total):
        return None
    return first, last, total


_OK_PUT = (200, 201, 204)
#: HEAD answers after which ``stat`` asks again by ``GET bytes=0-0``:
#: HEAD not implemented (405, 501) and presigned GET-only URLs, whose
#: signature covers the method (S3 answers 403, some gateways 400).
_HEAD_REFUSED = (400, 403, 405, 501)
#: hosts whose keep-alive pools one session keeps (urllib3 pool_connections)
_HOSTS_PER_SESSION = 4


def _status_error(resp, loc, what='GET'):
    code = resp.status_code
    url = loc.masked
    msg = '%s %s: HTTP %d %s' % (what, url, code,
                                 _mask(resp.reason or '', loc, resp.url))
    if code in (404, 410):
        return exceptions.SourceNotFound(msg, url=url)
    if code == 401:
        return exceptions.AuthenticationFailed(msg, url=url)
    if code == 403:
        return exceptions.PermissionDenied(msg, url=url)
    if code in (413, 507):
        return exceptions.DestinationError(msg, url=url)
    retry = code >= 500 or code in (408, 425, 429)
    return exceptions.ProtocolError(msg, url=url, retryable=retry)


def _translate(exc, loc, fetched=None):
    """Our exception for a requests exception (``fetched``: its URL)."""
    url = loc.masked
    text = _clean(exc, loc, fetched)
    _requests()
    if isinstance(exc, requests.exceptions.SSLError):
        return exceptions.AuthenticationFailed(
            'TLS certificate verification failed for %s (set '
            '[oslo_transfer_http] ca_file to the CA that signed the '
            'server certificate): %s' % (url, text), url=url)
    if isinstance(exc, (requests.exceptions.ConnectTimeout,
                        requests.exceptions.ReadTimeout)):
        return exceptions.TransferTimeout('%s: timed out: %s' % (url, text),
                                          url=url)
    if isinstance(exc, requests.exceptions.ConnectionError):
        return exceptions.ConnectionFailed('cannot reach %s: %s'
                                           % (url, text), url=url)
    if isinstance(exc, requests.exceptions.InvalidHeader):
        # A malformed or contradictory header (two Content-Length values):
        # the same request gets the same answer.
        return exceptions.ProtocolError('%s: invalid answer: %s'
                                        % (url, text), url=url,
                                        retryable=False)
    if isinstance(exc, (requests.exceptions.ChunkedEncodingError,
                        requests.exceptions.ContentDecodingError)):
        return exceptions.ProtocolError('%s: the body was cut short: %s'
                                        % (url, text), url=url)
    return exceptions.ConnectionFailed('%s: %s' % (url, text), url=url)


#: the :class:`_Abort` of the request this thread is sending, if any
_CURRENT = threading.local()
_POOL_CLASSES = None


class _Abort:
    """Let a cancel shut down the socket of a request not yet answered.

    ``session.request()`` blocks until the status line and the headers
    have arrived (the whole body too, for a request that does not
    stream).  A server that trickles them, a byte every quarter of a
    second, keeps every socket read within ``io_timeout``, so only
    closing the socket ends the wait.  While an ``_Abort`` is entered in
    a thread, the connections of our pools (:func:`_pool_classes`) note
    themselves in it when they open a socket or send a request; a cancel
    of ``cancel`` then shuts that socket down (and one that comes before
    the socket exists shuts it down as soon as it does).  The TLS
    handshake is not covered: the socket being handshaken is not the
    connection's yet.
    """

    def __init__(self, cancel):
        self.cancel = cancel
        self.conn = None
        self.aborted = False
        self._lock = threading.Lock()
        self._key = None

    def __enter__(self):
        _CURRENT.abort = self
        self._key = self.cancel.on_cancel(self.abort)
        return self

    def __exit__(self, *exc):
        self.cancel.remove(self._key)
        _CURRENT.abort = None
        return False

    def note(self, conn):
        with self._lock:
            self.conn = conn
            aborted = self.aborted
        if aborted:
            _shutdown_conn(conn)

    def abort(self):
        with self._lock:
            self.aborted = True
            conn = self.conn
        if conn is not None:
            _shutdown_conn(conn)


def _noted(conn):
    current = getattr(_CURRENT, 'abort', None)
    if current is not None:
        current.note(conn)


def _shutdown_conn(conn):
    for sock in (getattr(conn, 'sock', None),
                 getattr(conn, '_oslo_sock', None)):
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass        # closed, or detached by a TLS wrap


def _pool_classes() -> dict:
    """urllib3 pools whose connections note themselves in an ``_Abort``."""
    global _POOL_CLASSES
    if _POOL_CLASSES is None:
        from urllib3 import connection as u3_connection
        from urllib3 import connectionpool as u3_pool

        class _Noting:
            def _new_conn(self):
                sock = super()._new_conn()
                self._oslo_sock = sock
                _noted(self)
                return sock

            def request(self, *args, **kwargs):
                _noted(self)        # a kept-alive connection, too
                return super().request(*args, **kwargs)

        class _HTTPConnection(_Noting, u3_connection.HTTPConnection):
            pass

        class _HTTPSConnection(_Noting, u3_connection.HTTPSConnection):
            pass

        class _HTTPPool(u3_pool.HTTPConnectionPool):
            ConnectionCls = _HTTPConnection

        class _HTTPSPool(u3_pool.HTTPSConnectionPool):
            ConnectionCls = _HTTPSConnection

        _POOL_CLASSES = {'http': _HTTPPool, 'https': _HTTPSPool}
    return _POOL_CLASSES


class _SessionPool:
    """requests Sessions, each used by one request at a time.

    requests.Session is not documented as thread-safe, so a request checks
    a session out for as long as its response is open (:meth:`get`) and
    gives it back afterwards (:meth:`put`).  At most ``idle`` sessions are
    kept with their keep-alive connections; the others are closed when
    they come back.  Unlike a session per thread, this holds no socket for
    a thread that has ended.
    """

    def __init__(self, factory, idle):
        self._factory = factory
        self._idle = idle
        self._free = []
        self._lock = threading.Lock()

    def get(self):
        with self._lock:
            if self._free:
                return self._free.pop()
        return self._factory()

    def put(self, session):
        with self._lock:
            if len(self._free) < self._idle:
                self._free.append(session)
                return
        session.close()

    def close(self):
        """Close the idle sessions; those in use come back afterwards."""
        with self._lock:
            free, self._free = self._free, []
        for s in free:
            s.close()


class HTTPDriver(driver.Driver):
    """``http://`` and ``https://`` (requests)."""

    name = 'http'
    schemes = ('http', 'https')
    capabilities = (driver.Capability.READ | driver.Capability.WRITE |
                    driver.Capability.RANGED_READ)

    def __init__(self, conf):
        super().__init__(conf)
        self._pools = {}        # receive buffer (None: autotuned) -> pool
        self._lock = threading.Lock()

    @classmethod
    def list_opts(cls):
        return OPTS

    # -- plumbing -----------------------------------------------------------

    def _new_session(self, receive_buffer=None) -> 'requests.Session':
        s = requests.Session()
        # One request at a time per session: one connection per host is
        # enough, a second one covers a connection still being released.
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=_HOSTS_PER_SESSION, pool_maxsize=2,
            max_retries=0)
        # (A dict of our own: the default is urllib3's module-level one.)
        adapter.poolmanager.pool_classes_by_scheme = dict(_pool_classes())
        if receive_buffer:
            # urllib3 sets these on a new socket before connect()
            from urllib3 import connection as u3_connection
            adapter.poolmanager.connection_pool_kw['socket_options'] = (
                list(u3_connection.HTTPConnection.default_socket_options) +
                [(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)])
        s.mount('http://', adapter)
        s.mount('https://', adapter)
        s.trust_env = False
        return s

    def _sessions(self, receive_buffer=None) -> _SessionPool:
        """The pool of sessions whose sockets have ``receive_buffer``."""
        with self._lock:
            pool = self._pools.get(receive_buffer)
            if pool is None:
                _requests()
                pool = self._pools[receive_buffer] = _SessionPool(
                    lambda: self._new_session(receive_buffer),
                    self.options.pool_connections)
            return pool

    def _verify(self):
        if self.options.insecure:
            return False
        return self.options.ca_file or True

    def _headers(self, loc, extra=None):
        h = {'User-Agent': self.options.user_agent,
             'Accept-Encoding': 'identity'}
        if loc.headers:
            h.update(loc.headers)
        creds = loc.effective_credentials()
        if creds.token:
            if self.options.token_header.lower() == 'authorization':
                h['Authorization'] = 'Bearer %s' % creds.token
            else:
                h[self.options.token_header] = creds.token
        if extra:
            h.update(extra)
        return h

    def _auth(self, loc):
        creds = loc.effective_credentials()
        if creds.username is not None and creds.password is not None:
            return (creds.username, creds.password)
        return None

    def _request(self, method, loc, ctx, headers=None, stream=True,
                 data=None):
        """Send with redirects followed by hand under the URL policy.

        The response holds a session of the pool until :meth:`_done`.
        """
        pool = self._sessions(ctx.receive_buffer)
        session = pool.get()
        try:
            resp = self._send(session, method, loc, ctx, headers, stream,
                              data)
        except BaseException:
            pool.put(session)
            raise
        resp._oslo_session = (pool, session)
        if not stream:
            self._done(resp)
        return resp

    def _done(self, resp):
        """Close ``resp`` and give its session back to the pool."""
        resp.close()
        held = resp.__dict__.pop('_oslo_session', None)
        if held is not None:
            pool, session = held
            pool.put(session)

    def _send(self, session, method, loc, ctx, headers, stream, data):
        url = loc.without_userinfo()
        hdrs = self._headers(loc, headers)
        auth = self._auth(loc)
        origin = locations.parse_url(url)
        for _hop in range(self.options.max_redirects + 1):
            ctx.cancel.check()
            timeout = ctx.timeout()
            try:
                with _Abort(ctx.cancel):
                    resp = session.request(
                        method, url, headers=hdrs, auth=auth, stream=stream,
                        data=data, allow_redirects=False,
                        verify=self._verify(), timeout=(timeout, timeout))
            except requests.exceptions.RequestException as exc:
                ctx.cancel.check()
                raise _translate(exc, loc, url) from exc
            if not resp.is_redirect or data is not None:
                return resp
            resp.close()
            # The policy parses the target once and returns the URL to
            # send: requests never sees the server's own spelling.
            target = locations.canonical_url(
                ctx.check_url(_redirect_target(url, resp, loc)),
                userinfo=False)
            parts = locations.parse_url(target)
            if (parts.netloc != origin.netloc or
                    (origin.scheme == 'https' and parts.scheme != 'https')):
                # Never hand credentials to another host, nor send them
                # in cleartext after a redirect from https.
                auth = None
                hdrs = self._headers(type(loc)(target), headers)
            LOG.debug('%s redirected to %s', loc.masked,
                      parts._replace(query='').geturl())
            url = target
        raise exceptions.ProtocolError(
            '%s: more than %d redirects' % (loc.masked,
                                            self.options.max_redirects),
            url=loc.masked, retryable=False)

    # -- the contract -------------------------------------------------------

    def stat(self, location, ctx):
        resp = self._request('HEAD', location, ctx, stream=False)
        with resp:
            if resp.status_code in _HEAD_REFUSED:
                LOG.debug('%s answered HEAD with %d; asking by GET',
                          location.masked, resp.status_code)
                return self._stat_by_get(location, ctx)
            if resp.status_code != 200:
                raise _status_error(resp, location, 'HEAD')
            h = resp.headers
            size = content_length(h, location)
            ranges = h.get('accept-ranges', '').lower() == 'bytes'
            return driver.Stat(size=size, validator=self._validator(h, size),
                               ranges=ranges)

    def _stat_by_get(self, location, ctx):
        resp = self._request('GET', location, ctx,
                             headers={'Range': 'bytes=0-0'})
        try:
            h = resp.headers
            if resp.status_code == 206:
                span = content_range(h.get('content-range'))
                size = span[2] if span else None
                return driver.Stat(size=size,
                                   validator=self._validator(h, size),
                                   ranges=True)
            if resp.status_code == 200:
                size = content_length(h, location)
                return driver.Stat(size=size,
                                   validator=self._validator(h, size),
                                   ranges=False)
            raise _status_error(resp, location)
        finally:
            self._done(resp)

    @staticmethod
    def _validator(h, size):
        etag = h.get('etag')
        lm = h.get('last-modified')
        if etag:
            if etag.startswith('W/') and lm:
                # A weak ETag cannot go into If-Range; the date can.
                return 'etag:%s;last-modified:%s' % (etag, lm)
            return 'etag:%s' % etag
        if lm:
            return 'last-modified:%s;size:%s' % (lm, size)
        return None

    @staticmethod
    def _if_range(validator):
        """The ``If-Range`` value for ``validator``, or None.

        A strong ETag, else the Last-Modified date (HTTP allows either); a
        weak ETag never (a server must then ignore the Range).
        """
        if not validator:
            return None
        kind, _, value = validator.partition(':')
        if kind == 'etag':
            etag, _, lm = value.partition(';last-modified:')
            if not etag.startswith('W/'):
                return etag
            return lm or None
        if kind == 'last-modified':
            return value.partition(';size:')[0]
        return None

    def read(self, location, offset, length, ctx):
        headers = {}
        ranged = offset > 0 or length is not None
        if ranged:
            end = '' if length is None else str(offset + length - 1)
            headers['Range'] = 'bytes=%d-%s' % (offset, end)
            if_range = self._if_range(ctx.validator)
            if if_range:
                headers['If-Range'] = if_range
        if length == 0:
            return iter(())
        resp = self._request('GET', location, ctx, headers=headers)
        try:
            self._check_read(resp, location, offset, length, ranged)
        except BaseException:
            self._done(resp)
            raise
        return self._body(resp, location, ctx, length)

    def _check_read(self, resp, loc, offset, length, ranged):
        code = resp.status_code
        if code == 200:
            if not ranged:
                return
            if offset == 0:
                # A full body where a prefix was asked: fine if it is
                # exactly that size.
                if length is None or \
                        content_length(resp.headers, loc) == length:
                    return
            raise exceptions.RangeNotSupported(
                '%s answered 200 to a ranged request' % loc.masked,
                url=loc.masked)
        if code == 206:
            if not ranged:
                raise exceptions.ProtocolError(
                    '%s sent a partial answer to a full request'
                    % loc.masked, url=loc.masked, retryable=False)
            cr = resp.headers.get('content-range', '')
            span = content_range(cr)
            want_last = None if length is None else offset + length - 1
            if (span is None or span[0] != offset or
                    (want_last is not None and span[1] != want_last)):
                raise exceptions.RangeNotSupported(
                    '%s answered Content-Range %r to a request for bytes '
                    '%d-%s' % (loc.masked, cr[:64], offset,
                               '' if want_last is None else want_last),
                    url=loc.masked)
            return
        if code == 416:
            raise exceptions.ProtocolError(
                '%s: range %d+%s is not satisfiable (the object is '
                'smaller)' % (loc.masked, offset, length), url=loc.masked,
                retryable=False)
        raise _status_error(resp, loc)

    def _body(self, resp, loc, ctx, length):
        # (At most a receive buffer's worth per chunk: a consumer whose
        # class is paced stops the sender within one buffer.)
        chunk = min(self.chunk_size, ctx.receive_buffer or self.chunk_size)
        raw = resp.raw
        key = ctx.cancel.on_cancel(lambda: _abort(resp))
        got = 0
        try:
            while True:
                want = chunk if length is None else min(chunk, length - got)
                if want <= 0:
                    break
                try:
                    data = raw.read(want, decode_content=False)
                except Exception as exc:  # noqa: urllib3/socket errors
                    ctx.cancel.check()
                    if isinstance(exc, requests.exceptions.RequestException):
                        raise _translate(exc, loc) from exc
                    raise exceptions.ProtocolError(
                        '%s: the connection broke after %d bytes: %s'
                        % (loc.masked, got,
                           _clean(exc, loc, resp.url)),
                        url=loc.masked) from exc
                if not data:
                    # (A cancel shuts the socket down: an end of body.)
                    ctx.cancel.check()
                    break
                got += len(data)
                yield data
            if length is not None and got < length:
                raise exceptions.ProtocolError(
                    '%s: the body ended after %d of %d bytes'
                    % (loc.masked, got, length), url=loc.masked)
        finally:
            ctx.cancel.remove(key)
            self._done(resp)

    def write(self, location, chunks, ctx, offset=0, size=None):
        if offset:
            raise exceptions.ProtocolError(
                'HTTP PUT cannot continue an upload at offset %d' % offset,
                url=location.masked, retryable=False)
        headers = {'Content-Type': 'application/octet-stream'}
        # With a known size requests sends Content-Length (len() of the
        # body); without one it streams with chunked transfer encoding.
        # A body cut short then never completes on the server.
        if size is not None and size > 0:
            counter = _SizedCounter(chunks, size, location.masked)
        else:
            counter = _Counter(chunks)
        resp = self._request('PUT', location, ctx, headers=headers,
                             data=counter, stream=False)
        if resp.status_code not in _OK_PUT:
            raise _status_error(resp, location, 'PUT')
        return _HTTPWriter(counter.count)

    def close(self):
        with self._lock:
            pools = list(self._pools.values())
        for pool in pools:
            pool.close()


def _redirect_target(url, resp, loc):
    """The absolute URL a redirect names, before the policy sees it.

    :raises URLNotAllowed: a malformed Location.
    :raises ProtocolError: no Location at all.
    """
    value = resp.headers.get('location')
    if not value:
        raise exceptions.ProtocolError(
            '%s: HTTP %d redirect without a Location'
            % (loc.masked, resp.status_code), url=loc.masked,
            retryable=False)
    try:
        return locations.join_url(url, value)
    except ValueError as exc:
        raise exceptions.URLNotAllowed(
            'refused the redirect of %s: %s' % (loc.masked, exc),
            url=loc.masked) from exc


def _abort(resp):
    """Interrupt a blocked read from another thread (cancel)."""
    try:
        sock = resp.raw._fp.fp.raw._sock
        sock.shutdown(2)
    except Exception:  # noqa: best effort; the I/O timeout still applies
        pass


class _Counter:
    """An iterable of chunks that counts what requests consumed."""

    def __init__(self, chunks):
        self._chunks = chunks
        self.count = 0

    def __iter__(self):
        for c in self._chunks:
            self.count += len(c)
            yield c


class _SizedCounter(_Counter):
    """A :class:`_Counter` of known size: requests sends Content-Length.

    ``len()`` looks ``__len__`` up on the class, never on the instance.

    The server completes the PUT once ``size`` bytes arrived, whatever
    follows: the chunk that reaches ``size`` goes out only after the data
    ended there (the engine's check of size and digest ran), and data
    longer than announced raises before that chunk is sent.
    """

    def __init__(self, chunks, size, url=None):
        super().__init__(chunks)
        self._size = size
        self._url = url

    def __len__(self):
        return self._size

    def _too_long(self):
        return exceptions.SizeMismatch(
            'upload to %s aborted: the data is longer than the %d bytes '
            'announced' % (self._url, self._size), url=self._url)

    def __iter__(self):
        it = iter(self._chunks)
        for c in it:
            end = self.count + len(c)
            if end > self._size:
                raise self._too_long()
            if end == self._size:
                for extra in it:
                    if extra:
                        raise self._too_long()
            self.count = end
            yield c


class _HTTPWriter(driver.Writer):
    """PUT has already completed when the writer exists.

    The engine held back the last chunk until the digest matched, so a PUT
    that completed carries verified data; ``abort()`` cannot undo it (a
    DELETE could remove an object that a concurrent writer put).
    """

    def __init__(self, nbytes):
        self.bytes_written = nbytes

    def commit(self, ctx=None):
        pass

    def abort(self, ctx=None):
        LOG.debug('HTTP PUT already completed; nothing to abort')
