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

"""What a finished transfer reports."""

import dataclasses

__all__ = ['Result']


@dataclasses.dataclass
class Result:
    """The outcome of :meth:`Transfer.copy` or :meth:`Transfer.upload`.

    :ivar bytes_transferred: bytes moved over the wire by this call.
    :ivar bytes_resumed: bytes already held from an earlier attempt that
        were not sent again.
    :ivar bytes_by_location: ``{masked url: bytes}`` taken from each
        location by this call.  With several locations read at once (see
        the user guide's "Several locations at once") the bytes each one
        delivered and that were kept (a piece that failed its manifest
        check does not count); with one location, ``{url:
        bytes_transferred}``.  Empty when nothing was moved.
    :ivar driver: entry-point name of the driver that delivered the data
        (None when an existing destination was kept).
    :ivar url: the location used, password masked.
    :ivar digest: hex digest of the whole object, or None when none was
        computed (no checksum asked and ``default_digest = none``, or a
        whole-file fast path without a checksum).
    :ivar algorithm: the digest's hashlib algorithm.
    :ivar digests: ``{algorithm: hex digest}`` of every digest computed
        in the same pass: the checksum's algorithm and those of
        ``hash_algos`` (default ``[oslo_transfer] default_digest``), e.g.
        ``{"md5": ..., "sha512": ...}`` for Glance.  Empty when nothing
        was hashed.
    :ivar size: size of the object in bytes (for an upload: the bytes
        of the data, those resumed included).
    :ivar elapsed: seconds from the call to the end.
    :ivar plan: the :class:`~oslo_transfer.selector.Plan` that was followed.
    :ivar dest: the destination (path or masked URL).
    :ivar attempts: failed attempts before the successful one, as
        ``(masked url, driver, error)`` triples.
    :ivar seeding: a :class:`~oslo_transfer.driver.Seeding` when the driver
        goes on sharing the destination with peers after the copy (the
        ``bittorrent`` driver for ``seed_time`` seconds), else None.  It
        is not part of :meth:`to_dict`.
    """

    bytes_transferred: int = 0
    bytes_resumed: int = 0
    bytes_by_location: dict = dataclasses.field(default_factory=dict)
    driver: str | None = None
    url: str | None = None
    digest: str | None = None
    algorithm: str | None = None
    digests: dict = dataclasses.field(default_factory=dict)
    size: int | None = None
    elapsed: float = 0.0
    plan: object = None
    dest: str | None = None
    attempts: list = dataclasses.field(default_factory=list)
    seeding: object = None

    @property
    def throughput(self) -> float:
        """Bytes per second moved by this call."""
        return self.bytes_transferred / self.elapsed if self.elapsed else 0.0

    def to_dict(self) -> dict:
        return {'bytes_transferred': self.bytes_transferred,
                'bytes_resumed': self.bytes_resumed,
                'bytes_by_location': dict(self.bytes_by_location),
                'driver': self.driver, 'url': self.url,
                'digest': self.digest, 'algorithm': self.algorithm,
                'digests': dict(self.digests),
                'size': self.size, 'elapsed': round(self.elapsed, 6),
                'dest': self.dest,
                'attempts': [list(a) for a in self.attempts],
                'plan': self.plan.to_dict() if self.plan else None}
