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

"""``oslo-transfer nbd`` over a real nginx, read by real NBD clients.

What a guest sees through the export (python3-libnbd, qemu-io, a qcow2
overlay), what the origin sends (nginx's access log), and what the cache
keeps across a SIGKILL, a corrupted origin, an origin that stops, a full
disk, and the end of the image.
"""

import json
import os
import random
import subprocess
import time

from tests.functional.lazy import conftest as lconf

KiB, MiB, BLOCK = lconf.KiB, lconf.MiB, lconf.BLOCK


def _reads(rng, size, n=40):
    out = []
    for _ in range(n):
        length = rng.choice([512, 4 * KiB, 64 * KiB, 200 * KiB])
        out.append((rng.randrange(0, size - length), length))
    return out


def _touched(reads) -> set:
    blocks = set()
    for off, n in reads:
        blocks.update(range(off // BLOCK, (off + n - 1) // BLOCK + 1))
    return blocks


def test_random_reads_return_the_source_and_fetch_only_what_they_touch(
        own_nginx, lazy_image, export, nbd_client, tmp_path):
    img = lazy_image(own_nginx, 4 * MiB, zero_blocks=(10, 11, 12))
    exp = export(img.url, tmp_path / 'cache.raw', '--blockmap',
                 img.blockmap, '--no-prefetch')
    assert exp.ready_line == 'ready ' + exp.uri
    reads = _reads(random.Random(7), img.size)
    res = nbd_client(exp.uri, reads, connections=4, extents=True)
    assert res['size'] == img.size
    assert res['flags'] == {'read_only': True, 'can_flush': False,
                            'can_fua': False, 'can_multi_conn': True,
                            'can_trim': False, 'can_zero': False}
    assert res['reads'] == [{'sha256': img.sha(off, n)} for off, n in reads]
    # extents come from the manifest's zero flags only
    assert [e for e in res['extents'] if e[2]] == [[10 * BLOCK,
                                                    3 * BLOCK, 3]]
    fetched = lconf.blocks_fetched(own_nginx, 'image.raw')
    assert len(fetched) == len(set(fetched))         # none twice
    assert set(fetched) == _touched(reads) - {10, 11, 12}
    assert exp.stop() == 0


def test_sigkill_then_restart_fetches_nothing_read_a_second_before(
        own_nginx, lazy_image, export, nbd_client, tmp_path):
    img = lazy_image(own_nginx, 4 * MiB)
    cache = tmp_path / 'cache.raw'
    opts = ('--blockmap', img.blockmap, '--no-prefetch')
    exp = export(img.url, cache, *opts)
    first = [(0, 200 * KiB), (2 * MiB + 5, 70 * KiB)]
    assert nbd_client(exp.uri, first)['reads'] == [
        {'sha256': img.sha(o, n)} for o, n in first]
    time.sleep(1.1)
    exp.kill()                    # the command and nbdkit: no clean-up
    before = len(lconf.blocks_fetched(own_nginx, 'image.raw'))
    exp = export(img.url, cache, *opts, name='again')
    again = first + [(3 * MiB, 4 * KiB)]
    assert nbd_client(exp.uri, again)['reads'] == [
        {'sha256': img.sha(o, n)} for o, n in again]
    fetched = lconf.blocks_fetched(own_nginx, 'image.raw')[before:]
    assert fetched == [3 * MiB // BLOCK]
    assert exp.stop() == 0


def test_a_corrupted_origin_block_is_eio_and_never_cached(
        own_nginx, lazy_image, export, nbd_client, tmp_path):
    img = lazy_image(own_nginx, 2 * MiB)
    with open(img.path, 'r+b') as f:        # the origin's disk rots
        f.seek(5 * BLOCK + 100)
        f.write(b'\x00rot')
    cache = tmp_path / 'cache.raw'
    exp = export(img.url, cache, '--blockmap', img.blockmap,
                 '--no-prefetch', '--config-file',
                 lconf.write_conf(tmp_path, retries=0))
    res = nbd_client(exp.uri, [(5 * BLOCK, 4 * KiB), (0, 4 * KiB)])
    assert res['reads'][0]['errno'] == 5            # EIO
    assert res['reads'][1] == {'sha256': img.sha(0, 4 * KiB)}
    assert 'does not match the manifest' in exp.tail()
    assert exp.stop() == 0
    # nothing of it reached the cache, and the map does not claim it
    assert lconf.cached(cache, 5 * BLOCK, BLOCK) == bytes(BLOCK)
    assert lconf.present_map(cache)[0] == 0b1     # block 0 only


def test_an_origin_stopped_mid_read_then_restarted(
        own_nginx, lazy_image, export, nbd_client, tmp_path):
    img = lazy_image(own_nginx, 3 * MiB)
    cache = tmp_path / 'cache.raw'
    # at 1 MiB/s for the whole process, the prefetch (from the start) is
    # far from 2 MiB when the origin stops
    exp = export(img.url, cache, '--blockmap', img.blockmap, '--checksum',
                 img.checksum(), '--config-file',
                 lconf.write_conf(tmp_path, retries=1, io_timeout=2,
                                  process_rate_limit=MiB))
    assert nbd_client(exp.uri, [(0, 4 * KiB)])['reads'][0]['sha256']
    own_nginx.stop()
    res = nbd_client(exp.uri, [(2 * MiB + 3 * BLOCK, 4 * KiB)])
    assert res['reads'][0]['errno'] == 5              # EIO, not a hang
    assert 'ConnectionFailed' in exp.tail()
    own_nginx.start()
    res = nbd_client(exp.uri, [(2 * MiB + 3 * BLOCK, 4 * KiB)])
    assert res['reads'][0] == {'sha256': img.sha(2 * MiB + 3 * BLOCK,
                                                 4 * KiB)}
    # the prefetch came back too, and finished the image
    lconf.wait_for(lambda: os.path.exists(cache), 60, 'the complete image')
    assert exp.stop() == 0
    with open(cache, 'rb') as f:
        assert f.read() == img.data


def test_a_full_cache_disk_is_served_on(own_nginx, lazy_image, export,
                                        nbd_client, tmpfs, tmp_path):
    img = lazy_image(own_nginx, 4 * MiB)
    small = tmpfs('1m')
    cache = os.path.join(small, 'cache.raw')
    exp = export(img.url, cache, '--blockmap', img.blockmap,
                 '--no-prefetch')
    reads = [(i * 256 * KiB, 256 * KiB) for i in range(16)]
    res = nbd_client(exp.uri, reads)
    assert res['reads'] == [{'sha256': img.sha(o, n)} for o, n in reads]
    assert 'no space left on the device' in exp.tail()
    assert exp.stop() == 0
    # the map marks only blocks whose bytes are in the cache
    bits = lconf.present_map(cache)
    present = [i for i in range(64) if bits[i // 8] >> (i % 8) & 1]
    assert 0 < len(present) < 64
    for i in present:
        assert lconf.cached(cache, i * BLOCK, BLOCK) == img.block(i), i
    ctl = json.load(open(cache + '.part.ctl'))
    assert ctl['lazy']['blocks'] == 64


def test_a_complete_image_is_renamed_verified_and_copy_finds_it(
        own_nginx, lazy_image, export, nbd_client, tmp_path):
    img = lazy_image(own_nginx, 3 * MiB, zero_blocks=(7,))
    cache = tmp_path / 'out' / 'cache.raw'
    cache.parent.mkdir()
    exp = export(img.url, cache, '--blockmap', img.blockmap,
                 '--checksum', img.checksum())
    lconf.wait_for(lambda: os.path.exists(cache), 60, 'the complete image')
    assert sorted(os.listdir(cache.parent)) == ['cache.raw']
    with open(cache, 'rb') as f:
        assert f.read() == img.data
    # the export goes on serving the renamed file
    assert nbd_client(exp.uri, [(0, 3 * MiB)])['reads'] == [
        {'sha256': img.sha(0, 3 * MiB)}]
    assert exp.stop() == 0
    out = subprocess.run(
        [os.environ.get('PYTHON', 'python3'), '-m', 'oslo_transfer.cmd.main',
         'copy', img.url, str(cache), '--checksum', img.checksum(),
         '--json'], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout)['bytes_transferred'] == 0


def test_a_qcow2_overlay_takes_the_writes(own_nginx, lazy_image, export,
                                          tmp_path):
    img = lazy_image(own_nginx, 2 * MiB)
    with open(img.path, 'r+b') as f:      # a pattern qemu-io can check
        f.seek(MiB)
        f.write(b'\x5a' * 64 * KiB)
    from oslo_transfer import blockmap
    with open(img.blockmap, 'wb') as f:
        f.write(blockmap.make_blockmap(img.path))
    exp = export(img.url, tmp_path / 'cache.raw', '--blockmap',
                 img.blockmap, '--no-prefetch')
    overlay = str(tmp_path / 'overlay.qcow2')
    subprocess.run(['qemu-img', 'create', '-f', 'qcow2', '-F', 'raw', '-b',
                    exp.uri, overlay], check=True, capture_output=True)
    io = subprocess.run(
        ['qemu-io', '-f', 'qcow2', '-c', 'read -P 0x5a %d 65536' % MiB,
         '-c', 'write -P 0x33 0 4096', '-c', 'read -P 0x33 0 4096',
         overlay], capture_output=True, text=True)
    assert io.returncode == 0 and 'Pattern verification failed' not in \
        io.stdout, io.stdout + io.stderr
    assert exp.stop() == 0
    with open(str(tmp_path / 'cache.raw.part'), 'rb') as f:
        assert f.read(4096) != b'\x33' * 4096     # the writes stayed above


def test_a_second_export_of_a_live_cache_is_a_clear_error(
        own_nginx, lazy_image, export, nbd_client, tmp_path):
    img = lazy_image(own_nginx, MiB)
    cache = tmp_path / 'cache.raw'
    first = export(img.url, cache, '--blockmap', img.blockmap,
                   '--no-prefetch')
    try:
        export(img.url, cache, '--blockmap', img.blockmap, name='second')
    except AssertionError as exc:
        message = str(exc)
    else:
        raise AssertionError('a second export of one cache started')
    # (after waiting 10 s for a predecessor that would be exiting)
    assert 'exited with 1' in message
    assert 'in use by another process' in message
    assert nbd_client(first.uri, [(0, 4 * KiB)])['reads'] == [
        {'sha256': img.sha(0, 4 * KiB)}]
    assert first.stop() == 0
