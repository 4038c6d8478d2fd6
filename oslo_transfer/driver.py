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

"""The contract between the engine and a protocol driver.

A driver is a class registered under the entry-point namespace
``oslo_transfer.drivers``; the entry-point name is the driver's ``name``, the
module name of an in-tree driver and the suffix of its option group
(``[oslo_transfer_<name>]``).  The engine owns everything that every protocol
shares: the destination's ``.part`` file and its journal, locking, hashing,
retries, rate limits, parallel segments and the final rename.  A driver only
moves bytes and says what it can do.

Rules every driver must follow:

* The driver must declare what it can do in ``capabilities``; the engine
  never guesses by trying.
* ``read()`` must yield exactly the bytes asked for, in order, or raise.  A
  short body is an error (:class:`~oslo_transfer.exceptions.ProtocolError`),
  never a short success.
* The driver must translate its library's errors into
  :mod:`oslo_transfer.exceptions` with ``raise ... from``, and must name URLs
  by :attr:`Location.masked` only.  Secrets must never reach a log line.
* The driver must be thread-safe: the engine calls ``read()`` from several
  threads at once for parallel segments.  State per call lives in the call.
* Blocking calls must honour ``ctx.io_timeout`` and must return or raise
  soon after ``ctx.cancel`` is set (at most one I/O timeout later).  Use
  :meth:`CancelToken.on_cancel` to close a socket that a blocking call waits
  on.
* Heavy or optional imports (a C library, libtorrent, paramiko) happen in
  :meth:`Driver.check_available` or at first use, never at module import,
  and a missing one raises
  :class:`~oslo_transfer.exceptions.MissingDependency` naming the package.
* ``list_opts()`` must not import optional dependencies: the sample config
  generator calls it on hosts that do not have them.
* A driver imports the contract (this module,
  :mod:`~oslo_transfer.exceptions`, :mod:`~oslo_transfer.locations`, the
  helpers of :mod:`oslo_transfer._utils`) and public modules, never the
  engine and never another driver: it reaches another protocol's driver
  through :attr:`Context.driver_for`, and the URL policy through its
  :class:`Context` too.
* The driver must name in :meth:`Driver.policy_urls` every server it will
  contact for a location: the engine checks those URLs against the URL
  policy before the first connection, and keys per-origin connection slots
  on the first one.
* A driver that declares ``LAZY_READ`` hands a lazy image only pieces it
  verified against the image's metadata, each once, and answers
  :meth:`LazyReader.failed` instead of letting a read wait forever.
* A driver whose server reports mid-read that the object changed (HTTP 412
  to ``If-Match``, a new generation) raises
  :class:`~oslo_transfer.exceptions.SourceChanged` from ``read()``; the
  engine then follows ``[oslo_transfer] on_source_change``.
"""

import abc
import contextlib
import dataclasses
import enum
import inspect
import logging
import threading
import time
import types
import typing
import warnings

from oslo_transfer import exceptions
from oslo_transfer import locations

LOG = logging.getLogger(__name__)

__all__ = ['Capability', 'Stat', 'Driver', 'Writer', 'Seeding',
           'LazyReader', 'CancelToken', 'Context', 'PartTarget',
           'out_of_time']


class Capability(enum.Flag):
    """What a driver can do; checked by the selector and the engine."""

    NONE = 0
    #: ``read()`` works.
    READ = enum.auto()
    #: ``write()`` works.
    WRITE = enum.auto()
    #: ``read()`` honours ``offset``/``length`` (resume, parallel segments).
    RANGED_READ = enum.auto()
    #: ``write()`` can continue at ``offset`` (see ``written_size()``).
    RESUMABLE_WRITE = enum.auto()
    #: ``copy_to_path()`` moves the bytes without user-space copies.
    ZERO_COPY = enum.auto()
    #: Peers share the bytes (BitTorrent); the origin sends each byte ~once.
    #: ``seed()`` works, and ``after_commit()`` may keep sharing a copy.
    PEER_TO_PEER = enum.auto()
    #: Only usable when the hosts share a network (NFS, iSCSI).
    SAME_NETWORK_ONLY = enum.auto()
    #: Block or file access to the storage itself (NFS export, LUN, path).
    BLOCK_ACCESS = enum.auto()
    #: ``write()`` stages and renames: an aborted write leaves nothing.
    ATOMIC_COMMIT = enum.auto()
    #: ``copy_to_path()`` is implemented: a whole-file fast path.
    COPY_TO_PATH = enum.auto()
    #: ``write()`` keeps its progress in ``ctx.upload_state`` (the parts of
    #: a multipart upload) and continues from it after a retryable error
    #: or a crash, instead of sending everything again.
    UPLOAD_STATE = enum.auto()
    #: ``lazy_reader()`` works: a lazy image reads the object's pieces on
    #: demand through the driver's own path (BitTorrent: the swarm, with
    #: the origin as web seed) instead of ranged reads.
    LAZY_READ = enum.auto()


