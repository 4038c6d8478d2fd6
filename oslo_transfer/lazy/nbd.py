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

"""The NBD export of a lazy image: what ``oslo-transfer nbd`` and its
nbdkit plugin share.

The process model (decided in the lazy-images issue):

1. ``oslo-transfer nbd`` checks that nbdkit's Python plugin embeds the
   same Python minor version as itself (:func:`check_python`), stats the
   source and loads the manifest (:func:`prepare`), so that errors come
   early and from the command;
2. it writes a *spec file* (:func:`write_spec`: JSON, mode 0600, in a
   private temporary folder): the source with its credentials, the cache,
   the checksum, the manifest's bytes and whether they are trusted, the
   profile, the configuration files, and the folders the plugin adds to
   ``sys.path`` (this installation's site-packages and source tree, never
   the other interpreter's standard library);
3. it runs ``nbdkit -f --exit-with-parent -r -P PIDFILE (-U SOCKET | -i
   ADDR -p PORT) python PLUGIN spec=FILE`` as a child: no secret on any
   command line;
4. the plugin (:mod:`oslo_transfer.lazy.nbdplugin`) reads the spec and
   deletes it in ``config()``, attaches the image in ``get_ready()``
   (waiting up to :data:`LOCK_WAIT` seconds for a predecessor that is
   still exiting), starts its threads in ``after_fork()``, serves with
   the parallel thread model, and makes the map durable in
   ``cleanup()``;
5. the command prints ``ready nbd+unix:///?socket=PATH`` (or ``ready
   nbd://ADDR:PORT``) once PIDFILE appears, forwards SIGTERM and SIGINT,
   and exits with nbdkit's status, or 0 after a SIGTERM once nbdkit has
   made the map durable and exited.
"""

import base64
import dataclasses
import json
import logging
import os
import re
import site
import subprocess
import sys
import sysconfig

from oslo_transfer import exceptions
from oslo_transfer.lazy import fetch as fetch_mod
from oslo_transfer.lazy import image as image_mod
from oslo_transfer.lazy import manifest as manifest_mod
from oslo_transfer import locations

LOG = logging.getLogger(__name__)

__all__ = ['PLUGIN', 'SPEC_VERSION', 'LOCK_WAIT', 'Prepared', 'prepare',
           'check_python', 'nbdkit_python_version', 'plugin_sys_path',
           'child_env',
           'spec_for', 'write_spec', 'read_spec', 'attach_from_spec',
           'start', 'has_zero_extents', 'zero_extents']

#: the script nbdkit's Python plugin runs
PLUGIN = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                      'nbdplugin.py')
#: the version of the spec file's format
SPEC_VERSION = 1
#: seconds a restarted export waits for its predecessor's lock
LOCK_WAIT = 10.0

_PY_VERSION = re.compile(r'^python_version=(\d+)\.(\d+)', re.M)


# -- the command's side ------------------------------------------------------

def nbdkit_python_version(nbdkit: str = 'nbdkit') -> tuple:
    """``(major, minor)`` of the Python nbdkit's Python plugin embeds.

    :raises MissingDependency: nbdkit or its Python plugin is missing.
    """
    try:
        out = subprocess.run([nbdkit, 'python', '--dump-plugin'],
                             capture_output=True, text=True, timeout=30,
                             env=child_env())
    except OSError as exc:
        raise exceptions.MissingDependency(
            'cannot run nbdkit (%s): install the Debian packages nbdkit '
            'and nbdkit-plugin-python' % exc) from exc
    m = _PY_VERSION.search(out.stdout)
    if out.returncode or not m:
        raise exceptions.MissingDependency(
            'nbdkit has no Python plugin (%s): install the Debian package '
            'nbdkit-plugin-python' % (out.stderr.strip() or
                                      'no python_version'))
    return int(m.group(1)), int(m.group(2))


