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

"""Where bytes live: :class:`Location`, :class:`Source` and URL helpers.

A *location* is a URL (or a local path) plus what is needed to reach it:
credentials, extra headers and driver options.  Credentials have a fixed
precedence: the :class:`Location`'s own, then the URL's userinfo, then the
driver's configuration.  They never appear in :func:`mask_url` output, and so
never in a message, a log line, the control file, a Plan or a Result.
"""

import dataclasses
import ipaddress
import os
import re
import socket
import urllib.parse

from oslo_transfer import exceptions

__all__ = ['Location', 'Source', 'Credentials', 'URLPolicy', 'parse_url',
           'canonical_url', 'join_url', 'mask_url', 'is_secret_key',
           'as_location', 'is_local', 'local_path', 'origin_of']

_MASK = '***'


@dataclasses.dataclass(frozen=True)
class Credentials:
    """Secrets for one location; ``repr`` never shows them.

    :param username: user name (HTTP basic, FTP, SFTP, CHAP user).
    :param password: password (HTTP basic, FTP, CHAP secret).
    :param token: bearer token; the HTTP driver sends it as
        ``X-Auth-Token`` (Glance, Swift) unless ``token_header`` says
        otherwise.
    :param key_file: private key file (SFTP).
    """

    username: str | None = None
    password: str | None = dataclasses.field(default=None, repr=False)
    token: str | None = dataclasses.field(default=None, repr=False)
    key_file: str | None = None

    def __repr__(self):
        return ('Credentials(username=%r, password=%s, token=%s, '
                'key_file=%r)' % (self.username,
                                  _MASK if self.password else None,
                                  _MASK if self.token else None,
                                  self.key_file))

    __str__ = __repr__


@dataclasses.dataclass(frozen=True)
class Location:
    """A URL and what is needed to reach it.

    May stand wherever a URL does.

    :param url: the URL or local path.
    :param credentials: a :class:`Credentials`, a ``(user, password)`` tuple
        or a mapping with the same keys; wins over URL userinfo and config.
    :param headers: extra protocol headers (HTTP); also sent to BitTorrent
        web seeds that are this location.
    :param options: driver-specific options, as documented by each driver
        (its :meth:`~oslo_transfer.driver.Driver.location_opts`), checked
        before any I/O; kept out of ``repr`` as the headers are.
    """

    url: str
    credentials: Credentials | None = dataclasses.field(
        default=None, repr=False)
    headers: dict | None = dataclasses.field(default=None, repr=False)
    options: dict | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self):
        if not isinstance(self.url, (str, os.PathLike)):
            raise exceptions.InvalidLocation(
                'a location must be a URL or a path, not %r' % (self.url,))
        url = os.fspath(self.url)
        if not url:
            raise exceptions.InvalidLocation('empty location')
        object.__setattr__(self, 'url', url)
        creds = self.credentials
        if isinstance(creds, tuple):
            creds = Credentials(*creds)
        elif isinstance(creds, dict):
            creds = Credentials(**creds)
        object.__setattr__(self, 'credentials', creds)

    @property
    def scheme(self) -> str:
        """The URL scheme, ``file`` for a plain path."""
        if is_local(self.url):
            return 'file'
        scheme = self.url.partition(':')[0]
        return scheme.lower() if _SCHEME.match(scheme) else ''

    @property
    def masked(self) -> str:
        """The URL with any password masked, safe to log."""
        return mask_url(self.url)

    def parts(self) -> urllib.parse.SplitResult:
        """The URL split by :func:`parse_url` (strict; one parse for all).

        :raises InvalidLocation: the URL is malformed.
        """
        return parse_url(self.url)

    def effective_credentials(self, username=None, password=None,
                              token=None, key_file=None) -> Credentials:
        """Resolve credentials: Location, then URL userinfo, then config.

        The arguments are the configured fallbacks.  A token goes with
        the key pair it came with (an S3 session token is useless with
        another access key): when the user name and password come from
        the Location or from the URL, a configured ``token`` is not added
        to them; the Location's own token always is.
        """
        parts = self.parts() if not is_local(self.url) else None
        url_user = url_pass = None
        if parts is not None:
            url_user = parts.username and urllib.parse.unquote(parts.username)
            url_pass = parts.password and urllib.parse.unquote(parts.password)
        own = self.credentials or Credentials()
        if own.username or own.password:
            user, pwd, tok = own.username, own.password, own.token
        elif url_user or url_pass:
            user, pwd, tok = url_user, url_pass, own.token
        else:
            user, pwd, tok = username, password, own.token or token
        return Credentials(username=user, password=pwd, token=tok,
                           key_file=own.key_file or key_file)

    def without_userinfo(self) -> str:
        """The URL with user and password removed (for the wire)."""
        if is_local(self.url):
            return self.url
        return canonical_url(self.url, userinfo=False)