@dataclasses.dataclass(frozen=True)
class Stat:
    """What a driver knows about an object before reading it.

    :param size: size in bytes, or None when the server does not say.
    :param validator: an opaque string that changes when the object changes
        (ETag, Last-Modified, mtime and size, ...); None when there is none.
        The engine refuses to join bytes from two validators.
    :param ranges: True when ranged reads of this object are expected to
        work (``Accept-Ranges: bytes`` for HTTP).
    :param mtime: modification time (seconds since the epoch) if known.
    :param max_segments: the most parallel segments worth opening on this
        object, when the driver knows better than the engine's
        ``[oslo_transfer] segments`` (a protocol whose every segment costs a
        login, or a server that serves one stream as fast as several); None
        leaves the engine's setting alone.  The engine never opens more than
        the caller asked for.
    """

    size: int | None
    validator: str | None = None
    ranges: bool = False
    mtime: float | None = None
    max_segments: int | None = None


class CancelToken:
    """Set by :meth:`TransferHandle.cancel`; read by the engine and drivers.

    Drivers that block in a library call register a callback with
    :meth:`on_cancel` (close the socket, abort the request) so that the call
    returns promptly.
    """

    def __init__(self):
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._callbacks = {}
        self._next = 0
        self.reason = None

    def cancel(self, reason='cancelled by the caller'):
        with self._lock:
            if self._event.is_set():
                return
            self.reason = reason
            self._event.set()
            callbacks = list(self._callbacks.values())
        for cb in callbacks:
            try:
                cb()
            except Exception:  # noqa: a callback must not stop the others
                pass

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self):
        """Raise :class:`~oslo_transfer.exceptions.Cancelled` if cancelled."""
        if self._event.is_set():
            raise exceptions.Cancelled(self.reason or 'cancelled')

    def wait(self, timeout: float) -> bool:
        """Sleep up to ``timeout``; True if cancelled meanwhile."""
        return self._event.wait(timeout)

    def on_cancel(self, callback) -> int:
        """Call ``callback()`` on cancel (at once if already cancelled).

        :returns: a key for :meth:`remove`.
        """
        with self._lock:
            key = self._next
            self._next += 1
            if not self._event.is_set():
                self._callbacks[key] = callback
                return key
        callback()
        return key

    def remove(self, key: int):
        with self._lock:
            self._callbacks.pop(key, None)


#: "no argument given" for Context(deadline=...)
_UNSET = object()


def _no_driver_for(location):
    """The default of :attr:`Context.driver_for`: no driver to give."""
    raise exceptions.NoDriverFound(
        'no driver for %s: this context was not made by a Transfer, so it '
        'reaches no other driver (Context.driver_for)'
        % locations.as_location(location).masked)


