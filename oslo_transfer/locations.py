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
import os
import urllib.parse

from oslo_transfer import exceptions

__all__ = ['Location', 'Source', 'Credentials', 'mask_url', 'is_secret_key',
           'as_location', 'is_local', 'local_path']

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
    :param options: driver-specific options, as documented by each driver.
    """

    url: str
    credentials: Credentials | None = dataclasses.field(
        default=None, repr=False)
    headers: dict | None = dataclasses.field(default=None, repr=False)
    options: dict | None = None

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
        return urllib.parse.urlsplit(self.url).scheme.lower()

    @property
    def masked(self) -> str:
        """The URL with any password masked, safe to log."""
        return mask_url(self.url)

    def parts(self) -> urllib.parse.SplitResult:
        return urllib.parse.urlsplit(self.url)

    def effective_credentials(self, username=None, password=None,
                              token=None, key_file=None) -> Credentials:
        """Resolve credentials: Location, then URL userinfo, then config.

        The arguments are the configured fallbacks.
        """
        parts = self.parts() if not is_local(self.url) else None
        url_user = url_pass = None
        if parts is not None:
            url_user = parts.username and urllib.parse.unquote(parts.username)
            url_pass = parts.password and urllib.parse.unquote(parts.password)
        own = self.credentials or Credentials()
        if own.username or own.password:
            user, pwd = own.username, own.password
        elif url_user or url_pass:
            user, pwd = url_user, url_pass
        else:
            user, pwd = username, password
        return Credentials(username=user, password=pwd,
                           token=own.token or token,
                           key_file=own.key_file or key_file)

    def without_userinfo(self) -> str:
        """The URL with user and password removed (for the wire)."""
        if is_local(self.url):
            return self.url
        p = self.parts()
        host = p.hostname or ''
        if ':' in host:
            host = '[%s]' % host
        if p.port:
            host = '%s:%d' % (host, p.port)
        return urllib.parse.urlunsplit((p.scheme, host, p.path, p.query,
                                        p.fragment))


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
