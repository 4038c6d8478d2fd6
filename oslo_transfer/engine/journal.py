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

The control file never holds credentials.  It is read back with every
field checked (:func:`parse`): a file that is not exactly what
:meth:`Journal.save` writes is damage, ignored with a WARNING, and the
copy starts again.

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
import re
import stat as stat_mod
import time

from oslo_transfer import _utils
from oslo_transfer import exceptions

LOG = logging.getLogger(__name__)

VERSION = 1

#: the largest size or offset: a file's size on Linux is an ``off_t``
MAX_SIZE = 2 ** 63 - 1
#: a control file larger than this is damaged (:meth:`Journal.save` never
#: writes one: see :data:`MAX_RANGES`)
MAX_BYTES = 16 * 1024 * 1024
#: ranges one control file records at most; :meth:`Journal.save` records
#: the first ones (the others are fetched again), so that the file stays
#: far below :data:`MAX_BYTES`
MAX_RANGES = 100000
#: characters of a recorded string (the source URL, a validator, a
#: checksum, an algorithm name)
MAX_TEXT = 1024 * 1024
#: locations of one multi-source copy that the control file records
MAX_SOURCES = 64
_HEX = re.compile(r'[0-9a-f]{2,256}\Z')


class DamagedControlFile(ValueError):
    """Internal: the control file is not what :meth:`Journal.save` writes."""


def _no_constant(name):
    # json.loads takes NaN and Infinity unless told otherwise.
    raise DamagedControlFile('%s is not JSON' % name)


def _text(data, key, optional=True):
    value = data.get(key)
    if value is None and optional:
        return None
    if type(value) is not str or len(value) > MAX_TEXT or (
            not value and not optional):
        raise DamagedControlFile('%s is not a string of at most %d '
                                 'characters' % (key, MAX_TEXT))
    return value


def _offset(value, what):
    # bool is an int, and json gives floats for 1.0 and 1e3: exactly int.
    if type(value) is not int or not 0 <= value <= MAX_SIZE:
        raise DamagedControlFile('%s is not an integer from 0 to 2**63-1'
                                 % what)
    return value


def _ranges(value, size):
    """The recorded ranges as a RangeSet, checked in one linear pass.

    :meth:`Journal.save` writes them sorted, disjoint and not touching
    (``RangeSet`` merges neighbours), each inside ``size`` when known; a
    list in any other shape is damage, never something to merge (which
    could also take time quadratic in its length).
    """
    if type(value) is not list:
        raise DamagedControlFile('ranges is not a list')
    if len(value) > MAX_RANGES:
        raise DamagedControlFile('%d ranges, more than %d'
                                 % (len(value), MAX_RANGES))
    limit = MAX_SIZE if size is None else size
    starts, ends = [], []
    last = -1
    for item in value:
        if type(item) is not list or len(item) != 2:
            raise DamagedControlFile('a range is not a pair')
        start = _offset(item[0], 'a range start')
        end = _offset(item[1], 'a range end')
        if not last < start < end <= limit:
            raise DamagedControlFile(
                'range [%d, %d) is empty, out of order, overlaps another '
                'or lies past the size' % (start, end))
        starts.append(start)
        ends.append(end)
        last = end
    return _utils.RangeSet.from_sorted(starts, ends)


def _sources(value):
    """The ``sources`` entry: ``{source: validator or null}``, or ``{}``."""
    if value is None:
        return {}
    if type(value) is not dict or len(value) > MAX_SOURCES:
        raise DamagedControlFile('sources is not an object of at most %d '
                                 'names' % MAX_SOURCES)
    for key, item in value.items():
        if len(key) > MAX_TEXT or not (
                item is None or (type(item) is str and
                                 len(item) <= MAX_TEXT)):
            raise DamagedControlFile('sources holds something other than '
                                     'validators')
    return value


def _lazy(value):
    """The ``lazy`` entry (a present-map's header): None or a flat object.

    The lazy cache compares it whole with the header it expects, so only
    its shape is checked here: at most 16 names, each value null, a
    boolean, an integer within ``[-(2**63), 2**63-1]`` or a string.
    """
    if value is None:
        return None
    if type(value) is not dict or len(value) > 16:
        raise DamagedControlFile('lazy is not an object of at most 16 '
                                 'names')
    for key, item in value.items():
        if len(key) > 64:
            raise DamagedControlFile('lazy has a name of %d characters'
                                     % len(key))
        if item is None or type(item) is bool:
            continue
        if type(item) is int and -MAX_SIZE - 1 <= item <= MAX_SIZE:
            continue
        if type(item) is str and len(item) <= MAX_TEXT:
            continue
        raise DamagedControlFile('lazy.%.64s is not a null, a boolean, an '
                                 'integer or a string' % key)
    return value


