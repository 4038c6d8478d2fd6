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

"""Every digest a caller asked for, and its verifier, fed in one pass.

Glance stores an image's size, its md5 ``checksum`` and a multihash
(``os_hash_algo``/``os_hash_value``, sha512), and checks a signature with
a cursive verifier.  :class:`Digests` takes each chunk once and hands it
to every hashlib object and to the verifier, so that an upload or a copy
reads its bytes once, whatever was asked.

It stands wherever the engine keeps one hashlib object: ``update()``,
``hexdigest()`` (of the *primary* algorithm: the checksum's, else the
first asked) and ``copy()`` (the primary's state, for resume marks).
"""

import hashlib
import time

from oslo_transfer import checksum as checksum_mod
from oslo_transfer import exceptions

__all__ = ['Digests', 'algorithms', 'Feed', 'YIELD_BYTES']

#: Long hashing loops call ``time.sleep(0)`` after this many bytes, so that
#: green threads (eventlet) get the hub between two blocks.
YIELD_BYTES = 4 * 1024 * 1024


def algorithms(hash_algos, default) -> tuple:
    """The hashlib names of ``hash_algos`` (None: ``(default,)``).

    :param default: ``[oslo_transfer] default_digest`` checked (None for
        ``none``).
    :raises ValueError: an unknown or variable-length algorithm, before
        any I/O.
    """
    if hash_algos is None:
        return (default,) if default else ()
    if isinstance(hash_algos, str):
        hash_algos = (hash_algos,)
    return tuple(dict.fromkeys(checksum_mod.algorithm(a)
                               for a in hash_algos))


class Feed:
    """A caller's verifier (``update(bytes)``, ``verify()``), fed once.

    The engine may hash the same prefix twice (a new attempt re-reads
    the bytes it holds); the verifier must see each byte once, in order,
    so the bytes it already had are skipped.
    """

    def __init__(self, verifier):
        self.verifier = verifier
        self.fed = 0

    def update(self, pos, data):
        end = pos + len(data)
        if end <= self.fed:
            return
        if pos < self.fed:
            data = memoryview(data)[self.fed - pos:]
        self.verifier.update(bytes(data))
        self.fed = end

    def verify(self, url):
        """Call ``verify()``; any exception becomes ``VerificationFailed``."""
        try:
            self.verifier.verify()
        except Exception as exc:
            raise exceptions.VerificationFailed(
                '%s: the verifier refused the data (%s: %s); nothing was '
                'committed' % (url, type(exc).__name__, exc),
                url=url) from exc


class Digests:
    """hashlib objects of several algorithms (and a verifier), one pass.

    :param algos: hashlib names (see :func:`algorithms`).
    :param checksum: the expected :class:`~oslo_transfer.checksum.Checksum`
        (its algorithm is always computed and is the primary one).
    :param feed: a :class:`Feed`, or None.
    """

    def __init__(self, algos, checksum=None, feed=None):
        names = list(algos)
        if checksum is not None:
            names.insert(0, checksum.algorithm)
        names = list(dict.fromkeys(names))
        self._h = {a: hashlib.new(a) for a in names}
        self.primary = names[0] if names else None
        self.feed = feed
        self.pos = 0
        self._since_yield = 0

    @property
    def algorithm(self):
        """The primary algorithm (None when nothing is hashed)."""
        return self.primary

    def __bool__(self):
        return bool(self._h) or self.feed is not None

    def update(self, data):
        for h in self._h.values():
            h.update(data)
        if self.feed is not None:
            self.feed.update(self.pos, data)
        self.pos += len(data)
        self._since_yield += len(data)
        if self._since_yield >= YIELD_BYTES:
            self._since_yield = 0
            time.sleep(0)

    def hexdigest(self):
        """The primary digest (None when nothing is hashed)."""
        if self.primary is None:
            return None
        return self._h[self.primary].hexdigest()

    def hexdigests(self) -> dict:
        """``{algorithm: hex digest}`` of every algorithm."""
        return {a: h.hexdigest() for a, h in self._h.items()}

    def copy(self):
        """A copy of the primary hashlib object (its state so far)."""
        return self._h[self.primary].copy()

    def verify(self, url):
        """The verifier's ``verify()``, when there is one."""
        if self.feed is not None:
            self.feed.verify(url)
