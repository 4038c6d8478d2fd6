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

"""Volumes over HTTP (nginx): image to loop device, kill and resume in
place, volume to image by PUT, and what ``copy()`` to a URL honours."""

import json
import os
import signal
import subprocess
import time

import pytest

import oslo_transfer
from oslo_transfer import exceptions as exc
from tests.functional import conftest as fconf
from tests.functional.http import test_cli

MiB = fconf.MiB


def _uploaded(nginx, name):
    return os.path.join(nginx.upload_dir, name)


def test_image_over_http_onto_a_loop_device(nginx, serve, loop_device,
                                            make_conf, tmp_path):
    vol = loop_device(24 * MiB, fill=0xEE)
    src = serve(20 * MiB + 4096)
    conf = make_conf(oslo_transfer={'segment_threshold': 0,
                                    'segment_size': 4 * MiB})

    r = oslo_transfer.copy(nginx.url(src.name), vol.dev,
                           checksum=src.checksum(), conf=conf)

    assert vol.read(0, src.size) == src.data
    assert vol.read(src.size) == b'\xee' * (vol.size - src.size)
    assert r.driver == 'http' and r.digest == src.sha256
    assert fconf.inplace_state(tmp_path / 'state') == []


def test_kill_and_resume_in_place(own_nginx, loop_device, make_conf,
                                  tmp_path):
    """SIGKILL ``oslo-transfer copy --in-place``; the rerun resumes."""
    vol = loop_device(32 * MiB)
    src = fconf.make_data_file(own_nginx.docroot, 'img.raw', 24 * MiB)
    own_nginx.restart(rate='6m')
    url = own_nginx.url(src.name, 'slow')
    conf = make_conf(oslo_transfer={'checkpoint_bytes': MiB,
                                    'retries': 0})
    args = ['--config-file', conf.default_config_files[0], 'copy',
            '--in-place', '--json', '--no-progress', url, vol.dev,
            '--checksum', src.checksum()]
    state = tmp_path / 'state' / 'oslo_transfer' / 'inplace'

    def held():
        for name in (os.listdir(state) if state.is_dir() else []):
            if name.endswith('.ctl'):
                try:
                    with open(state / name) as f:
                        return sum(e - s for s, e in json.load(f)['ranges'])
                except ValueError:
                    return 0
        return 0

    child = subprocess.Popen(test_cli._command() + args,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             stdin=subprocess.DEVNULL, text=True)
    try:
        deadline = time.monotonic() + 60
        while held() < 6 * MiB and child.poll() is None:
            assert time.monotonic() < deadline, 'nothing recorded'
            time.sleep(0.02)
        assert child.poll() is None, child.communicate()
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.kill()
        child.communicate()
    kept = held()
    assert 0 < kept < src.size
    assert vol.read(0, kept) == src.data[:kept]

    own_nginx.restart(rate='0')
    p = test_cli.run_cli(*args)

    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r['bytes_resumed'] >= kept
    assert r['bytes_transferred'] + r['bytes_resumed'] == src.size
    assert vol.read(0, src.size) == src.data
    assert [n for n in os.listdir(state) if not n.endswith('.tmp')] == []


def test_volume_to_image_by_put(nginx, loop_device, tmp_path, make_conf):
    """``upload('/dev/loopN', url)``: the device's size, not 0."""
    vol = loop_device(6 * MiB, fill=0x3C)
    url = nginx.url('volumes/v1.raw', 'dav')

    r = oslo_transfer.upload(vol.dev, url, conf=make_conf())

    assert r.size == vol.size and r.bytes_transferred == vol.size
    assert fconf.file_equals(_uploaded(nginx, 'volumes/v1.raw'),
                             b'\x3c' * vol.size)


# -- copy() to a URL: the arguments that pass through ------------------------

def test_copy_to_url_if_exists_error_refuses_an_existing_object(
        nginx, tmp_path, make_conf):
    src = fconf.make_data_file(tmp_path, 'new.raw', MiB)
    old = fconf.make_data_file(nginx.upload_dir, 'exists-error.raw', 2 * MiB)
    url = nginx.url('exists-error.raw', 'dav')

    with pytest.raises(exc.DestinationExists) as ei:
        oslo_transfer.copy(src.path, url, if_exists='error',
                           conf=make_conf())

    assert url in str(ei.value) and 'if_exists="error"' in str(ei.value)
    assert fconf.file_equals(old.path, old.data)
    assert not [line for line in nginx.requests_for('exists-error.raw')
                if line.startswith('PUT')]


def test_copy_to_url_verify_keeps_refuses_or_writes(nginx, tmp_path,
                                                    make_conf):
    conf = make_conf()
    src = fconf.make_data_file(tmp_path, 'src.raw', MiB)
    # The same bytes: kept, nothing sent.
    same = os.path.join(nginx.upload_dir, 'verify-same.raw')
    with open(same, 'wb') as f:
        f.write(src.data)
    r = oslo_transfer.copy(src.path, nginx.url('verify-same.raw', 'dav'),
                           checksum=src.checksum(), conf=conf)
    assert r.bytes_transferred == 0 and r.digest == src.sha256
    # Other bytes: refused, as a local destination would be.
    other = fconf.make_data_file(nginx.upload_dir, 'verify-other.raw',
                                 2 * MiB)
    with pytest.raises(exc.DestinationExists) as ei:
        oslo_transfer.copy(src.path, nginx.url('verify-other.raw', 'dav'),
                           conf=conf)
    assert '%d bytes' % other.size in str(ei.value)
    assert 'if_exists="replace"' in str(ei.value)
    assert fconf.file_equals(other.path, other.data)
    # replace writes; a missing object is written by "verify" too.
    oslo_transfer.copy(src.path, nginx.url('verify-other.raw', 'dav'),
                       if_exists='replace', conf=conf)
    assert fconf.file_equals(other.path, src.data)
    oslo_transfer.copy(src.path, nginx.url('verify-new.raw', 'dav'),
                       conf=conf)
    assert fconf.file_equals(_uploaded(nginx, 'verify-new.raw'), src.data)


def test_copy_to_url_rate_is_applied(nginx, serve, make_conf, rates):
    src = serve(2 * MiB)
    url = nginx.url('rated.raw', 'dav')
    oslo_transfer.copy(nginx.url(src.name), url, rate=8 * MiB,
                       conf=make_conf())
    assert fconf.file_equals(_uploaded(nginx, 'rated.raw'), src.data)
    assert sum(n for rate, n in rates if rate == 8 * MiB) == src.size


@pytest.mark.parametrize('kwargs', [{'mode': 0o644}, {'segments': 4},
                                    {'write_in_place': True}])
def test_copy_to_url_refuses_what_no_upload_honours(nginx, tmp_path,
                                                    make_conf, kwargs):
    src = fconf.make_data_file(tmp_path, 'src.raw', 4096)
    name = 'refused-%s.raw' % next(iter(kwargs))
    with pytest.raises(ValueError) as ei:
        oslo_transfer.copy(src.path, nginx.url(name, 'dav'),
                           conf=make_conf(), **kwargs)
    assert next(iter(kwargs)) in str(ei.value)
    assert not os.path.exists(_uploaded(nginx, name))
