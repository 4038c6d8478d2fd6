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

"""A conformance suite for driver authors.

A third-party driver proves that it keeps the contract of
:mod:`oslo_transfer.driver` by mixing :class:`DriverConformance` into a
test class and providing three methods::

    class TestMyDriver(testing.DriverConformance):
        driver_class = MyDriver

        def make_object(self, data: bytes) -> str:
            '''Store data on the server; return its URL.'''

        def new_url(self) -> str:
            '''A URL where a write may create an object.'''

        def read_back(self, url) -> bytes:
            '''The bytes stored at url, read independently.'''

Optionally, ``rewrite_object(url, data)`` replaces the object at ``url``
on the server (the default writes through the driver, which needs
``Capability.WRITE``).  A driver whose objects have no validator (a block
device) sets ``has_validator = False``; otherwise ``stat()`` must return
one.  ``object_size`` sets the size of the test objects: make it larger
than what the driver writes in one request (a multipart threshold) so
that the abort test aborts a multipart write.  The scratch folder
(``/tmp/conformance-*``) is removed after each test.

Errors beyond a missing object: ``wrong_credentials(url)`` returns a
location the server refuses (``AuthenticationFailed``), or the class sets
``auth_errors = False`` (and says why: a test server that authenticates
nobody); ``unresponsive_location(url, address)`` puts ``url`` on a server
at ``address`` that accepts connections and never answers
(``TransferTimeout``; the default swaps the URL's host and port, right
when the URL names the server), or the class sets ``timeout_errors =
False`` (a driver that contacts no server).  A URL with a password in it
must be masked in every message, and ``[oslo_transfer] denied_networks``
must refuse the driver's servers before any byte is copied.

The tests run with pytest or unittest.  The in-tree drivers run the same
suite against their real servers.
"""

import hashlib
import os
import shutil
import socket
import tempfile
import threading
import urllib.parse

from oslo_config import cfg

from oslo_transfer import driver as driver_mod
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import opts
from oslo_transfer import transfer as transfer_mod

__all__ = ['DriverConformance', 'make_conf']

Cap = driver_mod.Capability


def make_conf(overrides=None, drivers=()):
    """A fresh ConfigOpts with oslo.transfer's options registered.

    :param overrides: ``{(group, name): value}``.
    """
    conf = cfg.ConfigOpts()
    conf([], project='oslo_transfer', default_config_files=[],
         default_config_dirs=[])
    opts.register_opts(conf, drivers)
    for (group, name), value in (overrides or {}).items():
        conf.set_override(name, value, group=group)
    return conf


def _data(size, seed=b'conformance'):
    out = bytearray()
    block = hashlib.sha512(seed).digest()
    i = 0
    while len(out) < size:
        out += hashlib.sha512(block + i.to_bytes(8, 'big')).digest()
        i += 1
    return bytes(out[:size])


_SECRET = 'S3CR3T-conformance'


def _assert_masked(msg, loc):
    """No password or token of ``loc`` (its URL's or its own) in ``msg``."""
    secrets = [urllib.parse.unquote(p) for p in [
        urllib.parse.urlsplit(loc.url).password] if p]
    if loc.credentials is not None:
        secrets += [v for v in (loc.credentials.password,
                                loc.credentials.token) if v]
    for secret in secrets:
        assert secret not in msg, 'a secret is in the message: %s' % msg


class _Interrupting:
    """Makes a driver class whose reads fail past ``limit`` bytes."""

    @staticmethod
    def of(base, limit):
        lock = threading.Lock()
        read = [0]

        def use_copy_to_path(self, *args, **kwargs):
            return False        # the engine must stream through read()

        def interrupted_read(self, location, offset, length, ctx):
            for chunk in base.read(self, location, offset, length, ctx):
                with lock:
                    read[0] += len(chunk)
                    cut = read[0] > limit
                if cut:
                    raise exceptions.ConnectionFailed(
                        'conformance: cut after %d bytes' % limit,
                        url=location.masked)
                yield chunk

        return type(base.__name__, (base,), {
            'read': interrupted_read, 'use_copy_to_path': use_copy_to_path,
            '__module__': base.__module__})


