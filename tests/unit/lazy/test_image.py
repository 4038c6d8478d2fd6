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

"""LazyImage over the memory driver: what a reader and the origin see."""

import json
import os
import threading
import time

import hypothesis
import hypothesis.strategies as st
import pytest

import oslo_transfer
from oslo_transfer import exceptions
from oslo_transfer import fixture
from oslo_transfer.lazy import image as image_mod
from oslo_transfer import locations
from tests.unit import fakes
from tests.unit.lazy import helpers

KiB, MiB, BLOCK, URL = helpers.KiB, helpers.MiB, helpers.BLOCK, helpers.URL
DATA = helpers.image()


# -- reads --------------------------------------------------------------------

def test_reads_fetch_only_the_blocks_they_touch(fix, cache, bm):
    with helpers.attach(fix, cache, bm) as img:
        assert img.size == len(DATA)
        assert img.pread(100, 5) == DATA[5:105]
        assert img.pread(10, 3 * BLOCK + 7) == DATA[3 * BLOCK + 7:
                                                    3 * BLOCK + 17]
        assert img.pread(100, 5) == DATA[5:105]      # from the cache now
        assert helpers.blocks_read(fix.store) == [0, 3]
        p = img.present()
        held = {(0, BLOCK), (3 * BLOCK, BLOCK)}
        assert held <= set(p.extents)
        assert 0 < p.fraction < 0.5


def test_adjacent_misses_are_one_read_of_at_most_a_mebibyte(fix, cache, bm):
    with helpers.attach(fix, cache, bm) as img:
        assert img.pread(3 * MiB, 0) == DATA[:3 * MiB]
    lengths = sorted(n for _url, _off, n in fix.store.reads)
    assert max(lengths) == MiB
    # the zero blocks 16-19 (1 MiB to 1.25 MiB) were never asked for
    assert not {16, 17, 18, 19} & set(helpers.blocks_read(fix.store))
    assert sum(lengths) == 3 * MiB - 4 * BLOCK


def test_zero_blocks_read_as_zeros_and_are_never_fetched(fix, cache, bm):
    with helpers.attach(fix, cache, bm) as img:
        assert img.pread(4 * BLOCK, 16 * BLOCK) == bytes(4 * BLOCK)
    assert fix.store.reads == []


def test_concurrent_readers_fetch_a_block_once(fix, cache, bm):
    fix.store.pause_reads()
    out = []
    with helpers.attach(fix, cache, bm) as img:
        threads = [threading.Thread(
            target=lambda: out.append(img.pread(4096, 5 * BLOCK + 100)))
            for _ in range(6)]
        for t in threads:
            t.start()
        time.sleep(0.2)
        fix.store.resume_reads()
        for t in threads:
            t.join(10)
    assert out == [DATA[5 * BLOCK + 100:5 * BLOCK + 4196]] * 6
    assert helpers.blocks_read(fix.store) == [5]


def test_the_fetch_unit_is_lazy_block_size(tmp_path, bm):
    with helpers.transfer(lazy_block_size=4 * BLOCK) as f:
        f.store.put(URL, DATA)
        with helpers.attach(f, str(tmp_path / 'c'), bm) as img:
            assert img.pread(10, 5 * BLOCK) == DATA[5 * BLOCK:5 * BLOCK + 10]
        assert helpers.blocks_read(f.store) == [4, 5, 6, 7]


def test_lazy_block_size_must_be_a_multiple_of_the_manifest(tmp_path, bm):
    with helpers.transfer(lazy_block_size=96 * KiB) as f:
        f.store.put(URL, DATA)
        with pytest.raises(ValueError, match='not a multiple'):
            helpers.attach(f, str(tmp_path / 'c'), bm)
        assert not os.path.exists(str(tmp_path / 'c.part'))
    with helpers.transfer(lazy_unverified_reads=True,
                          lazy_block_size=96 * KiB) as f:
        # without a manifest, the blocks are of lazy_block_size
        f.store.put(URL, DATA)
        with f.transfer.attach(URL, str(tmp_path / 'c'),
                               prefetch=False) as img:
            assert img.pread(10, 96 * KiB) == DATA[96 * KiB:96 * KiB + 10]
        assert f.store.reads == [(URL, 96 * KiB, 96 * KiB)]