def check_python(nbdkit: str = 'nbdkit') -> None:
    """Refuse a Python that cannot run inside nbdkit's plugin.

    The plugin imports this installation of oslo.transfer (and its
    compiled dependencies) into the interpreter nbdkit embeds: only the
    same minor version can work.

    :raises MissingDependency: nbdkit, its plugin, or a matching Python
        is missing.
    """
    theirs = nbdkit_python_version(nbdkit)
    ours = sys.version_info[:2]
    if theirs != ours:
        raise exceptions.MissingDependency(
            'nbdkit\'s Python plugin embeds Python %d.%d, and this '
            'oslo-transfer runs on Python %d.%d: the plugin imports '
            'oslo.transfer from this installation, which only works with '
            'the same minor version.  Run oslo-transfer nbd from a Python '
            '%d.%d installation (or install an nbdkit built for %d.%d).'
            % (theirs + ours + theirs + ours))


#: PATH of the nbdkit child (see :func:`child_env`)
CHILD_PATH = '/usr/sbin:/usr/bin:/sbin:/bin'
#: variables of this interpreter that must not reach nbdkit's
_PYTHON_VARS = ('PYTHONHOME', 'PYTHONPATH', 'PYTHONSTARTUP',
                'PYTHONUSERBASE', 'PYTHONEXECUTABLE')


def child_env(environ=None) -> dict:
    """The environment of the nbdkit child.

    The interpreter nbdkit embeds finds its standard library from the
    first ``python3`` on ``PATH``: from a pyenv or a venv's ``python3``
    it would load that installation's standard library, whose C modules
    do not match its own (``undefined symbol`` errors).  The child gets a
    system ``PATH`` and none of this interpreter's ``PYTHON*`` settings;
    the folders the plugin needs reach it through the spec file.
    """
    env = dict(os.environ if environ is None else environ)
    for name in _PYTHON_VARS:
        env.pop(name, None)
    env['PATH'] = CHILD_PATH
    return env


def plugin_sys_path() -> list:
    """Folders the plugin adds to ``sys.path``: ours, not a stdlib.

    The source tree of this ``oslo_transfer`` first, then this
    interpreter's ``site-packages`` folders and the ``PYTHONPATH``
    entries; never its standard library, which nbdkit's interpreter has
    its own of, nor the current or the script's folder.
    """
    import oslo_transfer
    tree = os.path.dirname(os.path.dirname(os.path.abspath(
        oslo_transfer.__file__)))
    paths = sysconfig.get_paths()
    stdlib = {os.path.realpath(paths[k]) for k in ('stdlib', 'platstdlib')}
    extra = [p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep)
             if p]
    site_dirs = [p for p in sys.path if os.path.basename(
        p.rstrip(os.sep)) in ('site-packages', 'dist-packages')]
    site_dirs += site.getsitepackages()
    if site.ENABLE_USER_SITE:
        site_dirs.append(site.getusersitepackages())
    out = [tree]
    for p in extra + site_dirs:
        if not os.path.isdir(p) or os.path.realpath(p) in stdlib:
            continue
        p = os.path.abspath(p)
        if p not in out:
            out.append(p)
    return out


@dataclasses.dataclass
class Prepared:
    """A source checked by :func:`prepare`, ready to be exported.

    :ivar source: the :class:`~oslo_transfer.locations.Source`.
    :ivar checksum: the whole image's checksum, or None.
    :ivar manifest: the :class:`~oslo_transfer.lazy.manifest.Manifest`,
        or None (unverified reads).
    :ivar size: bytes of the image.
    :ivar hints: the :class:`~oslo_transfer.selector.Hints`.
    """

    source: locations.Source
    checksum: object
    manifest: manifest_mod.Manifest | None
    size: int
    hints: object = None


def prepare(transfer, source, checksum=None, hints=None,
            manifest=None) -> Prepared:
    """Stat the source and load the manifest, as attach will.

    :raises ManifestNotTrusted: see :meth:`Transfer.attach`.
    :raises TransferError: no location answers (unless a trusted manifest
        gives the size), or the manifest cannot be read.
    """
    source = transfer._source(source)
    ck = transfer._checksum(checksum, source)
    ctx = transfer._context(hints, None, source, ck)
    plan = transfer._plan(transfer._locations(source), hints, 'read', ctx)
    m = manifest_mod.resolve(transfer, manifest, source, ctx)
    image_mod.check_trust(transfer.conf, m, source, ck, 'the export')
    fetcher = fetch_mod.Fetcher(transfer, plan, m, ctx)
    size = m.size if m is not None else None
    try:
        _cand, st = fetcher.stat()
        size = st.size if size is None else size
    except exceptions.TransferError as exc:
        if m is None or not m.trusted or \
                isinstance(exc, (exceptions.SizeMismatch,
                                 exceptions.Cancelled)):
            raise
        LOG.warning('%s; exporting anyway: missing blocks fail to read '
                    'until a location answers', exc)
    if size is None:
        raise exceptions.SizeMismatch('%s does not say its size: a lazy '
                                      'image needs it' % source.urls[0]
                                      .masked)
    return Prepared(source, ck, m, size, hints)


