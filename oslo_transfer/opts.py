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

"""Configuration options of oslo.transfer.

Options are registered on the caller's ``ConfigOpts`` when a
:class:`~oslo_transfer.transfer.Transfer` is built, never on ``cfg.CONF`` at
import time.  :func:`list_opts` is the ``oslo.config.opts`` entry point used
by ``oslo-config-generator``; it returns deep copies and does not load any
driver through stevedore (only the in-tree driver modules, which import
nothing heavy).
"""

import copy
import importlib
import itertools

from oslo_config import cfg

from oslo_transfer import _utils

__all__ = ['GROUP', 'list_opts', 'register_opts', 'set_defaults']

GROUP = 'oslo_transfer'

MiB = 1024 * 1024

#: the largest size, offset or byte rate an option takes (an ``off_t``)
MAX_BYTES = 2 ** 63 - 1
#: the longest wait ``total_timeout`` and ``lock_timeout`` take
MAX_SECONDS = _utils.MAX_SECONDS

#: In-tree drivers whose options :func:`list_opts` reports: each is the
#: module or package ``oslo_transfer._drivers.<name>`` that holds (or
#: re-exports) the driver class of that name.
IN_TREE_DRIVERS = ('http', 'file', 'ftp', 'sftp', 'nfs', 'iscsi',
                   'bittorrent', 's3')

