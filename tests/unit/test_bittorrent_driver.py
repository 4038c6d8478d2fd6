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

"""The bittorrent driver without a network: options, accepts, stat, the
checks made before anything reaches libtorrent, and the CLI."""

import os
import subprocess
import sys

from oslo_config import cfg
import pytest

import oslo_transfer

from oslo_transfer._drivers.bittorrent import driver as bittorrent
from oslo_transfer._drivers.bittorrent import origin as origin_mod
from oslo_transfer._drivers.bittorrent import session as session_mod
from oslo_transfer.cmd import torrent as torrent_cmd
from oslo_transfer import driver
from oslo_transfer import exceptions
from oslo_transfer import locations
from oslo_transfer import opts
from oslo_transfer import torrent as meta_mod

PIECE = 256 * 1024


@pytest.fixture
def drv():
    conf = cfg.ConfigOpts()
    conf([])
    opts.register_opts(conf, [bittorrent.BitTorrentDriver])
    return bittorrent.BitTorrentDriver(conf)


@pytest.fixture
def torrent(tmp_path):
    path = tmp_path / 'image.raw'
    path.write_bytes(os.urandom(PIECE + 1))
    return meta_mod.make_torrent(str(path),
                                 web_seeds=['http://origin/image.raw'])


def _ctx(torrent=None, refuse=()):
    def check(url):
        for bad in refuse:
            if bad in url:
                raise exceptions.URLNotAllowed('%s is refused' % url)
        return url
    return driver.Context(torrent=torrent, check_url=check)


def test_import_does_not_load_libtorrent():
    code = ('import sys; import oslo_transfer._drivers.bittorrent as b; '
            'import oslo_transfer.opts as o; o.list_opts(); '
            'b.BitTorrentDriver.list_opts(); '
            'assert "libtorrent" not in sys.modules, "imported"')
    subprocess.run([sys.executable, '-c', code], check=True)


def test_missing_libtorrent_names_the_extra():
    code = ('import sys; sys.modules["libtorrent"] = None\n'
            'from oslo_config import cfg\n'
            'from oslo_transfer._drivers import bittorrent as b\n'
            'from oslo_transfer import exceptions\n'
            'try:\n'
            '    b.BitTorrentDriver(cfg.ConfigOpts()).check_available()\n'
            'except exceptions.MissingDependency as exc:\n'
            '    print(exc)\n')
    out = subprocess.run([sys.executable, '-c', code], check=True,
                         capture_output=True, text=True).stdout
    assert 'pip install libtorrent' in out


def test_options_are_listed():
    groups = dict(opts.list_opts())
    names = {o.name for o in groups['oslo_transfer_bittorrent']}
    assert {'listen_interfaces', 'seed_time', 'seed_ratio', 'stall_timeout',
            'lookup_torrent_next_to_origin', 'upload_rate_limit',
            'download_rate_limit', 'local_peer_discovery', 'piece_size',
            'allow_multiple_connections_per_ip'} <= names


def test_defaults(drv):
    o = drv.options
    assert o.lookup_torrent_next_to_origin is False
    assert o.local_peer_discovery is False
    assert o.allow_multiple_connections_per_ip is False


def test_session_settings(drv):
    lt = session_mod.import_libtorrent()
    drv.conf.set_override('listen_interfaces', ['10.0.0.5:6881'],
                          drv.group)
    drv.conf.set_override('upload_rate_limit', 1000, drv.group)
    s = session_mod.settings_from(drv.options, lt)
    assert s['listen_interfaces'] == '10.0.0.5:6881'
    assert not (s['enable_dht'] or s['enable_upnp'] or s['enable_natpmp'] or
                s['enable_lsd'])
    assert s['ignore_limits_on_local_network'] is False
    assert s['urlseed_max_request_bytes'] == 1024 * 1024
    assert s['upload_rate_limit'] == 1000
    drv.conf.set_override('local_peer_discovery', True, drv.group)
    assert session_mod.settings_from(drv.options, lt)['enable_lsd']


@pytest.mark.parametrize('url,with_torrent,expected', [
    ('torrent://metadata', True, True),
    ('torrent://metadata', False, False),
    ('http://h/x', True, True),
    ('https://h/x', True, True),
    ('http://h/x', False, False),
    ('ftp://h/x', True, False),
    ('/var/lib/x', True, False),
])
def test_accepts(drv, torrent, url, with_torrent, expected):
    ctx = _ctx(torrent if with_torrent else None)
    assert drv.accepts(locations.Location(url), ctx) is expected


