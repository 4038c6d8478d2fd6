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

"""Sparse writes of the ``.part`` file, block by block."""

import os

import pytest

from oslo_transfer.engine import partfile

B = 4096


def runs(data, offset=0):
    return list(partfile._data_runs(memoryview(data), offset))


def test_data_runs_aligned():
    data = bytes(B) + b'x' * B + bytes(2 * B) + b'y' + bytes(B - 1)
    assert runs(data) == [(B, 2 * B), (4 * B, 5 * B)]


def test_data_runs_follow_file_alignment():
    # The view lands 100 bytes before a block boundary: its first block is
    # 100 bytes long.
    data = b'a' * 100 + bytes(B) + b'b'
    assert runs(data, offset=B - 100) == [(0, 100), (100 + B, 101 + B)]


def test_data_runs_all_data_and_all_zero():
    assert runs(b'z' * (3 * B + 7)) == [(0, 3 * B + 7)]
    assert runs(bytes(3 * B)) == []


@pytest.mark.parametrize('offset', [0, 4096 * 5, 4096 * 5 + 100])
def test_island_chunk_leaves_block_holes(tmp_path, offset):
    path = str(tmp_path / 'x.part')
    p = partfile.PartFile(path, sparse=True, durable=False)
    p.open(fresh=True)
    p.prepare(64 * B, None)
    chunk = bytearray(16 * B)
    chunk[-10:] = b'0123456789'          # data at the very end only
    p.write(offset, bytes(chunk))
    p.close()
    with open(path, 'rb') as f:
        f.seek(offset)
        assert f.read(len(chunk)) == bytes(chunk)
        fd = f.fileno()
        first_data = os.lseek(fd, 0, os.SEEK_DATA)
    # Everything before the block that holds the ten bytes is a hole.
    assert first_data >= ((offset + len(chunk) - 10) // B) * B
    assert os.stat(path).st_blocks * 512 <= 2 * B


def test_dense_chunk_is_written_whole(tmp_path):
    path = str(tmp_path / 'y.part')
    p = partfile.PartFile(path, sparse=True, durable=False)
    p.open(fresh=True)
    data = os.urandom(8 * B)
    p.write(B, data)
    p.close()
    with open(path, 'rb') as f:
        assert f.read() == bytes(B) + data