@dataclasses.dataclass
class Context:
    """Per-transfer state handed to every driver call.

    :ivar cancel: the :class:`CancelToken` of the transfer.  When
        ``[oslo_transfer] total_timeout`` is set, the engine cancels it at
        ``expires_at`` (the caller's own token stays as it was): a driver
        that honours a cancel honours the deadline too.
    :ivar io_timeout: seconds one blocking I/O operation may take.
    :ivar expires_at: ``time.monotonic()`` value after which the transfer
        gives up (``[oslo_transfer] total_timeout``), or None.  (It was
        called ``deadline``, which still works, with a
        ``DeprecationWarning``: a deadline is the caller's hint of when
        the data is needed, which the scheduler may use, not this limit.)
    :ivar hints: the caller's :class:`~oslo_transfer.selector.Hints`.
    :ivar check_url: ``check_url(url) -> str``: raises
        :class:`~oslo_transfer.exceptions.URLNotAllowed` for a URL the
        ``[oslo_transfer]`` policy refuses (a malformed one included), and
        returns the canonical URL otherwise.  Drivers must call it on every
        redirect, web seed and tracker URL they are about to contact, and
        hand the URL it returns, never the one they were given, to their
        transport: the policy judged the host of that one parse
        (:func:`~oslo_transfer.locations.parse_url`).
    :ivar torrent: BitTorrent metadata of the source, if any.
    :ivar expected_size: the size the caller announced, if any.
    :ivar aligned_views: the consumer of ``read()`` takes, besides
        ``bytes``, a ``memoryview`` of page-aligned memory that the driver
        will not change while anyone holds a view of it (the download
        engine, which writes such chunks with ``O_DIRECT`` as they are).
        :class:`oslo_transfer._utils.AlignedBlock` is that memory, and
        :func:`oslo_transfer._utils.is_aligned_view` tells such a chunk.
        False by default: yield ``bytes`` (or a buffer you may reuse once
        the consumer's next call returns).
    :ivar held_bytes: with ``aligned_views``, how many bytes of one read's
        chunks the consumer may still hold besides the chunks the driver
        has in flight (waiting for the hasher or for the writer).  A
        driver that reuses a block once no view of it is left keeps about
        ``held_bytes // chunk size`` blocks more than its reads in flight,
        so that it rarely runs out; the engine sets it with
        ``aligned_views``, from its own buffer sizes.  0 (the default):
        the consumer drops a chunk before it asks for the next.
    :ivar driver_for: ``driver_for(location) -> Driver``: the driver that
        the :class:`~oslo_transfer.transfer.Transfer` running this call
        loaded for ``location`` (a URL or a
        :class:`~oslo_transfer.locations.Location`), available and ready
        to use.  A driver that needs another protocol on the way (the
        BitTorrent driver fetches metadata and web-seed pieces over HTTP)
        must use it, never import or build another driver: the one it
        gets has the caller's options, TLS settings and connection pools.
        Call it with a Context of your own that carries ``check_url`` and
        ``driver_for``, and check the URL first as for any URL you
        contact.  Raises :class:`~oslo_transfer.exceptions.NoDriverFound`
        when no loaded driver serves the scheme; the default (a Context
        that no Transfer made) always does.
    :ivar priority: the scheduling class of the call's connections and
        bytes: ``"interactive"``, ``"normal"`` (the default) or
        ``"background"`` (DESIGN, "Scheduling").  The engine sets it;
        drivers pass it on through :meth:`slot` and :meth:`consume`.
    :ivar deadline_at: ``time.monotonic()`` value of the caller's deadline
        (``Hints(deadline=...)``), or None: earliest deadline first within
        a class (:meth:`slot`; without it, :attr:`expires_at`).  It never
        ends the call (:attr:`expires_at` does).
    :ivar job: the scheduler's record of the call, set by the engine for
        a copy (None otherwise): while a waiter of a higher class waits
        for the call's destination lock, the call runs at that class
        (:attr:`current_priority`).
    :ivar scheduler: the process's scheduler, set by the
        :class:`~oslo_transfer.transfer.Transfer`; None (a Context that
        no Transfer made) makes :meth:`slot` and :meth:`consume` wait for
        nothing.
    """

    cancel: CancelToken = dataclasses.field(default_factory=CancelToken)
    io_timeout: float = 60.0
    expires_at: float | None = None
    hints: typing.Any = None
    check_url: typing.Callable[[str], str] = locations.canonical_url
    torrent: typing.Any = None
    expected_size: int | None = None
    checksum: typing.Any = None
    #: the validator from ``stat()`` of the object being read; ranged reads
    #: should make the server check it (HTTP ``If-Range``)
    validator: str | None = None
    aligned_views: bool = False
    held_bytes: int = 0
    driver_for: typing.Callable[[typing.Any], 'Driver'] = dataclasses.field(
        default=_no_driver_for, repr=False)
    priority: str = 'normal'
    deadline_at: float | None = None
    scheduler: typing.Any = dataclasses.field(default=None, repr=False)
    job: typing.Any = dataclasses.field(default=None, repr=False)
    #: a small JSON-able dict that a ``UPLOAD_STATE`` writer fills with what
    #: it needs to continue an upload (an upload id, the parts sent); the
    #: engine keeps it with its upload record and hands it back to the next
    #: attempt, in this process or after a crash.  Empty for a new upload.
    upload_state: dict = dataclasses.field(default_factory=dict, repr=False)
    #: ``upload_state_saver(state)``: set by the engine; use
    #: :meth:`save_upload_state`.
    upload_state_saver: typing.Callable[[dict], None] | None = \
        dataclasses.field(default=None, repr=False)

    def save_upload_state(self) -> None:
        """Make :attr:`upload_state` durable (call after each part).

        A writer calls it once the server acknowledged what the state
        records, so that the state never names a part the server lacks.
        Without an engine behind the context it does nothing.
        """
        if self.upload_state_saver is not None:
            self.upload_state_saver(self.upload_state)

    def slot(self, origin: str) -> typing.ContextManager:
        """A context manager holding one connection to ``origin``.

        A driver that opens connections of its own (beyond the one each
        ``read()`` call is given) holds a slot for each, so that the
        per-origin caps and the classes apply to them.

        :param origin: ``scheme://host:port`` of the server.
        """
        if self.scheduler is None:
            return contextlib.nullcontext()
        due = self.deadline_at
        return self.scheduler.slot(origin, self.current_priority,
                                   self.expires_at if due is None else due,
                                   self.cancel)

    def consume(self, nbytes: int, origin: str | None = None) -> None:
        """Block until ``nbytes`` more bytes may pass (rate limits, class).

        :param origin: ``scheme://host:port`` the bytes come from, if one.
        """
        if self.scheduler is not None:
            self.scheduler.consume(nbytes, self.current_priority, origin,
                                   self.cancel)

    @property
    def current_priority(self) -> str:
        """:attr:`priority`, or a higher class lent by a waiter.

        A waiter on the call's destination lock lends its class to the
        holder (:attr:`job`); the lent class applies from the next
        :meth:`slot` or :meth:`consume`.
        """
        return self.priority if self.job is None else self.job.current_cls

    @property
    def receive_buffer(self) -> int | None:
        """``SO_RCVBUF`` (bytes) for the sockets this call opens, or None.

        The receive buffer of the call's class (:attr:`current_priority`:
        the background class's is 256 KiB by default), so that what a
        lower class has in flight when a higher class arrives stays small.
        A driver that honours it sets it on a new socket *before*
        ``connect()`` (the TCP window scale is fixed at the handshake)
        and never hands a socket opened with one buffer size to a call
        that asks for another (a pool of kept-alive connections is keyed
        by it); it also yields at most that many bytes per chunk, so that
        a consumer whose class is paced stops the sender within one
        buffer (the window is full once the consumer stops reading).  A
        driver whose protocol asks for its bytes may bound what it has
        asked for and not received instead (``sftp``: its READ
        requests in flight).
        None (no scheduler, ``scheduler = fifo``, a class without a
        cap): leave the kernel's autotuning alone.
        """
        policy = getattr(self.scheduler, 'receive_buffer', None)
        return None if policy is None else policy(self.current_priority)

    @property
    def deadline(self) -> float | None:
        """Deprecated: :attr:`expires_at`."""
        warnings.warn('Context.deadline is deprecated: use '
                      'Context.expires_at', DeprecationWarning, stacklevel=2)
        return self.expires_at

    @deadline.setter
    def deadline(self, value):
        warnings.warn('Context.deadline is deprecated: use '
                      'Context.expires_at', DeprecationWarning, stacklevel=2)
        self.expires_at = value

    def remaining(self) -> float | None:
        if self.expires_at is None:
            return None
        return self.expires_at - time.monotonic()

    def timeout(self) -> float:
        """The I/O timeout, shortened to what is left before ``expires_at``.

        Raises like :meth:`check_expiry` once nothing is left.
        """
        self.check_expiry()
        left = self.remaining()
        if left is None:
            return self.io_timeout
        return min(self.io_timeout, left)

    def expired(self) -> bool:
        """True once ``expires_at`` (``total_timeout``) has passed."""
        left = self.remaining()
        return left is not None and left <= 0

    def check_expiry(self) -> None:
        """Raise a non-retryable ``TransferTimeout`` past ``expires_at``.

        The engine cancels :attr:`cancel` when ``total_timeout`` runs out,
        which stops a driver blocked in an operation that honours a
        cancel.  A driver whose client library cannot be interrupted (an
        SDK client with its own per-client timeouts) calls this before
        each request it makes, and between the parts of a long one, so
        that no new request starts past the transfer's expiry.
        """
        if self.expired():
            raise out_of_time()

    def check_deadline(self) -> None:
        """Deprecated: :meth:`check_expiry`."""
        warnings.warn('Context.check_deadline() is deprecated: use '
                      'Context.check_expiry()', DeprecationWarning,
                      stacklevel=2)
        self.check_expiry()


