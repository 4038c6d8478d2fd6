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

"""Test aids for the services that call oslo.transfer.

A service's unit tests (Nova's image cache, Glance's import flow, Cinder's
image-to-volume copy) need a :class:`~oslo_transfer.transfer.Transfer` that
moves bytes without a server, fails on demand and leaves nothing behind.
:class:`TransferFixture` builds one on a private ``ConfigOpts``, over an
in-memory driver (:class:`MemoryDriver`, URL scheme ``memory://``) whose
objects live in a :class:`MemoryStore`::

    from oslo_transfer import fixture as transfer_fixture

    class TestImageCache(testtools.TestCase):
        def setUp(self):
            super().setUp()
            self.fix = self.useFixture(transfer_fixture.TransferFixture())
            self.fix.store.put('memory://glance/image-1', IMAGE)

        def test_recovers_from_a_dropped_connection(self):
            self.fix.store.fail_after('read', 1024 * 1024)
            cache.fetch(self.fix.transfer, 'memory://glance/image-1', ...)

The memory driver exists only while a fixture (or a test that builds a
``Transfer`` with ``drivers=[make_driver_class(...)]``) gives it to a
``Transfer``: it has no entry point in the ``oslo_transfer.drivers``
namespace, so no production ``Transfer`` ever loads it.

:mod:`oslo_transfer.testing` is the other test module: the conformance
suite that driver authors run against their servers.
"""

import collections
import copy
import dataclasses
import sys
import threading
import typing

import fixtures
from oslo_config import cfg
from stevedore import driver as stevedore_driver

from oslo_transfer import api
from oslo_transfer import driver
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import opts
from oslo_transfer import transfer as transfer_mod

__all__ = ['MEMORY_SCHEME', 'MemoryStore', 'MemoryDriver',
           'make_driver_class', 'TransferFixture']

Cap = driver.Capability

#: the URL scheme of the memory driver: ``memory://HOST/PATH``
MEMORY_SCHEME = 'memory'

#: the operations a fault may be injected into
_OPERATIONS = ('stat', 'read', 'write', 'commit')


def _key(url) -> str:
    """The key of ``url`` (a URL or a Location) in a store.

    Its canonical form without user name and password, so that a URL
    reaches the same object however it is spelled or authenticated.
    """
    return locations.canonical_url(locations.as_location(url).url,
                                   userinfo=False)


@dataclasses.dataclass
class _Fault:
    """One injected misbehaviour, armed for ``times`` more calls."""

    op: str
    times: int
    exc: typing.Any = None
    url: str | None = None
    #: the byte count (of ``url``, or of the store) at which it trips;
    #: None for a fault raised when the call is made
    at: int | None = None
    #: ``raise``, ``truncate`` or ``change``
    kind: str = 'raise'
    data: bytes | None = None

    def matches(self, op, url):
        return (self.times > 0 and self.op == op and
                (self.url is None or self.url == url))

    def error(self, masked):
        what = '%s of %s' % (self.op, masked)
        exc = self.exc
        if exc is None:
            return exceptions.ConnectionFailed(
                'connection reset (injected into the %s)' % what,
                url=masked)
        if isinstance(exc, type):
            if issubclass(exc, exceptions.TransferError):
                return exc('injected failure of the %s' % what, url=masked)
            return exc('injected failure of the %s' % what)
        try:
            # A copy per raise: one instance raised twice would carry the
            # first traceback into the second.
            return copy.copy(exc)
        except Exception:  # noqa: an exception that cannot be copied
            return exc


