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

"""The ``oslo-transfer`` command.

Importing this package defers the imports of ``rfc3986`` and
``netaddr``: oslo.config imports them for its URI and IP address option
types, which neither the command nor the drivers use.  Building
rfc3986's regular expressions took 45-50 ms of every run of the command
(a third of its imports), netaddr another 10-14 ms.  A stand-in module
takes its place in ``sys.modules`` and imports the real one the first
time anything asks it for an attribute.  (``importlib.util.LazyLoader``
does not help: a plain ``import`` of a lazily loaded module reads its
``__spec__`` and so loads it.)  The library itself never does this: a
service's imports are its own business.
"""

import gc
import importlib
import importlib.util
import os
import sys
import types

_DEFERRED = ('rfc3986', 'netaddr')


class _Deferred(types.ModuleType):
    """Stands in for a module until one of its attributes is wanted."""

    def __getattr__(self, attr):
        # Only called for what the stand-in does not have (its __spec__,
        # __name__ and so on it has, so that ``import`` leaves it alone).
        if sys.modules.get(self.__name__) is self:
            del sys.modules[self.__name__]
        real = importlib.import_module(self.__name__)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def _defer(name):
    if name in sys.modules:
        return
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return
    if spec is None:
        return
    module = _Deferred(name)
    module.__spec__ = spec
    sys.modules[name] = module


for _name in _DEFERRED:
    _defer(_name)


def _is_the_command():
    argv = getattr(sys, 'argv', None) or ['']
    return os.path.basename(argv[0]) == 'oslo-transfer'


#: True while this module keeps the collector off (see the module's doc)
_COLLECTOR_PAUSED = _is_the_command() and gc.isenabled()
if _COLLECTOR_PAUSED:
    gc.disable()


def start_collecting():
    """End of start-up: freeze what it made, turn the collector back on."""
    global _COLLECTOR_PAUSED
    if _COLLECTOR_PAUSED:
        _COLLECTOR_PAUSED = False
        gc.freeze()
        gc.enable()