def as_location(value) -> Location:
    """Turn a URL, path or :class:`Location` into a :class:`Location`."""
    if isinstance(value, Location):
        return value
    return Location(value)


@dataclasses.dataclass
class Source:
    """Data with one or more locations (Glance's multiple locations).

    :param urls: URLs, paths or :class:`Location` objects, in the caller's
        order of preference.
    :param size: the size in bytes, if known.
    :param checksum: ``"ALGO:HEX"``; must agree with ``checksum=`` of the
        call, or the call raises ``ValueError`` before any I/O.
    :param torrent: BitTorrent metadata: a path, a URL or the bytes of a
        ``.torrent`` file.
    """

    urls: list = dataclasses.field(default_factory=list)
    size: int | None = None
    checksum: str | None = None
    torrent: object = None

    def __post_init__(self):
        if isinstance(self.urls, (str, Location, os.PathLike)):
            self.urls = [self.urls]
        self.urls = [as_location(u) for u in self.urls]
        if not self.urls and self.torrent is None:
            raise exceptions.InvalidLocation('a Source needs at least one '
                                             'location or torrent metadata')
        if self.size is not None and (type(self.size) is not int or
                                      not 0 <= self.size <= 2 ** 63 - 1):
            raise ValueError('Source size must be an integer from 0 to '
                             '2**63-1, not %.40r' % (self.size,))

    @property
    def locations(self) -> list:
        return list(self.urls)


def is_local(url) -> bool:
    """True for a plain path (absolute or relative) or a ``file:`` URL."""
    url = os.fspath(url)
    if url.startswith('file:'):
        return True
    if '://' not in url:
        return True
    return False


def local_path(url) -> str:
    """The filesystem path of a plain path or ``file://`` URL."""
    url = os.fspath(url)
    if url.startswith('file:'):
        p = urllib.parse.urlsplit(url)
        if p.netloc not in ('', 'localhost'):
            raise exceptions.InvalidLocation(
                'file URL with a remote host: %s' % mask_url(url))
        return urllib.parse.unquote(p.path)
    return url


#: characters no URL may hold anywhere: ASCII controls, space and the
#: backslash.  WHATWG parsers read ``\`` as ``/`` and strip tabs, RFC 3986
#: parsers keep both as data, so a URL holding one names one host to the URL
#: policy and another to the library that connects.
_FORBIDDEN = re.compile(r'[\x00-\x20\x7f\\]')
_SCHEME = re.compile(r'[A-Za-z][A-Za-z0-9+.-]*\Z')
#: RFC 3986 userinfo: unreserved, sub-delims, ":" and %XX
_USERINFO = re.compile(r"(?:[A-Za-z0-9._~!$&'()*+,;=:-]|%[0-9A-Fa-f]{2})*\Z")
#: host names: letters, digits, "-", ".", "_" and "~" (no %XX, no
#: sub-delims, no non-ASCII: write an IDN in its xn-- form)
_HOSTNAME = re.compile(r'[A-Za-z0-9._~-]+\Z')
_PORT = re.compile(r'[0-9]{1,5}\Z')
#: the longest URL parsed (presigned URLs run to a few KiB)
MAX_URL_LENGTH = 65536


def _malformed(url, why):
    masked = mask_url(url)
    return exceptions.InvalidLocation('malformed URL %s: %s' % (masked, why),
                                      url=masked)


