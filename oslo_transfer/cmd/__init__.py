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

Importing this package prepares the command's start-up, before anything
imports oslo.config:

* it defers the imports of ``rfc3986`` and ``netaddr``, which oslo.config
  makes for option types that neither the command nor the drivers use
  (:mod:`oslo_transfer.cmd._deferred_imports`: the trick, its measured
  reason and its limits);
* when the process is the ``oslo-transfer`` script, it keeps the garbage
  collector off until :func:`start_collecting` (the imports made dozens of
  collections that freed nothing).

The library itself never does either: a service's imports and collector
are its own business.
"""

import gc
import os
import sys

from oslo_transfer.cmd import _deferred_imports

_deferred_imports.install()


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
