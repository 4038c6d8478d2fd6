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

"""``DEST.part.map``: which blocks of a lazy image's cache are present.

The file is a bare bitmap: bit ``i % 8`` (least significant first) of byte
``i // 8`` is set when block ``i`` of the manifest is in ``DEST.part``,
durably.  Its header (format version, block size, block count and the
identity of the manifest) is the ``lazy`` entry of the control file
``DEST.part.ctl`` (:mod:`oslo_transfer.engine.journal`), written before
the first bit; a map whose header does not match is discarded whole.

Bits only go from 0 to 1: a bit is written only after the data it covers
was made durable (:meth:`PresentMap.commit` is called after an
``fdatasync`` of ``DEST.part``), then the map itself is synced.  The file
is written full of zeros (allocated) when it is created, so that setting a
bit never needs a free block on a full disk, and a torn write leaves some
of the new bits unset, never a bit set over missing data.
"""

import errno
import os

from oslo_transfer import exceptions

__all__ = ['PresentMap', 'VERSION']

#: the version of the map's format, in its header (the control file)
VERSION = 1


class PresentMap:
    """The bitmap file of one cache.

    :param path: ``DEST.part.map``.
    :param count: blocks of the image (bits of the map).
    :param durable: ``fdatasync`` the map after each commit
        (``[oslo_transfer] fsync``).
    """

    def __init__(self, path: str, count: int, durable: bool = True):
        self.path = path
        self.count = count
        self.durable = durable
        self.bits = bytearray((count + 7) // 8)
        self.fd = None

    def __contains__(self, index: int) -> bool:
        return bool(self.bits[index >> 3] >> (index & 7) & 1)

    def indexes(self):
        """The blocks whose bit is set, in order."""
        for byte_index, byte in enumerate(self.bits):
            while byte:
                low = byte & -byte
                index = byte_index * 8 + low.bit_length() - 1
                if index < self.count:
                    yield index
                byte ^= low

    def peek(self) -> bool:
        """Read the bits of the file without opening it for writing.

        :returns: False (and no bits) when there is no map of the right
            length.
        """
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW |
                         os.O_CLOEXEC)
        except OSError:
            return False
        try:
            data = os.pread(fd, len(self.bits) + 1, 0)
        except OSError:
            return False
        finally:
            os.close(fd)
        if len(data) != len(self.bits):
            return False
        self._set_bits(data)
        return True

    def _set_bits(self, data):
        self.bits[:] = data
        last = self.count % 8
        if last and self.bits:
            self.bits[-1] &= (1 << last) - 1

    def open(self, fresh: bool) -> None:
        """Open the map; ``fresh`` (or a map of another length) starts empty.

        :raises DestinationError: the map cannot be created or read.
        """
        self.close()
        size = len(self.bits)
        try:
            if not fresh:
                try:
                    self._open_existing(size)
                    return
                except FileNotFoundError:
                    pass
            self._create(size)
        except OSError as exc:
            raise _error(self.path, exc) from exc

    def _open_existing(self, size):
        fd = os.open(self.path, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
        try:
            data = os.pread(fd, size + 1, 0)
        except BaseException:
            os.close(fd)
            raise
        if len(data) != size:
            os.close(fd)
            self._create(size)
            return
        self.fd = fd
        self._set_bits(data)

    def _create(self, size):
        tmp = '%s.%d.tmp' % (self.path, os.getpid())
        fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC |
                     os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            zeros = bytes(size)
            if os.write(fd, zeros) != size:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            if self.durable:
                os.fsync(fd)
            os.replace(tmp, self.path)
        except BaseException:
            os.close(fd)
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise
        self.fd = fd
        self.bits[:] = bytes(size)

    def commit(self, indexes) -> None:
        """Set the bits of ``indexes`` in the file, then sync it.

        The caller has made the data of those blocks durable first.

        :raises DestinationError: the map could not be written.  The
            bits stay set in memory (their data is durable); the file has
            some of them or none, never a bit that was not asked for.
        """
        indexes = sorted(indexes)
        if not indexes:
            return
        for index in indexes:
            self.bits[index >> 3] |= 1 << (index & 7)
        first, last = indexes[0] >> 3, indexes[-1] >> 3
        try:
            view = memoryview(self.bits)[first:last + 1]
            if os.pwrite(self.fd, view, first) != len(view):
                raise OSError(errno.EIO, 'short write')
            if self.durable:
                os.fdatasync(self.fd)
        except OSError as exc:
            raise _error(self.path, exc) from exc

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def remove(self) -> None:
        self.close()
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _error(path, exc):
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return exceptions.DestinationError(
            'no space left on the device of %s' % path)
    return exceptions.DestinationError('cannot write %s: %s'
                                       % (path, exc.strerror or exc))
