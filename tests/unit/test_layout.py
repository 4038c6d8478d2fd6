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

"""Imports run one way: engine -> contract <- drivers.

A driver imports the contract (``driver``, ``exceptions``, ``locations``,
the neutral ``_utils``), public modules such as ``torrent``, the shared
``_drivers/_common`` and its own subpackage: never the engine, never
another driver.  ``driver.py`` holds the contract and nothing else.
"""

import ast
import pathlib

import pytest

import oslo_transfer
from oslo_transfer import driver

PACKAGE = pathlib.Path(oslo_transfer.__file__).parent
DRIVERS = PACKAGE / '_drivers'
#: what any driver module may import from oslo_transfer
CONTRACT = {'oslo_transfer.driver', 'oslo_transfer.exceptions',
            'oslo_transfer.locations', 'oslo_transfer._utils',
            'oslo_transfer.torrent', 'oslo_transfer._drivers._common'}


def _imports(path):
    """The ``oslo_transfer`` modules that ``path`` imports (anywhere)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            # "from oslo_transfer import driver" names a module
            found.update('%s.%s' % (node.module, a.name)
                         for a in node.names)
    return {m for m in found if m.split('.')[0] == 'oslo_transfer'}


def _own(path):
    """The subpackage a driver module belongs to (or the module itself)."""
    rel = path.relative_to(DRIVERS).with_suffix('')
    return 'oslo_transfer._drivers.' + rel.parts[0]


def _driver_modules():
    return sorted(p for p in DRIVERS.rglob('*.py')
                  if p.name != '__init__.py' or p.parent != DRIVERS)


@pytest.mark.parametrize('path', _driver_modules(),
                         ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_driver_imports_only_the_contract_and_its_own_package(path):
    own = _own(path)
    wrong = sorted(m for m in _imports(path)
                   if m not in CONTRACT and m != own and
                   not m.startswith(own + '.'))
    assert wrong == []


def test_the_contract_holds_the_contract_only():
    assert _imports(PACKAGE / 'driver.py') == {'oslo_transfer.exceptions',
                                               'oslo_transfer.locations'}
    assert _imports(PACKAGE / '_utils.py') == set()
    for name in ('AlignedBlock', 'is_aligned_view', 'buffer_address',
                 'max_segments_opt'):
        assert not hasattr(driver, name), name


def test_the_engine_imports_no_driver():
    for path in (PACKAGE / 'engine').rglob('*.py'):
        assert not {m for m in _imports(path)
                    if m.startswith('oslo_transfer._drivers')}, path


def test_lazy_images_use_the_engine_and_the_contract_not_a_driver():
    for path in (PACKAGE / 'lazy').rglob('*.py'):
        assert not {m for m in _imports(path)
                    if m.startswith('oslo_transfer._drivers')}, path
    # nbdkit runs the plugin in its own interpreter: at load it imports
    # the standard library and nbdkit only (oslo_transfer once its
    # folders are on sys.path, inside the callbacks)
    tree = ast.parse((PACKAGE / 'lazy' / 'nbdplugin.py').read_text())
    top = {a.name for node in tree.body if isinstance(node, ast.Import)
           for a in node.names}
    assert top == {'errno', 'io', 'json', 'logging', 'sys', 'nbdkit'}
    assert not [node for node in tree.body
                if isinstance(node, ast.ImportFrom)]