def test_lookup_next_to_origin_is_opt_in(drv, torrent, monkeypatch):
    fetched = []

    def fake_fetch(loc, ctx):
        fetched.append(loc.url)
        return torrent

    monkeypatch.setattr(drv, '_fetch', fake_fetch)
    loc = locations.Location('http://h/lookup-%d' % id(drv))
    assert not drv.accepts(loc, _ctx())
    assert fetched == []
    drv.conf.set_override('lookup_torrent_next_to_origin', True, drv.group)
    assert drv.accepts(loc, _ctx())
    assert drv.accepts(loc, _ctx())          # cached: one fetch
    assert fetched == [loc.url + '.torrent']


def test_lookup_miss_is_cached(drv, monkeypatch):
    calls = []

    def missing(loc, ctx):
        calls.append(loc.url)
        raise exceptions.SourceNotFound('404')

    monkeypatch.setattr(drv, '_fetch', missing)
    drv.conf.set_override('lookup_torrent_next_to_origin', True, drv.group)
    loc = locations.Location('http://h/miss-%d' % id(drv))
    assert not drv.accepts(loc, _ctx())
    assert not drv.accepts(loc, _ctx())
    assert len(calls) == 1


def test_stat_from_bytes_and_path(drv, torrent, tmp_path):
    m = meta_mod.parse(torrent)
    st = drv.stat(locations.Location('torrent://metadata'), _ctx(torrent))
    assert (st.size, st.validator, st.ranges) == (PIECE + 1, m.validator,
                                                  False)
    path = tmp_path / 'x.torrent'
    path.write_bytes(torrent)
    assert drv.stat(locations.Location('http://h/x'),
                    _ctx(str(path))).size == PIECE + 1


def test_stat_without_metadata(drv):
    with pytest.raises(exceptions.InvalidLocation) as ei:
        drv.stat(locations.Location('http://user:pw@h/x'), _ctx())
    assert 'pw' not in str(ei.value)


def test_unreadable_metadata_path(drv, tmp_path):
    with pytest.raises(exceptions.InvalidLocation) as ei:
        drv.stat(locations.Location('torrent://metadata'),
                 _ctx(str(tmp_path / 'missing.torrent')))
    assert 'cannot read torrent metadata' in str(ei.value)


class _Target:
    def __init__(self, path, size):
        self.path = path
        self.size = size
        self.recorded = []

    def held(self):
        return []

    def record(self, offset, length):
        self.recorded.append((offset, length))

    def progress(self, n):
        pass


@pytest.fixture
def no_session(monkeypatch):
    def refuse(opts):
        raise AssertionError('the session must not be used')
    monkeypatch.setattr(session_mod, 'get_session', refuse)


def test_multi_file_torrent_cannot_be_copied(drv, tmp_path, no_session):
    d = tmp_path / 'tree'
    d.mkdir()
    (d / 'a').write_bytes(b'a' * 10)
    (d / 'b').write_bytes(b'b' * 10)
    raw = meta_mod.make_torrent(str(d))
    target = _Target(str(tmp_path / 'out.part'), 20)
    with pytest.raises(exceptions.InvalidLocation) as ei:
        drv.copy_to_path(locations.Location('torrent://metadata'), target,
                         _ctx(raw))
    assert '2 files' in str(ei.value)


def test_size_mismatch_before_the_session(drv, torrent, tmp_path,
                                          no_session):
    target = _Target(str(tmp_path / 'out.part'), 5)
    with pytest.raises(exceptions.SizeMismatch):
        drv.copy_to_path(locations.Location('torrent://metadata'), target,
                         _ctx(torrent))


def test_unsafe_metadata_refused_before_the_session(drv, tmp_path,
                                                    no_session):
    bad = meta_mod.bencode({b'info': {
        b'name': b'../../etc/cron.d/x', b'length': 10,
        b'piece length': PIECE, b'pieces': b'\x00' * 20}})
    target = _Target(str(tmp_path / 'out.part'), 10)
    with pytest.raises(exceptions.InvalidLocation):
        drv.copy_to_path(locations.Location('torrent://metadata'), target,
                         _ctx(bad))
    assert os.listdir(tmp_path) == []


def test_origins_and_policy(drv, torrent):
    m = meta_mod.parse(torrent)
    loc = locations.Location('https://glance/v2/images/1/file',
                             headers={'X-Auth-Token': 't'})
    origins = drv._origins(loc, m, _ctx(torrent))
    assert [o.url for o in origins] == ['https://glance/v2/images/1/file',
                                        'http://origin/image.raw']
    assert origins[0] is loc            # headers and credentials kept
    refused = drv._origins(loc, m, _ctx(torrent, refuse=['origin']))
    assert [o.url for o in refused] == ['https://glance/v2/images/1/file']
    drv.conf.set_override('use_metadata_web_seeds', False, drv.group)
    assert len(drv._origins(locations.Location('torrent://metadata'), m,
                            _ctx(torrent))) == 0