def _split_hostport(url, hostport):
    """``(host, port)`` of an authority without userinfo; strict."""
    if hostport.startswith('['):
        close = hostport.find(']')
        literal = hostport[1:close] if close > 0 else ''
        try:
            ipaddress.IPv6Address(literal)
        except ValueError:
            raise _malformed(url, 'the IPv6 literal %r is not valid'
                             % hostport[:close + 1]) from None
        if '%' in literal:
            raise _malformed(url, 'IPv6 zone identifiers are refused')
        host, rest = '[%s]' % literal.lower(), hostport[close + 1:]
        if rest and not rest.startswith(':'):
            raise _malformed(url, 'text after the IPv6 literal')
        port = rest[1:]
    else:
        host, _, port = hostport.partition(':')
        if host and not _HOSTNAME.match(host):
            raise _malformed(url, 'the host %r holds characters a host name '
                             'cannot hold' % host)
        host = host.lower()
    if port and not (_PORT.match(port) and 0 < int(port) < 65536):
        raise _malformed(url, 'the port %r is not a number from 1 to 65535'
                         % port)
    return host, int(port) if port else None


def parse_url(url) -> urllib.parse.SplitResult:
    """Split ``url`` strictly: the one parse of a URL the library trusts.

    The URL policy judges the host and port of this parse and the drivers
    connect to them (:meth:`Location.parts`, :func:`canonical_url`).  So
    that no other parser (urllib3, libtorrent, libnfs) can read another
    host out of the same string, a URL is refused when it holds a control
    character, a space or a backslash, more than one ``@`` in its
    authority, a host with characters a host name cannot hold (``%``,
    non-ASCII, sub-delimiters), an invalid IPv6 literal or a port outside
    1-65535.  The result is :func:`urllib.parse.urlsplit` of the canonical
    form (scheme and host in lower case, the port without leading zeros),
    so ``hostname``, ``port``, ``username`` and ``password`` work as usual.

    :raises InvalidLocation: the URL is malformed (the message says why).
    """
    return urllib.parse.urlsplit(_canonical(url))


def _canonical(url, keep_userinfo=True) -> str:
    url = os.fspath(url)
    if not isinstance(url, str):
        raise exceptions.InvalidLocation('a URL must be text, not %s'
                                         % type(url).__name__)
    if len(url) > MAX_URL_LENGTH:
        raise exceptions.InvalidLocation(
            'URL longer than %d characters' % MAX_URL_LENGTH)
    bad = _FORBIDDEN.search(url)
    if bad:
        raise _malformed(url, 'it holds %r' % bad.group())
    scheme, sep, rest = url.partition(':')
    if not sep or not _SCHEME.match(scheme):
        raise _malformed(url, 'no scheme')
    if not rest.startswith('//'):
        raise _malformed(url, 'expected %s://HOST/...' % scheme.lower())
    rest = rest[2:]
    end = len(rest)
    for c in '/?#':
        i = rest.find(c)
        if 0 <= i < end:
            end = i
    authority, tail = rest[:end], rest[end:]
    if authority.count('@') > 1:
        raise _malformed(url, "more than one '@' (write an '@' in a user "
                         "name or password as %40)")
    userinfo, at, hostport = authority.rpartition('@')
    if at and not _USERINFO.match(userinfo):
        raise _malformed(url, 'the user name or password holds characters '
                         'that must be %-encoded')
    host, port = _split_hostport(url, hostport)
    if not host and (at or port is not None):
        raise _malformed(url, 'no host')
    netloc = host if port is None else '%s:%d' % (host, port)
    if at and keep_userinfo:
        netloc = '%s@%s' % (userinfo, netloc)
    return '%s://%s%s' % (scheme.lower(), netloc, tail)


def canonical_url(url, userinfo: bool = True) -> str:
    """The canonical form of ``url`` (see :func:`parse_url`).

    A local path comes back as it is.  ``userinfo=False`` drops the user
    name and password (for the wire, where credentials travel apart).

    :raises InvalidLocation: the URL is malformed.
    """
    url = os.fspath(url)
    if is_local(url):
        return url
    return _canonical(url, userinfo)