_opts = [
    cfg.StrOpt('selector', default='default',
               help='Name of the selector plugin (entry point in '
                    '"oslo_transfer.selectors") that ranks locations and '
                    'drivers.\n\nPossible values:\n\n* "default": the rules '
                    'of the user guide\n* the name of an installed plugin'),
    cfg.ListOpt('disabled_drivers', default=[],
                help='Drivers (entry-point names) that the selector never '
                     'chooses, e.g. "bittorrent,ftp".\n\nRelated options:\n\n'
                     '* allowed_schemes'),
    cfg.ListOpt('allowed_schemes', default=[],
                help='URL schemes that may be used at all, for every URL, '
                     'redirect, web seed and tracker.  Empty allows every '
                     'scheme of an installed driver.  A service that takes '
                     'URLs from users (Glance web-download) should set '
                     '"https,http".\n\nRelated options:\n\n* denied_networks'),
    cfg.ListOpt('denied_networks', default=[],
                help='CIDR networks that no URL, redirect, web seed or '
                     'tracker may point into (host names are resolved '
                     'first).  A service that takes URLs from users should '
                     'deny its own management networks, link-local and '
                     'loopback, e.g. "127.0.0.0/8,169.254.0.0/16,::1/128,'
                     '10.0.0.0/8".\n\nRelated options:\n\n* allowed_schemes'),
    _utils.IntOpt('p2p_min_peers', default=4, min=1, max=10 ** 6,
                  help='Number of hosts fetching the same data at once (this '
                       'one included) from which peer-to-peer (BitTorrent) is '
                       'ranked first when torrent metadata is known.'),
    _utils.IntOpt('segments', default=4, min=1, max=64,
                  help='Parallel ranged segments (connections) per transfer '
                       'when the driver and the server support ranged reads.  '
                       '1 turns parallel segments off.\n\nRelated options:\n\n'
                       '* segment_threshold\n* max_connections_per_origin'),
    _utils.IntOpt('segment_threshold', default=64 * MiB, min=0,
                  max=MAX_BYTES,
                  help='Objects smaller than this many bytes are read as one '
                       'stream.'),
    _utils.IntOpt('segment_size', default=16 * MiB, min=MiB, max=MAX_BYTES,
                  help='Bytes each ranged request asks for; workers take the '
                       'next piece when they finish one.'),
    _utils.IntOpt('max_connections_per_origin', default=8, min=1, max=4096,
                  help='Per-process cap on concurrent connections to one '
                       'host:port, shared by every transfer of the process.'),
    cfg.BoolOpt('multi_source', default=True,
                help='Read several locations of the same data at once (a '
                     'Source with several URLs, the command\'s --also) when '
                     'at least two of them serve ranged reads and a '
                     'checksum or a trusted manifest is known: segments '
                     'come from every location in proportion to its '
                     'measured throughput.  False reads one location at a '
                     'time, the others as fallbacks (when reading a '
                     'location costs, e.g. egress fees).\n\nRelated '
                     'options:\n\n* segments\n* max_connections_per_origin'
                     '\n* origin_rate_limit'),
    _utils.IntOpt('checkpoint_bytes', default=16 * MiB, min=MiB, max=MAX_BYTES,
                  help='After a crash, at most this many bytes (plus one '
                       'chunk per segment) are sent again: each time the '
                       'segments in flight have written half of it '
                       'together, the file is made durable (fsync) and the '
                       'written ranges are recorded in the control file, '
                       'while the segments go on; they wait when the bytes '
                       'not yet recorded reach the whole of it (a slow '
                       'disk).'),
    _utils.IntOpt('chunk_size', default=MiB, min=4096, max=256 * MiB,
                  help='Size of the chunks read from a driver and written to '
                       'the destination (each read allocates that much).'),
    _utils.FiniteFloatOpt(
        'io_timeout', default=60.0, min=0.1, max=86400.0,
        help='Seconds a single network operation (connect, read) may '
             'block, at most a day.  A cancel takes effect within this '
             'time.'),
    _utils.FiniteFloatOpt(
        'total_timeout', default=0.0, min=0.0,
        max=MAX_SECONDS,
        help='Seconds a whole transfer (a copy, an upload, an '
             'open() reader until it is closed) may take, retries '
             'included; 0 means no limit.  When it passes, the '
             'transfer is stopped wherever it waits (also on a '
             'server that trickles its answer) and raises '
             'TransferTimeout, keeping its resumable state.'
             '\n\nRelated options:\n\n* io_timeout'),
    _utils.IntOpt('retries', default=5, min=0, max=10 ** 6,
                  help='Attempts per candidate after a retryable error (a '
                       'dropped connection, a 5xx answer).'),
    _utils.FiniteFloatOpt(
        'retry_backoff', default=1.0, min=0.0, max=MAX_SECONDS,
        help='First wait in seconds before a retry; doubles each '
             'time, at most 30 seconds.'),
    _utils.IntOpt('rate_limit', default=0, min=0, max=MAX_BYTES,
                  help='Bytes per second per transfer; 0 means no limit.\n\n'
                       'Related options:\n\n* process_rate_limit'),
    _utils.IntOpt('process_rate_limit', default=0, min=0, max=MAX_BYTES,
                  help='Bytes per second for all transfers of this '
                       'Transfer (a service\'s, or the process\'s for the '
                       'module functions) together, shared by class '
                       '(class_weights); 0 means no limit.'),
    _utils.IntOpt('origin_rate_limit', default=0, min=0, max=MAX_BYTES,
                  help='Bytes per second per origin (scheme://host:port) '
                       'for all transfers of this Transfer together, shared '
                       'by class (class_weights); 0 means no limit.  What '
                       'keeps one host\'s many transfers from flattening '
                       'an origin.'),
    cfg.DictOpt('class_weights',
                default={'interactive': '8', 'normal': '4',
                         'background': '1'},
                help='Weights of the scheduling classes (Hints(priority=)) '
                     'when they share a rate limit: classes that all wait '
                     'get shares in proportion, per class and not per '
                     'transfer; a class alone takes everything.'),
    cfg.StrOpt('scheduler', default='classes',
               choices=[('classes', 'classes, weights, earliest deadline '
                                    'first and admission'),
                        ('fifo', 'one class, first come first served, no '
                                 'admission (the behaviour before classes, '
                                 'for comparisons)')],
               help='How connections, bytes and submitted transfers are '
                    'scheduled.'),
    cfg.StrOpt('shared_bottleneck', default='host',
               choices=[('host', 'every transfer from the network shares '
                                 'the host\'s link (a bulk migration from '
                                 'another host competes for the same NIC)'),
                        ('origin', 'only the transfers from one origin '
                                   '(scheme://host:port) share a '
                                   'bottleneck')],
               help='Which transfers share the network bottleneck.  While '
                    'a higher class moves bytes through it, the lower '
                    'classes\' bytes through it are paced to their '
                    'weighted share of its capacity (the highest 1 s rate '
                    'of the last 30 s, never sampled while pacing), and '
                    'admission judges deadlines against that capacity.\n\n'
                    'Related options:\n\n* class_weights\n* admission'),
    cfg.BoolOpt('admission', default=True,
                help='Refuse at once, with DeadlineUnreachable, a transfer '
                     'whose deadline (Hints(deadline=)) cannot be met.  '
                     'Off: such transfers run and may miss.'),
    cfg.StrOpt('on_source_change', default='restart',
               choices=[('restart', 'discard the partial data and start '
                                    'again (at most 3 times in one call; '
                                    'a fourth change raises '
                                    'SourceChanged)'),
                        ('error', 'raise SourceChanged and keep the '
                                  'partial data')],
               help='What to do when a resumed source has a different '
                    'validator (ETag, Last-Modified, size) than the bytes '
                    'already held.'),
    cfg.BoolOpt('fsync', default=True,
                help='Make bytes durable (fdatasync) before they are '
                     'recorded in the control file, and the destination '
                     'before it is renamed, so that a power loss never '
                     'leaves a complete-looking destination with lost '
                     'bytes.  Writeback starts early (sync_file_range, or '
                     'direct_io), so the cost is the disk\'s write speed.  '
                     'False relies '
                     'on the page cache (nothing is synced, the control '
                     'file neither): a killed process still resumes '
                     'safely, a power loss may cost a restart (the prefix '
                     'digest catches it) but the checksum is still '
                     'verified before the rename.'),
    _utils.FiniteFloatOpt(
        'switch_interval', default=None, min=0.0001,
        max=1.0,
        help='When set, creating a Transfer sets the interpreter\'s '
             'thread switch interval (sys.setswitchinterval) to '
             'this many seconds.  With the default 0.005, a thread '
             'that comes back from C code (a sha256 update, a '
             'write, a libiscsi or libnfs call) waits up to 5 ms '
             'for the interpreter lock when another thread only '
             'lets go of it for microseconds at a time (a receive '
             'loop of many short C calls); 0.0005 took a 1 GiB '
             'iSCSI copy from 1.66 to 1.32 s and 1.78 to 1.44 '
             'CPU-s, and changed FTP, SFTP and NFS copies by less '
             'than the noise.  It is process-wide, so a service '
             'decides: unset leaves the interpreter alone.  The '
             'oslo-transfer command uses 0.0005 unless this is '
             'set.'),
    cfg.BoolOpt('direct_io', default=True,
                help='A durable download read as one stream (fsync on, one '
                     'segment) is written with O_DIRECT, from aligned '
                     'buffers, by a thread of its own: no page-cache pages '
                     'to fill and write back (CPU time the receiving '
                     'thread needs), nothing left for the final fdatasync, '
                     'and the host\'s page cache is not flushed out by a '
                     'large image.  Only local disk file systems (ext2/3/4, '
                     'XFS, btrfs, F2FS) are written this way; NFS, SMB, '
                     'CephFS, FUSE and tmpfs destinations go through the '
                     'page cache as when this is off.  Turn off when the '
                     'file is read again right after the copy and should '
                     'come from the cache.\n\nRelated options:\n\n'
                     '* fsync'),
    cfg.BoolOpt('sparse', default=True,
                help='Write runs of zeros as holes in file destinations.  '
                     'Turn off to preallocate the destination instead '
                     '(early ENOSPC detection).\n\nRelated options:\n\n'
                     '* preallocate'),
    cfg.BoolOpt('preallocate', default=False,
                help='Reserve the whole destination (posix_fallocate) '
                     'before writing, so a full disk fails at once.  '
                     'Implies sparse = false.'),
    cfg.StrOpt('default_digest', default='sha256',
               help='hashlib algorithm of the digest reported in the '
                    'Result when the caller gives no checksum; "none" skips '
                    'hashing when no checksum is given.'),
    _utils.FiniteFloatOpt(
        'lock_timeout', default=0.0, min=0.0,
        max=MAX_SECONDS,
        help='Seconds to wait for another writer of the same '
             'destination; 0 waits as long as the transfer may '
             'run.'),
    cfg.StrOpt('state_dir', default='$state_path/oslo_transfer',
               help='Directory for the state of writers that cannot keep '
                    'it beside the destination: markers of uploads that '
                    'began, so that a later call continues at the '
                    'server\'s size (FTP, SFTP, NFS).  When it cannot be '
                    'created, a warning is logged once and uploads resume '
                    'only within one call.\n\nRelated options:\n\n'
                    '* state_path'),
    cfg.StrOpt('state_path', default='/var/lib/oslo_transfer',
               help='Top-level directory for oslo.transfer state.  When '
                    'the service registered its own "[DEFAULT] state_path" '
                    '(Nova, Cinder, Glance), that is the default, so '
                    'state_dir is e.g. /var/lib/nova/oslo_transfer.',
               sample_default='/var/lib/oslo_transfer'),
    _utils.IntOpt('lazy_block_size', default=0, min=0, max=MAX_BYTES,
                  help='Fetch unit of a lazy image (Transfer.attach, '
                       'oslo-transfer nbd) in bytes: a read of a missing '
                       'block fetches the whole unit around it.  0 uses '
                       'the manifest\'s granularity (a blockmap\'s block '
                       'size, a torrent\'s piece size; 64 KiB without a '
                       'manifest); any other value must be a multiple of '
                       'it.\n\nRelated options:\n\n'
                       '* lazy_unverified_reads'),
    cfg.BoolOpt('lazy_unverified_reads', default=False,
                help='Let a lazy image serve blocks that no trusted '
                     'manifest verifies (no blockmap or torrent supplied '
                     'by the caller, nor its sha256).  Each such attach is '
                     'logged, the whole-image checksum (if given) is '
                     'checked when every block is present, and on a '
                     'mismatch the cache is discarded and later reads '
                     'fail.  A guest may have read wrong bytes by then: '
                     'leave this off unless the origin and the network '
                     'are trusted.\n\nRelated options:\n\n'
                     '* lazy_find_blockmap'),
    cfg.BoolOpt('lazy_find_blockmap', default=False,
                help='When a lazy image is attached without a manifest, '
                     'look for URL.blockmap next to each location.  A '
                     'blockmap found there is not trusted (it proves '
                     'nothing about the origin): its block digests are '
                     'checked, but it is neither the cache\'s identity '
                     'nor a source of zero blocks, and attach still needs '
                     'lazy_unverified_reads.  A caller who knows the '
                     'blockmap\'s sha256 passes manifest="sha256:HEX" '
                     'instead, which looks there whatever this says and '
                     'trusts what matches.\n\nRelated options:\n\n'
                     '* lazy_unverified_reads'),
    _utils.IntOpt('executor_workers', default=16, min=1, max=4096,
                  help='Submitted transfers that run at once.  While '
                       'lower classes hold all of them, a transfer of a '
                       'higher class starts at once on one of as many '
                       'extra threads (not with an executor the caller '
                       'gives the Transfer).'),
]