_context_init = Context.__init__


def _init_accepting_deadline(self, *args, deadline=_UNSET, **kwargs):
    if deadline is not _UNSET:
        warnings.warn('Context(deadline=...) is deprecated: use '
                      'Context(expires_at=...)', DeprecationWarning,
                      stacklevel=2)
        kwargs.setdefault('expires_at', deadline)
    _context_init(self, *args, **kwargs)


_init_accepting_deadline.__doc__ = _context_init.__doc__
_init_accepting_deadline.__signature__ = inspect.signature(_context_init)
Context.__init__ = _init_accepting_deadline


def _location_value(location, opt, value):
    """``value`` converted by ``opt.type``; InvalidLocation if refused."""
    try:
        return opt.type(value)
    except (TypeError, ValueError) as exc:
        if opt.secret:      # neither the value nor a message quoting it
            raise exceptions.InvalidLocation(
                '%s: Location option %r: not a valid value'
                % (location.masked, opt.dest), url=location.masked) from None
        raise exceptions.InvalidLocation(
            '%s: Location option %r: %r is not a valid value: %s'
            % (location.masked, opt.dest, value, exc),
            url=location.masked) from exc


def out_of_time(url: str | None = None) -> exceptions.TransferTimeout:
    """The non-retryable ``TransferTimeout`` of ``total_timeout``.

    :param url: the masked URL the call was about, if any.
    """
    exc = exceptions.TransferTimeout(
        '%sthe transfer ran out of time ([oslo_transfer] total_timeout)'
        % ('%s: ' % url if url else ''), url=url)
    exc.retryable = False
    return exc