def join_url(base: str, ref: str) -> str:
    """``ref`` (a redirect's Location, say) resolved against ``base``.

    :func:`urllib.parse.urljoin` silently drops tabs and line breaks; a
    reference holding any character that :func:`parse_url` refuses is
    refused here, before it can turn into a different URL.

    :raises InvalidLocation: ``ref`` is malformed.
    """
    bad = _FORBIDDEN.search(ref)
    if bad:
        raise _malformed(ref, 'it holds %r' % bad.group())
    return urllib.parse.urljoin(base, ref)


def origin_of(url) -> str:
    """``scheme://host:port`` of ``url``: the key of per-origin limits.

    A local path gives ``file://local``.  The port is the URL's own (none
    when the URL names none).
    """
    if is_local(url):
        return 'file://local'
    p = parse_url(url)
    return '%s://%s' % (p.scheme, p.netloc.rpartition('@')[2])


class URLPolicy:
    """``[oslo_transfer] allowed_schemes`` and ``denied_networks``.

    Applied to every URL the library contacts: the servers each driver
    names for the caller's locations
    (:meth:`~oslo_transfer.driver.Driver.policy_urls`), redirects, web
    seeds and trackers.  :meth:`check` parses a URL once, with
    :func:`parse_url`, refuses it if malformed, resolves its host and
    checks every address it resolves to, and returns the canonical URL: the
    string a driver hands to its transport, so that the host judged is the
    host contacted.
    """

    def __init__(self, allowed_schemes=(), denied_networks=()):
        self.allowed = {s.strip().lower() for s in allowed_schemes
                        if s.strip()}
        try:
            self.denied = [ipaddress.ip_network(n.strip(), strict=False)
                           for n in denied_networks if n.strip()]
        except ValueError as exc:
            raise ValueError('[oslo_transfer] denied_networks: %s'
                             % exc) from exc

    @classmethod
    def from_conf(cls, conf):
        g = conf.oslo_transfer
        return cls(g.allowed_schemes or (), g.denied_networks or ())

    def check(self, url) -> str:
        """The canonical form of ``url``, if the policy allows it.

        :raises URLNotAllowed: ``url`` is malformed, or its scheme or one
            of its host's addresses is refused.
        :raises ConnectionFailed: a denied network is set and the host
            does not resolve.
        """
        loc = self.check_scheme(url)
        if is_local(loc.url):
            return loc.url
        try:
            parts = parse_url(loc.url)
        except exceptions.InvalidLocation as exc:
            raise exceptions.URLNotAllowed('refused: %s' % exc,
                                           url=exc.url) from exc
        if self.denied and parts.hostname:
            self._check_host(parts.hostname, loc.masked)
        return canonical_url(loc.url)

    def check_scheme(self, url) -> Location:
        """Refuse ``url`` if its scheme is not allowed (no host check).

        For a caller's location, whose servers the driver names
        (:meth:`~oslo_transfer.driver.Driver.policy_urls`, each then
        checked by :meth:`check`).

        :raises URLNotAllowed: the scheme is not allowed.
        """
        loc = as_location(url)
        if self.allowed and loc.scheme not in self.allowed:
            raise exceptions.URLNotAllowed(
                'scheme %r is not in [oslo_transfer] allowed_schemes: %s'
                % (loc.scheme, loc.masked), url=loc.masked)
        return loc

    def _check_host(self, host, masked):
        try:
            infos = socket.getaddrinfo(host, None)
        except (socket.gaierror, UnicodeError) as exc:
            raise exceptions.ConnectionFailed(
                'cannot resolve %s: %s' % (host, exc), url=masked) from exc
        for info in infos:
            addr = ipaddress.ip_address(info[4][0].split('%')[0])
            candidates = [addr]
            if addr.version == 6 and addr.ipv4_mapped is not None:
                # ::ffff:127.0.0.1 reaches 127.0.0.1
                candidates.append(addr.ipv4_mapped)
            if addr.is_unspecified:
                # 0.0.0.0 and :: connect to this host
                candidates += [ipaddress.ip_address('127.0.0.1'),
                               ipaddress.ip_address('::1')]
            for net in self.denied:
                if any(a.version == net.version and a in net
                       for a in candidates):
                    raise exceptions.URLNotAllowed(
                        '%s resolves to %s, inside a denied network (%s) '
                        '([oslo_transfer] denied_networks)'
                        % (masked, addr, net), url=masked)


