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

"""The NBD export's spec file and the checks before nbdkit starts."""

import base64
import os
import stat
import sys
import sysconfig

import pytest

import oslo_transfer
from oslo_transfer import exceptions
from oslo_transfer.lazy import manifest as manifest_mod
from oslo_transfer.lazy import nbd
from tests.unit.lazy import helpers

URL = helpers.URL
DATA = helpers.image(size=512 * 1024, zero_blocks=())


def _fake_nbdkit(tmp_path, out, rc=0):
    path = tmp_path / 'nbdkit'
    path.write_text('#!/bin/sh\necho "%s"\nexit %d\n' % (out, rc))
    path.chmod(0o755)
    return str(path)


def test_the_python_minor_version_must_be_nbdkits(tmp_path):
    ours = '%d.%d' % sys.version_info[:2]
    nbd.check_python(_fake_nbdkit(tmp_path, 'python_version=%s.1' % ours))
    with pytest.raises(exceptions.MissingDependency,
                       match=r'embeds Python 3\.2, and this oslo-transfer '
                             r'runs on Python %s' % ours):
        nbd.check_python(_fake_nbdkit(tmp_path, 'python_version=3.2.9'))
    with pytest.raises(exceptions.MissingDependency,
                       match='nbdkit-plugin-python'):
        nbd.check_python(_fake_nbdkit(tmp_path, 'no plugin', rc=1))
    with pytest.raises(exceptions.MissingDependency, match='cannot run'):
        nbd.check_python(str(tmp_path / 'missing'))


def test_the_child_gets_a_system_path_and_none_of_our_python(monkeypatch):
    env = nbd.child_env({'PATH': '/root/.pyenv/versions/3.11.7/bin:/usr/bin',
                         'PYTHONPATH': '/x', 'PYTHONHOME': '/y', 'HOME': '/'})
    assert env == {'PATH': nbd.CHILD_PATH, 'HOME': '/'}


def test_the_plugin_path_holds_ours_and_no_stdlib():
    paths = nbd.plugin_sys_path()
    tree = os.path.dirname(os.path.dirname(oslo_transfer.__file__))
    assert paths[0] == os.path.abspath(tree)
    stdlib = os.path.realpath(sysconfig.get_paths()['stdlib'])
    for p in paths:
        real = os.path.realpath(p)
        assert real != stdlib and not real.endswith('lib-dynload'), p
    assert os.path.isfile(nbd.PLUGIN)


def test_the_spec_carries_the_secrets_in_a_private_file(tmp_path):
    raw = helpers.make_blockmap(tmp_path, DATA)
    src = oslo_transfer.Source(urls=[oslo_transfer.Location(
        URL, credentials=('glance', 's3cret'), headers={'X-A': 'b'})])
    with helpers.transfer() as fix:
        fix.store.put(URL, DATA)
        prepared = nbd.prepare(fix.transfer, src, manifest=raw)
    assert prepared.size == len(DATA) and prepared.manifest.trusted
    spec = nbd.spec_for(prepared, str(tmp_path / 'cache'), prefetch=False,
                        config_files=['a.conf'])
    path = str(tmp_path / 'spec.json')
    nbd.write_spec(path, spec)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    with pytest.raises(FileExistsError):      # never an existing file
        nbd.write_spec(path, spec)
    back = nbd.read_spec(path)
    assert not os.path.exists(path)           # deleted once read
    assert back['source'][0]['credentials']['password'] == 's3cret'
    assert back['source'][0]['headers'] == {'X-A': 'b'}
    assert back['prefetch'] is False
    m = manifest_mod.Manifest.from_bytes(
        base64.b64decode(back['manifest']['raw']),
        back['manifest']['trusted'])
    assert m.identity == prepared.manifest.identity
    assert back['config_files'] == [os.path.abspath('a.conf')]


def test_prepare_refuses_what_attach_refuses(tmp_path):
    with helpers.transfer() as fix:
        fix.store.put(URL, DATA)
        with pytest.raises(exceptions.ManifestNotTrusted):
            nbd.prepare(fix.transfer, URL)


def test_a_spec_of_another_version_is_refused(tmp_path):
    path = tmp_path / 'spec.json'
    path.write_text('{"version": 99}')
    with pytest.raises(ValueError, match='version 1'):
        nbd.read_spec(str(path))
    assert not path.exists()