class MemoryStore:
    """Objects by URL, in memory, with knobs to misbehave.

    One store may serve several drivers and several ``Transfer`` objects
    (a test that builds a second ``Transfer`` to resume what the first one
    left).  Every method is thread-safe.

    :ivar ranges: False makes the store answer like a server that ignores
        ``Range``: ``stat()`` says ranges do not work and a ranged read
        raises :class:`~oslo_transfer.exceptions.RangeNotSupported`.
    :ivar calls: a :class:`collections.Counter` of driver calls by
        operation (``stat``, ``read``, ``write``, ``commit``, ``abort``),
        failed ones included.
    :ivar reads: ``(url, offset, length)`` of every read, in order.
    :ivar bytes_served: bytes that reads yielded.
    :ivar bytes_written: bytes that writes consumed.
    """

    def __init__(self):
        self.ranges = True
        self.calls = collections.Counter()
        self.reads = []
        self.bytes_served = 0
        self.bytes_written = 0
        self._objects = {}
        self._versions = collections.Counter()
        self._staged = {}
        self._served = collections.Counter()
        self._written = collections.Counter()
        self._faults = []
        self._lock = threading.Lock()
        self._open = threading.Event()
        self._open.set()

    # -- the objects ----------------------------------------------------------

    def put(self, url: str, data: bytes) -> str:
        """Store ``data`` at ``url`` (replacing any object there).

        :returns: the object's new validator (every ``put`` makes another).
        """
        key = _key(url)
        with self._lock:
            return self._put(key, bytes(data))

    def _put(self, key, data):
        self._objects[key] = data
        self._versions[key] += 1
        return self._validator(key)

    def _validator(self, key):
        return 'memory-v%d' % self._versions[key]

    def get(self, url: str) -> bytes:
        """The bytes stored at ``url``.

        :raises KeyError: nothing is stored there (an upload that did not
            commit leaves nothing).
        """
        with self._lock:
            return self._objects[_key(url)]

    def delete(self, url: str) -> None:
        """Remove the object at ``url`` (absent: nothing happens)."""
        with self._lock:
            self._objects.pop(_key(url), None)

    def validator(self, url: str) -> str:
        """The validator ``stat()`` reports for ``url``."""
        with self._lock:
            key = _key(url)
            if key not in self._objects:
                raise KeyError(url)
            return self._validator(key)

    def urls(self) -> list:
        """The URLs of the stored objects, sorted."""
        with self._lock:
            return sorted(self._objects)

    def __contains__(self, url) -> bool:
        with self._lock:
            return _key(url) in self._objects

    # -- failure injection ----------------------------------------------------

    def fail(self, op: str, times: int = 1, exc=None,
             url: str | None = None) -> None:
        """Make the next ``times`` calls of ``op`` raise ``exc``.

        :param op: ``stat``, ``read``, ``write`` or ``commit`` (a writer's
            commit); the call raises before it does anything.
        :param exc: an exception instance or class; default a retryable
            :class:`~oslo_transfer.exceptions.ConnectionFailed`, which the
            engine retries (``[oslo_transfer] retries``).
        :param url: only calls about this URL (default: any).
        """
        self._arm(_Fault(op, times, exc, self._url(url)), _OPERATIONS)

    def fail_after(self, op: str, nbytes: int, times: int = 1, exc=None,
                   url: str | None = None) -> None:
        """Drop the connection once ``nbytes`` more bytes have gone through.

        Counted from now, over all reads (``op='read'``) or writes
        (``op='write'``) of the store, or of ``url`` only when it is given.
        The call that reaches the mark passes the bytes before it and then
        raises; so does each later call that tries to pass a byte, until
        ``times`` calls have raised.

        :param exc: as for :meth:`fail`.
        """
        key = self._url(url)
        with self._lock:
            done = self._count(op, key)
        self._arm(_Fault(op, times, exc, key, at=done + nbytes),
                  ('read', 'write'))

    def truncate_reads(self, nbytes: int, times: int = 1,
                       url: str | None = None) -> None:
        """End the next ``times`` reads silently after ``nbytes`` bytes.

        A server that closes a body early without an error; the engine must
        take it for a failure, never for the whole object.
        """
        self._arm(_Fault('read', times, url=self._url(url), at=nbytes,
                         kind='truncate'), ('read',))

    def change_after(self, url: str, data: bytes, nbytes: int) -> None:
        """Replace the object at ``url`` after ``nbytes`` more bytes of it.

        The read that reaches the mark serves the bytes before it, the
        object then becomes ``data`` (a new validator) and the read raises
        a retryable ``ConnectionFailed``, as when a server drops the
        connections to a file that was replaced.  A later ranged read that
        names the old validator (``ctx.validator``) is refused the way an
        HTTP server answers a failed ``If-Range``
        (:class:`~oslo_transfer.exceptions.RangeNotSupported`): the engine
        then stats the object again, sees the new validator, and restarts
        or raises :class:`~oslo_transfer.exceptions.SourceChanged`
        (``[oslo_transfer] on_source_change``).
        """
        key = _key(url)
        with self._lock:
            done = self._served[key]
        self._arm(_Fault('read', 1, None, key, at=done + nbytes,
                         kind='change', data=bytes(data)), ('read',))

    def pause_reads(self) -> None:
        """Make reads wait before their next chunk until resumed.

        A waiting read still honours its cancel token: a test cancels a
        transfer that is stuck in the middle this way.
        """
        self._open.clear()

    def resume_reads(self) -> None:
        """Let paused reads go on."""
        self._open.set()

    def clear_faults(self) -> None:
        """Disarm every injected fault and resume paused reads."""
        with self._lock:
            del self._faults[:]
        self._open.set()

    @staticmethod
    def _url(url):
        return None if url is None else _key(url)

    def _arm(self, fault, allowed):
        if fault.op not in allowed:
            raise ValueError('cannot inject that into %r: one of %s'
                             % (fault.op, ', '.join(allowed)))
        with self._lock:
            self._faults.append(fault)

    def _count(self, op, key):
        if op == 'read':
            return self._served[key] if key else self.bytes_served
        return self._written[key] if key else self.bytes_written

    # -- what the driver calls ------------------------------------------------

    def _called(self, op, location):
        """Count a call of ``op``; raise the fault armed for it, if any."""
        key = _key(location)
        with self._lock:
            self.calls[op] += 1
            for fault in self._faults:
                if fault.at is None and fault.matches(op, key):
                    fault.times -= 1
                    raise fault.error(location.masked)

    def _stat(self, location):
        key = _key(location)
        with self._lock:
            data = self._objects.get(key)
            if data is None:
                raise _not_found(location)
            return driver.Stat(size=len(data), validator=self._validator(key),
                               ranges=self.ranges)

    def _open_read(self, location, offset, length, ctx):
        """The object's bytes, the end of the read and a truncation mark."""
        key = _key(location)
        with self._lock:
            data = self._objects.get(key)
            if data is None:
                raise _not_found(location)
            self.reads.append((key, offset, length))
            ranged = bool(offset) or length is not None
            if ranged and not self.ranges and (
                    offset or length != len(data)):
                raise exceptions.RangeNotSupported(
                    '%s ignored the Range (MemoryStore.ranges is False)'
                    % location.masked, url=location.masked)
            if (ranged and ctx.validator and
                    ctx.validator != self._validator(key)):
                raise exceptions.RangeNotSupported(
                    '%s changed: validator %s, not %s (a failed If-Range)'
                    % (location.masked, self._validator(key),
                       ctx.validator), url=location.masked)
            end = len(data) if length is None else offset + length
            if offset > len(data) or end > len(data):
                raise exceptions.ProtocolError(
                    '%s has %d bytes: bytes %d-%d cannot be read'
                    % (location.masked, len(data), offset, end),
                    url=location.masked, retryable=False)
            cut = None
            for fault in self._faults:
                if fault.kind == 'truncate' and fault.matches('read', key):
                    fault.times -= 1
                    cut = fault.at
                    break
            return data, end, cut

    def _wait_open(self, ctx):
        while not self._open.wait(0.05):
            ctx.cancel.check()

    def _pass(self, op, location, n):
        """Count ``n`` bytes of ``op``: how many may pass, and an error."""
        key = _key(location)
        with self._lock:
            allowed, trip = n, None
            for fault in self._faults:
                if fault.at is None or fault.kind == 'truncate' or \
                        not fault.matches(op, key):
                    continue
                room = max(0, fault.at - self._count(op, fault.url))
                if room < n and (trip is None or room < allowed):
                    allowed, trip = room, fault
            if op == 'read':
                self.bytes_served += allowed
                self._served[key] += allowed
            else:
                self.bytes_written += allowed
                self._written[key] += allowed
            if trip is None:
                return allowed, None
            trip.times -= 1
            if trip.kind == 'change':
                self._put(key, trip.data)
                return allowed, exceptions.ConnectionFailed(
                    '%s was replaced during the read (connection reset)'
                    % location.masked, url=location.masked)
            return allowed, trip.error(location.masked)

    def _stage(self, location, offset):
        key = _key(location)
        with self._lock:
            staged = self._staged.get(key, b'')
            if offset > len(staged):
                raise exceptions.ProtocolError(
                    '%s: a write at %d, past the %d bytes staged'
                    % (location.masked, offset, len(staged)),
                    url=location.masked, retryable=False)
            buf = bytearray(staged[:offset])
            self._staged[key] = buf
            return buf

    def _staged_size(self, location):
        with self._lock:
            return len(self._staged.get(_key(location), b''))

    def _commit(self, location, buf):
        key = _key(location)
        with self._lock:
            if self._staged.get(key) is buf:
                del self._staged[key]
            self._put(key, bytes(buf))

    def _abort(self, location, buf):
        key = _key(location)
        with self._lock:
            self.calls['abort'] += 1
            if self._staged.get(key) is buf:
                del self._staged[key]


