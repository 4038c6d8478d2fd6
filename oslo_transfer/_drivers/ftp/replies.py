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

"""What an FTP server replies, parsed strictly.

A server is not trusted to send what RFC 959, 2389 and 3659 say.  Every
number is ASCII digits only (``str.isdigit()`` and ``int()`` also take
superscripts, other scripts' digits and underscores), within its range
(a size at most 2**63 - 1, a port 1-65535), and a reply that breaks the
rules raises :class:`ReplyError`, which the driver reports as a
non-retryable :class:`~oslo_transfer.exceptions.ProtocolError`.  A
multi-line reply is bounded in lines and bytes
(:data:`MAX_REPLY_LINES`, :data:`MAX_REPLY_BYTES`).
"""

import calendar
import ftplib
import re
import time

__all__ = ['ReplyError', 'code', 'size', 'mdtm', 'epsv_port', 'pasv',
           'size_150', 'features', 'MAX_SIZE', 'MAX_REPLY_LINES',
           'MAX_REPLY_BYTES']

#: the largest size a reply may give: a file's size is an off_t
MAX_SIZE = 2 ** 63 - 1
#: lines and characters of one multi-line reply, at most (a FEAT or a
#: banner runs to a few dozen lines)
MAX_REPLY_LINES = 1000
MAX_REPLY_BYTES = 256 * 1024

_CODE = re.compile(r'([1-5][0-9][0-9])(?=[ -]|\Z)')
_SIZE = re.compile(r'213 +([0-9]{1,19}) *\Z')
_MDTM = re.compile(r'213 +([0-9]{14})(?:\.([0-9]{1,9}))? *\Z')
_EPSV = re.compile(r'229 .*\(([!-~])\1\1([0-9]{1,5})\1\)')
_PASV = re.compile(r'227 .*?([0-9]{1,3}),([0-9]{1,3}),([0-9]{1,3}),'
                   r'([0-9]{1,3}),([0-9]{1,3}),([0-9]{1,3})')
_BYTES_150 = re.compile(r'150 .*\(([0-9]{1,19}) bytes\)', re.IGNORECASE)


class ReplyError(ftplib.error_proto):
    """A reply that breaks the protocol (malformed, out of range, endless).

    An ``ftplib.error_proto``, so that it ends a session as ftplib's own
    protocol errors do.
    """


def _fail(what, text):
    return ReplyError('malformed %s reply %r' % (what, text[:80]))


def code(text: str) -> int | None:
    """The reply code that ``text`` starts with, or None."""
    m = _CODE.match(text or '')
    return int(m.group(1)) if m else None


def size(text: str) -> int:
    """``213 N`` (the answer to ``SIZE``) -> N.

    :raises ReplyError: anything else, or a size past :data:`MAX_SIZE`.
    """
    m = _SIZE.match(text.strip())
    if m is None or int(m.group(1)) > MAX_SIZE:
        raise _fail('SIZE', text)
    return int(m.group(1))


def mdtm(text: str) -> tuple:
    """``213 YYYYMMDDHHMMSS[.fff]`` -> ``(seconds since the epoch, stamp)``.

    The stamp (the reply's digits) goes into the validator as it is.

    :raises ReplyError: not such a reply, or not a valid time.
    """
    m = _MDTM.match(text.strip())
    if m is None:
        raise _fail('MDTM', text)
    try:
        tm = time.strptime(m.group(1), '%Y%m%d%H%M%S')
    except ValueError:
        raise _fail('MDTM', text) from None
    seconds = float(calendar.timegm(tm))
    if m.group(2):
        seconds += float('0.' + m.group(2))
    stamp = m.group(1) + ('.' + m.group(2) if m.group(2) else '')
    return seconds, stamp


def _port(value, what, text):
    port = int(value)
    if not 0 < port < 65536:
        raise _fail(what, text)
    return port


def epsv_port(text: str) -> int:
    """The port of ``229 Entering Extended Passive Mode (|||PORT|)``.

    :raises ReplyError: not such a reply, or a port outside 1-65535.
    """
    m = _EPSV.match(text)
    if m is None:
        raise _fail('EPSV', text)
    return _port(m.group(2), 'EPSV', text)


def pasv(text: str) -> tuple:
    """``(address, port)`` of ``227 Entering Passive Mode (h1,...,p1,p2)``.

    The driver never connects to the address the reply announces (the
    data connection goes to the control connection's peer); it is
    returned for the log.

    :raises ReplyError: not such a reply, or numbers out of range.
    """
    m = _PASV.match(text)
    if m is None:
        raise _fail('PASV', text)
    numbers = [int(g) for g in m.groups()]
    if any(n > 255 for n in numbers):
        raise _fail('PASV', text)
    return ('.'.join(map(str, numbers[:4])),
            _port(numbers[4] * 256 + numbers[5], 'PASV', text))


def size_150(text: str) -> int | None:
    """The size a ``150 ... (N bytes)`` reply announces, or None."""
    m = _BYTES_150.match(text)
    if m is None or int(m.group(1)) > MAX_SIZE:
        return None
    return int(m.group(1))


def features(text: str) -> set:
    """The upper-case feature lines of a ``211-`` FEAT reply."""
    feats = set()
    for line in text.splitlines()[1:]:
        line = line.strip()
        if line and not line.startswith('211'):
            feats.add(line.upper())
    return feats


class Lines:
    """Collects the lines of one multi-line reply, within the bounds.

    :raises ReplyError: from :meth:`add` once the reply passes
        :data:`MAX_REPLY_LINES` lines or :data:`MAX_REPLY_BYTES`
        characters.
    """

    def __init__(self, first: str):
        self.lines = [first]
        self.chars = len(first)

    def add(self, line: str) -> None:
        self.lines.append(line)
        self.chars += len(line)
        if len(self.lines) > MAX_REPLY_LINES or \
                self.chars > MAX_REPLY_BYTES:
            raise ReplyError('a multi-line reply of more than %d lines or '
                             '%d characters' % (MAX_REPLY_LINES,
                                                MAX_REPLY_BYTES))

    def text(self) -> str:
        return '\n'.join(self.lines)