def parse(blob: bytes) -> dict:
    """The state recorded in a control file's bytes, every field checked.

    :returns: the :class:`Journal` attributes, by name.
    :raises DamagedControlFile: anything :meth:`Journal.save` does not
        write: not JSON, not an object, another version, a missing or
        mistyped field, a size or offset outside ``[0, 2**63-1]``, ranges
        that are not sorted, disjoint pairs inside the size, a prefix
        digest that covers bytes not held.
    """
    if len(blob) > MAX_BYTES:
        raise DamagedControlFile('more than %d bytes' % MAX_BYTES)
    try:
        data = json.loads(blob, parse_constant=_no_constant)
    except RecursionError:
        raise DamagedControlFile('nested too deeply') from None
    except ValueError as exc:   # JSONDecodeError, UnicodeDecodeError
        raise DamagedControlFile(str(exc)[:200]) from None
    if type(data) is not dict:
        raise DamagedControlFile('not a JSON object')
    version = data.get('version')
    if type(version) is not int or version != VERSION:
        raise DamagedControlFile('version %.40r, not %d' % (version, VERSION))
    size = data.get('size')
    if size is not None:
        size = _offset(size, 'size')
    ranges = _ranges(data.get('ranges', []), size)
    prefix_len = data.get('prefix_len')
    prefix_len = 0 if prefix_len is None else _offset(prefix_len,
                                                      'prefix_len')
    digest = data.get('prefix_digest')
    algorithm = _text(data, 'algorithm')
    if prefix_len:
        if prefix_len > ranges.prefix():
            raise DamagedControlFile('the prefix digest covers bytes that '
                                     'are not held')
        if type(digest) is not str or not _HEX.match(digest) or \
                algorithm is None:
            raise DamagedControlFile('prefix_digest is not a hex digest '
                                     'with its algorithm')
    else:
        digest = None
    return {'lazy': _lazy(data.get('lazy')),
            'sources': _sources(data.get('sources')),
            'source': _text(data, 'source', optional=False),
            'validator': _text(data, 'validator'),
            'size': size,
            'checksum': _text(data, 'checksum'),
            'ranges': ranges,
            'algorithm': algorithm,
            'prefix_len': prefix_len,
            'prefix_digest': digest}


class Journal:
    """The control file ``DEST.part.ctl``.

    :ivar source: URL of the source, credentials removed.
    :ivar validator: the source's validator when the bytes were received.
    :ivar sources: ``{source: validator}`` of every location a
        multi-source copy reads (empty for one location): on resume each
        is checked.
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
        self.sources = {}
        self.size = None
        self.checksum = None
        self.ranges = _utils.RangeSet()
        self.algorithm = None
        self.prefix_len = 0
        self.prefix_digest = None
        #: the present-map's header of a lazy image, or None
        self.lazy = None

    def load(self) -> bool:
        """Read the control file; False if there is none or it is unusable.

        The file is checked whole before anything of it is used (see
        :func:`parse`): a file that is not exactly what :meth:`save`
        writes (truncated, bit-flipped, another version, another shape)
        is ignored with a WARNING naming it, and the copy starts again.
        Nothing of it is kept then, and no exception escapes.
        """
        self._clear()
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW |
                         os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        except OSError as exc:
            LOG.warning('ignoring control file %s: %s', self.path,
                        exc.strerror or exc)
            return False
        try:
            with os.fdopen(fd, 'rb') as f:
                st = os.fstat(f.fileno())
                if not stat_mod.S_ISREG(st.st_mode):
                    raise DamagedControlFile('not a regular file')
                if st.st_size > MAX_BYTES:
                    raise DamagedControlFile('%d bytes, more than %d'
                                             % (st.st_size, MAX_BYTES))
                # (Reading MAX_BYTES at once would allocate that much.)
                blob = f.read(st.st_size + 1)
            state = parse(blob)
        except OSError as exc:
            LOG.warning('ignoring control file %s: %s', self.path,
                        exc.strerror or exc)
            return False
        except DamagedControlFile as exc:
            LOG.warning('ignoring damaged control file %s (%s); starting '
                        'again', self.path, exc)
            return False
        for name, value in state.items():
            setattr(self, name, value)
        return True

    def _clear(self):
        self.source = None
        self.validator = None
        self.size = None
        self.checksum = None
        self.algorithm = None
        self.reset()

    def save(self):
        """Rewrite the control file atomically and durably."""
        data = {'version': VERSION, 'source': self.source,
                'validator': self.validator, 'size': self.size,
                'checksum': self.checksum,
                'ranges': self.ranges.to_list()[:MAX_RANGES],
                'algorithm': self.algorithm,
                'prefix_len': self.prefix_len,
                'prefix_digest': self.prefix_digest,
                'lazy': self.lazy, 'updated': time.time()}
        if self.sources:
            data['sources'] = dict(list(self.sources.items())[:MAX_SOURCES])
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
        self.sources = {}
        self.ranges = _utils.RangeSet()
        self.prefix_len = 0
        self.prefix_digest = None


class DestinationLock:
    """Exclusive ``flock`` on ``DEST.part.lock`` for one writer at a time.

    Waiting polls so that a cancel or ``expires_at`` ends the wait.  After
    locking, the lock file must still be the one at the path (another
    writer may have removed it on completion); if not, lock again.
    """

    def __init__(self, path: str, name: str | None = None):
        self.path = path
        #: what the lock guards, for messages (default: ``DEST``)
        self.name = name or path[:-len('.part.lock')]
        self.fd = None

    def acquire(self, cancel, expires_at=None, poll=0.1, on_wait=None):
        """Lock; ``on_wait()`` runs at each poll while another holds it."""
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
                    if expires_at is not None and \
                            time.monotonic() > expires_at:
                        raise exceptions.TransferTimeout(
                            'timed out waiting for another writer of %s'
                            % self.name)
                    if on_wait is not None:
                        on_wait()
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
