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

"""One-call functions for scripts, over a process-wide default Transfer.

Each function takes an optional ``conf`` (an ``oslo_config.cfg.ConfigOpts``);
without one, a private configuration with the defaults is used, so no
configuration file is needed.  Services should build their own
:class:`~oslo_transfer.transfer.Transfer` instead.
"""

import threading

from oslo_transfer import transfer as transfer_mod

__all__ = ['copy', 'open', 'upload', 'plan', 'attach']

_default = None
_lock = threading.Lock()


def _transfer(conf=None) -> transfer_mod.Transfer:
    global _default
    if conf is not None:
        return transfer_mod.Transfer(conf)
    with _lock:
        if _default is None:
            _default = transfer_mod.Transfer()
        return _default


def copy(source, dest, checksum=None, hints=None, progress=None, conf=None,
         **kwargs):
    """Copy ``source`` to ``dest``; see :meth:`Transfer.copy`."""
    t = _transfer(conf)
    try:
        return t.copy(source, dest, checksum=checksum, hints=hints,
                      progress=progress, **kwargs)
    finally:
        if conf is not None:
            t.close()


def open(source, offset=0, length=None, checksum=None, hints=None,
         conf=None):  # noqa: A001 shadows the builtin on purpose
    """Open ``source`` for streaming reads; see :meth:`Transfer.open`."""
    t = _transfer(conf)
    try:
        reader = t.open(source, offset=offset, length=length,
                        checksum=checksum, hints=hints)
    except BaseException:
        if conf is not None:
            t.close()
        raise
    if conf is not None:
        reader.owner = t  # closed with the reader
    return reader


def upload(data, dest, size=None, checksum=None, conf=None, **kwargs):
    """Upload ``data`` to ``dest``; see :meth:`Transfer.upload`."""
    t = _transfer(conf)
    try:
        return t.upload(data, dest, size=size, checksum=checksum, **kwargs)
    finally:
        if conf is not None:
            t.close()


def plan(source, dest=None, hints=None, conf=None):
    """Explain which driver would be used; moves nothing."""
    t = _transfer(conf)
    try:
        return t.plan(source, dest, hints=hints)
    finally:
        if conf is not None:
            t.close()


def attach(source, cache, checksum=None, hints=None, manifest=None,
           prefetch=True, profile=None, conf=None):
    """A lazy image of ``source``; see :meth:`Transfer.attach`."""
    t = _transfer(conf)
    try:
        image = t.attach(source, cache, checksum=checksum, hints=hints,
                         manifest=manifest, prefetch=prefetch,
                         profile=profile)
    except BaseException:
        if conf is not None:
            t.close()
        raise
    if conf is not None:
        image.owner = t  # closed with the image
    return image
