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

"""Which manifests a lazy image trusts, and what it does with each."""

import hashlib

import pytest

import oslo_transfer
from oslo_transfer import blockmap
from oslo_transfer import driver
from oslo_transfer import exceptions
from oslo_transfer.lazy import manifest as manifest_mod
from oslo_transfer import torrent
from tests.unit.lazy import helpers

URL, BLOCK = helpers.URL, helpers.BLOCK
DATA = helpers.image(size=1024 * 1024, zero_blocks=(3,))


@pytest.fixture
def setup(tmp_path):
    raw = helpers.make_blockmap(tmp_path, DATA)
    path = tmp_path / 'image.blockmap'
    path.write_bytes(raw)
    with helpers.transfer() as fix:
        fix.store.put(URL, DATA)
        fix.store.put(URL + '.blockmap', raw)
        yield fix, raw, str(path)


def _resolve(fix, what, source=URL, **conf):
    for k, v in conf.items():
        fix.conf.set_override(k, v, 'oslo_transfer')
    return manifest_mod.resolve(fix.transfer, what,
                                oslo_transfer.Source(urls=[source]),
                                driver.Context())


def _digest(raw):
    return 'sha256:' + hashlib.sha256(raw).hexdigest()


def test_what_the_caller_supplies_is_trusted(setup):
    fix, raw, path = setup
    for what in (path, raw, blockmap.parse(raw), (URL + '.blockmap',
                                                  _digest(raw)),
                 _digest(raw)):
        m = _resolve(fix, what)
        assert m.trusted and m.kind == 'blockmap', what
        assert m.identity == 'blockmap-sha256:' + hashlib.sha256(
            raw).hexdigest()
        assert m.is_zero(3) and not m.is_zero(2)


def test_what_comes_from_the_network_alone_is_not(setup):
    fix, raw, _path = setup
    m = _resolve(fix, URL + '.blockmap')
    assert not m.trusted and m.identity is None
    assert not m.is_zero(3)               # its zero flags prove nothing
    assert m.verify(0, DATA[:BLOCK]) and not m.verify(0, bytes(BLOCK))
    assert _resolve(fix, None) is None
    found = _resolve(fix, None, lazy_find_blockmap=True)
    assert found.kind == 'blockmap' and not found.trusted


def test_a_digest_that_does_not_match_is_an_error(setup):
    fix, raw, path = setup
    with pytest.raises(exceptions.ChecksumMismatch, match='sha256'):
        _resolve(fix, (path, 'sha256:' + '0' * 64))
    with pytest.raises(exceptions.ChecksumMismatch, match='does not have'):
        _resolve(fix, 'sha256:' + '0' * 64)
    fix.store.delete(URL + '.blockmap')
    with pytest.raises(exceptions.SourceNotFound, match='URL.blockmap'):
        _resolve(fix, _digest(raw))


def test_torrent_pieces_are_a_manifest(setup, tmp_path):
    fix, _raw, _path = setup
    src = tmp_path / 'image'
    src.write_bytes(DATA)
    data = torrent.make_torrent(str(src), piece_size=256 * 1024)
    m = _resolve(fix, data)
    assert (m.kind, m.block_size, m.count, m.trusted) == ('torrent',
                                                          256 * 1024, 4,
                                                          True)
    assert m.identity == 'btih:' + torrent.parse(data).info_hash
    assert m.verify(1, DATA[256 * 1024:512 * 1024])
    assert not m.verify(1, DATA[:256 * 1024])
    assert not m.has_zero_flags
    m = manifest_mod.resolve(
        fix.transfer, None, oslo_transfer.Source(urls=[URL], torrent=data),
        driver.Context())
    assert m.kind == 'torrent' and m.trusted


def test_garbage_is_refused(setup):
    fix, _raw, _path = setup
    with pytest.raises(exceptions.InvalidLocation,
                       match='neither a blockmap nor torrent'):
        _resolve(fix, b'hello')
    with pytest.raises(ValueError, match='manifest must be'):
        _resolve(fix, 42)


def test_a_manifest_without_one(setup):
    m = manifest_mod.Manifest.none(1000, 4096)
    assert (m.count, m.block(0), m.trusted, m.identity) == (1, (0, 1000),
                                                            False, None)
    assert m.verify(0, b'x' * 1000) and not m.verify(0, b'x')
