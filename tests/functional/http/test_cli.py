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

"""The ``oslo-transfer`` command against nginx: output and exit codes."""

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import pytest

from tests.functional import conftest as fconf
from tests.functional.http import nginx as nginx_mod

MiB = fconf.MiB


def _command() -> list:
    # The script beside the interpreter first (a pyenv shim on PATH is a
    # slow bash script).
    exe = os.path.join(os.path.dirname(sys.executable), 'oslo-transfer')
    if not os.access(exe, os.X_OK):
        exe = shutil.which('oslo-transfer') or exe
    if not os.access(exe, os.X_OK):
        pytest.fail('the oslo-transfer command is not installed: run '
                    '"pip install -e ." in the source tree', pytrace=False)
    return [exe]


def run_cli(*args, timeout=120):
    return subprocess.run(_command() + [str(a) for a in args],
                          capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def test_copy_json(nginx, serve, dest):
    src = serve(3 * MiB)
    p = run_cli('copy', nginx.url(src.name), dest, '--checksum',
                src.checksum(), '--json')
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    assert r['bytes_transferred'] == src.size
    assert r['bytes_resumed'] == 0
    assert r['driver'] == 'http'
    assert r['digest'] == src.sha256
    assert r['url'] == nginx.url(src.name)
    assert r['plan']['candidates'][0]['driver'] == 'http'
    fconf.assert_only_dest(dest, src.data)


def test_copy_segments_and_rate_options(nginx, serve, dest, tmp_path):
    src = serve(6 * MiB)
    conf = fconf.write_conf_file(tmp_path / 'cli.conf', {
        'oslo_transfer': {'segment_threshold': 0, 'segment_size': MiB}})
    p = run_cli('--config-file', conf, 'copy', nginx.url(src.name), dest,
                '--segments', '3', '--rate', '64M', '--json')
    assert p.returncode == 0, p.stderr
    fconf.assert_only_dest(dest, src.data)
    ranged = [ln for ln in nginx.requests_for(src.name) if ' 206 ' in ln]
    assert len(ranged) >= 6


def test_exit_code_not_found(nginx, dest):
    url = nginx.url('missing.raw')
    p = run_cli('copy', url, dest)
    assert p.returncode == 3, (p.returncode, p.stderr)
    assert url in p.stderr and 'SourceNotFound' in p.stderr
    fconf.assert_nothing_left(dest)


@pytest.mark.parametrize('location', ['private', 'forbidden'])
def test_exit_code_auth(nginx, serve, dest, location):
    src = serve(100)
    url = nginx.url(src.name, location,
                    userinfo='%s:%s-wrong' % (nginx_mod.USER,
                                              nginx_mod.PASSWORD))
    p = run_cli('-vv', 'copy', url, dest)
    assert p.returncode == 4, (p.returncode, p.stderr)
    assert nginx_mod.PASSWORD not in p.stderr + p.stdout
    assert '127.0.0.1:%d' % nginx.port in p.stderr


def test_exit_code_checksum_mismatch(nginx, serve, dest):
    src = serve(MiB)
    wrong = hashlib.sha256(b'other').hexdigest()
    p = run_cli('copy', nginx.url(src.name), dest, '--checksum',
                'sha256:' + wrong)
    assert p.returncode == 5, (p.returncode, p.stderr)
    assert 'ChecksumMismatch' in p.stderr and wrong in p.stderr
    fconf.assert_nothing_left(dest)


def test_exit_code_usage(dest):
    p = run_cli('copy', 'http://127.0.0.1:1/x')
    assert p.returncode == 2
    p = run_cli('copy', 'http://127.0.0.1:1/x', dest, '--checksum',
                'sha256:nothex')
    assert p.returncode == 2, p.stderr
    p = run_cli('no-such-command')
    assert p.returncode == 2


def test_exit_code_other_error(dest, tmp_path):
    from tests.functional import servers
    conf = fconf.write_conf_file(tmp_path / 'c.conf', {
        'oslo_transfer': {'retries': 0}})
    url = 'http://127.0.0.1:%d/x' % servers.free_port()
    p = run_cli('--config-file', conf, 'copy', url, dest)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert 'ConnectionFailed' in p.stderr


def test_plan_moves_nothing(nginx, serve, dest):
    src = serve(MiB)
    before = len(nginx.requests_for(src.name))
    p = run_cli('plan', nginx.url(src.name), dest)
    assert p.returncode == 0, p.stderr
    assert 'http' in p.stdout
    assert not os.path.exists(dest)
    gets = [ln for ln in nginx.requests_for(src.name)[before:]
            if ln.startswith('GET')]
    assert gets == []


def test_drivers_lists_http_and_file():
    p = run_cli('drivers')
    assert p.returncode == 0, p.stderr
    assert re.search(r'^\s*http\b', p.stdout, re.M), p.stdout
    assert re.search(r'^\s*file\b', p.stdout, re.M), p.stdout


def test_cli_sigkill_then_resume(own_nginx, dest):
    """``oslo-transfer copy --json`` killed mid-way, then run again."""
    src = fconf.make_data_file(own_nginx.docroot, 'img.raw', 40 * MiB)
    own_nginx.restart(rate='16m')
    url = own_nginx.url(src.name, 'slow')
    args = ['copy', url, dest, '--checksum', src.checksum(), '--json']
    part = fconf.part_path(dest)
    proc = subprocess.Popen(_command() + args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (os.path.exists(part) and
                   os.stat(part).st_blocks * 512 >= 24 * MiB):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, 'the .part did not grow'
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    in_part = fconf.correct_bytes(part, src.data)
    assert in_part > 17 * MiB

    own_nginx.restart(rate='0')
    p = run_cli(*args)
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout)
    fconf.assert_only_dest(dest, src.data)
    assert r['bytes_resumed'] > 0
    assert in_part - r['bytes_resumed'] <= 17 * MiB
    assert r['bytes_transferred'] + r['bytes_resumed'] == src.size
