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

"""nbdkit's Python plugin script of ``oslo-transfer nbd``.

nbdkit runs this file (``nbdkit python nbdplugin.py spec=FILE``) in the
interpreter it embeds; it is never imported by oslo.transfer.  At load it
imports only the standard library and ``nbdkit``: this installation's
folders reach ``sys.path`` from the spec file, in :func:`config`.  The
callbacks (see :mod:`oslo_transfer.lazy.nbd` for the process model):

* ``config(spec=FILE)``: read the spec, delete it, extend ``sys.path``;
* ``get_ready()``: attach the lazy image (before nbdkit writes its PID
  file, so an error stops the export before it is announced);
* ``after_fork()``: start the image's threads;
* ``pread``: :meth:`LazyImage.readinto
  <oslo_transfer.lazy.image.LazyImage.readinto>`; any error is EIO to the
  client;
* ``cache`` (``NBD_CMD_CACHE``): a prefetch of the range;
* ``extents``: the manifest's zero blocks only, never the present-map (a
  missing block reported as a hole would make ``nbdcopy`` write zeros);
* read-only, no flush nor FUA, multi-conn (one image for every client);
* ``cleanup()``: close the image, which makes the map durable.
"""

import errno
import io
import json
import logging
import sys

import nbdkit

API_VERSION = 2

_spec = None
_image = None
LOG = logging.getLogger('oslo_transfer.lazy.nbdplugin')


def config(key, value):
    global _spec
    if key != 'spec':
        raise RuntimeError('unknown parameter %r: the only one is spec=FILE'
                           % key)
    # (this module's open() is nbdkit's callback)
    with io.open(value) as f:
        head = json.load(f)
    for path in reversed(head.get('sys_path') or []):
        if path not in sys.path:
            sys.path.insert(0, path)
    from oslo_transfer.lazy import nbd
    _spec = nbd.read_spec(value)
    level = {0: logging.WARNING, 1: logging.INFO}.get(
        _spec.get('verbose', 0), logging.DEBUG)
    logging.basicConfig(level=level, stream=sys.stderr,
                        format='oslo-transfer nbd: %(levelname)s '
                               '%(name)s: %(message)s')


def config_complete():
    if _spec is None:
        raise RuntimeError('spec=FILE is required')


def thread_model():
    return nbdkit.THREAD_MODEL_PARALLEL


def get_ready():
    global _image
    from oslo_transfer import exceptions
    from oslo_transfer.lazy import nbd
    try:
        _image = nbd.attach_from_spec(_spec, start=False)
    except (exceptions.TransferError, ValueError) as exc:
        print('oslo-transfer nbd: %s: %s' % (type(exc).__name__, exc),
              file=sys.stderr, flush=True)
        raise


def after_fork():
    from oslo_transfer.lazy import nbd
    nbd.start(_image)


def cleanup():
    global _image
    image, _image = _image, None
    if image is not None:
        image.close()


def open(readonly):
    return 1


def get_size(h):
    return _image.size


def can_write(h):
    return False


def can_flush(h):
    return False


def can_trim(h):
    return False


def can_zero(h):
    return False


def can_fast_zero(h):
    return False


def can_fua(h):
    return nbdkit.FUA_NONE


def can_multi_conn(h):
    return True


def can_cache(h):
    return nbdkit.CACHE_NATIVE


def is_rotational(h):
    return False


def can_extents(h):
    from oslo_transfer.lazy import nbd
    return nbd.has_zero_extents(_image)


def pread(h, buf, offset, flags):
    try:
        _image.readinto(buf, offset)
    except Exception as exc:
        LOG.warning('read of %d bytes at %d: %s: %s', len(buf), offset,
                    type(exc).__name__, exc)
        nbdkit.set_error(errno.EIO)
        # (logged above: nbdkit prints this one's short traceback)
        raise OSError(errno.EIO, 'read failed: %s' % type(exc).__name__) \
            from None


def cache(h, count, offset, flags):
    try:
        _image.prefetch(offset, count)
    except Exception as exc:
        nbdkit.set_error(errno.EIO)
        raise RuntimeError(str(exc)) from exc


def extents(h, count, offset, flags):
    from oslo_transfer.lazy import nbd
    zero = nbdkit.EXTENT_HOLE | nbdkit.EXTENT_ZERO
    return [(off, n, zero if is_zero else 0)
            for off, n, is_zero in nbd.zero_extents(_image, offset, count)]
