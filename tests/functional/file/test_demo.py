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

"""``oslo-transfer demo``: the README's first command works as promised."""

import hashlib
import os
import re

from tests.functional.http import test_cli


def test_demo_runs(tmp_path):
    work = tmp_path / 'demo'
    p = test_cli.run_cli('demo', '--size', '32M', '--dir', work)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    # The plan the selector chose, with its reason.
    assert re.search(r'plan', out, re.I), out
    assert re.search(r'via http: .+', out), out
    # Throughput and digest.
    assert re.search(r'\d+(\.\d+)? ?[KMG]i?B/s', out), out
    digest = re.search(r'\b([0-9a-f]{64})\b', out)
    assert digest, out
    # Nothing is left running: the embedded origin stopped with the demo.
    assert not re.search(r'Traceback', p.stderr), p.stderr
    # The printed digest is the digest of the files the demo left in --dir
    # (origin and copy).
    files = [os.path.join(work, n) for n in os.listdir(work)]
    assert len(files) >= 2, files
    for path in files:
        h = hashlib.sha256()
        with open(path, 'rb') as f:
            for block in iter(lambda: f.read(1 << 22), b''):
                h.update(block)
        assert h.hexdigest() == digest.group(1), path
