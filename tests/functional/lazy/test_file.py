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

"""Lazy images of local files and of nginx, through the library itself.

The ``file`` driver's ranged reads (a path on a shared or local file
system) and the ``http`` driver, with a Transfer a service would build.
"""

import hashlib
import os
import random

import oslo_transfer
from oslo_transfer import blockmap
from tests.functional.lazy import conftest as lconf

KiB, MiB, BLOCK = lconf.KiB, lconf.MiB, lconf.BLOCK


def _image(path, size, zero_blocks=()):
    data = bytearray(os.urandom(size))
    for i in zero_blocks:
        data[i * BLOCK:(i + 1) * BLOCK] = bytes(BLOCK)
    with open(path, 'wb') as f:
        f.write(data)
    return bytes(data)


def test_a_local_file_read_lazily_then_completed(tmp_path, make_conf):
    src = str(tmp_path / 'src.raw')
    data = _image(src, 5 * MiB + 123, zero_blocks=(20, 21))
    bm = blockmap.make_blockmap(src)
    cache = str(tmp_path / 'cache' / 'image.raw')
    os.makedirs(os.path.dirname(cache))
    t = oslo_transfer.Transfer(make_conf())
    try:
        ck = 'sha256:' + hashlib.sha256(data).hexdigest()
        with t.attach(src, cache, checksum=ck, manifest=bm,
                      prefetch=False) as img:
            rng = random.Random(3)
            for _ in range(50):
                off = rng.randrange(len(data))
                n = min(rng.choice([1, 4096, 100 * KiB]), len(data) - off)
                assert img.pread(n, off) == data[off:off + n]
            assert 0 < img.present().fraction < 1
            img.prefetch(0, len(data))
            res = img.wait(60)
        assert res.driver == 'file' and res.digest == ck.split(':')[1]
        assert 0 < res.bytes_resumed < len(data) or res.bytes_resumed == 0
        assert sorted(os.listdir(os.path.dirname(cache))) == ['image.raw']
        with open(cache, 'rb') as f:
            assert f.read() == data
        # the zero blocks stayed holes
        st = os.stat(cache)
        assert st.st_blocks * 512 <= len(data) - 2 * BLOCK + 64 * KiB
    finally:
        t.close()


def test_http_on_demand_with_two_readers_and_a_resume(own_nginx,
                                                      lazy_image, tmp_path,
                                                      make_conf):
    img = lazy_image(own_nginx, 3 * MiB)
    cache = str(tmp_path / 'image.raw')
    conf = make_conf(oslo_transfer={'retries': 1, 'retry_backoff': 0.1})
    t = oslo_transfer.Transfer(conf)
    try:
        with t.attach(img.url, cache, manifest=img.blockmap,
                      prefetch=False) as a, \
                t.attach(img.url, cache, manifest=img.blockmap,
                         prefetch=False) as b:
            assert a.pread(200 * KiB, 0) == img.data[:200 * KiB]
            assert b.pread(200 * KiB, 0) == img.data[:200 * KiB]
        assert sorted(set(lconf.blocks_fetched(own_nginx, 'image.raw'))) \
            == [0, 1, 2, 3]
        # a copy() resumes what the image left
        res = t.copy(img.url, cache, checksum=img.checksum())
        assert res.bytes_resumed == 4 * BLOCK
        assert res.bytes_transferred == img.size - 4 * BLOCK
    finally:
        t.close()
    with open(cache, 'rb') as f:
        assert f.read() == img.data
