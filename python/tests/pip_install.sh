#!/usr/bin/env bash
# The pip recipe of docs/guide/python.md ("Building it"), as written: a virtual environment on Debian's
# Python, `pip install --no-build-isolation --no-index` of the source tree
# (nothing downloaded), then the installed package imported and used.
#   python/tests/pip_install.sh SOURCE_DIR WORK_DIR
set -euo pipefail
src=$1 work=$2
rm -rf "$work"
mkdir -p "$work"
/usr/bin/python3 -m venv --system-site-packages "$work/venv"
"$work/venv/bin/pip" install --quiet --no-build-isolation --no-index "$src"
cd "$work"  # not the source tree: the installed package is imported
"$work/venv/bin/python" - <<'PY'
import corokv, corokv.mooncake
assert corokv.__file__.startswith(__import__("sys").prefix), corokv.__file__
with corokv.Store(segment_size=1 << 20) as kv:
    assert kv.batch_put(["k"], [b"installed"]) == [corokv.Status.SUCCESS]
    assert bytes(kv.batch_get(["k"])[0].data) == b"installed"
print("pip install: ok,", corokv.__file__)
PY
