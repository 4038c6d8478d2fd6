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

"""The engine's one retry policy."""

import time

import pytest

from oslo_transfer import driver
from oslo_transfer.engine import retry
from oslo_transfer import exceptions
from oslo_transfer import testing

DROPPED = exceptions.ConnectionFailed('dropped')


def test_backoff_doubles_up_to_the_cap():
    policy = retry.RetryPolicy(retries=9, backoff=1.5)
    assert [policy.delay(n) for n in range(1, 7)] == [
        1.5, 3.0, 6.0, 12.0, 24.0, retry.MAX_DELAY]


def test_retries_are_counted():
    policy = retry.RetryPolicy(retries=2, backoff=0.25)
    assert policy.next_delay(DROPPED, 0) == 0.25
    assert policy.next_delay(DROPPED, 1) == 0.5
    assert policy.next_delay(DROPPED, 2) is None
    assert retry.RetryPolicy(retries=0).next_delay(DROPPED, 0) is None


@pytest.mark.parametrize('exc', [
    exceptions.AuthenticationFailed('no'),
    exceptions.ProtocolError('404', retryable=False),
    exceptions.ChecksumMismatch('bad'),
    ValueError('not ours'),
])
def test_only_retryable_transfer_errors_are_retried(exc):
    assert retry.RetryPolicy().next_delay(exc, 0) is None


def test_a_retryable_protocol_error_is_retried():
    exc = exceptions.ProtocolError('HTTP 503', retryable=True)
    assert retry.RetryPolicy(backoff=2.0).next_delay(exc, 0) == 2.0


def test_no_retry_once_cancelled():
    ctx = driver.Context()
    policy = retry.RetryPolicy()
    assert policy.next_delay(DROPPED, 0, ctx) == 1.0
    ctx.cancel.cancel()
    assert policy.next_delay(DROPPED, 0, ctx) is None
    own = driver.CancelToken()
    own.cancel()
    assert policy.next_delay(DROPPED, 0, driver.Context(), own) is None


def test_the_wait_never_passes_the_deadline():
    policy = retry.RetryPolicy(backoff=20.0)
    ctx = driver.Context(expires_at=time.monotonic() + 2.0)
    assert 0 < policy.next_delay(DROPPED, 0, ctx) <= 2.0
    ctx = driver.Context(expires_at=time.monotonic() - 1.0)
    assert policy.next_delay(DROPPED, 0, ctx) is None


def test_policy_from_the_options():
    conf = testing.make_conf({('oslo_transfer', 'retries'): 3,
                              ('oslo_transfer', 'retry_backoff'): 0.5})
    policy = retry.RetryPolicy.from_conf(conf)
    assert (policy.retries, policy.backoff) == (3, 0.5)
