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

"""Digests already verified for a finished destination, so waiters need
not read it again.

When eight callers ask for the same image, one downloads it and the
others wait on ``DEST.part.lock``; each then finds ``DEST`` and, with a
checksum, would hash the whole file again, one after another.  Instead,
the writer records the digests it verified:

* in this process, keyed by the path (:data:`_KNOWN`, bounded);
* with the file, in the extended attribute ``user.oslo_transfer.verified``
  (JSON: size, mtime_ns, inode and the digests), for other processes and
  later runs, where the file system has user xattrs (ext4, xfs, btrfs,
  tmpfs on recent kernels); elsewhere other processes hash as before.

A record is trusted only while the file's size, modification time (in
nanoseconds) and inode are those recorded: a rewrite in place changes
the time, a replacement the inode.  Whoever can set the attribute can
write the file itself, so it trusts no one new.
"""

import collections
import json
import logging
import os
import threading

LOG = logging.getLogger(__name__)

__all__ = ['XATTR', 'stamp', 'remember', 'lookup']

#: the extended attribute that holds the record
XATTR = 'user.oslo_transfer.verified'

_MAX_KNOWN = 1024
_KNOWN = collections.OrderedDict()
_lock = threading.Lock()


def _key(st) -> list:
    return [st.st_size, st.st_mtime_ns, st.st_ino]


def stamp(fd, digests: dict):
    """Record ``digests`` in the xattr of the open file ``fd``.

    Called once the data is complete and before its mode may forbid
    writing (a user xattr needs write permission).  Best effort: a file
    system without user xattrs only costs other processes a re-read.
    """
    if not digests:
        return
    value = json.dumps({'key': _key(os.fstat(fd)), 'digests': digests},
                       sort_keys=True).encode()
    try:
        os.setxattr(fd, XATTR, value)
    except OSError as exc:
        LOG.debug('no %s on fd %d (%s): other processes will hash the '
                  'file again', XATTR, fd, exc.strerror)


def remember(path: str, digests: dict):
    """Record ``digests`` of ``path`` (as it is now) for this process."""
    if not digests:
        return
    try:
        st = os.stat(path)
    except OSError:
        return
    with _lock:
        _KNOWN[path] = (_key(st), dict(digests))
        _KNOWN.move_to_end(path)
        while len(_KNOWN) > _MAX_KNOWN:
            _KNOWN.popitem(last=False)


def lookup(path: str) -> dict:
    """``{algorithm: hex}`` verified for ``path`` as it is now, or ``{}``."""
    try:
        st = os.stat(path)
    except OSError:
        return {}
    key = _key(st)
    with _lock:
        known = _KNOWN.get(path)
    if known is not None and known[0] == key:
        return dict(known[1])
    try:
        raw = os.getxattr(path, XATTR)
        rec = json.loads(raw)
        if rec.get('key') == key and isinstance(rec.get('digests'), dict):
            return {str(a): str(h) for a, h in rec['digests'].items()}
    except (OSError, ValueError, AttributeError):
        pass
    return {}
