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

"""Image to volume: ``oslo-transfer copy IMG /dev/loopN`` beside
``qemu-img convert`` and ``dd``.

A raw image of random bytes (``--size``) is written onto a loop device
(over a sparse file on the same disk, ``--direct-io=on`` so that the
device writes through to the disk as a real one does), as Cinder does
when it creates a volume from an image.  Rows:

* ``oslo-transfer copy --checksum sha256:...``: written in place with
  ``O_DIRECT``, hashed while streaming, ``fsync``'d, then read back from
  the device and hashed again (verified and durable);
* ``oslo-transfer copy`` without a checksum (the sha256 of the stream is
  still computed and reported; durable; no read back), and the same with
  ``default_digest = none`` (no hash at all: like for like with the bare
  tools);
* ``qemu-img convert -O raw -n -t none IMG DEV && sync`` (what Cinder runs
  today), and the same ``&& head -c SIZE DEV | openssl dgst -sha256``
  (like for like with our verified row: the device read back and hashed);
* ``dd if=IMG of=DEV bs=4M oflag=direct conv=fsync``, bare and with the
  same read back and hash.

Each tool runs ``--repeat`` times (>= 3), alternating the order; dirty
pages are flushed before every run (untimed) and the device's first
``--size`` bytes are checked against the image after it (untimed).
Results: a table of medians (wall time, peak RSS), and
``benchmarks/results/volume.json``.

Needs root (losetup).  Usage::

    python benchmarks/volume/run.py --size 1G
"""

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

from benchmarks import benchlib  # noqa: E402

MiB = benchlib.MiB


def _device_prefix_sha256(dev, size):
    h = hashlib.sha256()
    with open(dev, 'rb') as f:
        left = size
        while left:
            b = f.read(min(left, 4 * MiB))
            if not b:
                break
            h.update(b)
            left -= len(b)
    return h.hexdigest()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', default='1G')
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--workdir', default=None,
                   help='where the image and the loop device\'s backing '
                        'file go (default: a temporary folder under '
                        '/var/tmp)')
    args = p.parse_args(argv)
    if args.repeat < 3:
        p.error('--repeat must be at least 3')
    size = benchlib.parse_size(args.size)
    losetup = benchlib.require('losetup')
    qemu_img = benchlib.require('qemu-img')
    openssl = benchlib.require('openssl')
    ours = benchlib.oslo_transfer_cmd()
    work = tempfile.mkdtemp(prefix='bench-volume-',
                            dir=args.workdir or '/var/tmp')
    dev = None
    try:
        image = benchlib.random_file(os.path.join(work, 'image.raw'), size)
        digest = benchlib.sha256_of(image)
        backing = os.path.join(work, 'volume.img')
        with open(backing, 'wb') as f:
            f.truncate(size + 64 * MiB)
        dev = subprocess.run([losetup, '--find', '--show', '--direct-io=on',
                              backing], check=True, capture_output=True,
                             text=True).stdout.strip()
        state = os.path.join(work, 'state')
        conf = os.path.join(work, 'bench.conf')
        with open(conf, 'w') as f:
            f.write('[oslo_transfer]\nstate_path = %s\n' % state)
        bare = os.path.join(work, 'bare.conf')
        with open(bare, 'w') as f:
            f.write('[oslo_transfer]\nstate_path = %s\ndefault_digest = '
                    'none\n' % state)
        reread = 'head -c %d %s | %s dgst -sha256' % (size, dev, openssl)
        qemu = '%s convert -O raw -n -t none %s %s && sync' % (
            qemu_img, image, dev)
        dd = 'dd if=%s of=%s bs=4M oflag=direct conv=fsync status=none' % (
            image, dev)
        tools = {
            'oslo-transfer --checksum': ours + [
                '--config-file', conf, 'copy', '--no-progress',
                '--checksum', 'sha256:' + digest, image, dev],
            'oslo-transfer': ours + ['--config-file', conf, 'copy',
                                     '--no-progress', image, dev],
            'oslo-transfer, no digest': ours + [
                '--config-file', bare, 'copy', '--no-progress', image, dev],
            'qemu-img && sync && sha256': ['sh', '-c', qemu + ' && ' +
                                           reread],
            'qemu-img && sync': ['sh', '-c', qemu],
            'dd direct && sha256': ['sh', '-c', dd + ' && ' + reread],
            'dd direct': ['sh', '-c', dd],
        }

        def before(name):
            benchlib.sync()

        def check(name, run):
            got = _device_prefix_sha256(dev, size)
            if got != digest:
                sys.exit('%s left %s on the device, expected %s'
                         % (name, got, digest))
            if 'sha256' in name and digest not in run.stdout:
                sys.exit('%s did not print the digest: %s'
                         % (name, run.stdout[-500:]))

        print('image %s (%s) onto %s' % (image, benchlib.human(size), dev))
        runs = benchlib.alternate(tools, args.repeat, before=before,
                                  check=check)
        title = 'raw image (%s) onto a loop device' % benchlib.human(size)
        rows = benchlib.summarize(title, runs, size,
                                  'qemu-img && sync && sha256')
        benchlib.save('volume', {title: rows})
    finally:
        if dev:
            subprocess.run([losetup, '--detach', dev], check=False)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == '__main__':
    sys.exit(main())
