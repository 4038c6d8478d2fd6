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

"""Run one ``oslo_transfer.copy`` in a child process (for kill tests).

``python copy_child.py SRC DEST [--checksum C] [--segments N]
[--config-file F]`` prints the Result as one JSON object on success, or
``{"error": CLASS, "message": ...}`` and exits 1 on a TransferError.  The
tests use it, rather than the CLI, where they need a process to SIGKILL or
two processes racing for one destination.
"""

import argparse
import json
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument('source')
    p.add_argument('dest')
    p.add_argument('--checksum')
    p.add_argument('--segments', type=int)
    p.add_argument('--config-file')
    args = p.parse_args(argv)

    from oslo_config import cfg

    import oslo_transfer
    from oslo_transfer import exceptions

    conf = None
    if args.config_file:
        conf = cfg.ConfigOpts()
        conf(args=[], default_config_files=[args.config_file],
             default_config_dirs=[])
    try:
        r = oslo_transfer.copy(args.source, args.dest,
                               checksum=args.checksum,
                               segments=args.segments, conf=conf)
    except exceptions.TransferError as exc:
        print(json.dumps({'error': type(exc).__name__,
                          'message': str(exc)}))
        return 1
    print(json.dumps(r.to_dict()))
    return 0


if __name__ == '__main__':
    sys.exit(main())