class Writer(abc.ABC):
    """Returned by :meth:`Driver.write` after the chunks were consumed.

    The engine calls :meth:`commit` once the chunks were consumed and the
    data verified.  A ``commit()`` that raises a retryable error is called
    again (the engine's retry policy, ``[oslo_transfer] retries``), so it
    must be safe to repeat; when it finally fails, or when the engine gives
    up for another reason, it calls :meth:`abort`.  So ``abort()`` may come
    after a failed ``commit()``, and must then undo what it can.

    Drivers with ``ATOMIC_COMMIT`` make the object appear only in
    ``commit()``: that is where their final I/O belongs (an S3 PUT of a
    small object, a multipart completion, a rename); the others write in
    place and ``abort()`` does what it can (documented per driver).

    Both methods receive the transfer's :class:`Context`.  After a cancel,
    the context given to ``abort()`` is a fresh one (its own cancel token,
    the I/O timeout), so that the clean-up can do I/O.  Writers written for
    the older argument-less ``commit()`` and ``abort()`` still work, with a
    ``DeprecationWarning``.
    """

    #: bytes written by this call (not counting ``offset``)
    bytes_written = 0

    @abc.abstractmethod
    def commit(self, ctx: Context):
        """Make the written object final.

        :raises TransferError: with ``retryable`` set, the engine calls
            ``commit()`` again after its back-off.
        """

    @abc.abstractmethod
    def abort(self, ctx: Context):
        """Give up: remove staged data where the protocol allows."""


class Seeding(abc.ABC):
    """Local data that this process shares with peers, in the background.

    A peer-to-peer driver returns one from :meth:`Driver.seed`, and from
    :meth:`Driver.after_commit` when it goes on sharing the file it just
    delivered; the engine puts the latter on
    :attr:`Result.seeding <oslo_transfer.result.Result.seeding>`.  Seeding
    ends when the driver's own rules say so (its time is up, the peers have
    the data, the file changed), on :meth:`stop`, or when the process exits:
    a script that wants its host to keep sharing calls :meth:`wait` before
    it exits.  The methods are thread-safe.

    :ivar info_hash: what peers know the data by (a BitTorrent info-hash).
    :ivar path: the absolute local path being shared.
    :ivar size: bytes shared.
    :ivar listen_port: the TCP port peers connect to (0 if unknown).
    """

    def __init__(self, info_hash: str, path: str, size: int,
                 listen_port: int = 0):
        self.info_hash = info_hash
        self.path = path
        self.size = size
        self.listen_port = listen_port

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> bool:
        """Block until seeding ended and the driver let go of the file.

        :param timeout: seconds to wait at most; None waits as long as it
            takes.
        :returns: True once seeding ended, False if ``timeout`` ran out
            first.
        """

    @abc.abstractmethod
    def stop(self) -> None:
        """Stop seeding now; :meth:`wait` then returns soon.

        Stopping twice, or after seeding ended, does nothing.
        """

    @property
    @abc.abstractmethod
    def reason(self) -> str | None:
        """Why seeding ended (``"seed time is up"``, ...); None until then."""

    def __repr__(self):
        return '<%s %s %s>' % (type(self).__name__, self.info_hash,
                               self.path)