def _not_found(location):
    return exceptions.SourceNotFound('%s not found' % location.masked,
                                     url=location.masked)


class MemoryDriver(driver.Driver):
    """``memory://`` objects of a :class:`MemoryStore`.

    Ranged reads, atomic writes (an object appears at commit) and resumable
    writes (a write that failed keeps what it staged, and
    ``written_size()`` says how much).  Use :func:`make_driver_class` to
    bind it to a store; :class:`TransferFixture` does so.  A subclass may
    override :meth:`chunks` to shape what reads yield; the store's faults
    apply to whatever it yields.
    """

    name = 'memory'
    schemes = (MEMORY_SCHEME,)
    capabilities = (Cap.READ | Cap.WRITE | Cap.RANGED_READ |
                    Cap.RESUMABLE_WRITE | Cap.ATOMIC_COMMIT)
    chunk_size = 64 * 1024
    #: the :class:`MemoryStore` (set by :func:`make_driver_class`)
    store: MemoryStore = None

    def __init__(self, conf):
        super().__init__(conf)
        if self.store is None:
            raise TypeError('%s has no store: build the class with '
                            'oslo_transfer.fixture.make_driver_class()'
                            % type(self).__name__)

    def policy_urls(self, location) -> list:
        """None: the objects live in this process, on no server."""
        return []

    def stat(self, location, ctx):
        self.store._called('stat', location)
        return self.store._stat(location)

    def read(self, location, offset, length, ctx):
        self.store._called('read', location)
        data, end, cut = self.store._open_read(location, offset, length, ctx)
        return self._served(location, self.chunks(data, offset, end, ctx),
                            cut, ctx)

    def chunks(self, data: bytes, start: int, end: int,
               ctx: driver.Context) -> typing.Iterator[bytes]:
        """Yield ``data[start:end]`` in pieces of ``chunk_size`` bytes."""
        for pos in range(start, end, self.chunk_size):
            yield data[pos:min(pos + self.chunk_size, end)]

    def _served(self, location, chunks, cut, ctx):
        sent = 0
        it = iter(chunks)
        try:
            while cut is None or sent < cut:
                ctx.cancel.check()
                self.store._wait_open(ctx)
                chunk = next(it, None)
                if chunk is None:
                    return
                n = len(chunk) if cut is None else min(len(chunk),
                                                       cut - sent)
                allowed, error = self.store._pass('read', location, n)
                if allowed:
                    piece = chunk if allowed == len(chunk) else \
                        chunk[:allowed]
                    # Hold no reference across the yield: a subclass may
                    # reuse its buffer once the consumer lets go of it.
                    del chunk
                    yield piece
                    del piece
                    sent += allowed
                if error is not None:
                    raise error
        finally:
            close = getattr(it, 'close', None)
            if close is not None:
                close()

    def write(self, location, chunks, ctx, offset=0, size=None):
        self.store._called('write', location)
        buf = self.store._stage(location, offset)
        for chunk in chunks:
            ctx.cancel.check()
            allowed, error = self.store._pass('write', location, len(chunk))
            buf += chunk[:allowed]
            if error is not None:
                raise error
        return _MemoryWriter(self.store, location, buf, len(buf) - offset)

    def written_size(self, location, ctx):
        return self.store._staged_size(location)


