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

from oslo_transfer._drivers import _torrent_session
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
    monkeypatch.setattr(_torrent_session, '_lt', None)
    monkeypatch.setattr(importlib.util, 'find_spec', lambda name: None)
    with pytest.raises(exceptions.MissingDependency) as err:
        _torrent_session.find_libtorrent()
    assert 'oslo.transfer[bittorrent]' in str(err.value)
    assert 'pip install libtorrent' in str(err.value)


def test_find_libtorrent_does_not_import(monkeypatch):
    monkeypatch.setattr(_torrent_session, '_lt', None)
    monkeypatch.delitem(sys.modules, 'libtorrent', raising=False)
    _torrent_session.find_libtorrent()
    assert 'libtorrent' not in sys.modules
