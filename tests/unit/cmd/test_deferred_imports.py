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

"""The command's deferred imports: a stand-in until the first attribute.

(What the command defers, and that a copy never loads them, is in
``tests/unit/test_startup.py``.)
"""

import sys

import pytest

from oslo_transfer.cmd import _deferred_imports


@pytest.fixture
def slow_module(tmp_path, monkeypatch):
    """A module ``deferred_probe`` that notes each time it is executed."""
    log = tmp_path / 'loads'
    (tmp_path / 'deferred_probe.py').write_text(
        'with open(%r, "a") as f:\n'
        '    f.write("loaded\\n")\n'
        'VALUE = 42\n'
        'def answer():\n'
        '    return VALUE\n' % str(log))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, 'deferred_probe', raising=False)
    yield log
    sys.modules.pop('deferred_probe', None)


def _loads(log):
    return log.read_text().count('loaded') if log.exists() else 0


def test_import_gets_the_stand_in_and_loads_nothing(slow_module):
    assert _deferred_imports.install(['deferred_probe']) == [
        'deferred_probe']
    import deferred_probe
    assert type(deferred_probe) is _deferred_imports.DeferredModule
    assert _loads(slow_module) == 0


def test_the_first_attribute_loads_the_real_module_once(slow_module):
    _deferred_imports.install(['deferred_probe'])
    import deferred_probe as stand_in
    from deferred_probe import answer
    assert answer() == 42
    assert _loads(slow_module) == 1
    real = sys.modules['deferred_probe']
    assert type(real) is not _deferred_imports.DeferredModule
    # the stand-in (held by whoever imported it early) now is a copy
    assert stand_in.VALUE == 42 and stand_in.answer is real.answer
    import deferred_probe
    assert deferred_probe is real
    assert _loads(slow_module) == 1


def test_imported_or_missing_modules_are_left_alone(slow_module):
    import deferred_probe
    assert _deferred_imports.install(['deferred_probe',
                                      'no_such_module_anywhere']) == []
    assert sys.modules['deferred_probe'] is deferred_probe
    assert 'no_such_module_anywhere' not in sys.modules
