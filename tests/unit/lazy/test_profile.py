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

"""Access profiles: written atomically, read with bounds checks."""

import json
import os

import hypothesis
import hypothesis.strategies as st

from oslo_transfer.lazy import profile

HEAD = profile.header('blockmap-sha256:' + 'a' * 64, 10 * 65536, 65536)


def test_save_and_load(tmp_path):
    path = str(tmp_path / 'p')
    profile.save(path, HEAD, [3, 1, 9])
    assert profile.load(path, HEAD) == [3, 1, 9]
    assert os.stat(path).st_mode & 0o777 == 0o600
    assert os.listdir(str(tmp_path)) == ['p']      # no temp file left


def test_a_profile_of_another_image_is_not_used(tmp_path):
    path = str(tmp_path / 'p')
    profile.save(path, HEAD, [3])
    for key, value in (('manifest', 'btih:00'), ('unit', 4096),
                       ('size', 1), ('version', 2)):
        assert profile.load(path, dict(HEAD, **{key: value})) is None


def test_missing_and_damaged_profiles_are_none(tmp_path):
    assert profile.load(str(tmp_path / 'none'), HEAD) is None
    for bad in (b'{', b'[]', json.dumps(dict(HEAD, units=[10])).encode(),
                json.dumps(dict(HEAD, units=[1.5])).encode(),
                json.dumps(dict(HEAD, units=[True])).encode(),
                json.dumps(dict(HEAD, units='1,2')).encode(),
                b'\xff' * 10):
        (tmp_path / 'p').write_bytes(bad)
        assert profile.load(str(tmp_path / 'p'), HEAD) is None, bad


def test_the_recorder_keeps_first_touches_in_order():
    r = profile.Recorder(100)
    r.touch(250, 10)
    r.touch(0, 150)
    r.touch(260, 1)
    assert r.units == [2, 0, 1]
    over = profile.Recorder(100, seconds=-1)
    over.touch(0, 10)
    assert over.units == [] and over.over


@hypothesis.given(raw=st.one_of(
    st.binary(max_size=200),
    st.builds(lambda units, extra: json.dumps(dict(
        HEAD, units=units, **extra)).encode(),
        st.lists(st.one_of(st.integers(-5, 20), st.text(max_size=2),
                           st.none(), st.floats(allow_nan=False)),
                 max_size=20),
        st.dictionaries(st.sampled_from(['version', 'unit', 'x']),
                        st.integers(0, 70000), max_size=2))))
def test_property_any_file_gives_units_in_bounds_or_none(tmp_path_factory,
                                                         raw):
    path = tmp_path_factory.mktemp('prof') / 'p'
    path.write_bytes(raw)
    units = profile.load(str(path), HEAD)
    if units is not None:
        assert all(type(u) is int and 0 <= u < 10 for u in units)
        assert len(units) == len(set(units))
