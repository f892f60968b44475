#!/usr/bin/env bash
# Boot Debian's kernel under qemu (TCG) with a generated initramfs that brings
# up Soft-RoCE (rxe0 over a veth pair), run GUEST_SCRIPT inside as
# /payload/guest.sh, and exit with its status.
#
# Usage: run.sh [--timeout SECONDS] GUEST_SCRIPT [FILE...]
#   FILE...  extra payload files, available in the guest as /payload/<basename>
#            (guest_lib.sh, with wait_listen and wait_for, is always there)
#            (ELF files get their shared libraries copied too).
# Exit: the guest script's status; 124 on timeout; 125 if the guest never
#       reported a status (boot or setup failure); 2 on usage errors.
# Environment: COROKV_VM_APPEND  extra kernel command-line arguments.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
log() { echo "run.sh: $*" >&2; }
usage() { echo "usage: $0 [--timeout SECONDS] GUEST_SCRIPT [FILE...]" >&2; exit 2; }

timeout=300
while [ $# -gt 0 ]; do
  case $1 in
    --timeout) [ $# -ge 2 ] || usage; timeout=$2; shift 2 ;;
    --timeout=*) timeout=${1#--timeout=}; shift ;;
    -h|--help) usage ;;
    --) shift; break ;;
    -*) usage ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || usage
case $timeout in ''|*[!0-9]*) log "bad --timeout '$timeout'"; usage ;; esac
guest=$1
shift
[ -f "$guest" ] || { log "guest script not found: $guest"; exit 2; }

# --- prerequisites ---------------------------------------------------------
# Only touch apt when something is missing, so repeated ctest runs stay fast
# and offline-capable.
pkgs=(qemu-system-x86 linux-image-amd64 busybox-static rdma-core perftest
      iproute2 ibverbs-providers)
missing=()
for p in "${pkgs[@]}"; do
  if [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" != "install ok installed" ]; then
    missing+=("$p")
  fi
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" -eq 0 ] || { log "missing packages (need root to install): ${missing[*]}"; exit 125; }
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

vmlinuz=$(find /boot -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
[ -n "$vmlinuz" ] || { log "no /boot/vmlinuz-*"; exit 125; }
export KVER=${vmlinuz#/boot/vmlinuz-}   # make_initramfs.sh ships this kernel's modules
[ -d "/lib/modules/$KVER" ] || { log "no /lib/modules/$KVER"; exit 125; }

# --- build the initramfs ---------------------------------------------------
work=$(mktemp -d "${TMPDIR:-/tmp}/corokv-vm.XXXXXX")
qpid=
tailpid=
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
  # Never leave qemu behind, whatever way we exit.
  if [ -n "$qpid" ] && kill -0 "$qpid" 2>/dev/null; then
    kill -KILL "$qpid" 2>/dev/null || true
    wait "$qpid" 2>/dev/null || true
  fi
  if [ -n "$tailpid" ]; then
    kill "$tailpid" 2>/dev/null || true
    wait "$tailpid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

cp "$guest" "$work/guest.sh"
"$here/make_initramfs.sh" "$work/initrd.cpio.gz" "$work/stage" "$work/guest.sh" "$here/guest_lib.sh" "$@" >&2
rm -rf "$work/stage"

# --- boot --------------------------------------------------------------------
now_ms() { local t=${EPOCHREALTIME//[!0-9]/}; echo $((t / 1000)); }
secs() { printf '%d.%02d' $(($1 / 1000)) $(($1 % 1000 / 10)); }

console=$work/console.log
: >"$console"
append="console=ttyS0 panic=-1 loglevel=4 ${COROKV_VM_APPEND:-}"
log "booting $vmlinuz (timeout ${timeout}s)"
t0=$(now_ms)
# setpriv --pdeathsig: qemu dies even if this script is SIGKILLed (ctest timeout).
# stdin from /dev/null: -nographic would otherwise put a terminal in raw mode.
setpriv --pdeathsig KILL -- \
  qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 2048 \
    -nographic -no-reboot -nic none \
    -kernel "$vmlinuz" -initrd "$work/initrd.cpio.gz" -append "$append" \
    </dev/null >"$console" 2>&1 &
qpid=$!
# Stream the console so ctest logs show it live; drop CRs and the SeaBIOS
# terminal escapes (one disables line wrap on the caller's terminal). The
# reader also timestamps the readiness marker, which a poll loop could miss.
tail -n +1 -f --pid="$qpid" "$console" \
  | sed -u -e 's/\r//g' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' \
  | while IFS= read -r line || [ -n "$line" ]; do
      printf '%s\n' "$line"
      case $line in
        *COROKV_VM_READY*) [ -s "$work/ready_ms" ] || now_ms >"$work/ready_ms" ;;
      esac
    done &
tailpid=$!

exit_seen_ms=
timed_out=
deadline=$((t0 + timeout * 1000))
while kill -0 "$qpid" 2>/dev/null; do
  now=$(now_ms)
  if [ -z "$exit_seen_ms" ] && grep -q 'COROKV_VM_EXIT=' "$console"; then exit_seen_ms=$now; fi
  # Status already reported but poweroff hung: don't wait for the timeout.
  if [ -n "$exit_seen_ms" ] && [ $((now - exit_seen_ms)) -gt 15000 ]; then
    log "guest reported status but did not power off; killing qemu"
    break
  fi
  if [ "$now" -ge "$deadline" ]; then timed_out=1; break; fi
  sleep 0.1
done
if kill -0 "$qpid" 2>/dev/null; then kill -KILL "$qpid" 2>/dev/null || true; fi
qrc=0
{ wait "$qpid"; } 2>/dev/null || qrc=$?  # silence bash's "Killed" job notice
qpid=
wait "$tailpid" 2>/dev/null || true
tailpid=
t1=$(now_ms)
ready_ms=$(cat "$work/ready_ms" 2>/dev/null || true)

rc=$(tr -d '\r' <"$console" | sed -n 's/.*COROKV_VM_EXIT=\([0-9][0-9]*\).*/\1/p' | tail -n 1)
if [ -n "$ready_ms" ]; then
  log "kernel $KVER: boot to rxe0 ready $(secs $((ready_ms - t0)))s, total $(secs $((t1 - t0)))s"
else
  log "kernel $KVER: rxe0 never became ready, ran $(secs $((t1 - t0)))s"
fi
if [ -n "$rc" ]; then
  log "guest exit status $rc"
  exit "$rc"
fi
if [ -n "$timed_out" ]; then
  log "timeout after ${timeout}s, qemu killed"
  exit 124
fi
reason=$(tr -d '\r' <"$console" | sed -n 's/.*\(COROKV_VM_SETUP_FAILED: .*\)/\1/p' | tail -n 1)
log "no COROKV_VM_EXIT line (qemu status $qrc)${reason:+; $reason}"
exit 125