class _MemoryWriter(driver.Writer):
    """Commits a staged object to the store, or drops it."""

    def __init__(self, store, location, buf, written):
        self._store = store
        self._location = location
        self._buf = buf
        self.bytes_written = written

    def commit(self, ctx=None):
        self._store._called('commit', self._location)
        self._store._commit(self._location, self._buf)

    def abort(self, ctx=None):
        self._store._abort(self._location, self._buf)


def make_driver_class(store: MemoryStore | None = None,
                      name: str = 'memory',
                      schemes: typing.Iterable[str] = (MEMORY_SCHEME,),
                      capabilities: driver.Capability | None = None,
                      base: type = MemoryDriver, **attrs) -> type:
    """A :class:`MemoryDriver` class bound to ``store``.

    Give it to a ``Transfer`` with ``Transfer(conf, drivers=[cls])``.

    :param store: the objects it serves (default: a new store, as
        ``cls.store``).
    :param name: the driver's name (``Result.driver``, the option group
        ``[oslo_transfer_<name>]``).
    :param schemes: the URL schemes it serves; ``("memory", "https")``
        lets code that builds ``https://`` URLs read them from the store.
    :param capabilities: what it declares (default: ``base``'s), e.g.
        without ``RANGED_READ`` to test a caller against a server that
        cannot resume.
    :param base: :class:`MemoryDriver` or a subclass of it.
    :param attrs: further class attributes (methods such as ``accepts``).
    """
    if not issubclass(base, MemoryDriver):
        raise TypeError('base must be MemoryDriver or a subclass of it')
    attrs.update(name=name, schemes=tuple(schemes),
                 store=store if store is not None else MemoryStore())
    if capabilities is not None:
        attrs['capabilities'] = capabilities
    return type('%s_%s' % (base.__name__, name), (base,), attrs)