class LazyReader(abc.ABC):
    """The pieces of one object, on demand: :meth:`Driver.lazy_reader`.

    The lazy image (:mod:`oslo_transfer.lazy`) asks for ranges with
    :meth:`want`; the reader hands every piece it has verified to the
    ``deliver(index, data)`` callback it was built with, once, from a
    thread of its own, whether it was asked for or came by the reader's
    own prefetch.  The image verifies it again against its manifest,
    caches it and serves it.  The methods are thread-safe.
    """

    @abc.abstractmethod
    def start(self) -> None:
        """Start the reader's threads (after a fork, in the NBD plugin)."""

    @abc.abstractmethod
    def want(self, offset: int, length: int, urgent: bool = False) -> None:
        """Fetch the pieces of ``[offset, offset + length)`` soon.

        ``urgent``: a reader waits for them (an on-demand read): each
        comes from a peer that has it, otherwise from the origin within
        100 ms.  Otherwise (a profile, an explicit prefetch) they come
        before the reader's own prefetch.
        """

    @abc.abstractmethod
    def failed(self, index: int) -> Exception | None:
        """Why urgent piece ``index`` cannot be had now, or None.

        A :class:`~oslo_transfer.exceptions.TransferError`: a retryable
        ``ConnectionFailed`` when no peer has the piece and the origin
        could not be reached after the retries, ``ChecksumMismatch`` when
        no peer has it and the origin keeps sending it corrupt.  The image
        fails the read that waits for it; the next :meth:`want` of the
        piece tries again.
        """

    def completed(self, path: str) -> None:
        """The image is complete and was renamed to ``path``.

        The reader lets go of the ``.part`` file; a peer-to-peer reader
        may go on sharing ``path`` (as :meth:`Driver.after_commit`).
        """

    @abc.abstractmethod
    def close(self) -> None:
        """Stop fetching and let go of the file (it is kept)."""

    @property
    def stats(self) -> dict:
        """Counters for logs and tests (pieces from peers and origin)."""
        return {}


class PartTarget(typing.Protocol):
    """The engine's ``.part`` file, as handed to :meth:`Driver.copy_to_path`.

    A whole-file driver writes only into ``path`` (never renames it) and
    reports bytes it has written and verified with ``record(offset,
    length)``; the engine keeps the journal and does the final verification
    and rename.  The engine syncs ``path`` before the recorded ranges reach
    the control file (unless ``[oslo_transfer] fsync`` is off), so a driver
    that writes through the page cache need not sync itself; a driver whose
    writes bypass this inode (another process) must make them durable
    before it records them.

    A crash costs what was written and not yet recorded: a driver records
    as it goes, in pieces well below ``checkpoint_bytes`` (the engine's
    ``[oslo_transfer] checkpoint_bytes``; a quarter of it, say).  The
    engine syncs and rewrites the control file from a thread of its own
    every half interval (and at least once a second), and ``record()``
    waits while the bytes recorded and not yet saved reach the interval.
    """

    path: str
    size: int | None
    checkpoint_bytes: int

    def held(self) -> list:
        """Ranges ``[(start, end), ...]`` already held from earlier runs."""

    def record(self, offset: int, length: int) -> None:
        """Report ``[offset, offset+length)`` as written and verified."""

    def progress(self, nbytes: int) -> None:
        """Report ``nbytes`` more bytes moved (for progress callbacks)."""


