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

"""Data files with known content, and the state a transfer leaves on disk.

For driver authors' functional tests: ``make_data_file`` writes random
bytes (no all-zero block), and the ``assert_*`` helpers check what a
transfer must leave beside its destination after a success, a resumable
failure or a final one.
"""

import hashlib
import json
import os

__all__ = ['MiB', 'DataFile', 'make_data_file', 'file_equals', 'part_path',
           'ctl_path', 'lock_path', 'files_beside', 'assert_only_dest',
           'assert_resumable', 'assert_nothing_left', 'correct_bytes']

MiB = 1024 * 1024


class DataFile:
    """A file with known content: ``path``, ``data``, ``sha256``, ``md5``."""

    def __init__(self, path, data: bytes):
        self.path = str(path)
        self.data = data
        self.size = len(data)
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.md5 = hashlib.md5(data).hexdigest()
        self.sha512 = hashlib.sha512(data).hexdigest()

    @property
    def name(self) -> str:
        return os.path.basename(self.path)

    def checksum(self, algo: str = 'sha256') -> str:
        return '%s:%s' % (algo, getattr(self, algo))

    def rewrite(self, data: bytes, mtime_shift: float = 10.0):
        """Replace the content (a new version of the source)."""
        with open(self.path, 'wb') as f:
            f.write(data)
        st = os.stat(self.path)
        os.utime(self.path, (st.st_atime, st.st_mtime + mtime_shift))
        self.__init__(self.path, data)


def make_data_file(directory, name: str, size: int, seed=None) -> DataFile:
    """Write ``size`` random bytes (incompressible, no zero runs)."""
    data = bytearray(os.urandom(size))
    # No all-zero 4 KiB block: sparse writers must not punch holes in it.
    data[::4096] = b'\x01' * len(data[::4096])
    data = bytes(data)
    path = os.path.join(str(directory), name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'wb') as f:
        f.write(data)
    return DataFile(path, data)


def file_equals(path, data: bytes) -> bool:
    """Compare a file with ``data`` without keeping two copies around."""
    if os.path.getsize(path) != len(data):
        return False
    view = memoryview(data)
    with open(path, 'rb') as f:
        pos = 0
        while pos < len(data):
            chunk = f.read(4 * MiB)
            if not chunk or chunk != view[pos:pos + len(chunk)]:
                return False
            pos += len(chunk)
    return True


# -- the state a transfer leaves on disk --------------------------------------

def part_path(dest) -> str:
    return '%s.part' % dest


def ctl_path(dest) -> str:
    return '%s.part.ctl' % dest


def lock_path(dest) -> str:
    return '%s.part.lock' % dest


def files_beside(dest) -> list:
    """Names in the destination's folder (sorted)."""
    return sorted(os.listdir(os.path.dirname(str(dest))))


def assert_only_dest(dest, data: bytes | None = None):
    """After success: DEST (with ``data``) and nothing else beside it."""
    name = os.path.basename(str(dest))
    assert files_beside(dest) == [name], (
        'expected only %s, found %s' % (name, files_beside(dest)))
    if data is not None:
        assert file_equals(dest, data), '%s differs from the source' % dest


def assert_resumable(dest, size: int | None = None) -> dict:
    """After a resumable failure: no DEST, ``.part`` and ``.part.ctl``.

    :returns: the control file's JSON.
    """
    assert not os.path.lexists(dest), '%s must not exist' % dest
    assert os.path.isfile(part_path(dest)), (
        'no %s: nothing to resume from (found %s)'
        % (part_path(dest), files_beside(dest)))
    assert os.path.isfile(ctl_path(dest)), (
        'no %s (found %s)' % (ctl_path(dest), files_beside(dest)))
    for path in (part_path(dest), ctl_path(dest)):
        mode = os.stat(path).st_mode & 0o777
        assert mode & 0o077 == 0, '%s is mode %o, not owner-only' % (path,
                                                                     mode)
    with open(ctl_path(dest)) as f:
        ctl = json.load(f)
    if size is not None:
        assert ctl.get('size') == size, ctl
    return ctl


def assert_nothing_left(dest):
    """After a final failure: no DEST, no ``.part``, no control file."""
    left = [n for n in files_beside(dest)
            if n.startswith(os.path.basename(str(dest))) and
            not n.endswith('.part.lock')]
    assert not left, 'expected nothing left, found %s' % left


def correct_bytes(path, data: bytes, block: int = 64 * 1024) -> int:
    """Bytes of ``path`` equal to ``data`` at the same offsets.

    Counted per ``block``; random data has no zero blocks, so holes and
    bytes never written do not count.
    """
    if not os.path.exists(path):
        return 0
    good = 0
    view = memoryview(data)
    with open(path, 'rb') as f:
        pos = 0
        while pos < len(data):
            chunk = f.read(block)
            if not chunk:
                break
            if chunk == view[pos:pos + len(chunk)]:
                good += len(chunk)
            pos += len(chunk)
    return good