def test_reads_outside_the_image_are_refused(fix, cache, bm):
    with helpers.attach(fix, cache, bm) as img:
        with pytest.raises(ValueError, match='outside the image'):
            img.pread(10, len(DATA) - 5)
        assert img.pread(0, len(DATA)) == b''


@hypothesis.given(reads=st.lists(st.tuples(st.integers(0, len(DATA) - 1),
                                           st.integers(1, 300 * KiB)),
                                 min_size=1, max_size=8))
@hypothesis.settings(max_examples=25)
def test_property_random_reads_return_the_source(tmp_path_factory, reads):
    d = tmp_path_factory.mktemp('lazy')
    bm = helpers.make_blockmap(d, DATA)
    with helpers.transfer() as f:
        f.store.put(URL, DATA)
        with helpers.attach(f, str(d / 'c'), bm) as img:
            for off, n in reads:
                n = min(n, len(DATA) - off)
                assert img.pread(n, off) == DATA[off:off + n]
            touched = set()
            for off, n in reads:
                n = min(n, len(DATA) - off)
                touched |= set(range(off // BLOCK,
                                     (off + n - 1) // BLOCK + 1))
        fetched = helpers.blocks_read(f.store)
        assert len(fetched) == len(set(fetched))      # none twice
        assert set(fetched) == touched - {16, 17, 18, 19}


# -- verification -------------------------------------------------------------

def test_without_a_trusted_manifest_attach_refuses(fix, cache, bm):
    fix.store.put('memory://origin/bm', bm)
    with pytest.raises(exceptions.ManifestNotTrusted,
                       match='lazy_unverified_reads'):
        fix.transfer.attach(URL, cache)
    with pytest.raises(exceptions.ManifestNotTrusted):
        fix.transfer.attach(URL, cache, manifest='memory://origin/bm')
    assert not os.path.exists(cache + '.part')


def test_a_corrupt_block_is_fetched_from_the_next_location(fix, cache, bm):
    bad = bytearray(DATA)
    bad[5 * BLOCK + 10] ^= 0xff
    fix.store.put('memory://mirror/image', bytes(bad))
    source = oslo_transfer.Source(urls=['memory://mirror/image', URL])
    with fix.transfer.attach(source, cache, manifest=bm,
                             prefetch=False) as img:
        assert img.pread(BLOCK, 5 * BLOCK) == DATA[5 * BLOCK:6 * BLOCK]
        assert img.pread(10, 0) == DATA[:10]
    assert [k for k, _o, _n in fix.store.reads] == [
        'memory://mirror/image', 'memory://origin/image',
        'memory://origin/image']


def test_a_corrupt_block_fails_the_read_and_is_never_cached(fix, cache, bm):
    bad = bytearray(DATA)
    bad[5 * BLOCK + 10] ^= 0xff
    fix.store.put(URL, bytes(bad))
    with helpers.attach(fix, cache, bm) as img:
        with pytest.raises(exceptions.ChecksumMismatch,
                           match='block 5 .* does not match'):
            img.pread(10, 5 * BLOCK)
        assert (5 * BLOCK, BLOCK) not in img.present().extents
        fix.store.put(URL, DATA)          # repaired
        assert img.pread(10, 5 * BLOCK) == DATA[5 * BLOCK:5 * BLOCK + 10]
    with open(cache + '.part', 'rb') as f:
        f.seek(5 * BLOCK)
        assert f.read(BLOCK) == DATA[5 * BLOCK:6 * BLOCK]


def test_a_held_block_is_verified_again_after_each_attach(fix, cache, bm):
    with helpers.attach(fix, cache, bm) as img:
        img.pread(10, 2 * BLOCK)
    with open(cache + '.part', 'r+b') as f:     # the disk rots
        f.seek(2 * BLOCK + 3)
        f.write(b'!')
    before = len(helpers.blocks_read(fix.store))
    with helpers.attach(fix, cache, bm) as img:
        assert img.pread(10, 2 * BLOCK) == DATA[2 * BLOCK:2 * BLOCK + 10]
    assert helpers.blocks_read(fix.store)[before:] == [2]


def test_unverified_reads_when_allowed_and_a_bad_checksum_discards(
        tmp_path):
    cache = str(tmp_path / 'c')
    with helpers.transfer(lazy_unverified_reads=True) as f:
        f.store.put(URL, DATA)
        wrong = fakes.sha(b'another image')
        with f.transfer.attach(URL, cache, checksum=wrong) as img:
            assert img.pread(10, 0) == DATA[:10]
            with pytest.raises(exceptions.ChecksumMismatch,
                               match='discarded'):
                img.prefetch(0, len(DATA))
                img.wait(20)
            with pytest.raises(exceptions.ChecksumMismatch):
                img.pread(10, 0)
        assert os.listdir(str(tmp_path)) == []


def test_unverified_reads_refuse_a_changed_source(tmp_path):
    cache = str(tmp_path / 'c')
    with helpers.transfer(lazy_unverified_reads=True) as f:
        f.store.put(URL, DATA)
        with f.transfer.attach(URL, cache, prefetch=False) as img:
            img.pread(10, 0)
        f.store.put(URL, DATA[::-1])
        with pytest.raises(exceptions.SourceChanged, match='validator'):
            f.transfer.attach(URL, cache, prefetch=False)


def test_a_trusted_manifest_keeps_the_blocks_of_another_location(
        fix, cache, bm):
    with helpers.attach(fix, cache, bm) as img:
        img.pread(10, 0)
    fix.store.put('memory://mirror/image', DATA)
    with fix.transfer.attach('memory://mirror/image', cache, manifest=bm,
                             prefetch=False) as img:
        assert img.pread(10, 0) == DATA[:10]
    assert [k for k, _o, _n in fix.store.reads] == ['memory://origin/image']


# -- completion and resume ----------------------------------------------------

def test_prefetch_completes_renames_and_verifies(fix, cache, bm):
    ck = fakes.sha(DATA)
    with helpers.attach(fix, cache, bm, checksum=ck, prefetch=True) as img:
        res = img.wait(30)
        assert res.digest == ck.split(':')[1]
        assert res.size == len(DATA) and res.dest == cache
        assert res.bytes_transferred == len(DATA) - 4 * BLOCK
        assert img.pread(len(DATA), 0) == DATA      # the renamed file
    assert sorted(os.listdir(os.path.dirname(cache))) == ['image.raw']
    with open(cache, 'rb') as f:
        assert f.read() == DATA
    # a copy() finds it complete
    assert fix.transfer.copy(URL, cache, checksum=ck).bytes_transferred == 0
    # and an attach serves it as it is
    with helpers.attach(fix, cache, bm) as img:
        assert img.wait(0).bytes_transferred == 0
        assert img.pread(100, 7) == DATA[7:107]


def test_the_background_prefetch_reads_256_kib_at_a_time(fix, cache, bm):
    with helpers.attach(fix, cache, bm, prefetch=True) as img:
        img.wait(30)
    assert max(n for _k, _o, n in fix.store.reads) == 256 * KiB


def test_reattach_continues_and_copy_resumes(fix, cache, bm):
    with helpers.attach(fix, cache, bm) as img:
        img.pread(BLOCK, 0)
        img.pread(2 * BLOCK, 10 * BLOCK)
    with helpers.attach(fix, cache, bm) as img:
        img.pread(3 * BLOCK, 0)           # blocks 0 is held: 1, 2 fetched
    assert helpers.blocks_read(fix.store) == [0, 10, 11, 1, 2]
    res = fix.transfer.copy(URL, cache, checksum=fakes.sha(DATA))
    held = 5 * BLOCK + 4 * BLOCK      # and the zero blocks, holes
    assert res.bytes_resumed == held
    assert res.bytes_transferred == len(DATA) - held
    assert sorted(os.listdir(os.path.dirname(cache))) == ['image.raw']


def test_attach_resumes_what_a_copy_left(fix, cache, bm):
    fix.store.fail_after('read', MiB + 1000, times=5)
    with pytest.raises(exceptions.TransferError):
        fix.transfer.copy(URL, cache, checksum=fakes.sha(DATA), segments=1)
    fix.store.clear_faults()
    ctl = json.load(open(cache + '.part.ctl'))
    assert ctl['ranges'][0][0] == 0 and ctl['ranges'][0][1] >= MiB
    reads = len(fix.store.reads)
    with helpers.attach(fix, cache, bm) as img:
        assert img.pread(MiB, 0) == DATA[:MiB]
    assert fix.store.reads[reads:] == []


def test_the_lock_one_image_per_process_none_for_another(fix, cache, bm):
    a = helpers.attach(fix, cache, bm)
    b = helpers.attach(fix, cache, bm)
    assert a._core is b._core
    a.close()
    assert b.pread(10, 0) == DATA[:10]
    with pytest.raises(ValueError, match='attached already'):
        fix.transfer.attach('memory://other/x', cache, manifest=bm)
    # another process: another open file description on the lock
    from oslo_transfer.engine import journal
    b.close()
    other = journal.DestinationLock(cache + '.part.lock')
    from oslo_transfer import driver
    other.acquire(driver.CancelToken())
    try:
        with pytest.raises(exceptions.DestinationError,
                           match='in use by another process'):
            helpers.attach(fix, cache, bm)
    finally:
        other.release()


def test_a_copy_waits_for_the_attached_image(fix, cache, bm):
    img = helpers.attach(fix, cache, bm)
    img.pread(BLOCK, 0)
    done = []
    t = threading.Thread(target=lambda: done.append(fix.transfer.copy(
        URL, cache, checksum=fakes.sha(DATA))))
    t.start()
    time.sleep(0.5)
    assert not done
    img.close()
    t.join(20)
    assert done and done[0].bytes_resumed >= BLOCK


# -- errors -------------------------------------------------------------------

def test_an_unreachable_origin_fails_the_read_retryably(fix, cache, bm):
    fix.store.fail('read', times=10)
    with helpers.attach(fix, cache, bm) as img:
        with pytest.raises(exceptions.ConnectionFailed) as ei:
            img.pread(10, 0)
        assert ei.value.retryable
        fix.store.clear_faults()
        assert img.pread(10, 0) == DATA[:10]


def test_prefetch_resumes_once_the_origin_is_back(fix, cache, bm,
                                                  monkeypatch):
    from oslo_transfer.lazy import prefetch
    monkeypatch.setattr(prefetch, 'FIRST_BACKOFF', 0.05)
    fix.store.fail_after('read', 200 * KiB, times=100)
    with helpers.attach(fix, cache, bm, prefetch=True) as img:
        time.sleep(0.5)
        assert img.present().fraction < 0.5
        fix.store.clear_faults()
        assert img.wait(30).size == len(DATA)


def test_a_full_cache_disk_serves_on_and_tells_wait(fix, cache, bm,
                                                    monkeypatch):
    with helpers.attach(fix, cache, bm) as img:
        img.pread(BLOCK, 0)
        fakes.fail_writes(monkeypatch, path_suffix='image.raw.part')
        # reads go on, from the origin and memory
        assert img.pread(2 * BLOCK, 5 * BLOCK) == \
            DATA[5 * BLOCK:7 * BLOCK]
        assert img.pread(2 * BLOCK, 5 * BLOCK) == \
            DATA[5 * BLOCK:7 * BLOCK]
        with pytest.raises(exceptions.DestinationError,
                           match='no space left'):
            img.wait(5)
        assert img.pread(10, 0) == DATA[:10]
        monkeypatch.undo()
    assert helpers.blocks_read(fix.store) == [0, 5, 6]
    ctl = json.load(open(cache + '.part.ctl'))
    assert ctl['ranges'][0] == [0, BLOCK]


def test_closing_ends_wait_and_reads(fix, cache, bm):
    img = helpers.attach(fix, cache, bm)
    core = img._core
    img.close()
    with pytest.raises(exceptions.Cancelled):
        core.wait(1)
    with pytest.raises(ValueError, match='closed'):
        img.pread(1, 0)


# -- profile ------------------------------------------------------------------

def test_a_profile_is_recorded_then_fetched_first(fix, cache, bm, tmp_path,
                                                  monkeypatch):
    prof = str(tmp_path / 'boot.profile')
    with helpers.attach(fix, cache, bm, profile=prof) as img:
        for block in (30, 2, 30, 41):
            img.pread(10, block * BLOCK)
    data = json.load(open(prof))
    assert data['units'] == [30, 2, 41]
    assert data['version'] == 1 and data['unit'] == BLOCK
    assert os.stat(prof).st_mode & 0o777 == 0o600
    other = str(tmp_path / 'other' / 'image.raw')
    os.makedirs(os.path.dirname(other))
    before = len(helpers.blocks_read(fix.store))
    with helpers.attach(fix, other, bm, profile=prof, prefetch=True) as img:
        img.wait(30)
    # fetched first (a few units at once: in any order among them), then
    # the rest
    fetched = helpers.blocks_read(fix.store)[before:]
    assert sorted(fetched[:3]) == [2, 30, 41]
    assert len(fetched) == len(set(fetched)) == 49 - 4


def test_the_module_function_attach(fix, cache, bm):
    with fixture.TransferFixture(store=fix.store, module_api=True,
                                 capabilities=fakes.ENGINE_CAPS):
        with oslo_transfer.attach(URL, cache, manifest=bm,
                                  prefetch=False) as img:
            assert isinstance(img, oslo_transfer.LazyImage)
            assert img.pread(5, 0) == DATA[:5]


def test_a_manifest_of_another_size_is_refused(fix, cache, tmp_path):
    short = helpers.make_blockmap(tmp_path, DATA[:-1])
    with pytest.raises(exceptions.SizeMismatch, match='the manifest'):
        fix.transfer.attach(URL, cache, manifest=short)
    assert image_mod._REGISTRY == {}
    assert locations  # (used for Source in other tests)


def test_prefetch_of_a_range_without_the_sweep(fix, tmp_path, bm):
    for n in range(5):          # (a range asked for is never lost)
        cache = str(tmp_path / ('c%d' % n))
        with helpers.attach(fix, cache, bm) as img:
            before = len(helpers.blocks_read(fix.store))
            img.prefetch(2 * BLOCK, 3 * BLOCK)
            deadline = time.monotonic() + 10
            while {(2 * BLOCK, 3 * BLOCK)} - set(img.present().extents) \
                    and time.monotonic() < deadline:
                time.sleep(0.01)
            assert (2 * BLOCK, 3 * BLOCK) in img.present().extents
            assert helpers.blocks_read(fix.store)[before:] == [2, 3, 4]
            img.prefetch(0, len(DATA))
            assert img.wait(20).size == len(DATA)


def test_unverified_blocks_come_from_one_location_without_a_checksum(
        tmp_path):
    with helpers.transfer(lazy_unverified_reads=True, retries=0) as f:
        f.store.put('memory://a/image', DATA)
        f.store.put('memory://b/image', DATA)
        source = oslo_transfer.Source(urls=['memory://a/image',
                                            'memory://b/image'])
        with f.transfer.attach(source, str(tmp_path / 'c'),
                               prefetch=False) as img:
            img.pread(10, 0)
            f.store.fail('read', url='memory://a/image', times=5)
            with pytest.raises(exceptions.ConnectionFailed):
                img.pread(10, 5 * BLOCK)        # never spliced from b
        with f.transfer.attach(source, str(tmp_path / 'd'),
                               checksum=fakes.sha(DATA),
                               prefetch=False) as img:
            img.pread(10, 0)
            f.store.fail('read', url='memory://a/image', times=5)
            assert img.pread(10, 5 * BLOCK) == DATA[5 * BLOCK:
                                                    5 * BLOCK + 10]
        assert [k for k, _o, _n in f.store.reads][-1] == 'memory://b/image'


def test_unverified_reads_stop_when_the_source_changes_under_them(
        tmp_path):
    with helpers.transfer(lazy_unverified_reads=True) as f:
        f.store.put(URL, DATA)
        with f.transfer.attach(URL, str(tmp_path / 'c'),
                               prefetch=False) as img:
            img.pread(10, 0)
            f.store.put(URL, DATA[::-1])
            with pytest.raises(exceptions.SourceChanged):
                img.pread(10, 5 * BLOCK)
            with pytest.raises(exceptions.SourceChanged):
                img.pread(10, 0)              # not even what it holds
            with pytest.raises(exceptions.SourceChanged):
                img.wait(1)


def test_a_trusted_manifest_reads_on_when_the_source_changes(
        fix, cache, bm):
    with helpers.attach(fix, cache, bm) as img:
        img.pread(10, 0)
        fix.store.put(URL, DATA)               # a new validator, same bytes
        assert img.pread(10, 5 * BLOCK) == DATA[5 * BLOCK:5 * BLOCK + 10]