def mask_url(url) -> str:
    """Return ``url`` with the password (and any token query) masked.

    ``https://user:secret@host/x`` becomes ``https://user:***@host/x``.
    Query parameters that usually carry secrets (``token``, ``password``,
    ``secret``, ``signature``, ``X-Amz-Signature``, Swift's
    ``temp_url_sig``, Azure's ``sig``, ...) are masked too; see
    :func:`is_secret_key`.
    """
    url = os.fspath(url)
    if is_local(url) and not url.startswith('file:'):
        return url
    try:
        p = urllib.parse.urlsplit(url)
    except ValueError:
        return '<unparsable URL>'
    netloc = p.netloc
    if '@' in netloc:
        userinfo, _, hostport = netloc.rpartition('@')
        if ':' in userinfo:
            user = userinfo.split(':', 1)[0]
            netloc = '%s:%s@%s' % (user, _MASK, hostport)
    query = p.query
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        masked = []
        changed = False
        for k, v in pairs:
            if is_secret_key(k):
                v = _MASK
                changed = True
            masked.append((k, v))
        if changed:
            query = urllib.parse.urlencode(masked, safe='*')
    return urllib.parse.urlunsplit((p.scheme, netloc, p.path, query,
                                    p.fragment))


_SECRET_KEYS = ('token', 'password', 'passwd', 'secret', 'signature',
                'credential', 'chap')
#: short names matched whole (``sig`` inside a longer word is no secret)
_SECRET_NAMES = ('sig', 'temp_url_sig', 'key', 'api_key',
                 'apikey', 'access_key', 'auth')


def is_secret_key(name: str) -> bool:
    """Whether the query parameter ``name`` usually carries a secret.

    Names containing ``token``, ``password``, ``secret``, ``signature``,
    ``credential`` or ``chap`` (``X-Amz-Signature``, ``X-Amz-Credential``,
    ``X-Amz-Security-Token``), and the short names ``sig`` (Azure SAS),
    ``temp_url_sig`` (Swift temporary URLs), ``key``, ``api_key``...
    """
    k = name.lower()
    return k in _SECRET_NAMES or k.endswith('_sig') or any(
        s in k for s in _SECRET_KEYS)


def mask_text(text: str, secrets) -> str:
    """Replace every occurrence of each secret in ``text`` with ``***``."""
    for s in secrets:
        if s:
            text = text.replace(s, _MASK)
    return text


_QUERY_PARAM = re.compile(r'([?&;])([^=&;?\s"\']+)=([^&;\s"\']*)')


def mask_query_text(text: str) -> str:
    """``text`` with the values of secret query parameters masked.

    For text that embeds a URL or a request line (``GET /x?sig=... HTTP/
    1.1``) rather than being one.
    """
    def repl(m):
        key = urllib.parse.unquote_plus(m.group(2))
        if is_secret_key(key):
            return '%s%s=***' % (m.group(1), m.group(2))
        return m.group(0)
    return _QUERY_PARAM.sub(repl, text)


def query_secrets(url):
    """Values of the query parameters of ``url`` that carry secrets."""
    try:
        query = urllib.parse.urlsplit(url).query
    except ValueError:
        return []
    out = []
    for part in re.split('[&;]', query):
        key, sep, raw = part.partition('=')
        if not sep or len(raw) < 4:
            # Too short to be a secret, and replacing it everywhere would
            # garble the message (a port, a status code).
            continue
        if is_secret_key(urllib.parse.unquote_plus(key)):
            out += [raw, urllib.parse.unquote_plus(raw)]
    return out
