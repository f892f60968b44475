#!/usr/bin/env bash
# The RDMA tests on real verbs: boots Debian's kernel in a qemu VM with
# Soft-RoCE (rxe0 on a veth pair, tests/vm/run.sh) and runs
# tests/rdma/guest.sh there with the test binary, corokv-master and
# corokv-node of a build tree made with COROKV_ENABLE_RDMA=ON.
#   tests/rdma/vm.sh BUILD_DIR
# Exits with the guest's status. ctest runs it as rdma.vm.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: tests/rdma/vm.sh BUILD_DIR}
exec bash "$here/../vm/run.sh" --timeout 290 "$here/guest.sh" \
  "$build/tests/corokv_rdma_tests" "$build/examples/corokv-master" "$build/examples/corokv-node"
