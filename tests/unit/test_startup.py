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

"""What a plain copy loads: no protocol library it does not use."""

import importlib.util
import json
import subprocess
import sys

import pytest

from oslo_transfer._drivers.bittorrent import session as session_mod
from oslo_transfer import exceptions

_CHILD = r'''
import json, sys
import oslo_transfer
res = oslo_transfer.copy(sys.argv[1], sys.argv[2])
print(json.dumps({'digest': res.digest,
                  'loaded': sorted(m for m in ('libtorrent', 'paramiko',
                                               'requests')
                                   if m in sys.modules)}))
'''


def test_local_copy_loads_no_protocol_library(tmp_path):
    src = tmp_path / 'src'
    src.write_bytes(b'x' * 4096)
    dest = tmp_path / 'dest'
    out = subprocess.run([sys.executable, '-c', _CHILD, str(src), str(dest)],
                         capture_output=True, text=True, check=True)
    report = json.loads(out.stdout.strip().splitlines()[-1])
    # The plan checks every peer-to-peer driver; libtorrent (~15 ms and a
    # 10 MiB shared library) must not be loaded for that.
    assert report['loaded'] == []
    assert dest.read_bytes() == b'x' * 4096


def test_find_libtorrent_names_the_extra(monkeypatch):
    monkeypatch.setattr(session_mod, '_lt', None)
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
    with pytest.raises(exceptions.MissingDependency) as err:
        session_mod.find_libtorrent()
    assert 'pip install libtorrent' in str(err.value)
    assert 'pip install libtorrent' in str(err.value)


def test_find_libtorrent_does_not_import(monkeypatch):
    monkeypatch.setattr(session_mod, '_lt', None)
    monkeypatch.delitem(sys.modules, 'libtorrent', raising=False)
    session_mod.find_libtorrent()
    assert 'libtorrent' not in sys.modules


def _child(code, *argv):
    out = subprocess.run([sys.executable, '-c', code] + list(argv),
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


_COMMAND = r'''
import json, subprocess, sys
from oslo_transfer.cmd import main
rc = main.main(['copy', sys.argv[1], sys.argv[2]])
before = {m: type(sys.modules[m]).__name__ for m in ('rfc3986', 'netaddr')}
import oslo_config.types
uri = oslo_config.types.URI()('https://example.com/x')
ip = str(oslo_config.types.IPAddress()('192.0.2.7'))
bad = []
for kind, value in ((oslo_config.types.URI, 'no-scheme'),
                    (oslo_config.types.IPAddress, '192.0.2.999')):
    try:
        kind()(value)
    except ValueError:
        bad.append('ValueError')
print(json.dumps({'rc': rc, 'before': before, 'uri': uri, 'ip': ip,
                  'bad': bad,
                  'after': {m: type(sys.modules[m]).__name__
                            for m in ('rfc3986', 'netaddr')}}))
'''


def test_command_defers_rfc3986_and_netaddr_until_used(tmp_path):
    # oslo.config imports rfc3986 for URI options and netaddr for IP
    # address options, neither of which the command uses; deferring them
    # saves 13-29 % of a short command's wall time (see
    # oslo_transfer.cmd._deferred_imports).
    src = tmp_path / 'src'
    src.write_bytes(b'y' * 100)
    report = _child(_COMMAND, str(src), str(tmp_path / 'dest'))
    assert report['rc'] == 0
    # never loaded by a copy
    assert report['before'] == {'rfc3986': 'DeferredModule',
                                'netaddr': 'DeferredModule'}
    # ... and work as before the moment something uses them
    assert report['uri'] == 'https://example.com/x'
    assert report['ip'] == '192.0.2.7'
    assert report['bad'] == ['ValueError', 'ValueError']
    assert report['after'] == {'rfc3986': 'module', 'netaddr': 'module'}
    assert (tmp_path / 'dest').read_bytes() == b'y' * 100


_LIBRARY = r'''
import json, sys
import oslo_transfer
lazy = 'oslo_config' not in sys.modules and \
    'oslo_transfer.transfer' not in sys.modules
from oslo_transfer import Transfer, copy, exceptions
import oslo_transfer.transfer
try:
    oslo_transfer.no_such_name
    missing = None
except AttributeError as exc:
    missing = str(exc)
print(json.dumps({
    'lazy': lazy,
    'same': Transfer is oslo_transfer.transfer.Transfer and
            copy is oslo_transfer.copy,
    'exceptions': exceptions.__name__,
    'missing': missing,
    'all': sorted(n for n in oslo_transfer.__all__
                  if getattr(oslo_transfer, n, None) is None),
    'dir': all(n in dir(oslo_transfer) for n in oslo_transfer.__all__),
    'deferred': [m for m in ('rfc3986', 'netaddr')
                 if type(sys.modules[m]).__name__ != 'module']}))
'''


def test_package_names_load_on_first_use():
    report = _child(_LIBRARY)
    assert report['lazy']           # importing the package loads nothing
    assert report['same']
    assert report['exceptions'] == 'oslo_transfer.exceptions'
    assert "has no attribute 'no_such_name'" in report['missing']
    assert report['all'] == []      # every public name resolves
    assert report['dir']
    # the library leaves a service's imports alone
    assert report['deferred'] == []


_COLLECTOR = r'''
import gc, json, sys
sys.argv[0] = sys.argv[1]
from oslo_transfer import cmd
paused = not gc.isenabled()
from oslo_transfer.cmd import main
from oslo_transfer import transfer
during = []
real = transfer.Transfer.copy
def copy(self, *a, **k):
    during.append(gc.isenabled())
    return real(self, *a, **k)
transfer.Transfer.copy = copy
rc = main.main(['copy', sys.argv[2], sys.argv[3]])
print(json.dumps({'paused': paused, 'rc': rc, 'during': during,
                  'frozen': gc.get_freeze_count()}))
'''


@pytest.mark.parametrize('argv0, paused', [
    ('/usr/local/bin/oslo-transfer', True), ('/srv/glance-api', False)])
def test_only_the_command_pauses_the_collector_while_it_starts(
        tmp_path, argv0, paused):
    src = tmp_path / 'src'
    src.write_bytes(b'z' * 100)
    report = _child(_COLLECTOR, argv0, str(src), str(tmp_path / 'dest'))
    assert report['rc'] == 0
    assert report['paused'] is paused
    # on again while the sub-command runs; what start-up made is frozen
    assert report['during'] == [True]
    assert (report['frozen'] > 1000) is paused
