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

"""Resume bookkeeping: byte ranges, the control file and the writer lock.

Beside a destination ``DEST`` the engine keeps:

``DEST.part``
    the bytes received so far (mode 0600, created without following
    symlinks);
``DEST.part.ctl``
    the control file, JSON, rewritten atomically (temp file, fsync, rename):
    source URL without credentials, validator, size, the ranges that are
    durable (fsync'd before they were recorded) and the digest of the
    contiguous prefix that was hashed so far;
``DEST.part.lock``
    held with ``fcntl.flock`` for the whole transfer: one writer per
    destination.

The control file never holds credentials.

A lazy image (:mod:`oslo_transfer.lazy`) keeps the same files, and
``DEST.part.map`` beside them: a bitmap of the blocks present, whose
versioned header (block size, block count, the manifest that names the
cache) is the ``lazy`` entry of the control file.  The ranges of the
control file cover what the map says, so that a ``copy()`` resumes from
what an attach left; a ``copy()`` that starts again from nothing drops
the ``lazy`` entry, and the map goes with the control file.
"""

import errno
import fcntl
import glob
import json
import logging
import os
import time

from oslo_transfer import _utils
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

VERSION = 1


class Journal:
    """The control file ``DEST.part.ctl``.

    :ivar source: URL of the source, credentials removed.
    :ivar validator: the source's validator when the bytes were received.
    :ivar size: the source's size, if known.
    :ivar ranges: a :class:`~oslo_transfer._utils.RangeSet` of durable bytes.
    :ivar prefix_len: bytes of the prefix covered by ``prefix_digest``.
    :ivar prefix_digest: hex digest (``algorithm``) of ``[0, prefix_len)``.
    """

    def __init__(self, path: str, durable: bool = True):
        self.path = path
        # False with [oslo_transfer] fsync = false: the data is not synced
        # either, so syncing its record would buy nothing.
        self.durable = durable
        self.source = None
        self.validator = None
        self.size = None
        self.checksum = None
        self.ranges = _utils.RangeSet()
        self.algorithm = None
        self.prefix_len = 0
        self.prefix_digest = None
        #: the present-map's header of a lazy image, or None
        self.lazy = None

    def load(self) -> bool:
        """Read the control file; False if there is none or it is unusable."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            return False
        except OSError as exc:
            LOG.warning('ignoring control file %s: %s', self.path, exc)
            return False
        try:
            with os.fdopen(fd, 'rb') as f:
                data = json.loads(f.read(1 << 24))
            if data.get('version') != VERSION:
                raise ValueError('version %r' % data.get('version'))
            self.source = data['source']
            self.validator = data.get('validator')
            self.size = data.get('size')
            self.checksum = data.get('checksum')
            self.ranges = _utils.RangeSet(
                tuple(r) for r in data.get('ranges', ()))
            self.algorithm = data.get('algorithm')
            self.prefix_len = int(data.get('prefix_len') or 0)
            self.prefix_digest = data.get('prefix_digest')
            self.lazy = data.get('lazy')
        except (ValueError, KeyError, TypeError) as exc:
            LOG.warning('ignoring damaged control file %s: %s', self.path,
                        exc)
            self.ranges = _utils.RangeSet()
            return False
        return True

    def save(self):
        """Rewrite the control file atomically and durably."""
        data = {'version': VERSION, 'source': self.source,
                'validator': self.validator, 'size': self.size,
                'checksum': self.checksum,
                'ranges': self.ranges.to_list(), 'algorithm': self.algorithm,
                'prefix_len': self.prefix_len,
                'prefix_digest': self.prefix_digest,
                'lazy': self.lazy, 'updated': time.time()}
        tmp = '%s.%d.tmp' % (self.path, os.getpid())
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC |
                         os.O_NOFOLLOW, 0o600)
            try:
                blob = json.dumps(data).encode()
                if os.write(fd, blob) != len(blob):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                if self.durable:
                    _utils.offload(os.fsync, fd)
            finally:
                os.close(fd)
            os.replace(tmp, self.path)
        except OSError as exc:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                msg = 'no space left on the device of %s' % self.path
            else:
                msg = 'cannot write the control file %s: %s' % (
                    self.path, exc.strerror or exc)
            raise exceptions.DestinationError(msg) from exc

    def remove(self):
        """Remove the control file, its present-map and stale temp files.

        The temp files are those of killed writers.  Only called with the
        destination lock held, so no other process is rewriting it.
        """
        paths = [self.path, self.map_path] + glob.glob(
            glob.escape(self.path) + '.*.tmp')
        for p in paths:
            try:
                os.unlink(p)
            except FileNotFoundError:
                pass

    @property
    def map_path(self) -> str:
        """``DEST.part.map``: a lazy image's present-map beside it."""
        return self.path[:-len('.ctl')] + '.map' if \
            self.path.endswith('.ctl') else self.path + '.map'

    def reset(self):
        self.lazy = None
        self.validator = None
        self.ranges = _utils.RangeSet()
        self.prefix_len = 0
        self.prefix_digest = None


class DestinationLock:
    """Exclusive ``flock`` on ``DEST.part.lock`` for one writer at a time.

    Waiting polls so that a cancel or the deadline ends the wait.  After
    locking, the lock file must still be the one at the path (another
    writer may have removed it on completion); if not, lock again.
    """

    def __init__(self, path: str):
        self.path = path
        self.fd = None

    def acquire(self, cancel, deadline=None, poll=0.1):
        while True:
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT |
                             os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            except OSError as exc:
                raise exceptions.DestinationError(
                    'cannot create lock file %s: %s' % (self.path,
                                                        exc.strerror)) from exc
            try:
                while True:
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        break
                    except OSError as exc:
                        if exc.errno not in (errno.EAGAIN, errno.EACCES):
                            raise
                    if deadline is not None and time.monotonic() > deadline:
                        raise exceptions.TransferTimeout(
                            'timed out waiting for another writer of %s'
                            % self.path[:-len('.part.lock')])
                    if cancel.wait(poll):
                        cancel.check()
                st = os.fstat(fd)
                try:
                    cur = os.stat(self.path, follow_symlinks=False)
                except FileNotFoundError:
                    cur = None
                if cur is not None and (cur.st_ino, cur.st_dev) == (
                        st.st_ino, st.st_dev):
                    self.fd = fd
                    return
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def release(self, remove=False):
        if self.fd is None:
            return
        if remove:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
        os.close(self.fd)
        self.fd = None
