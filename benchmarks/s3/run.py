#!/usr/bin/env python3
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

"""S3 download and upload: ``oslo-transfer copy`` beside ``aws s3 cp`` and
boto3's transfer manager, against moto_server on 127.0.0.1.

Rows, per direction, on one object of ``--size`` (default 512M):

* ``oslo-transfer``: verified (``--checksum sha256:...``) and, for the
  download, durable (fsync before the rename);
* ``aws s3 cp`` + ``openssl dgst -sha256`` (+ ``sync FILE`` for the
  download): the same guarantees as ours;
* ``aws s3 cp`` bare; ``boto3 download_file``/``upload_file`` bare
  (boto3's transfer manager, 10 threads, 8 MiB parts).

moto's server is the bottleneck here (one Python process serving all
tools); the rows compare like with like on the same server.  Each tool
runs ``--repeat`` times (default 3), alternating the order; medians.
Each upload goes to a freshly started moto (it slows down as uploads
pile up in it).
Results: a table on stdout and ``benchmarks/results/s3.json``.

Usage (the s3 entry point must be installed in this interpreter)::

    python benchmarks/s3/run.py --size 512M
"""

import argparse
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))))

from benchmarks import benchlib  # noqa: E402
from oslo_transfer.testing import servers  # noqa: E402

BOTO3 = '''
import sys, boto3
from boto3.s3.transfer import TransferConfig
c = boto3.client('s3', endpoint_url=sys.argv[1], region_name='us-east-1')
op, bucket, key, path = sys.argv[2:6]
if op == 'get':
    c.download_file(bucket, key, path, Config=TransferConfig())
else:
    c.upload_file(path, bucket, key, Config=TransferConfig())
'''


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--size', default='512M')
    p.add_argument('--repeat', type=int, default=3)
    args = p.parse_args(argv)
    size = benchlib.parse_size(args.size)
    # Debian's awscli (bindep.txt) rather than a pip one earlier on PATH.
    aws = '/usr/bin/aws' if os.access('/usr/bin/aws', os.X_OK) else \
        benchlib.require('aws')
    openssl = benchlib.require('openssl')
    ours = benchlib.oslo_transfer_cmd()
    work = tempfile.mkdtemp(prefix='bench-s3-')
    try:
        return _measure(args, size, aws, openssl, ours, work)
    finally:
        # the source, the copies and moto's log: a GiB or more
        shutil.rmtree(work, ignore_errors=True)


def _measure(args, size, aws, openssl, ours, work) -> int:
    port = servers.free_port()
    moto = servers.Process([sys.executable, '-m', 'moto.server', '-H',
                            '127.0.0.1', '-p', port], port=port,
                           log_path=os.devnull, startup_timeout=60)
    env = dict(os.environ, AWS_ACCESS_KEY_ID='bench',
               AWS_SECRET_ACCESS_KEY='bench', AWS_DEFAULT_REGION='us-east-1')
    os.environ.update(env)
    endpoint = 'http://127.0.0.1:%d' % port
    src = benchlib.random_file(os.path.join(work, 'src.raw'), size)
    digest = benchlib.sha256_of(src)
    conf = os.path.join(work, 'bench.conf')
    with open(conf, 'w') as f:
        f.write('[oslo_transfer]\nstate_path = %s\n[oslo_transfer_s3]\n'
                'endpoint_url = %s\naccess_key_id = bench\n'
                'secret_access_key = bench\n' % (work, endpoint))
    dest = os.path.join(work, 'dest.raw')
    with moto:
        import boto3
        c = boto3.client('s3', endpoint_url=endpoint, region_name='us-east-1')
        c.create_bucket(Bucket='bench')
        c.upload_file(src, 'bench', 'obj')
        url = 's3://bench/obj'
        sh = ['sh', '-c']
        get = {
            'oslo-transfer': ours + ['copy', url, dest, '--checksum',
                                     'sha256:' + digest, '--config-file',
                                     conf],
            'aws+sha256+sync': sh + [
                '"$0" s3 cp --quiet --endpoint-url %s %s %s && "$1" dgst '
                '-sha256 %s && sync %s' % (endpoint, url, dest, dest, dest),
                aws, openssl],
            'aws s3 cp': [aws, 's3', 'cp', '--quiet', '--endpoint-url',
                          endpoint, url, dest],
            'boto3 download_file': [sys.executable, '-c', BOTO3, endpoint,
                                    'get', 'bench', 'obj', dest],
        }

        def before(_name):
            for path in (dest, dest + '.part', dest + '.part.ctl'):
                if os.path.exists(path):
                    os.unlink(path)
            benchlib.sync()

        def check(name, _run):
            if benchlib.sha256_of(dest) != digest:
                sys.exit('%s: wrong bytes' % name)

        runs = benchlib.alternate(get, args.repeat, before, check)
        down = benchlib.summarize('S3 download, %s' % args.size, runs, size,
                                  'oslo-transfer')
        put = {
            'oslo-transfer': ours + ['copy', src, 's3://bench/up',
                                     '--checksum', 'sha256:' + digest,
                                     '--config-file', conf],
            'sha256+aws': sh + [
                '"$1" dgst -sha256 %s && "$0" s3 cp --quiet --endpoint-url '
                '%s %s s3://bench/up' % (src, endpoint, src), aws, openssl],
            'aws s3 cp': [aws, 's3', 'cp', '--quiet', '--endpoint-url',
                          endpoint, src, 's3://bench/up'],
            'boto3 upload_file': [sys.executable, '-c', BOTO3, endpoint,
                                  'put', 'bench', 'up', src],
        }

        def check_up(name, _run):
            head = c.head_object(Bucket='bench', Key='up')
            if head['ContentLength'] != size:
                sys.exit('%s: wrong size' % name)

        def before_up(_name):
            # Every tool uploads to an absent key of a fresh server: an
            # object already there would let ours keep it
            # (if_exists="verify") and send nothing, and moto slows down
            # as uploads pile up in it (measured 2026-12-07: aws s3 cp
            # went from 7.1 s to 26.3 s over five rounds on one server).
            moto.restart()
            c.create_bucket(Bucket='bench')
            benchlib.sync()

        runs = benchlib.alternate(put, args.repeat, before_up, check_up)
        up = benchlib.summarize('S3 upload, %s' % args.size, runs, size,
                                'oslo-transfer')
    benchlib.save('s3', {'download': down, 'upload': up})
    return 0


if __name__ == '__main__':
    sys.exit(main())