def _location_spec(loc: locations.Location) -> dict:
    creds = loc.credentials
    return {'url': loc.url, 'headers': loc.headers, 'options': loc.options,
            'credentials': dataclasses.asdict(creds) if creds else None}


def spec_for(prepared: Prepared, cache: str, prefetch: bool = True,
             profile: str | None = None, config_files=(),
             verbose: int = 0) -> dict:
    """The spec file's content for ``prepared`` (it holds secrets)."""
    m = prepared.manifest
    hints = prepared.hints
    return {
        'version': SPEC_VERSION,
        'sys_path': plugin_sys_path(),
        'config_files': [os.path.abspath(f) for f in config_files],
        'verbose': verbose,
        'source': [_location_spec(u) for u in prepared.source.urls],
        'cache': os.path.abspath(cache),
        'checksum': str(prepared.checksum) if prepared.checksum else None,
        'manifest': None if m is None or m.kind == 'none' else {
            'raw': base64.b64encode(m.raw).decode(), 'trusted': m.trusted},
        'profile': os.path.abspath(profile) if profile else None,
        'prefetch': bool(prefetch),
        'hints': None if hints is None else {
            'same_network': hints.same_network, 'peers': hints.peers,
            'peer_addresses': list(hints.peer_addresses)},
    }


def write_spec(path: str, spec: dict) -> None:
    """Write the spec file: created new, mode 0600 (it holds secrets)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL |
                 os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, 'w') as f:
        json.dump(spec, f)


# -- the plugin's side -------------------------------------------------------

def read_spec(path: str) -> dict:
    """Read the spec file and delete it (its secrets live in memory only).

    :raises ValueError: not a spec of this version.
    """
    try:
        with open(path) as f:
            spec = json.load(f)
    finally:
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
    if not isinstance(spec, dict) or spec.get('version') != SPEC_VERSION:
        raise ValueError('%s is not an oslo-transfer nbd spec of version %d'
                         % (path, SPEC_VERSION))
    return spec


def attach_from_spec(spec: dict, start: bool = False):
    """``(transfer, image)`` from a spec (the plugin's ``get_ready()``).

    :param start: start the image's threads now; the plugin starts them
        in ``after_fork()`` with :func:`start`.
    """
    from oslo_config import cfg

    from oslo_transfer import selector
    from oslo_transfer import transfer as transfer_mod

    conf = cfg.ConfigOpts()
    conf([], project='oslo_transfer', default_config_files=spec[
        'config_files'], default_config_dirs=[])
    t = transfer_mod.Transfer(conf)
    try:
        source = locations.Source(urls=[
            locations.Location(s['url'], credentials=s['credentials'],
                               headers=s['headers'], options=s['options'])
            for s in spec['source']])
        m = spec['manifest']
        manifest = None if m is None else manifest_mod.Manifest.from_bytes(
            base64.b64decode(m['raw']), trusted=m['trusted'])
        hints = None
        if spec.get('hints'):
            hints = selector.Hints(**spec['hints'])
        image = t._attach(source, spec['cache'], spec['checksum'], hints,
                          manifest, spec['prefetch'], spec['profile'],
                          lock_wait=LOCK_WAIT, start=start)
    except BaseException:
        t.close()
        raise
    image.owner = t
    return image


def start(image) -> None:
    """Start the threads of an image attached with ``start=False``."""
    image._core.start()


def has_zero_extents(image) -> bool:
    """True when the manifest says which blocks are zeros (NBD extents)."""
    return image._core.manifest.has_zero_flags


def zero_extents(image, offset: int, length: int) -> list:
    """``(offset, length, is_zero)`` of the manifest's zero blocks."""
    return image._core.zero_extents(offset, length)