def _driver_classes():
    """``(name, class)`` of each in-tree driver that imports here."""
    for name in IN_TREE_DRIVERS:
        module = 'oslo_transfer._drivers.%s' % name
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name != module:
                raise
            continue
        for value in vars(mod).values():
            if isinstance(value, type) and getattr(value, 'name', None) == \
                    name and callable(getattr(value, 'list_opts', None)):
                yield name, value
                break


def list_opts():
    """Return ``[(group, [opts])]`` for oslo-config-generator (deep copies)."""
    result = [(GROUP, copy.deepcopy(_opts))]
    for name, cls in _driver_classes():
        opts = cls.list_opts()
        if opts:
            result.append(('%s_%s' % (GROUP, name), copy.deepcopy(opts)))
    return result


def register_opts(conf, drivers=()):
    """Register the global options and those of ``drivers`` on ``conf``.

    :param drivers: driver classes or objects with ``name`` and
        ``list_opts()``.
    """
    conf.register_opts(_opts, group=GROUP)
    _follow_service_state_path(conf)
    for drv in drivers:
        opts = drv.list_opts()
        if opts:
            conf.register_opts(opts, group='%s_%s' % (GROUP, drv.name))


def _follow_service_state_path(conf):
    """``[oslo_transfer] state_path`` defaults to the service's own.

    Nova, Cinder and Glance register ``[DEFAULT] state_path``
    (``/var/lib/nova``...): the library's state then goes under it
    (``state_dir`` = ``/var/lib/nova/oslo_transfer``).  A value set in a
    file, an override or :func:`set_defaults` still wins.
    """
    if 'state_path' not in conf:
        return
    try:
        service = conf.state_path
    except cfg.Error:
        return
    if isinstance(service, str) and service:
        conf.set_default('state_path', service, group=GROUP)


def set_defaults(conf, **kwargs):
    """Change defaults of ``[oslo_transfer]`` options (services' own)."""
    register_opts(conf)
    for name, value in kwargs.items():
        conf.set_default(name, value, group=GROUP)


def all_opts():
    return list(itertools.chain.from_iterable(o for _, o in list_opts()))
