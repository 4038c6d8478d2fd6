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

"""The HTTP driver's pure helpers: validators, If-Range, masking, pool."""

import pytest

from oslo_transfer._drivers import http
from oslo_transfer import locations

LM = 'Tue, 01 Dec 2026 20:00:00 GMT'


@pytest.mark.parametrize('headers,if_range', [
    ({'etag': '"abc"', 'last-modified': LM}, '"abc"'),
    ({'etag': 'W/"abc"', 'last-modified': LM}, LM),
    ({'etag': 'W/"abc"'}, None),
    ({'last-modified': LM}, LM),
    ({}, None),
])
def test_if_range_from_validator(headers, if_range):
    validator = http.HTTPDriver._validator(headers, 10)
    assert http.HTTPDriver._if_range(validator) == if_range


def test_weak_etag_validator_changes_with_the_date():
    a = http.HTTPDriver._validator({'etag': 'W/"x"', 'last-modified': LM},
                                   10)
    b = http.HTTPDriver._validator({'etag': 'W/"x"', 'last-modified':
                                    'Tue, 01 Dec 2026 20:00:01 GMT'}, 10)
    assert a != b


def test_sized_body_has_a_length():
    assert len(http._SizedCounter(iter([b'ab', b'c']), 3)) == 3
    with pytest.raises(TypeError):
        len(http._Counter(iter([b'ab'])))


def test_error_text_masks_query_secrets():
    loc = locations.Location('http://h/o?X-Amz-Signature=S3SIG&sig=AZ%2BSIG'
                             '&temp_url_sig=SWIFT&a=1')
    text = ("HTTPConnectionPool(host='h', port=80): Max retries exceeded "
            "with url: /o?X-Amz-Signature=S3SIG&sig=AZ%2BSIG"
            "&temp_url_sig=SWIFT&a=1 (Caused by x)")
    out = http._clean(Exception(text), loc)
    for secret in ('S3SIG', 'AZ%2BSIG', 'AZ+SIG', 'SWIFT'):
        assert secret not in out
    assert 'a=1' in out and "host='h'" in out


def test_urllib3_request_lines_are_masked():
    line = locations.mask_query_text(
        '"GET /o?X-Amz-Credential=AKIA%2Fx&X-Amz-Date=20261201 HTTP/1.1" '
        '200 5')
    assert 'AKIA' not in line
    assert 'X-Amz-Date=20261201' in line and 'HTTP/1.1' in line


class _Session:
    closed = False

    def close(self):
        self.closed = True


def test_session_pool_keeps_a_bounded_number_idle():
    pool = http._SessionPool(_Session, idle=2)
    out = [pool.get() for _ in range(5)]
    assert len({id(s) for s in out}) == 5, 'a session was shared'
    for s in out:
        pool.put(s)
    assert [s.closed for s in out] == [False, False, True, True, True]
    again = pool.get()
    assert again in out[:2], 'an idle session was not reused'
    pool.close()
    assert all(s.closed for s in out if s is not again)
