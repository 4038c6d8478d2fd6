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


"""SFTP (version 3) file attributes, parsed with every length bounded.

paramiko's own parser trusts the count of extended attributes: a server
that claims 2**32 - 1 of them in an empty answer keeps the client thread
looping (on zero padding) for hours, where no cancel and no deadline can
reach it.  :func:`parse` reads the same fields from the same bytes, but
each count and length must fit in what was received, so its time is
linear in the answer's length; anything else is
:class:`BadAttributes` (a :class:`~.pipeline.PipelineError`, which the
driver reports as a non-retryable ``ProtocolError``).  A size of 2**63
or more is passed on as read: the engine refuses it for every driver
(:mod:`oslo_transfer.engine.sizes`).

This module imports nothing of paramiko.
"""

import struct

from oslo_transfer._drivers.sftp import pipeline

__all__ = ['Attributes', 'BadAttributes', 'parse']

FLAG_SIZE = 0x00000001
FLAG_UIDGID = 0x00000002
FLAG_PERMISSIONS = 0x00000004
FLAG_AMTIME = 0x00000008
FLAG_EXTENDED = 0x80000000

_U32 = struct.Struct('>I')
_U64 = struct.Struct('>Q')


class BadAttributes(pipeline.PipelineError):
    """An ATTRS answer that SFTP version 3 does not allow."""


class Attributes:
    """The fields of ``paramiko.SFTPAttributes`` that the driver reads.

    A field the server did not send is None.
    """

    def __init__(self):
        self.st_size = None
        self.st_uid = None
        self.st_gid = None
        self.st_mode = None
        self.st_atime = None
        self.st_mtime = None
        #: extended attributes, ``bytes`` name to ``bytes`` value
        self.attr = {}

    def __repr__(self):
        return '<Attributes size=%r mode=%r mtime=%r>' % (
            self.st_size, self.st_mode, self.st_mtime)


def parse(data) -> Attributes:
    """The attributes encoded in ``data`` (the body of an ATTRS answer).

    Bytes after the attributes are ignored, as paramiko ignores them.

    :raises BadAttributes: ``data`` ends inside a field, or claims more
        extended attributes than its length can hold.
    """
    data = bytes(data)
    end = len(data)
    pos = 0

    def number(fmt=_U32, field='a field'):
        nonlocal pos
        if pos + fmt.size > end:
            raise BadAttributes('the attributes end inside %s (%d bytes)'
                                % (field, end))
        pos += fmt.size
        return fmt.unpack_from(data, pos - fmt.size)[0]

    def string():
        nonlocal pos
        n = number()
        if n > end - pos:
            raise BadAttributes('an extended attribute of %d bytes in '
                                '%d' % (n, end))
        pos += n
        return data[pos - n:pos]

    attrs = Attributes()
    flags = number()
    if flags & FLAG_SIZE:
        attrs.st_size = number(_U64, 'the size')
    if flags & FLAG_UIDGID:
        attrs.st_uid = number()
        attrs.st_gid = number()
    if flags & FLAG_PERMISSIONS:
        attrs.st_mode = number()
    if flags & FLAG_AMTIME:
        attrs.st_atime = number()
        attrs.st_mtime = number()
    if flags & FLAG_EXTENDED:
        count = number()
        # Each one takes 8 bytes at least (two empty strings).
        if count > (end - pos) // 8:
            raise BadAttributes('%d extended attributes claimed in %d '
                                'bytes' % (count, end))
        for _ in range(count):
            name = string()
            attrs.attr[name] = string()
    return attrs
