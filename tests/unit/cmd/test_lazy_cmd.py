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

"""``oslo-transfer make-blockmap`` and the checks of ``oslo-transfer nbd``.

The export itself runs nbdkit: tests/functional/lazy.
"""

import hashlib
import sys

from oslo_transfer import blockmap
from oslo_transfer.cmd import main


def run(capsys, *argv):
    rc = main.main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_make_blockmap(tmp_path, capsys):
    img = tmp_path / 'img'
    img.write_bytes(b'\x01' * 8192 + bytes(8192) + b'\x02' * 100)
    out = tmp_path / 'img.blockmap'
    rc, text, err = run(capsys, 'make-blockmap', img, '-o', out,
                        '--block-size', 8192)
    assert rc == 0, err
    raw = out.read_bytes()
    bm = blockmap.parse(raw)
    assert (bm.block_size, bm.count) == (8192, 3) and bm.is_zero(1)
    assert text == ('%s: 16484 bytes in 3 blocks of 8192 (1 zero), sha256 '
                    '%s\n' % (out, hashlib.sha256(raw).hexdigest()))


def test_make_blockmap_refuses_a_bad_block_size(tmp_path, capsys):
    img = tmp_path / 'img'
    img.write_bytes(b'x')
    rc, _, err = run(capsys, 'make-blockmap', img, '-o', tmp_path / 'o',
                     '--block-size', 5000)
    assert rc == main.EXIT_USAGE and 'power of two' in err


def test_nbd_needs_nbdkit(tmp_path, capsys):
    rc, out, err = run(capsys, 'nbd', tmp_path / 'img', '--cache',
                       tmp_path / 'c', '--socket', tmp_path / 's',
                       '--nbdkit', tmp_path / 'no-nbdkit')
    assert rc == main.EXIT_ERROR
    assert 'MissingDependency' in err and 'nbdkit' in err and out == ''


def test_nbd_refuses_a_python_nbdkit_cannot_embed(tmp_path, capsys):
    fake = tmp_path / 'nbdkit'
    fake.write_text('#!/bin/sh\necho python_version=3.1.0\n')
    fake.chmod(0o755)
    rc, out, err = run(capsys, 'nbd', tmp_path / 'img', '--cache',
                       tmp_path / 'c', '--socket', tmp_path / 's',
                       '--nbdkit', fake)
    assert rc == main.EXIT_ERROR and out == ''
    assert 'embeds Python 3.1, and this oslo-transfer runs on Python ' \
        '%d.%d' % sys.version_info[:2] in err


def test_nbd_without_a_trusted_manifest_says_what_to_do(tmp_path, capsys):
    img = tmp_path / 'img'
    img.write_bytes(b'x' * 100)
    fake = tmp_path / 'nbdkit'
    fake.write_text('#!/bin/sh\necho python_version=%d.%d.0\n'
                    % sys.version_info[:2])
    fake.chmod(0o755)
    rc, _, err = run(capsys, 'nbd', img, '--cache', tmp_path / 'c',
                     '--socket', tmp_path / 's', '--nbdkit', fake)
    assert rc == main.EXIT_ERROR
    assert 'ManifestNotTrusted' in err and 'lazy_unverified_reads' in err
    rc, _, err = run(capsys, 'nbd', img, '--cache', tmp_path / 'c',
                     '--socket', tmp_path / 's', '--nbdkit', fake,
                     '--blockmap', 'b', '--torrent', 't')
    assert rc == main.EXIT_USAGE and 'give one' in err
