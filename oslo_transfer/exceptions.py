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

"""The exception tree of oslo.transfer.

Every error that the library raises derives from :class:`TransferError`.
Each class says whether retrying the same operation may succeed
(``retryable``); the engine retries those itself, within its deadline, before
it lets them reach the caller.

Messages name URLs with any password masked (see
:func:`oslo_transfer.locations.mask_url`); drivers must build messages with
the masked form only.
"""

__all__ = [
    'TransferError', 'InvalidLocation', 'NoDriverFound', 'SourceNotFound',
    'AuthenticationFailed', 'PermissionDenied', 'ConnectionFailed',
    'TransferTimeout', 'ProtocolError', 'RangeNotSupported',
    'ChecksumMismatch', 'SizeMismatch', 'SourceChanged', 'DestinationError',
    'DestinationExists', 'Cancelled', 'URLNotAllowed', 'MissingDependency',
    'ManifestNotTrusted', 'DeadlineUnreachable', 'VerificationFailed',
]


class TransferError(Exception):
    """Base class of every error raised by oslo.transfer.

    :ivar retryable: True when the same call may succeed if tried again
        (a dropped connection), False when it cannot (a wrong password).
    :ivar url: the masked URL the error is about, or None.
    """

    retryable = False

    def __init__(self, message: str, url: str | None = None):
        super().__init__(message)
        self.url = url


class InvalidLocation(TransferError, ValueError):
    """A URL or path that cannot be parsed or is not usable as given."""


class URLNotAllowed(InvalidLocation):
    """A URL refused by ``allowed_schemes`` or ``denied_networks``."""


class NoDriverFound(TransferError):
    """No installed and enabled driver can serve the request."""


class MissingDependency(NoDriverFound):
    """A driver's library (a Python extra or a C library) is not installed."""


class SourceNotFound(TransferError):
    """The source does not exist (HTTP 404, ENOENT, FTP 550, ...)."""


class AuthenticationFailed(TransferError):
    """The credentials were refused (HTTP 401, wrong password, host key)."""


class PermissionDenied(AuthenticationFailed):
    """Authenticated, but not allowed (HTTP 403, EACCES)."""


class ConnectionFailed(TransferError):
    """The peer could not be reached or dropped the connection."""

    retryable = True


class TransferTimeout(ConnectionFailed):
    """An I/O operation or the whole transfer ran out of time."""


class ProtocolError(ConnectionFailed):
    """The peer answered something the protocol does not allow.

    A truncated body or a server error (HTTP 5xx) is retryable; see
    ``retryable`` on the instance.
    """

    def __init__(self, message, url=None, retryable=True):
        super().__init__(message, url)
        self.retryable = retryable


class RangeNotSupported(TransferError):
    """The server ignored or mangled a ranged read.

    The engine reacts by reading the object as one stream from the start;
    the bytes already held are not written twice.
    """


class ChecksumMismatch(TransferError):
    """The bytes do not match the expected digest."""

    def __init__(self, message, url=None, expected=None, actual=None):
        super().__init__(message, url)
        self.expected = expected
        self.actual = actual


class VerificationFailed(ChecksumMismatch):
    """The caller's verifier (a signature check) refused the data.

    Raised by :meth:`Transfer.upload
    <oslo_transfer.transfer.Transfer.upload>` when ``verifier.verify()``
    raises; the upload is aborted and nothing is committed.  The
    verifier's exception is the ``__cause__``.
    """


class SizeMismatch(TransferError):
    """The number of bytes differs from the size announced or expected."""


class SourceChanged(TransferError):
    """The source changed between attempts (its validator differs).

    Raised when ``[oslo_transfer] on_source_change = error``; by default
    the transfer restarts from zero instead, a few times in one call
    before it raises this too (a source that never holds still).

    Drivers raise it from ``read()`` when the server says that the object
    changed under the read (HTTP 412 to ``If-Match`` or ``If-Range`` on
    ``ctx.validator``, a new object generation); the engine then follows
    ``on_source_change`` as it does for a validator that changed between
    attempts, never joining bytes of two versions.
    """


class DestinationError(TransferError):
    """The destination cannot be written (disk full, permission, ...)."""


class DestinationExists(DestinationError):
    """The destination exists and ``if_exists`` does not allow replacing it."""


class Cancelled(TransferError):
    """The transfer was cancelled; its resumable state is kept."""


class ManifestNotTrusted(TransferError):
    """A lazy image has no trusted manifest to verify its blocks with.

    Raised by :meth:`Transfer.attach
    <oslo_transfer.transfer.Transfer.attach>` when the caller supplied no
    blockmap or torrent metadata, nor the sha256 of one, unless
    ``[oslo_transfer] lazy_unverified_reads`` allows serving unverified
    blocks.
    """


class DeadlineUnreachable(TransferError):
    """A transfer's deadline (``Hints(deadline=...)``) cannot be met.

    Raised at once, after the source's ``stat`` and before anything is
    written (no ``.part``), when the transfer would finish too late, or
    would make an admitted transfer miss its deadline, at the capacity
    left to its class.  Retryable: later, with less load, it may be
    admitted.  The only hint that can fail a call.

    :ivar estimate: seconds the transfer was estimated to take.
    :ivar deadline: seconds that were left to its deadline.
    """

    retryable = True

    def __init__(self, message, url=None, estimate=None, deadline=None):
        super().__init__(message, url)
        self.estimate = estimate
        self.deadline = deadline
