#!/bin/sh
# Runs inside the VM that tests/rdma/vm.sh boots (busybox sh, root, rxe0 up
# on a veth): the RDMA tests on real verbs.
#   1. corokv_rdma_tests: cluster stores in one process over rxe0
#   2. corokv-master and corokv-node processes: a put and a get carried by
#      RDMA alone (checked through each node's counters), the port taken
#      down under a reader (the device's event fails its keys) and back up,
#      and a serving node killed with SIGKILL while another reads from it.
# Exits non-zero if anything failed.
cd /payload || exit 1
# shellcheck source=SCRIPTDIR/../vm/guest_lib.sh
. ./guest_lib.sh
status=0
fail() {
  echo "FAILED: $*"
  status=1
}

echo "== corokv_rdma_tests"
./corokv_rdma_tests || fail "corokv_rdma_tests"

field() { grep -o "\"$2\":[0-9]*" "$1" | head -n 1 | cut -d: -f2; }

echo "== processes: a master, a node serving 128 MiB, writers and readers over RDMA"
./corokv-master --listen 127.0.0.1:0 --ready-file /tmp/master.json &
master_pid=$!
wait_for /tmp/master.json || fail "master never ready"
master=127.0.0.1:$(field /tmp/master.json port)
./corokv-node --master "$master" --segment-mib 128 --no-shm --rdma-device rxe0 --ready-file /tmp/owner.json &
owner_pid=$!
wait_for /tmp/owner.json || fail "serving node never ready"

# Only the RDMA lane may carry bytes: the counters must say it did, all of them.
node() { ./corokv-node --master "$master" --segment-mib 0 --no-shm --rdma-device rxe0 --lanes rdma "$@"; }
node --workload put --keys 64 --value-size 65536 --require-all >/tmp/put.json || fail "put over RDMA"
cat /tmp/put.json
grep -q '"bytes_by_path":{[^}]*"rdma":4194304' /tmp/put.json || fail "put: RDMA did not carry 4 MiB"
grep -q '"bytes_by_path":{[^}]*"tcp":0}' /tmp/put.json || fail "put: TCP carried bytes"
node --workload get --keys 64 --value-size 65536 --require-all >/tmp/get.json || fail "get over RDMA, read back by another node"
cat /tmp/get.json
grep -q '"bytes_by_path":{[^}]*"rdma":4194304' /tmp/get.json || fail "get: RDMA did not carry 4 MiB"
grep -q '"bytes_by_path":{[^}]*"tcp":0}' /tmp/get.json || fail "get: TCP carried bytes"
grep -q '"corrupt":0' /tmp/get.json || fail "get: corrupt bytes"

echo "== the port goes down while a reader reads 32 MiB, and comes back"
node --workload put --keys 32 --value-size 1048576 --prefix port- --batch 32 --require-all >/tmp/port_put.json ||
  fail "put of 32 MiB"
node --workload get --keys 32 --value-size 1048576 --prefix port- --batch 32 >/tmp/port_down.json 2>/tmp/port_down.err &
reader_pid=$!
# Down only once the reader has opened the device (it says so when its store
# is made): a node that asks for rxe0 while the port is down refuses to start.
i=0
until grep -q 'a client of' /tmp/port_down.err; do
  i=$((i + 1))
  [ $i -gt 600 ] && { fail "reader never started"; break; }
  sleep 0.05
done
/bin/ip link set v0 down
wait "$reader_pid"
reader_rc=$?
cat /tmp/port_down.err /tmp/port_down.json
[ "$reader_rc" -eq 0 ] || [ "$reader_rc" -eq 3 ] || fail "reader exit $reader_rc with the port down"
grep -q '"corrupt":0' /tmp/port_down.json || fail "port down: corrupt bytes"
if [ "$reader_rc" -eq 3 ]; then
  # It failed because the device said so, not by a timeout of its own.
  grep -q '"device_events":[1-9]' /tmp/port_down.json || fail "port down: no device event reached the lane"
fi
/bin/ip link set v0 up
# Up again once the port is active, its GID 0 is back and the link-local
# address it is made of has finished duplicate address detection (while it
# is tentative, a queue pair cannot be addressed to it).
zero_gid=0000:0000:0000:0000:0000:0000:0000:0000
i=0
until grep -q ACTIVE /sys/class/infiniband/rxe0/ports/1/state &&
  [ "$(cat /sys/class/infiniband/rxe0/ports/1/gids/0)" != "$zero_gid" ] &&
  /bin/ip -6 addr show dev v0 | grep -q 'inet6 fe80' &&
  ! /bin/ip -6 addr show dev v0 | grep -q tentative; do
  i=$((i + 1))
  [ $i -gt 200 ] && { fail "rxe0 never came back"; break; }
  sleep 0.1
done
node --workload get --keys 32 --value-size 1048576 --prefix port- --batch 32 --require-all >/tmp/port_up.json ||
  fail "get after the port came back"
cat /tmp/port_up.json
grep -q '"bytes_by_path":{[^}]*"rdma":33554432' /tmp/port_up.json || fail "port up: RDMA did not carry 32 MiB"

echo "== the serving node killed while a reader reads 48 MiB from it"
node --workload put --keys 48 --value-size 1048576 --prefix big- --batch 48 --require-all >/tmp/big.json ||
  fail "put of 48 MiB"
started=$(date +%s)
node --workload get --keys 48 --value-size 1048576 --prefix big- --batch 48 >/tmp/killed.json &
reader_pid=$!
sleep 0.6  # past start-up and the metadata query: into the transfer (about a second here)
kill -9 "$owner_pid"
# The reader must end by itself, well before the VM's timeout.
i=0
while kill -0 "$reader_pid" 2>/dev/null; do
  i=$((i + 1))
  if [ $i -gt 600 ]; then
    fail "reader still running 60 s after the serving node died"
    kill -9 "$reader_pid"
    break
  fi
  sleep 0.1
done
wait "$reader_pid"
reader_rc=$?
echo "reader exit $reader_rc after $(($(date +%s) - started)) s"
cat /tmp/killed.json
# 0 if it finished first, else per-key errors; never a whole-batch failure or a wrong byte.
[ "$reader_rc" -eq 0 ] || [ "$reader_rc" -eq 3 ] || fail "reader exit $reader_rc"
grep -q '"corrupt":0' /tmp/killed.json || fail "reader: corrupt bytes"

kill "$master_pid" 2>/dev/null
wait 2>/dev/null
exit $status