class Driver(abc.ABC):
    """Base class of every protocol driver.

    Subclasses set ``name``, ``schemes`` and ``capabilities`` and implement
    the methods that their capabilities promise.

    :param conf: the caller's ``oslo_config.cfg.ConfigOpts``; the driver's
        options are registered on it in group ``oslo_transfer_<name>``
        before the driver is built.
    """

    #: entry-point name, module name and config group suffix
    name: str = None
    #: URL schemes served (``file`` means plain paths too)
    schemes: tuple = ()
    #: a :class:`Capability` flag set
    capabilities: Capability = Capability.NONE
    #: preferred read size in bytes
    chunk_size: int = 1024 * 1024
    #: True when the chunks of :meth:`read` are received by the driver's
    #: own threads, so the network keeps moving while the caller works on
    #: a chunk (paramiko's transport thread, for example).  The engine then
    #: hashes a single stream in the thread that reads it, which saves a
    #: hand-off to its hashing thread per chunk; when the caller's thread
    #: does the receiving (HTTP, FTP), hashing elsewhere keeps the two in
    #: parallel, so the default is False.
    background_reads: bool = False
    #: True when what :meth:`write` writes is a volume (an iSCSI LUN): it
    #: always exists and keeps its size, so ``copy(..., if_exists=
    #: "verify")`` overwrites it as it does a local block device, where a
    #: file that exists with other bytes is refused.
    volume_targets: bool = False

    def __init__(self, conf):
        self.conf = conf

    @property
    def group(self) -> str:
        """The name of the driver's option group."""
        return 'oslo_transfer_%s' % self.name

    @property
    def options(self):
        """This driver's options (the ``[oslo_transfer_<name>]`` group)."""
        return getattr(self.conf, self.group)

    @classmethod
    def list_opts(cls) -> list:
        """The driver's ``oslo_config.cfg.Opt`` list (no heavy imports)."""
        return []

    @classmethod
    def location_opts(cls) -> list:
        """The ``oslo_config.cfg.Opt`` list that ``Location.options`` may set.

        A caller gives them for one location,
        ``Location(url, options={name: value})``.  An option that has the
        name of one of the driver's :meth:`list_opts` overrides the
        configured value for that location only; another one has its own
        ``default``.  Values are converted and checked by the option's
        type (choices, bounds, URL schemes).  The default is none: such a
        driver takes no ``Location.options``.  Like :meth:`list_opts`, must
        not import optional dependencies.
        """
        return []

    def location_options(self, location):
        """The values of :meth:`location_opts` for ``location``, checked.

        :returns: a namespace with one attribute per option: the
            location's value, else the configured one (same name in the
            driver's group), else the option's default.
        :raises InvalidLocation: (a ``ValueError``) a name the driver does
            not take, or a value the option's type refuses.  The message
            names the masked URL and the option, never a secret's value.
        """
        opts = {o.dest: o for o in self.location_opts()}
        given = dict(location.options or {})
        unknown = sorted(set(given) - set(opts))
        if unknown:
            raise exceptions.InvalidLocation(
                '%s: the %s driver takes no Location option %s (it takes: '
                '%s)' % (location.masked, self.name,
                         ', '.join(map(repr, unknown)),
                         ', '.join(sorted(opts)) or 'none'),
                url=location.masked)
        values = {}
        for name, opt in opts.items():
            if given.get(name) is not None:
                values[name] = _location_value(location, opt, given[name])
                continue
            try:
                values[name] = getattr(self.options, name)
            except AttributeError:      # not an option of the group
                values[name] = opt.default
        return types.SimpleNamespace(**values)

    def policy_urls(self, location) -> list:
        """The URLs of the servers this driver contacts for ``location``.

        The engine checks each against the URL policy
        (``[oslo_transfer] allowed_schemes`` and ``denied_networks``,
        through the same check as :attr:`Context.check_url`) before the
        driver's first call, and keys the per-origin connection cap
        (``max_connections_per_origin``) on the first one.  The default is
        the location's own URL, right for a protocol whose URL names the
        server.  A driver whose URL names something else overrides it: an
        object store's ``s3://BUCKET/KEY`` is served by its configured
        endpoint; ``torrent:`` metadata names no server at all (an empty
        list: its web seeds and trackers are checked one by one as they
        are contacted).  Must not do I/O.
        """
        return [location.url]

    def origin(self, location) -> str:
        """``scheme://host:port`` whose connection slots a call holds.

        The first of :meth:`policy_urls` (the location's own URL when it
        names none), so that the per-origin cap counts connections to the
        server, not to a bucket name.
        """
        urls = self.policy_urls(location) or [location.url]
        return locations.origin_of(urls[0])

    def check_available(self):
        """Raise ``MissingDependency`` if the driver cannot work here.

        Called once, before the driver's first use.
        """

    def accepts(self, location, ctx: Context) -> bool:
        """True if this driver can serve ``location``.

        The default accepts the URL schemes in ``schemes``.  A driver that
        serves other schemes' data (BitTorrent serves an HTTP origin when
        torrent metadata is known) overrides this.
        """
        return location.scheme in self.schemes

    def stat(self, location, ctx: Context) -> Stat:
        """Size and validator of ``location``.

        :raises SourceNotFound: the object does not exist.
        """
        raise NotImplementedError

    def read(self, location, offset: int, length: int | None,
             ctx: Context) -> typing.Iterator[bytes]:
        """Yield the bytes ``[offset, offset + length)`` of ``location``.

        ``length=None`` reads to the end.  Must yield exactly ``length``
        bytes or raise.  Drivers without ``RANGED_READ`` are only called
        with ``offset=0``.  A driver may yield a ``bytearray`` or a
        ``memoryview`` that it reuses once the next chunk is asked for; the
        engine keeps only ``bytes`` chunks past that point (to hash them
        without reading them back), so yielding ``bytes`` is the faster
        choice when the driver has them anyway.
        """
        raise NotImplementedError

    def write(self, location, chunks: typing.Iterable[bytes], ctx: Context,
              offset: int = 0, size: int | None = None) -> Writer:
        """Write ``chunks`` to ``location`` starting at ``offset``.

        Consumes ``chunks`` entirely; an exception raised by the iterator
        (the engine raises ``ChecksumMismatch`` before the last chunk) must
        abort the protocol request so that nothing complete-looking stays.

        :param size: total size of the object if known (for
            ``Content-Length``); None streams (HTTP chunked).
        :returns: a :class:`Writer`; the engine then commits or aborts.
        """
        raise NotImplementedError

    def written_size(self, location, ctx: Context) -> int:
        """Bytes already present at a destination (resumable writes)."""
        raise NotImplementedError

    def copy_to_path(self, location, target: PartTarget, ctx: Context,
                     progress=None) -> None:
        """Whole-file fast path: fill ``target.path`` with the object.

        Only for drivers with ``COPY_TO_PATH``.
        """
        raise NotImplementedError

    def use_copy_to_path(self, location, target_dir: str, hashing: bool,
                         ctx: Context) -> bool:
        """Whether :meth:`copy_to_path` is the better way for this object.

        Called for drivers with ``COPY_TO_PATH`` before each attempt.
        ``hashing`` is True when the engine must digest the result (the
        caller gave a checksum): after a whole-file copy it reads the copy
        back, a second pass over the data, while a streamed read is hashed
        as it arrives.  A driver whose fast path only moves the bytes (an
        in-kernel copy) should return False then, and True where the fast
        path costs next to nothing (a reflink) or where it cannot stream
        at all.  The default is True.

        :param target_dir: the directory of the ``.part`` file.
        """
        return True

    def lazy_reader(self, location, path: str, meta, ctx: Context,
                    held: typing.Iterable[int],
                    deliver: typing.Callable[[int, bytes], None],
                    prefetch: bool = True) -> LazyReader:
        """A :class:`LazyReader` of ``location`` for a lazy image.

        Only for drivers with ``LAZY_READ``; the image calls it (and the
        reader's :meth:`~LazyReader.start`) when the plan's first candidate
        is such a driver and the image's manifest is ``meta``.  The reader
        may write the pieces it fetches into ``path`` (the image's sparse
        ``.part`` file, which the image also writes every delivered piece
        into, at the same offsets) and share them from there; it never
        renames nor truncates it.

        :param path: the image's ``.part`` file.
        :param meta: the :class:`~oslo_transfer.torrent.TorrentMeta`
            whose pieces are the image's blocks.
        :param ctx: the image's context (its cancel token, hints, URL
            policy, scheduler).
        :param held: indexes of the pieces the image holds already.
        :param deliver: ``deliver(index, data)``, called once per piece
            verified against ``meta``.
        :param prefetch: fetch the other pieces too, in the background
            (the driver's own order); False fetches only what is wanted.
        :raises TransferError: the reader cannot work for this location
            (the image then reads ranges of the other candidates, if any).
        """
        raise NotImplementedError

    def after_commit(self, location, path: str,
                     ctx: Context) -> Seeding | None:
        """Called after the engine renamed a completed destination.

        ``path`` is the final local path.  A peer-to-peer driver may start
        sharing it here and return the :class:`Seeding` (the engine puts it
        on the ``Result``); most drivers do nothing and return None.  The
        copy has succeeded whatever this method does: an exception is
        logged, not raised.
        """

    def seed(self, path: str, torrent, ctx: Context,
             seconds: float | None = None,
             peers: typing.Sequence[str] = (),
             verify: bool = True) -> Seeding:
        """Share the complete local data at ``path`` with peers now.

        Only for drivers with ``PEER_TO_PEER``, which must implement it
        (:meth:`Transfer.seed <oslo_transfer.transfer.Transfer.seed>` finds
        the driver by that capability).

        :param torrent: the data's metadata, in any form the driver
            accepts as ``Source(torrent=...)`` (a path, a URL, bytes, a
            :class:`~oslo_transfer.torrent.TorrentMeta`), or None: the
            driver makes metadata for ``path`` itself.  URLs must pass
            ``ctx.check_url``.
        :param seconds: how long; None seeds until :meth:`Seeding.stop`.
        :param peers: ``"HOST:PORT"`` of peers to connect to.
        :param verify: check the data against the metadata first (False
            trusts it, for data this host just verified).
        :raises DestinationError: the data does not match the metadata.
        """
        raise NotImplementedError

    def close(self):
        """Release pooled connections and sessions."""

    def __repr__(self):
        return '<%s %s>' % (type(self).__name__, self.name)