class TransferFixture(fixtures.Fixture):
    """A ``Transfer`` over a memory store, for a service's unit tests.

    On set-up it builds a :class:`~oslo_transfer.transfer.Transfer` on a
    private ``ConfigOpts`` with the given options, over a
    :class:`MemoryDriver` bound to :attr:`store` (and any other
    ``drivers``).  On clean-up it closes the ``Transfer`` and puts back
    what a ``Transfer`` changes for the whole process: the interpreter's
    switch interval (``[oslo_transfer] switch_interval``) and the default
    ``Transfer`` of the module-level functions (``oslo_transfer.copy()``
    and friends), closing one that code under test created meanwhile.

    Defaults that suit tests: no back-off between retries
    (``retry_backoff = 0``), and ``state_path`` in a temporary directory
    that the clean-up removes.

    :param store: the :class:`MemoryStore` to serve (default: a new one);
        share one between fixtures to resume what another left.
    :param schemes: the schemes the memory driver serves.
    :param capabilities: what the memory driver declares (default: its
        class's).
    :param driver_class: :class:`MemoryDriver` or a subclass of it.
    :param drivers: other drivers to load beside it: entry-point names
        (``"file"``) or driver classes.
    :param overrides: ``{(group, name): value}`` for options of any group
        (``[oslo_transfer]`` or a driver's).
    :param module_api: also serve the module-level functions
        (``oslo_transfer.copy()``, ``open()``, ``upload()``, ``plan()``)
        from this fixture's ``Transfer``, for the tests of scripts.
    :param options: ``[oslo_transfer]`` options, e.g. ``retries=0``.

    :ivar transfer: the :class:`~oslo_transfer.transfer.Transfer`.
    :ivar store: the :class:`MemoryStore`.
    :ivar conf: the private ``ConfigOpts``.
    :ivar memory_driver: the memory driver's class, bound to ``store``.
    """

    def __init__(self, store: MemoryStore | None = None,
                 schemes: typing.Iterable[str] = (MEMORY_SCHEME,),
                 capabilities: driver.Capability | None = None,
                 driver_class: type = MemoryDriver,
                 drivers: typing.Iterable = (),
                 overrides: dict | None = None,
                 module_api: bool = False, **options):
        super().__init__()
        self.store = store if store is not None else MemoryStore()
        self.memory_driver = make_driver_class(
            self.store, schemes=schemes, capabilities=capabilities,
            base=driver_class)
        self._drivers = list(drivers)
        self._overrides = {('oslo_transfer', 'retry_backoff'): 0.0}
        self._overrides.update(
            {('oslo_transfer', k): v for k, v in options.items()})
        self._overrides.update(overrides or {})
        self._module_api = module_api
        self.transfer = None
        self.conf = None

    def _setUp(self):
        self.addCleanup(sys.setswitchinterval, sys.getswitchinterval())
        with api._lock:
            self.addCleanup(self._restore_module_api, api._default)
        classes = [self.memory_driver] + [self._load(d)
                                          for d in self._drivers]
        self.conf = self._conf(classes)
        self.transfer = transfer_mod.Transfer(self.conf, drivers=classes)
        self.addCleanup(self.transfer.close)
        if self._module_api:
            with api._lock:
                api._default = self.transfer

    @staticmethod
    def _load(wanted):
        if isinstance(wanted, type):
            return wanted
        return stevedore_driver.DriverManager(
            transfer_mod.DRIVER_NAMESPACE, wanted).driver

    def _conf(self, classes):
        conf = cfg.ConfigOpts()
        conf([], project='oslo_transfer', default_config_files=[],
             default_config_dirs=[])
        opts.register_opts(conf, classes)
        overrides = dict(self._overrides)
        if not any(name in ('state_path', 'state_dir')
                   for _group, name in overrides):
            tmp = self.useFixture(fixtures.TempDir()).path
            overrides[('oslo_transfer', 'state_path')] = tmp
        for (group, name), value in overrides.items():
            conf.set_override(name, value, group=group)
        return conf

    def _restore_module_api(self, saved):
        with api._lock:
            current, api._default = api._default, saved
        if current is not saved and current is not self.transfer:
            # Made by a module-level call of the code under test.
            current.close()
