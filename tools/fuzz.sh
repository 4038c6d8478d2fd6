#!/bin/bash
# Long fuzzing runs of the property tests (hypothesis), not part of CI.
#
#   tools/fuzz.sh [MINUTES] [pytest -k EXPRESSION]
#
# CI runs every property test with the seeded, bounded "ci" profile
# (tests/unit/conftest.py: 200 examples, fixed seed).  This runs them
# again and again with the "fuzz" profile (20,000 examples each, a new
# random seed every round) until MINUTES (default 60) have passed, and
# stops at the first failure.  Hypothesis prints the failing example and
# a @reproduce_failure line; turn it into a plain regression test before
# fixing the bug.
set -euo pipefail
cd "$(dirname "$0")/.."

minutes=${1:-60}
expr=${2:-}
end=$(( $(date +%s) + minutes * 60 ))
# every unit test module that holds a property test
mapfile -t modules < <(grep -l 'hypothesis.given' tests/unit/*.py | sort)
if [ "${#modules[@]}" -eq 0 ]; then
    echo "tools/fuzz.sh: no property tests found" >&2
    exit 2
fi
export HYPOTHESIS_PROFILE=fuzz
round=0
while [ "$(date +%s)" -lt "$end" ]; do
    round=$((round + 1))
    echo "== round $round ($(date -u +%H:%M:%S)): ${modules[*]}"
    python3 -m pytest -q -p no:cacheprovider -p no:warnings -x \
        ${expr:+-k "$expr"} "${modules[@]}"
done
echo "tools/fuzz.sh: $round rounds, no failure"
