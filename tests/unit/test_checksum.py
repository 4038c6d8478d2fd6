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

"""A caller's checksum: any fixed-length hashlib algorithm, nothing else."""

import hashlib

import hypothesis
from hypothesis import strategies as st
import pytest

from oslo_transfer import checksum
from oslo_transfer import fixture


@pytest.mark.parametrize('algo', ['shake_128', 'shake_256', 'SHAKE-128'])
def test_variable_length_algorithms_are_refused_before_any_io(algo):
    with pytest.raises(ValueError) as ei:
        checksum.parse('%s:%s' % (algo, 'ab' * 16))
    assert 'no fixed digest length' in str(ei.value)


@pytest.mark.parametrize('algo', sorted(a for a in hashlib.algorithms_available
                                        if hashlib.new(a).digest_size))
def test_every_fixed_length_algorithm_is_accepted(algo):
    digest = hashlib.new(algo, b'x').hexdigest()
    ck = checksum.parse('%s:%s' % (algo, digest.upper()))
    h = ck.new()
    h.update(b'x')
    assert h.hexdigest() == ck.hexdigest


@pytest.mark.parametrize('value', [
    ('sha256', None), (None, 'ab'), (5, 'ab'), 'sha256:ab\n',
    'sha256:' + '\u0663' * 64, 'sha256:' + 'g' * 64,
])
def test_malformed_checksums_are_value_errors(value):
    with pytest.raises(ValueError):
        checksum.parse(value)


@hypothesis.given(st.one_of(
    st.text(max_size=80),
    st.tuples(st.text(max_size=20), st.text(max_size=140)),
    st.builds(lambda a, h: '%s:%s' % (a, h),
              st.sampled_from(['sha256', 'md5', 'shake_128', 'SHA-512',
                               'blake2b', 'sm3', 'nope', '']),
              st.text(alphabet='0123456789abcdefABCDEF\u0663 \n',
                      max_size=140))))
def test_parse_takes_anything(value):
    try:
        ck = checksum.parse(value)
    except ValueError:
        return
    assert len(ck.hexdigest) == 2 * ck.new().digest_size > 0


def test_default_digest_is_checked_before_any_io(tmp_path):
    with fixture.TransferFixture(default_digest='shake_128') as fix:
        fix.store.put('memory://h/img', b'data')
        with pytest.raises(ValueError) as ei:
            fix.transfer.copy('memory://h/img', str(tmp_path / 'img'))
        assert fix.store.calls['stat'] == 0
    assert '[oslo_transfer] default_digest' in str(ei.value)
    assert list(tmp_path.iterdir()) == []
