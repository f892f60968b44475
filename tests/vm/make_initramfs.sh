#!/usr/bin/env bash
# Build a gzip'd newc initramfs that boots straight into a Soft-RoCE (rdma_rxe)
# test environment and runs /payload/guest.sh.
#
# Usage: make_initramfs.sh OUT.cpio.gz STAGING_DIR [FILE...]
#   STAGING_DIR  scratch directory (emptied first) used to assemble the tree.
#   FILE...      copied to /payload/<basename>; ELF files also get their libs.
# Environment:
#   KVER         kernel release whose modules to ship (default: newest
#                /boot/vmlinuz-*).
set -euo pipefail

die() { echo "make_initramfs: $*" >&2; exit 1; }

[ $# -ge 2 ] || die "usage: $0 OUT.cpio.gz STAGING_DIR [FILE...]"
out=$1
stage=$2
shift 2

if [ -z "${KVER:-}" ]; then
  # Newest kernel in /boot, same choice run.sh makes.
  vmlinuz=$(find /boot -maxdepth 1 -name 'vmlinuz-*' | sort -V | tail -n 1)
  [ -n "$vmlinuz" ] || die "no /boot/vmlinuz-* (install linux-image-amd64)"
  KVER=${vmlinuz#/boot/vmlinuz-}
fi
moddir=/lib/modules/$KVER
[ -f "$moddir/modules.dep" ] || die "no $moddir/modules.dep"

for tool in busybox ldd ldconfig; do
  command -v "$tool" >/dev/null || die "missing $tool"
done
bb=$(command -v busybox)

# Only wipe a directory this script created (marker) or an empty one, so a
# mistyped STAGING_DIR cannot delete anything else.
if [ -d "$stage" ] && [ -n "$(ls -A "$stage")" ] && [ ! -e "$stage/.corokv-stage" ]; then
  die "STAGING_DIR $stage is not empty and not a previous staging dir"
fi
rm -rf "$stage"
mkdir -p "$stage"
stage=$(cd "$stage" && pwd)

# Mirror the host's merged-/usr symlinks (/lib -> usr/lib, ...) so that the
# absolute paths ldd prints and the ELF interpreter path resolve unchanged.
for d in bin sbin lib lib32 lib64 libx32; do
  if [ -L "/$d" ]; then
    tgt=$(readlink "/$d")
    mkdir -p "$stage/$(dirname "$d")/$tgt"
    ln -s "$tgt" "$stage/$d"
  elif [ -d "/$d" ]; then
    mkdir -p "$stage/$d"
  fi
done
mkdir -p "$stage"/{dev,proc,sys,tmp,run,etc,payload,usr/bin,usr/sbin}

libdirs_file=$stage/.libdirs
: >"$libdirs_file"

# Copy a host file to the same absolute path in the staging tree
# (dereferencing symlinks, so SONAME links become real files).
copy_abs() {
  local src=$1 dst
  dst=$stage$src
  mkdir -p "$(dirname "$dst")"
  cp -L --remove-destination "$src" "$dst"
}

is_elf() { [ "$(head -c 4 "$1" 2>/dev/null | od -An -c | tr -d ' ')" = '177ELF' ]; }

# Copy every shared library an ELF file needs, plus the dynamic loader.
copy_libs() {
  local f=$1 line lib
  is_elf "$f" || return 0
  # Static binaries make ldd exit non-zero; that is fine.
  local out
  out=$(ldd "$f" 2>&1) || {
    case $out in *'not a dynamic executable'*|*'statically linked'*) return 0 ;; esac
    die "ldd $f failed: $out"
  }
  while IFS= read -r line; do
    case $line in
      *'not found'*) die "$f: unresolved library: $line" ;;
      *'=> '/*) lib=${line#*=> }; lib=${lib%% (*} ;;
      [[:space:]]/*) lib=${line#"${line%%/*}"}; lib=${lib%% (*} ;;
      *) continue ;;
    esac
    if [ ! -e "$stage$lib" ]; then
      copy_abs "$lib"
      dirname "$lib" >>"$libdirs_file"
    fi
  done <<<"$out"
}

add_bin() {
  local p
  p=$(command -v "$1") || die "missing binary $1"
  p=$(readlink -f "$p")
  copy_abs "$p"
  copy_libs "$p"
  shipped+=("$(basename "$p")")
}

# /init (busybox sh, PID 1). Kept here so the image is one self-contained script.
write_init() {
  cat >"$1" <<'INIT'
#!/bin/sh
# PID 1 of the test VM: bring up Soft-RoCE, run /payload/guest.sh, report its
# exit status on the console as COROKV_VM_EXIT=<code>, power off.
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
export HOME=/root
# Debian's busybox sh runs its own applets before searching PATH, so a bare
# "ip" is busybox's (no veth peer support). Call iproute2 by absolute path.
IP=/bin/ip

# No COROKV_VM_EXIT line on setup failure: the host then reports 125.
# poweroff -f exits qemu (-no-reboot); if that fails, PID 1 exiting panics
# the kernel, and panic=-1 plus -no-reboot also ends qemu.
off() { sync; poweroff -f; sleep 5; exit 1; }
fail() {
  echo "--- setup diagnostics ---"; $IP link; rdma link; dmesg | tail -n 40
  echo "COROKV_VM_SETUP_FAILED: $*"; off
}

mount -t proc proc /proc
mount -t sysfs sysfs /sys            # libibverbs enumerates devices via sysfs
mount -t devtmpfs devtmpfs /dev      # gives /dev/infiniband/uverbs0 automatically
mkdir -p /dev/pts /dev/shm /root
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /tmp
mount -t tmpfs tmpfs /run
# Keep kernel chatter from interleaving with guest output (errors still show).
dmesg -n 3
hostname corokv-vm

$IP link set lo up || fail "lo up"

# Order was resolved from modules.dep at build time.
while read -r m; do
  insmod "$m" || fail "insmod $m"
done </etc/modules.load

# veth so rxe has an Ethernet netdev with carrier; both ends must be up.
$IP link add v0 type veth peer name v1 || fail "veth"
$IP link set v0 up || fail "v0 up"
$IP link set v1 up || fail "v1 up"
rdma link add rxe0 type rxe netdev v0 || fail "rdma link add"

# Ready = port ACTIVE, GID 0 (MAC-derived link-local) populated, uverbs node.
port=/sys/class/infiniband/rxe0/ports/1
zero_gid=0000:0000:0000:0000:0000:0000:0000:0000
i=0
while :; do
  state=$(cat "$port/state" 2>/dev/null)
  gid=$(cat "$port/gids/0" 2>/dev/null)
  case $state in *ACTIVE*)
    if [ -n "$gid" ] && [ "$gid" != "$zero_gid" ] && [ -c /dev/infiniband/uverbs0 ]; then
      break
    fi
  esac
  i=$((i + 1))
  [ "$i" -lt 600 ] || fail "rxe0 not ready: state='$state' gid0='$gid'"
  sleep 0.1
done

# Memory registration pins pages.
ulimit -l unlimited
export COROKV_RDMA_DEV=rxe0 COROKV_GID_INDEX=0 COROKV_NETDEV=v0
read -r up _ </proc/uptime
# Leading newline: the kernel may have left a partial line on the console.
echo
echo "COROKV_VM_READY uptime=${up}s rdma_dev=rxe0 gid0=$gid"

if [ -f /payload/guest.sh ]; then
  cd /payload || fail "cd /payload"
  sh ./guest.sh </dev/null
  rc=$?
else
  echo "init: no /payload/guest.sh, nothing to run"
  rc=0
fi
echo
echo "COROKV_VM_EXIT=$rc"
off
INIT
  chmod 0755 "$1"
}

shipped=()
# iproute2 ip (busybox ip cannot create veth), rdma, perftest.
for b in ip rdma ib_write_bw ib_read_bw; do add_bin "$b"; done
# Handy for debugging guest scripts; optional (ibverbs-utils).
for b in ibv_devices ibv_devinfo; do
  if command -v "$b" >/dev/null; then add_bin "$b"; fi
done

# libibverbs rxe provider: found via /etc/libibverbs.d/*.driver and then
# dlopen()ed, so ldd of the binaries does not see it.
[ -f /etc/libibverbs.d/rxe.driver ] || die "no /etc/libibverbs.d/rxe.driver (ibverbs-providers)"
copy_abs /etc/libibverbs.d/rxe.driver
found_rxe=
for so in /usr/lib/*/libibverbs/librxe-rdmav*.so /lib/*/libibverbs/librxe-rdmav*.so; do
  [ -e "$so" ] || continue
  so=$(readlink -f "$so")   # /lib may be a symlink to /usr/lib
  [ -e "$stage$so" ] && continue
  copy_abs "$so"
  copy_libs "$so"
  dirname "$so" >>"$libdirs_file"
  found_rxe=1
done
[ -n "$found_rxe" ] || die "no librxe-rdmav*.so (ibverbs-providers)"

# glibc dlopen()s libgcc_s for thread cancellation / unwinding.
for so in /lib/x86_64-linux-gnu/libgcc_s.so.1 /usr/lib/x86_64-linux-gnu/libgcc_s.so.1; do
  if [ -e "$so" ] && [ ! -e "$stage$so" ]; then copy_abs "$so"; dirname "$so" >>"$libdirs_file"; fi
done

# Payload files (test binaries, scripts) and their libraries.
for f in "$@"; do
  [ -f "$f" ] || die "payload file not found: $f"
  cp -L "$f" "$stage/payload/$(basename "$f")"
  copy_libs "$f"
done

# busybox applets as symlinks, made now so /init needs no setup; skip names
# we ship as real binaries (e.g. ip) so busybox never shadows them.
cp -L "$bb" "$stage/bin/busybox"
# (They still win inside busybox sh, which prefers applets over PATH; the
# real binaries stay reachable by absolute path, e.g. /bin/ip.)
while IFS= read -r applet; do
  name=${applet##*/}
  for s in "${shipped[@]}"; do [ "$s" = "$name" ] && continue 2; done
  if [ -e "$stage/$applet" ] || [ -L "$stage/$applet" ]; then continue; fi
  case $applet in */*) [ -d "$stage/${applet%/*}" ] || mkdir -p "$stage/${applet%/*}" ;; esac
  ln -s /bin/busybox "$stage/$applet"
done < <("$bb" --list-full)

# Kernel modules: rdma_rxe plus deps from modules.dep, in load order.
# crc32_generic is not in modules.dep: rxe requests "crc32" via the crypto API.
declare -A done_mod=()
order=()
mod_path() {
  # modules.dep uses paths relative to $moddir; '-' and '_' are equivalent.
  local n=${1//-/_}
  awk -F: -v n="$n" '{
      b=$1; sub(/.*\//, "", b); sub(/\.ko(\.(xz|zst|gz))?$/, "", b); gsub(/-/, "_", b)
      if (b == n) { print $1; exit }
    }' "$moddir/modules.dep"
}
resolve_mod() {
  local rel=$1 dep deps
  [ -n "${done_mod[$rel]:-}" ] && return 0
  done_mod[$rel]=1
  read -ra deps <<<"$(awk -F: -v m="$rel" '$1 == m { print $2; exit }' "$moddir/modules.dep")"
  for dep in "${deps[@]}"; do
    resolve_mod "$dep"
  done
  order+=("$rel")
}
for m in crc32_generic veth rdma_rxe; do
  rel=$(mod_path "$m")
  [ -n "$rel" ] || die "module $m not found in $moddir/modules.dep"
  resolve_mod "$rel"
done
mkdir -p "$stage/etc"
: >"$stage/etc/modules.load"
for rel in "${order[@]}"; do
  src=$moddir/$rel
  dst_rel=${rel%.xz}; dst_rel=${dst_rel%.zst}; dst_rel=${dst_rel%.gz}
  dst=$stage$moddir/$dst_rel
  mkdir -p "$(dirname "$dst")"
  # busybox insmod may not handle compressed modules; decompress here.
  case $rel in
    *.ko.xz) xz -dc "$src" >"$dst" ;;
    *.ko.zst) zstd -qdc "$src" >"$dst" ;;
    *.ko.gz) gzip -dc "$src" >"$dst" ;;
    *) cp "$src" "$dst" ;;
  esac
  echo "$moddir/$dst_rel" >>"$stage/etc/modules.load"
done

# ld.so.cache for exactly the directories we populated, so the loader finds
# libraries (including the dlopen()ed provider) without relying on defaults.
sort -u "$libdirs_file" >"$stage/etc/ld.so.conf"
rm -f "$libdirs_file"
ldconfig -r "$stage"

printf '127.0.0.1 localhost\n::1 localhost\n' >"$stage/etc/hosts"
printf 'hosts: files\n' >"$stage/etc/nsswitch.conf"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$stage/etc/passwd"
printf 'root:x:0:\n' >"$stage/etc/group"

write_init "$stage/init"

# newc archive, everything owned by root.
touch "$stage/.corokv-stage"
(cd "$stage" && find . -mindepth 1 ! -name .corokv-stage | LC_ALL=C sort | "$bb" cpio -o -H newc -R 0:0 2>/dev/null) \
  | gzip -1 >"$out"
echo "make_initramfs: $out ($(du -h "$out" | cut -f1)), kernel $KVER, modules: $(tr '\n' ' ' <"$stage/etc/modules.load")"
