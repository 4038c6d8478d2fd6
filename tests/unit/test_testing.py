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

"""The conformance mixin itself: it passes a good driver, fails bad ones."""

import itertools

import pytest

from oslo_transfer import driver
from oslo_transfer import exceptions
from oslo_transfer import fixture
from oslo_transfer import testing

_n = itertools.count()


class _MemoryConformance(testing.DriverConformance):
    """The mixin against the memory driver (a fresh store per test)."""

    #: objects in this process: no login, no server to wait for
    auth_errors = False
    timeout_errors = False

    def setup_store(self, base, scratch):
        self.store = fixture.MemoryStore()
        self.driver_class = fixture.make_driver_class(self.store, base=base)
        self._scratch = scratch

    def make_object(self, data):
        url = 'memory://store/obj-%d' % next(_n)
        self.store.put(url, data)
        return url

    def new_url(self):
        return 'memory://store/new-%d' % next(_n)

    def read_back(self, url):
        return self.store.get(url)


class TestMemoryDriverConforms(_MemoryConformance):
    """Every test of the mixin passes for a driver that keeps the contract."""

    @pytest.fixture(autouse=True)
    def _store(self, tmp_path):
        self.setup_store(fixture.MemoryDriver, str(tmp_path))


def _suite(base, tmp_path):
    suite = _MemoryConformance()
    suite.setup_store(base, str(tmp_path))
    return suite


class _IgnoresCancel(fixture.MemoryDriver):
    def read(self, location, offset, length, ctx):
        obj = self.store.get(location.url)
        end = len(obj) if length is None else offset + length
        return (obj[p:min(p + self.chunk_size, end)]
                for p in range(offset, end, self.chunk_size))


class _ConstantValidator(fixture.MemoryDriver):
    def stat(self, location, ctx):
        st = super().stat(location, ctx)
        return driver.Stat(size=st.size, validator='always-the-same',
                           ranges=st.ranges)


class _CancelledOnlyAtTheEnd(_IgnoresCancel):
    def read(self, location, offset, length, ctx):
        yield from super().read(location, offset, length, ctx)
        ctx.cancel.check()


def test_mixin_fails_a_driver_that_ignores_cancel(tmp_path):
    suite = _suite(_IgnoresCancel, tmp_path)
    with pytest.raises(AssertionError, match='went on after'):
        suite.test_cancel_stops_read()


def test_mixin_fails_a_driver_that_reads_everything_first(tmp_path):
    suite = _suite(_CancelledOnlyAtTheEnd, tmp_path)
    with pytest.raises(AssertionError, match='whole object'):
        suite.test_cancel_stops_read()


def test_mixin_fails_a_constant_validator(tmp_path):
    suite = _suite(_ConstantValidator, tmp_path)
    with pytest.raises(AssertionError, match='did not change'):
        suite.test_validator_changes_with_content()


def test_mixin_passes_the_good_driver_on_these_tests(tmp_path):
    # The same two checks on the unbroken driver: the failures above come
    # from the breakage, not from the harness.
    suite = _suite(fixture.MemoryDriver, tmp_path)
    suite.test_cancel_stops_read()
    suite.test_validator_changes_with_content()


class _LeaksPassword(fixture.MemoryDriver):
    def stat(self, location, ctx):
        raise exceptions.SourceNotFound('%s not found' % location.url)


class _NamesItsHostAsServer(fixture.MemoryDriver):
    def policy_urls(self, location):
        return ['http://%s/' % location.parts().hostname]


class _ForgetsWhatItRead(fixture.MemoryDriver):
    def __init__(self, conf):
        super().__init__(conf)
        self.session = next(_n)

    def stat(self, location, ctx):
        # A validator of its own per driver object (per Transfer): the
        # next copy cannot reuse what the interrupted one kept.
        st = super().stat(location, ctx)
        return driver.Stat(size=st.size, validator='v%d' % self.session,
                           ranges=st.ranges)


def test_mixin_fails_a_message_with_the_password(tmp_path):
    suite = _suite(_LeaksPassword, tmp_path)
    with pytest.raises(AssertionError, match='password is in'):
        suite.test_secret_masked_in_errors()


def test_mixin_fails_policy_urls_that_name_no_real_server(tmp_path):
    # memory://store names a host that does not resolve: a denied network
    # must refuse it as URLNotAllowed, not fail to resolve it.
    suite = _suite(_NamesItsHostAsServer, tmp_path)
    with pytest.raises(exceptions.ConnectionFailed, match='resolve store'):
        suite.test_denied_network_refused()


def test_mixin_fails_a_copy_that_does_not_resume(tmp_path):
    suite = _suite(_ForgetsWhatItRead, tmp_path)
    with pytest.raises(AssertionError, match='nothing was kept'):
        suite.test_segmented_copy_resumes_after_interruption()


def test_mixin_asks_for_wrong_credentials_or_a_reason(tmp_path):
    suite = _suite(fixture.MemoryDriver, tmp_path)
    suite.auth_errors = True
    with pytest.raises(AssertionError, match='provide wrong_credentials'):
        suite.test_wrong_credentials()


def test_mixin_passes_the_good_driver_on_the_error_tests(tmp_path):
    suite = _suite(fixture.MemoryDriver, tmp_path)
    suite.test_secret_masked_in_errors()
    suite.test_segmented_copy_resumes_after_interruption()
    suite.test_denied_network_refused()
