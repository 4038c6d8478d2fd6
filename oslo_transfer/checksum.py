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

"""Expected digests: ``"ALGO:HEX"`` strings and Glance's hash pair."""

import dataclasses
import hashlib
import re

__all__ = ['Checksum', 'parse', 'algorithm']

_HEX = re.compile(r'[0-9a-f]+\Z')
_SHA = re.compile(r'sha-?(1|224|256|384|512)\Z')


@dataclasses.dataclass(frozen=True)
class Checksum:
    """An expected digest.

    :param algorithm: a :mod:`hashlib` algorithm name (``sha256``, ``md5``).
    :param hexdigest: the expected digest, lower-case hex.
    """

    algorithm: str
    hexdigest: str

    def new(self):
        """A fresh hashlib object of the algorithm."""
        return hashlib.new(self.algorithm)

    def __str__(self):
        return '%s:%s' % (self.algorithm, self.hexdigest)


def parse(value=None, os_hash_algo: str | None = None,
          os_hash_value: str | None = None) -> Checksum | None:
    """Parse a caller's checksum.

    Accepts ``"ALGO:HEX"``, a :class:`Checksum`, a ``(algo, hex)`` pair, a
    mapping with Glance's ``os_hash_algo``/``os_hash_value`` keys, or those
    two keyword arguments.

    :raises ValueError: unknown algorithm, or a digest that is not hex or
        has the wrong length for the algorithm.
    """
    if value is None and os_hash_algo is None and os_hash_value is None:
        return None
    if isinstance(value, Checksum):
        return value
    if isinstance(value, dict):
        os_hash_algo = value.get('os_hash_algo')
        os_hash_value = value.get('os_hash_value')
        value = None
    if isinstance(value, (tuple, list)) and len(value) == 2:
        algo, hexd = value
    elif isinstance(value, str):
        algo, sep, hexd = value.partition(':')
        if not sep:
            raise ValueError('checksum must be "ALGO:HEX", e.g. '
                             '"sha256:9f86d0...", not %r' % value)
    elif value is None:
        if not (os_hash_algo and os_hash_value):
            raise ValueError('os_hash_algo and os_hash_value go together')
        algo, hexd = os_hash_algo, os_hash_value
    else:
        raise ValueError('unsupported checksum %r' % (value,))
    if not isinstance(algo, str) or not isinstance(hexd, str):
        raise ValueError('a checksum is an algorithm and a hex digest, '
                         'both text, not %r' % ((algo, hexd),))
    algo = algorithm(algo)
    hexd = hexd.strip().lower()
    if not _HEX.match(hexd):
        raise ValueError('checksum digest is not hexadecimal: %r'
                         % hexd[:200])
    size = hashlib.new(algo).digest_size
    if len(hexd) != 2 * size:
        raise ValueError('a %s digest has %d hex digits, not %d'
                         % (algo, 2 * size, len(hexd)))
    return Checksum(algo, hexd)


def algorithm(name: str) -> str:
    """The :mod:`hashlib` name of a fixed-length digest algorithm.

    ``SHA-256`` and ``sha_256`` become ``sha256``.  Algorithms whose
    digest has no fixed length (``shake_128``, ``shake_256``) are refused:
    a digest to compare needs one.

    :raises ValueError: an unknown or variable-length algorithm.
    """
    algo = name.strip().lower()
    m = _SHA.match(algo)
    if m:
        algo = 'sha' + m.group(1)
    size = None
    # as given (OpenSSL's md5-sha1), else with "_" (sha3-256 is sha3_256)
    for candidate in dict.fromkeys((algo, algo.replace('-', '_'))):
        try:
            size = hashlib.new(candidate).digest_size
        except (ValueError, TypeError):
            continue
        algo = candidate
        break
    if size is None:
        raise ValueError('unknown checksum algorithm %r (use a hashlib '
                         'name such as sha256, sha512, md5)' % algo[:64])
    if not size:
        raise ValueError('%s has no fixed digest length: use a '
                         'fixed-length algorithm such as sha256 or sha512'
                         % algo)
    return algo
