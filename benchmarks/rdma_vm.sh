#!/usr/bin/env bash
# RDMA batch_get against perftest's ib_read_bw, both on Soft-RoCE (rxe0)
# inside the qemu VM that tests/vm/run.sh boots. Emulated: the device is the
# kernel's rdma_rxe on a veth pair under TCG, so this measures how much of
# what the device delivers corokv passes on, not RDMA speed.
#   benchmarks/rdma_vm.sh BUILD_DIR [SECONDS_PER_POINT] [ROUNDS]
# BUILD_DIR is a build tree configured with COROKV_ENABLE_RDMA=ON; rdma_bench
# is built in it first.
# Each round's figures go to benchmarks/results/rdma_vm.json.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
build=${1:?usage: benchmarks/rdma_vm.sh BUILD_DIR [SECONDS_PER_POINT] [ROUNDS]}
cmake --build "$build" --target rdma_bench
export COROKV_VM_APPEND="${COROKV_VM_APPEND:-} corokv_bench_seconds=${2:-3} corokv_bench_rounds=${3:-3}"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
bash "$here/../tests/vm/run.sh" --timeout 900 "$here/rdma_guest.sh" "$build/benchmarks/rdma_bench" | tee "$log" ||
  status=$?
mkdir -p "$here/results"
{
  echo '{"benchmark": "rdma_vm", "device": "Soft-RoCE rxe0 in a qemu TCG VM", "rounds": ['
  grep '^RESULT ' "$log" | tr -d '\r' | sed 's/^RESULT //' | sed '$!s/$/,/'
  echo ']}'
} >"$here/results/rdma_vm.json"
echo "JSON written to $here/results/rdma_vm.json"
exit "$status"
