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

"""The command uses the library as any caller would: public modules only."""

import ast
import os

import pytest

import oslo_transfer
from oslo_transfer import cmd

CMD_DIR = os.path.dirname(cmd.__file__)
PACKAGE_DIR = os.path.dirname(oslo_transfer.__file__)

#: what the command may import from oslo_transfer, besides its own modules
#: (not ``opts``: the Transfer registers the options)
PUBLIC = {'oslo_transfer', 'oslo_transfer.api', 'oslo_transfer.blockmap',
          'oslo_transfer.checksum', 'oslo_transfer.driver',
          # the NBD export's process model, shared with its nbdkit plugin
          'oslo_transfer.lazy', 'oslo_transfer.lazy.nbd',
          'oslo_transfer.exceptions', 'oslo_transfer.locations',
          'oslo_transfer.result',
          'oslo_transfer.selector', 'oslo_transfer.torrent',
          'oslo_transfer.transfer'}


def _modules():
    return sorted(os.path.join(CMD_DIR, name) for name in os.listdir(CMD_DIR)
                  if name.endswith('.py'))


def _imports(path):
    """Every module that ``path`` imports, wherever the import statement is.

    ``from oslo_transfer import x`` counts as ``oslo_transfer.x`` when ``x``
    is a module of the package.
    """
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            for alias in node.names:
                sub = '%s.%s' % (node.module, alias.name)
                rel = os.path.join(PACKAGE_DIR, *sub.split('.')[1:])
                if os.path.exists(rel + '.py') or os.path.isdir(rel):
                    found.add(sub)
        elif isinstance(node, ast.Call) and getattr(
                node.func, 'attr', None) == 'import_module':
            found.update(arg.value for arg in node.args
                         if isinstance(arg, ast.Constant))
    return found


def test_the_scan_sees_what_it_looks_for(tmp_path):
    bad = tmp_path / 'bad.py'
    bad.write_text('def f():\n'
                   '    from oslo_transfer._drivers.bittorrent import seed\n'
                   '    from oslo_transfer import engine\n')
    assert {'oslo_transfer._drivers.bittorrent.seed',
            'oslo_transfer.engine'} <= _imports(str(bad))


@pytest.mark.parametrize('path', _modules(), ids=os.path.basename)
def test_command_imports_only_public_modules(path):
    ours = {m for m in _imports(path) if m.split('.')[0] == 'oslo_transfer'}
    private = {m for m in ours
               if not m.startswith('oslo_transfer.cmd') and m not in PUBLIC}
    assert private == set(), '%s imports private modules' % path


@pytest.mark.parametrize('path', _modules(), ids=os.path.basename)
def test_command_names_no_driver_module(path):
    # not in an import, a string or a comment: the drivers are found by
    # their entry points and capabilities, never by their modules
    with open(path) as f:
        assert '_drivers' not in f.read()


@pytest.mark.parametrize('path', _modules(), ids=os.path.basename)
def test_command_registers_no_option_by_hand(path):
    # args.make_transfer() registers every option, as for a service
    with open(path) as f:
        assert 'register_opt' not in f.read()
