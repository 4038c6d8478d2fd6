#    Licensed under the Apache License, Version 2.0 (the "License"); you may
#    not use this file except in compliance with the License. You may obtain
#    a copy of the License at
#
#         http://www.apache.org/licenses/LICENSE-2.0
#
#    Unless required by applicable law or agreed to in writing, software
#    distributed under the License is distributed on an "AS IS" BASIS, WITHOUT
#    WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied. See
#    the License for the specific language governing permissions and
#    limitations under the License.

"""Access profiles: the order in which a boot first reads its image.

``attach(..., profile=PATH)`` records, for the first
:data:`RECORD_SECONDS` after the attach, the fetch units that readers
touch, in the order of their first touch, all readers merged.  A later
attach of the same image (same header) fetches those units first, before
the rest of the prefetch, so that the next boot finds its blocks present.

The file is JSON, written atomically (temporary file, fsync, rename) with
mode 0600::

    {"format": "oslo.transfer access profile", "version": 1,
     "manifest": "blockmap-sha256:...", "size": 2147483648,
     "unit": 65536, "units": [0, 1, 2, 517, 3, ...]}

``manifest`` is the trusted manifest's identity (``"none"`` without one),
``unit`` the fetch unit in bytes, ``units`` unit indexes.  A profile is
read with bounds checks (at most :data:`MAX_PROFILE` bytes, every unit an
integer inside the image, no repeats) and used only when its header
matches the image; otherwise the attach records a new one.
"""

import json
import logging
import os
import threading
import time

LOG = logging.getLogger(__name__)

__all__ = ['Recorder', 'load', 'save', 'VERSION', 'RECORD_SECONDS',
           'MAX_PROFILE']

FORMAT = 'oslo.transfer access profile'
#: the format's version
VERSION = 1
#: seconds after the attach during which first reads are recorded
RECORD_SECONDS = 60.0
#: the largest profile file read
MAX_PROFILE = 64 * 1024 * 1024


def header(identity: str | None, size: int, unit: int) -> dict:
    """The header a profile must carry to be used for an image."""
    return {'format': FORMAT, 'version': VERSION,
            'manifest': identity or 'none', 'size': size, 'unit': unit}


def load(path: str, head: dict) -> list | None:
    """The units of the profile at ``path``, if its header is ``head``.

    :returns: unit indexes in first-touch order, or None when there is no
        usable profile (missing, damaged, or of another image: logged).
    """
    try:
        with open(path, 'rb') as f:
            raw = f.read(MAX_PROFILE + 1)
    except FileNotFoundError:
        return None
    except OSError as exc:
        LOG.warning('cannot read the access profile %s: %s', path, exc)
        return None
    try:
        units = _parse(raw, head)
    except ValueError as exc:
        LOG.warning('ignoring the access profile %s: %s', path, exc)
        return None
    return units


def _parse(raw: bytes, head: dict) -> list | None:
    if len(raw) > MAX_PROFILE:
        raise ValueError('larger than %d bytes' % MAX_PROFILE)
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError('not JSON: %s' % exc) from None
    if not isinstance(data, dict):
        raise ValueError('not a JSON object')
    for key, want in head.items():
        if data.get(key) != want:
            raise ValueError('%s is %r, this image has %r'
                             % (key, data.get(key), want))
    units = data.get('units')
    if not isinstance(units, list):
        raise ValueError('no list of units')
    count = -(-head['size'] // head['unit'])
    seen = set()
    out = []
    for u in units:
        if type(u) is not int or not 0 <= u < count:
            raise ValueError('unit %r is not one of the image\'s %d'
                             % (u, count))
        if u not in seen:
            seen.add(u)
            out.append(u)
    return out


def save(path: str, head: dict, units) -> None:
    """Write the profile atomically, mode 0600 (errors are logged)."""
    data = dict(head, units=list(units))
    tmp = '%s.%d.tmp' % (path, os.getpid())
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC |
                     os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            blob = json.dumps(data, separators=(',', ':')).encode()
            view = memoryview(blob)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as exc:
        LOG.warning('cannot write the access profile %s: %s', path, exc)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        return
    LOG.info('wrote the access profile %s: %d units', path, len(data['units']))


class Recorder:
    """First touches of units during :data:`RECORD_SECONDS`.

    :param unit: the unit in bytes.
    :param seconds: how long to record from now.
    """

    def __init__(self, unit: int, seconds: float = RECORD_SECONDS):
        self.unit = unit
        self._until = time.monotonic() + seconds
        self._seen = set()
        self.units = []
        self._lock = threading.Lock()

    def touch(self, offset: int, length: int) -> None:
        """Record the units of ``[offset, offset + length)``."""
        if length <= 0 or time.monotonic() > self._until:
            return
        first, last = offset // self.unit, (offset + length - 1) // self.unit
        with self._lock:
            for u in range(first, last + 1):
                if u not in self._seen:
                    self._seen.add(u)
                    self.units.append(u)

    @property
    def over(self) -> bool:
        """True once the recording time is up."""
        return time.monotonic() > self._until