class _Reader:
    """A driver that ``ctx.driver_for`` hands out: records its reads."""

    def __init__(self, payload):
        self.payload = payload
        self.reads = []

    def read(self, location, offset, length, ctx):
        self.reads.append((location, offset, length, ctx))
        end = len(self.payload) if length is None else offset + length
        yield self.payload[offset:end]


def test_metadata_is_read_by_the_transfers_driver_at_the_checked_url(
        drv, torrent):
    reader = _Reader(torrent)
    asked = []

    def driver_for(loc):
        asked.append(loc.url)
        return reader

    def check(url):
        return url.replace('://ORIGIN', '://origin')   # the canonical URL

    ctx = driver.Context(check_url=check, driver_for=driver_for)
    url = 'http://ORIGIN/meta-%d.torrent' % id(drv)
    loc = locations.Location(url, credentials=('u', 'p'),
                             headers={'X-Auth-Token': 't'})
    meta = drv.load_metadata(loc, ctx)
    assert meta.info_hash == meta_mod.parse(torrent).info_hash
    canonical = url.replace('ORIGIN', 'origin')
    assert asked == [canonical]
    (got, offset, length, sub), = reader.reads
    assert (got.url, offset, length) == (canonical, 0, None)
    assert got.credentials == loc.credentials and got.headers == loc.headers
    # the reader's own context: the transfer's cancel, policy and drivers
    assert sub.cancel is ctx.cancel and sub.check_url is check
    assert sub.driver_for is driver_for


def test_metadata_url_without_a_driver_is_no_driver_found(drv):
    ctx = driver.Context()      # no Transfer: no other driver
    with pytest.raises(exceptions.NoDriverFound):
        drv.load_metadata('http://origin/none-%d.torrent' % id(drv), ctx)


def test_web_seeds_are_read_by_the_transfers_driver(torrent):
    reader = _Reader(torrent)

    def driver_for(loc):
        if loc.scheme != 'http':
            raise exceptions.NoDriverFound('no driver for %s' % loc.url)
        return reader

    ctx = driver.Context(driver_for=driver_for)
    seeds = [locations.Location('http://origin/image.raw'),
             locations.Location('ftp://elsewhere/image.raw')]
    fetcher = origin_mod.OriginFetcher(None, seeds, ctx)
    try:
        assert fetcher.readers == {'http://origin/image.raw': reader}
        # an origin that no loaded driver reads is dead from the start
        assert fetcher.dead == {'ftp://elsewhere/image.raw'}
        assert isinstance(fetcher.errors['ftp://elsewhere/image.raw'],
                          exceptions.NoDriverFound)
        assert fetcher.ctx.driver_for is driver_for
        assert fetcher._fetch(seeds[0], 16, 100) == torrent[16:116]
        (_loc, offset, length, sub), = reader.reads
        assert (offset, length, sub) == (16, 100, fetcher.ctx)
    finally:
        fetcher.stop()


def test_seed_reads_metadata_urls_with_the_transfers_http_driver(
        tmp_path, monkeypatch):
    # "oslo-transfer seed --torrent URL": Transfer.seed hands the driver a
    # context whose driver_for reaches the Transfer's own http driver.
    seen = {}

    def seed(self, path, torrent, ctx, **kwargs):
        seen['reader'] = ctx.driver_for(locations.Location(torrent))
        seen['http'] = transfer.driver('http')
        return None

    monkeypatch.setattr(bittorrent.BitTorrentDriver, 'seed', seed)
    monkeypatch.setattr(bittorrent.BitTorrentDriver, 'check_available',
                        lambda self: None)
    with oslo_transfer.Transfer(drivers=['http', 'bittorrent']) as transfer:
        transfer.seed(tmp_path, 'https://origin/x.torrent')
    assert seen['reader'] is seen['http']


def test_make_torrent_command(tmp_path):
    data = tmp_path / 'image.raw'
    data.write_bytes(os.urandom(3 * PIECE))
    out = tmp_path / 'image.torrent'
    rc = torrent_cmd.main(['make-torrent', str(data), '--web-seed',
                           'http://o/image.raw', '--piece-size',
                           str(PIECE), '-o', str(out)])
    assert rc == 0
    m = meta_mod.parse(out.read_bytes())
    assert (m.num_pieces, m.web_seeds) == (3, ('http://o/image.raw',))


def test_make_torrent_command_refuses_bad_web_seed(tmp_path, capsys):
    data = tmp_path / 'image.raw'
    data.write_bytes(b'x')
    rc = torrent_cmd.main(['make-torrent', str(data), '--web-seed',
                           'file:///etc/passwd', '-o',
                           str(tmp_path / 'o.torrent')])
    assert rc == 2
    assert 'not an http' in capsys.readouterr().err
    assert not (tmp_path / 'o.torrent').exists()
