#!/bin/bash
# Install everything the tests need and run the whole suite, unit and
# functional.  Debian 12, run as root (the functional tests start real
# nginx, vsftpd, sshd, tgtd, nfs-ganesha and BitTorrent peers on loopback).
#
#   tools/run-tests.sh [extra pytest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "tools/run-tests.sh: run as root (it installs Debian packages and" \
         "starts servers)" >&2
    exit 2
fi

# Debian packages: every package named in bindep.txt.
pkgs=$(sed -e 's/#.*//' bindep.txt | awk 'NF {print $1}' | sort -u)
missing=$(for p in $pkgs; do
    dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' || echo "$p"
done)
if [ -n "$missing" ]; then
    echo "installing Debian packages: $missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q -o DPkg::Lock::Timeout=300
    # shellcheck disable=SC2086
    apt-get install -y -q -o DPkg::Lock::Timeout=300 $missing
fi

# Debian 12's own python3 is "externally managed" (PEP 668): pip refuses
# to install into it unless told to.  This is a test machine, so the
# packages go into the system Python; in a venv or a pyenv Python the
# variable changes nothing.
export PIP_BREAK_SYSTEM_PACKAGES=1
export PIP_ROOT_USER_ACTION=ignore
python3 -m pip install -q -r requirements.txt -r test-requirements.txt
python3 -m pip install -q -e .

exec python3 -m pytest -p no:cacheprovider --timeout=600 -q -rfE \
    tests/unit tests/functional "$@"
