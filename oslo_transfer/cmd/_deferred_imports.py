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

"""The command defers two imports that oslo.config makes: a measured trick.

``oslo_config.types`` imports ``rfc3986`` (for URI options) and
``netaddr`` (for IP address options) when ``oslo_config.cfg`` is imported.
Neither the command nor any driver has such an option, yet building
rfc3986's regular expressions and loading netaddr cost every run of
``oslo-transfer`` 40-60 ms of CPU.  Our own code cannot make oslo.config's
imports lazy, so :func:`install` puts a stand-in module for each into
``sys.modules``; the stand-in imports the real module the first time
anything asks it for an attribute, and from then on is a copy of it
(``sys.modules`` holds the real one).  ``importlib.util.LazyLoader`` does
not help: a plain ``import`` of a lazily loaded module reads its
``__spec__`` and so loads it.

Measured on the CI's 2-core VM (2026-12-07; hyperfine, 20 rounds per
variant alternated, 10 runs a round, 3 for 1 GiB; medians), the command
with the stand-ins against the same command without them:

=======================  =======  =======  =====
``oslo-transfer``        with     without  saved
=======================  =======  =======  =====
``drivers``              0.285 s  0.328 s  13 %
``copy``, 4 KiB file     0.242 s  0.340 s  29 %
``copy``, 1 GiB file     1.449 s  1.481 s   2 %
=======================  =======  =======  =====

The machine was busy with other work: interquartile ranges 0.226-0.315
against 0.284-0.359 s, 0.195-0.343 against 0.273-0.448 s, 1.34-1.54
against 1.39-1.68 s; CPU time, which that work disturbs less, 0.27
against 0.32 s, 0.20 against 0.26 s, 0.71 against 0.74 s.  A first run
of 10 rounds gave 9 %, 15 % and noise.  The bar for keeping a trick like
this one is 10 % of wall time: the command's short runs (``drivers``,
``plan``, small copies, ``make-torrent``) clear it; an image copy does not
need it, and does not suffer from it either.

Only the command installs the stand-ins (the ``oslo_transfer.cmd``
package does, before anything imports oslo.config); the library never
does: a service's imports are its own business.
"""

import importlib
import importlib.util
import sys
import types

__all__ = ['DEFERRED', 'DeferredModule', 'defer', 'install']

#: the modules the command defers
DEFERRED = ('rfc3986', 'netaddr')


class DeferredModule(types.ModuleType):
    """Stands in for a module until one of its attributes is wanted."""

    def __getattr__(self, attr):
        # Only called for what the stand-in does not have (its __spec__,
        # __name__ and so on it has, so that ``import`` leaves it alone).
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def defer(name: str) -> bool:
    """Put a :class:`DeferredModule` for ``name`` into ``sys.modules``.

    :returns: False, leaving everything as it is, when ``name`` is imported
        already or cannot be found.
    """
    if name in sys.modules:
        return False
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    module = DeferredModule(name)
    module.__spec__ = spec
    sys.modules[name] = module
    return True


def install(names=DEFERRED) -> list:
    """Defer each of ``names``; returns those that were deferred."""
    return [name for name in names if defer(name)]
