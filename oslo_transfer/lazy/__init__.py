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

"""Lazy images: on-demand reads, a copy-on-read cache, prefetch, NBD.

:meth:`Transfer.attach <oslo_transfer.transfer.Transfer.attach>` returns a
:class:`~oslo_transfer.lazy.image.LazyImage`; ``oslo-transfer nbd``
exports one over NBD through nbdkit's Python plugin
(:mod:`oslo_transfer.lazy.nbd`).  The modules, by job:

* :mod:`~oslo_transfer.lazy.image`: the image, its reads and completion;
* :mod:`~oslo_transfer.lazy.fetch`: ranged reads of runs of blocks;
* :mod:`~oslo_transfer.lazy.prefetch`: the background prefetch;
* :mod:`~oslo_transfer.lazy.cache` and
  :mod:`~oslo_transfer.lazy.presentmap`: the local cache and its map;
* :mod:`~oslo_transfer.lazy.manifest`: what blocks are verified against;
* :mod:`~oslo_transfer.lazy.profile`: access profiles of a boot;
* :mod:`~oslo_transfer.lazy.nbd`: the export's spec file and the process
  model, for the command and for
  :mod:`~oslo_transfer.lazy.nbdplugin`, the script nbdkit runs.

This package uses the engine (locks, part files, the journal, the
scheduler) and the contract; it is reached through the public face
(``Transfer.attach``), and the command reaches :mod:`~oslo_transfer.lazy.
nbd` for the export.
"""