class DriverConformance:
    """Mixin: the contract every driver keeps.  See the module docstring."""

    driver_class = None
    #: ``{(group, name): value}`` applied to the test configuration
    conf_overrides = {}
    #: object size used by the tests (several chunks)
    object_size = 3 * 1024 * 1024 + 12345
    #: False for a driver whose objects have no validator (block devices)
    has_validator = True
    #: False when the test server authenticates nobody (say why); else
    #: provide :meth:`wrong_credentials`
    auth_errors = True
    #: False for a driver that contacts no server (local files)
    timeout_errors = True

    # -- to be provided by the test class -----------------------------------

    def make_object(self, data: bytes) -> str:
        raise NotImplementedError

    def new_url(self) -> str:
        raise NotImplementedError

    def read_back(self, url) -> bytes:
        raise NotImplementedError

    def rewrite_object(self, url, data: bytes) -> None:
        """Replace the object at ``url`` with ``data``, on the server.

        The default writes through the driver under test; a read-only
        driver's test class must provide this to check its validators.
        """
        drv = self._driver()
        if Cap.WRITE not in drv.capabilities:
            raise NotImplementedError(
                '%s is read-only: its test class must provide '
                'rewrite_object(url, data)' % type(self).__name__)
        ctx = self._ctx()
        writer = drv.write(self._loc(url), iter([data]), ctx,
                           size=len(data))
        writer.commit(ctx)

    def missing_url(self) -> str:
        """A URL on the same server that does not exist."""
        url = self.make_object(b'x')
        return url + '-missing-object'

    def wrong_credentials(self, url):
        """``url`` as a Location with credentials its server refuses."""
        raise NotImplementedError

    def unresponsive_location(self, url, address):
        """``url`` on a server at ``address`` (host, port) that never answers.

        The default replaces the URL's host and port.
        """
        p = urllib.parse.urlsplit(url)
        userinfo = p.netloc.rpartition('@')[0]
        netloc = '%s:%d' % address
        return locations.Location(urllib.parse.urlunsplit(p._replace(
            netloc=userinfo + '@' + netloc if userinfo else netloc)))

    # -- helpers --------------------------------------------------------------

    def _driver(self):
        conf = make_conf(self.conf_overrides, [self.driver_class])
        drv = self.driver_class(conf)
        drv.check_available()
        return drv

    def _ctx(self):
        return driver_mod.Context(io_timeout=30.0)

    def _loc(self, url):
        return locations.as_location(url)

    # -- the contract ---------------------------------------------------------

    def test_declares_itself(self):
        drv = self._driver()
        assert drv.name, 'a driver needs a name'
        assert drv.schemes, 'a driver needs schemes'
        assert isinstance(drv.capabilities, Cap)
        assert Cap.READ in drv.capabilities or Cap.WRITE in drv.capabilities
        for opt in drv.list_opts():
            assert isinstance(opt, cfg.Opt)

    def test_stat_size(self):
        data = _data(self.object_size)
        url = self.make_object(data)
        st = self._driver().stat(self._loc(url), self._ctx())
        assert st.size == len(data)

    def test_read_whole(self):
        drv = self._driver()
        if Cap.READ not in drv.capabilities:
            return
        data = _data(self.object_size)
        url = self.make_object(data)
        got = b''.join(drv.read(self._loc(url), 0, None, self._ctx()))
        assert got == data

    def test_read_ranges(self):
        drv = self._driver()
        if Cap.RANGED_READ not in drv.capabilities:
            return
        data = _data(self.object_size)
        url = self.make_object(data)
        loc = self._loc(url)
        for off, n in ((0, 1), (1, 4096), (1 << 20, 1 << 20),
                       (len(data) - 7, 7), (12345, None)):
            got = b''.join(drv.read(loc, off, n, self._ctx()))
            want = data[off:] if n is None else data[off:off + n]
            assert got == want, 'range %d+%s differs' % (off, n)

    def test_missing_object(self):
        drv = self._driver()
        url = self.missing_url()
        try:
            drv.stat(self._loc(url), self._ctx())
        except exceptions.SourceNotFound as exc:
            assert 'missing-object' in str(exc)
        else:
            raise AssertionError('stat of a missing object must raise '
                                 'SourceNotFound')

    def test_validator_changes_with_content(self):
        drv = self._driver()
        url = self.make_object(_data(4096, b'one'))
        v1 = drv.stat(self._loc(url), self._ctx()).validator
        if v1 is None:
            assert not self.has_validator, (
                'stat() returned no validator: the engine then cannot '
                'tell two versions apart on resume; set has_validator = '
                'False in the test class if the protocol has none')
            return
        # The same object, rewritten: other bytes and another size (a
        # validator made of a modification time in whole seconds and the
        # size changes even when the rewrite comes in the same second).
        self.rewrite_object(url, _data(8192, b'two'))
        st = drv.stat(self._loc(url), self._ctx())
        assert st.size == 8192, 'stat() after the rewrite: size %s, not ' \
            '8192 (was the object rewritten in place?)' % st.size
        assert st.validator != v1, 'the validator %r did not change when ' \
            'the object was rewritten' % (v1,)

    def test_write_then_read(self):
        drv = self._driver()
        if Cap.WRITE not in drv.capabilities:
            return
        data = _data(self.object_size, b'write')
        url = self.new_url()
        chunks = [data[i:i + 65536] for i in range(0, len(data), 65536)]
        ctx = self._ctx()
        writer = drv.write(self._loc(url), iter(chunks), ctx,
                           size=len(data))
        writer.commit(ctx)
        assert self.read_back(url) == data

    def test_write_aborted_by_iterator(self):
        drv = self._driver()
        if Cap.WRITE not in drv.capabilities:
            return
        url = self.new_url()

        size = self.object_size

        def chunks():
            # Most of the object first, so that a driver that writes in
            # parts (a multipart upload) has sent some when it aborts.
            sent = 0
            while sent < size - 65536:
                n = min(65536, size - 65536 - sent)
                sent += n
                yield b'a' * n
            raise exceptions.ChecksumMismatch('test abort')

        try:
            drv.write(self._loc(url), chunks(), self._ctx(), size=size)
        except exceptions.ChecksumMismatch:
            pass
        else:
            raise AssertionError('an exception from the chunks must '
                                 'propagate out of write()')
        if Cap.ATOMIC_COMMIT in drv.capabilities:
            try:
                got = self.read_back(url)
            except Exception:  # noqa: absent is the expected outcome
                got = None
            assert got in (None, b''), 'an aborted atomic write left data'

    def test_write_unknown_size(self):
        drv = self._driver()
        if Cap.WRITE not in drv.capabilities:
            return
        data = _data(self.object_size, b'nosize')
        url = self.new_url()
        ctx = self._ctx()
        chunks = (data[i:i + 65536] for i in range(0, len(data), 65536))
        writer = drv.write(self._loc(url), chunks, ctx, size=None)
        writer.commit(ctx)
        assert self.read_back(url) == data

    def test_upload_through_engine(self):
        drv = self._driver()
        if Cap.WRITE not in drv.capabilities:
            return
        data = _data(self.object_size, b'upload')
        src = os.path.join(self.scratch_dir(), 'conformance-upload')
        with open(src, 'wb') as f:
            f.write(data)
        url = self.new_url()
        conf = make_conf(dict(self._engine_overrides()),
                         [self.driver_class])
        with transfer_mod.Transfer(conf, drivers=[self.driver_class]) as t:
            res = t.upload(src, url, checksum='sha256:%s'
                           % hashlib.sha256(data).hexdigest())
        assert res.driver == self.driver_class.name
        assert self.read_back(url) == data

    def test_segmented_copy_through_engine(self):
        drv = self._driver()
        if Cap.RANGED_READ not in drv.capabilities:
            return
        data = _data(self.object_size, b'segments')
        url = self.make_object(data)
        overrides = dict(self.conf_overrides)
        overrides.update({('oslo_transfer', 'segment_threshold'): 0,
                          ('oslo_transfer', 'segment_size'): 1024 * 1024,
                          ('oslo_transfer', 'segments'): 4})
        conf = make_conf(overrides, [self.driver_class])
        dest = os.path.join(self.scratch_dir(), 'conformance-segments')
        with transfer_mod.Transfer(conf, drivers=[self.driver_class]) as t:
            t.copy(url, dest, checksum='sha256:%s'
                   % hashlib.sha256(data).hexdigest())
        with open(dest, 'rb') as f:
            assert f.read() == data

    def test_segmented_copy_resumes_after_interruption(self):
        drv = self._driver()
        if Cap.RANGED_READ not in drv.capabilities:
            return
        data = _data(self.object_size, b'resume')
        url = self.make_object(data)
        checksum = 'sha256:%s' % hashlib.sha256(data).hexdigest()
        overrides = self._engine_overrides()
        overrides.update({('oslo_transfer', 'segment_threshold'): 0,
                          ('oslo_transfer', 'segment_size'): 1024 * 1024,
                          ('oslo_transfer', 'segments'): 4,
                          ('oslo_transfer', 'checkpoint_bytes'): 1024 * 1024,
                          ('oslo_transfer', 'retries'): 0})
        conf = make_conf(overrides, [self.driver_class])
        dest = os.path.join(self.scratch_dir(), 'conformance-resume')
        cut = _Interrupting.of(self.driver_class, len(data) * 2 // 3)
        with transfer_mod.Transfer(conf, drivers=[cut]) as t:
            try:
                t.copy(url, dest, checksum=checksum)
            except exceptions.ConnectionFailed as exc:
                assert 'conformance: cut' in str(exc), exc
            else:
                raise AssertionError('the copy was not interrupted: the '
                                     'engine did not read through read()')
        assert not os.path.exists(dest), 'an interrupted copy left DEST'
        conf = make_conf(overrides, [self.driver_class])
        with transfer_mod.Transfer(conf, drivers=[self.driver_class]) as t:
            res = t.copy(url, dest, checksum=checksum)
        with open(dest, 'rb') as f:
            assert f.read() == data
        assert res.bytes_resumed > 0, 'nothing was kept from the ' \
            'interrupted copy: %r' % (res,)
        assert res.bytes_resumed + res.bytes_transferred == len(data), res
        left = [n for n in os.listdir(os.path.dirname(dest))
                if n.startswith('conformance-resume.')]
        assert not left, 'left beside DEST: %s' % left

    def test_wrong_credentials(self):
        if not self.auth_errors:
            return
        url = self.make_object(b'guarded')
        try:
            loc = self.wrong_credentials(url)
        except NotImplementedError:
            raise AssertionError(
                'provide wrong_credentials(url), or set auth_errors = '
                'False when the test server authenticates nobody') from None
        try:
            self._driver().stat(loc, self._ctx())
        except exceptions.AuthenticationFailed as exc:
            _assert_masked(str(exc), loc)
        else:
            raise AssertionError('stat with wrong credentials must raise '
                                 'AuthenticationFailed')

    def test_secret_masked_in_errors(self):
        url = self.missing_url()
        if locations.is_local(url):
            return      # a path has no place for a password
        p = urllib.parse.urlsplit(url)
        host = p.netloc.rpartition('@')[2]
        loc = locations.Location(urllib.parse.urlunsplit(p._replace(
            netloc='conformance:%s@%s' % (_SECRET, host))))
        try:
            self._driver().stat(loc, self._ctx())
        except exceptions.TransferError as exc:
            msg = str(exc)
            assert _SECRET not in msg, 'the password is in: %s' % msg
            assert '***' in msg or loc.masked not in msg, msg
        else:
            raise AssertionError('stat of a missing object succeeded')

    def test_unresponsive_server_times_out(self):
        if not self.timeout_errors:
            return
        url = self.make_object(b'never')
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            # Connections complete in the backlog; nobody ever answers.
            s.bind(('127.0.0.1', 0))
            s.listen(64)
            loc = self.unresponsive_location(url, s.getsockname())
            ctx = driver_mod.Context(io_timeout=1.0)
            try:
                self._driver().stat(loc, ctx)
            except exceptions.TransferTimeout as exc:
                _assert_masked(str(exc), loc)
            except exceptions.TransferError as exc:
                raise AssertionError(
                    'a server that never answers must end in '
                    'TransferTimeout after io_timeout, not %s: %s'
                    % (type(exc).__name__, exc)) from exc
            else:
                raise AssertionError('stat on a server that never answers '
                                     'returned')

    def test_denied_network_refused(self):
        data = _data(4096, b'denied')
        url = self.make_object(data)
        urls = self._driver().policy_urls(self._loc(url))
        if not urls or all(locations.is_local(u) for u in urls):
            return      # no server for the URL policy to judge
        overrides = self._engine_overrides()
        overrides[('oslo_transfer', 'denied_networks')] = ['0.0.0.0/0',
                                                           '::/0']
        conf = make_conf(overrides, [self.driver_class])
        dest = os.path.join(self.scratch_dir(), 'conformance-denied')
        with transfer_mod.Transfer(conf, drivers=[self.driver_class]) as t:
            try:
                t.copy(url, dest)
            except exceptions.URLNotAllowed as exc:
                assert 'denied' in str(exc), exc
            else:
                raise AssertionError('denied_networks 0.0.0.0/0 let a copy '
                                     'from %s through' % urls)
        assert not [n for n in os.listdir(os.path.dirname(dest))
                    if n.startswith('conformance-denied')], \
            'a refused copy left files'

    def _engine_overrides(self):
        out = dict(self.conf_overrides)
        out.setdefault(('oslo_transfer', 'state_dir'),
                       os.path.join(self.scratch_dir(), 'state'))
        return out

    def test_cancel_stops_read(self):
        drv = self._driver()
        data = _data(self.object_size)
        url = self.make_object(data)
        ctx = self._ctx()
        it = iter(drv.read(self._loc(url), 0, None, ctx))
        got = len(next(it))
        assert got < len(data), 'the first chunk was the whole object: ' \
            'set object_size larger than one chunk of this driver'
        ctx.cancel.cancel()
        try:
            for chunk in it:
                got += len(chunk)
        except exceptions.TransferError:
            # Cancelled, or the error of a connection closed on cancel.
            pass
        else:
            raise AssertionError(
                'read() went on after ctx.cancel was set: %s of %d bytes '
                'and no Cancelled' % (got, len(data)))
        assert got < len(data), 'read() yielded the whole object (%d ' \
            'bytes) after ctx.cancel was set, then raised' % got

    def test_copy_through_engine(self):
        data = _data(self.object_size, b'engine')
        url = self.make_object(data)
        conf = make_conf(self.conf_overrides, [self.driver_class])
        dest = os.path.join(self.scratch_dir(), 'conformance-copy')
        with transfer_mod.Transfer(conf, drivers=[self.driver_class]) as t:
            res = t.copy(url, dest, checksum='sha256:%s'
                         % hashlib.sha256(data).hexdigest())
        with open(dest, 'rb') as f:
            assert f.read() == data
        assert res.driver == self.driver_class.name
        assert res.size == len(data)

    def scratch_dir(self):
        d = getattr(self, '_scratch', None)
        if d is None:
            d = self._scratch = tempfile.mkdtemp(prefix='conformance-')
            self._own_scratch = True
        return d

    def teardown_method(self, method=None):
        """Remove the scratch folder (pytest calls this after each test)."""
        d = self.__dict__.pop('_scratch', None)
        if d and self.__dict__.pop('_own_scratch', False):
            shutil.rmtree(d, ignore_errors=True)

    def tearDown(self):
        """The same under unittest."""
        self.teardown_method()
        parent = getattr(super(), 'tearDown', None)
        if parent is not None:
            parent()
