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

"""HTTP headers from a hostile server: Content-Length, Content-Range."""

import hypothesis
from hypothesis import strategies as st
import pytest

from oslo_transfer._drivers import http
from oslo_transfer import exceptions
from oslo_transfer import locations

LOC = locations.Location('http://u:secret@h/x')

# What a server can put in a header value: latin-1 text (urllib3 decodes
# raw bytes so), digits of other scripts, superscripts, signs, commas.
_HEADER_TEXT = st.one_of(
    st.text(alphabet=st.characters(max_codepoint=255), max_size=40),
    st.text(alphabet='0123456789 ,-+*/\u00b2\u0663\uff11bytes', max_size=40),
    st.integers(min_value=-2 ** 65, max_value=2 ** 65).map(str),
)


@pytest.mark.parametrize('value,size', [
    ('0', 0), ('12345', 12345), (' 7 ', 7), ('5, 5', 5),
    (str(http.MAX_SIZE), http.MAX_SIZE),
])
def test_content_length(value, size):
    assert http.content_length({'content-length': value}, LOC) == size


@pytest.mark.parametrize('value', [
    '\u00b2',            # isdigit() is True, int() refuses it
    '\u0663\u0664',      # Arabic-Indic 34: int() would read 34
    '-1', '+5', '1e3', '', ' ', '5, 6', str(http.MAX_SIZE + 1),
    '9' * 40, '0x10',
])
def test_bad_content_length_is_a_protocol_error(value):
    with pytest.raises(exceptions.ProtocolError) as ei:
        http.content_length({'content-length': value}, LOC)
    assert not ei.value.retryable
    assert 'secret' not in str(ei.value)
    assert 'Content-Length' in str(ei.value)


def test_absent_content_length():
    assert http.content_length({}, LOC) is None


@pytest.mark.parametrize('value,span', [
    ('bytes 0-9/100', (0, 9, 100)),
    ('bytes 10-10/*', (10, 10, None)),
    ('bytes 5-9/10', (5, 9, 10)),
    ('bytes 9-5/10', None),          # backwards
    ('bytes 5-10/10', None),         # past the end
    ('bytes \u0665-9/10', None),
    ('items 0-9/10', None),
    ('bytes 0-9', None),
    ('bytes */10', None),
    ('', None),
    (None, None),
])
def test_content_range(value, span):
    assert http.content_range(value) == span


@hypothesis.given(_HEADER_TEXT)
def test_content_length_takes_anything(value):
    try:
        size = http.content_length({'content-length': value}, LOC)
    except exceptions.ProtocolError:
        return
    assert 0 <= size <= http.MAX_SIZE
    assert str(size) == value.split(',')[0].strip().lstrip('0') or size == 0


@hypothesis.given(_HEADER_TEXT)
def test_content_range_takes_anything(value):
    span = http.content_range(value)
    if span is not None:
        first, last, total = span
        assert 0 <= first <= last <= http.MAX_SIZE
        assert total is None or last < total <= http.MAX_SIZE


@hypothesis.given(st.integers(0, http.MAX_SIZE),
                  st.integers(0, http.MAX_SIZE),
                  st.integers(0, http.MAX_SIZE))
def test_content_range_reads_what_a_server_meant(a, b, c):
    first, last, total = sorted((a, b, c))
    if last == total:
        return
    value = 'bytes %d-%d/%d' % (first, last, total)
    assert http.content_range(value) == (first, last, total)
