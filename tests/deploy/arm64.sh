#!/usr/bin/env bash
# The README's Raspberry Pi install, followed on 64-bit ARM Debian under emulation:
# bookworm (Python 3.11, numpy 1.24: Raspberry Pi OS 12) and trixie (Python 3.13, numpy 2:
# Raspberry Pi OS 13).
#
# Each release is a debootstrap --arch=arm64 root file system (cached under
# /var/cache/maskdoor-deploy/), run through qemu-user as a Cortex-A72 with a Pi 4's
# /proc/cpuinfo. In a copy of it: the README's apt and venv steps with an apt-built numpy
# extension (python3-pywt, standing in for picamera2's apt dependencies), `pip install .` from a
# copy of this checkout (its wheels fetched on this machine), then the checks: numpy in the venv is
# the system's, one OpenCV, the apt-built extension imports from the venv, `maskdoor check` names
# the runtime, `maskdoor run --source demo` gives exactly one alert; on bookworm once more with
# tflite-runtime. Emulated timing means nothing: only correctness is checked.
#
# qemu-user must be 10.0 or later: Debian bookworm's 7.2 computes LiteRT's XNNPACK int8 kernels
# wrongly (tests/deploy/README.md). Where the host's is older, Debian's qemu-user from
# bookworm-backports is unpacked into the cache and registered for this run only.
#
# Run from the repository as root:  tests/deploy/arm64.sh [RELEASE...]  (default: bookworm trixie)
# Prints PASS/FAIL lines, exits 1 on a FAIL; prints one SKIP line and exits 0 where this machine
# cannot (not root, no binfmt_misc, no qemu-user 10 to be had).
# Environment: MASKDOOR_DEPLOY_MIRROR (Debian mirror; default: the host's apt sources),
#              MASKDOOR_DEPLOY_CACHE (default /var/cache/maskdoor-deploy).
set -uo pipefail   # no -e: a failing check is counted, not fatal
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
. "$HERE/common.sh"
CACHE=${MASKDOOR_DEPLOY_CACHE:-/var/cache/maskdoor-deploy}
RELEASES=("$@")
[ ${#RELEASES[@]} -gt 0 ] || RELEASES=(bookworm trixie)
# The README's apt packages as Debian has them: python3-picamera2 and python3-lgpio are Raspberry
# Pi OS only; python3-pywt (a numpy extension built by Debian against its numpy) stands in.
PACKAGES=sudo,ca-certificates,python3-venv,python3-numpy,python3-pywt,mosquitto-clients
QEMU_MIN=10
BINFMT=maskdoor-aarch64
T0=$(date +%s)
FAILS=0

skip() { say "SKIP arm64 deploy check: $*"; exit 0; }
check() {  # check RC MESSAGE: print PASS/FAIL
    if [ "$1" -eq 0 ]; then say "PASS $2"; else say "FAIL $2"; FAILS=$((FAILS + 1)); fi
}
stamp() { say "--   $(( $(date +%s) - T0 )) s: $*" >&2; }

[ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, chroot, mounts and binfmt_misc)"
[ "$(uname -m)" = x86_64 ] || skip "written for an x86-64 host (wheels and qemu for it), not $(uname -m)"
need_tool debootstrap debootstrap || skip "no debootstrap and apt-get could not install it"
HOSTPY=python3   # fetches the wheels: the host's pip, else the README's test venv's
$HOSTPY -m pip --version >/dev/null 2>&1 || HOSTPY=$REPO/.venv/bin/python
$HOSTPY -m pip --version >/dev/null 2>&1 || skip "no pip on the host (python3 -m pip) to fetch the wheels"
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null ||
        skip "binfmt_misc cannot be mounted here (a container without it?)"
fi
[ -w /proc/sys/fs/binfmt_misc/register ] || skip "binfmt_misc is read-only here"
CODENAME=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
MIRROR=${MASKDOOR_DEPLOY_MIRROR:-$(host_mirror "${CODENAME:-bookworm}")}
mkdir -p "$CACHE" || skip "cannot create $CACHE"

WORK=$(mktemp -d /var/tmp/maskdoor-arm64.XXXXXX)
cleanup() {
    set +e
    [ -e "/proc/sys/fs/binfmt_misc/$BINFMT" ] && echo -1 >"/proc/sys/fs/binfmt_misc/$BINFMT"
    findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- 1. a qemu-user that emulates LiteRT correctly, registered for this run ------------------------
qemu_major() { "$1" --version 2>/dev/null | sed -n '1s/.*version \([0-9]*\)\..*/\1/p'; }
find_qemu() {  # a static qemu-aarch64 of QEMU_MIN or later: the host's, else Debian's
    local q dir deb
    for q in "$(command -v qemu-aarch64-static)" "$CACHE"/qemu-user-*/qemu-aarch64; do
        [ -x "$q" ] && [ "$(qemu_major "$q")" -ge $QEMU_MIN ] 2>/dev/null && { say "$q"; return; }
    done
    if [ "$CODENAME" != bookworm ]; then  # later Debian releases have it in main
        need_tool qemu-aarch64-static qemu-user-static >&2 || return 1
        q=$(command -v qemu-aarch64-static)
        [ "$(qemu_major "$q")" -ge $QEMU_MIN ] 2>/dev/null && { say "$q"; return; }
        return 1
    fi
    # bookworm's is 7.2: Debian's qemu-user from bookworm-backports, fetched through a private
    # apt list and unpacked into the cache (the host's packages and apt sources stay as they are)
    command -v apt-get >/dev/null || return 1
    dir=$WORK/backports
    mkdir -p "$dir/lists/partial"
    echo "deb $MIRROR bookworm-backports main" >"$dir/sources.list"
    local apt=(-o Dir::Etc::sourcelist="$dir/sources.list" -o Dir::Etc::sourceparts=-
               -o Dir::State::Lists="$dir/lists" -o APT::Sandbox::User=root)
    apt-get "${apt[@]}" -q update >"$dir/apt.log" 2>&1 &&
        (cd "$dir" && apt-get "${apt[@]}" -q download qemu-user/bookworm-backports) >>"$dir/apt.log" 2>&1 ||
        { tail -n 5 "$dir/apt.log" >&2; return 1; }
    deb=$(ls "$dir"/qemu-user_*.deb) && dpkg-deb -x "$deb" "$dir/x" || return 1
    q=$CACHE/qemu-user-$(dpkg-deb -f "$deb" Version | tr ':~+' '___')
    mkdir -p "$q" && cp "$dir/x/usr/bin/qemu-aarch64" "$q/" || return 1
    say "$q/qemu-aarch64"
}
QEMU=$(find_qemu) || skip "no qemu-user $QEMU_MIN or later: install qemu-user-static from bookworm-backports or trixie"
# F: the kernel opens qemu now, so it runs inside the chroots; newer entries win over the host's
[ -e "/proc/sys/fs/binfmt_misc/$BINFMT" ] && echo -1 >"/proc/sys/fs/binfmt_misc/$BINFMT"
printf ':%s:M::%s:%s:%s:FP\n' "$BINFMT" \
    '\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00' \
    '\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff' \
    "$QEMU" >/proc/sys/fs/binfmt_misc/register 2>/dev/null || skip "binfmt_misc refused the qemu-aarch64 entry"
stamp "emulating with $($QEMU --version | head -n 1)"

# --- 2. per release: the root file system, cached by what it holds ---------------------------------
rootfs() {  # rootfs RELEASE: the cached root file system's path, debootstrapped when missing
    local release=$1 key base
    key=$(printf '%s\n' "$release" arm64 "$MIRROR" minbase "$PACKAGES" rootfs-v1 | sha256sum | cut -c1-12)
    base=$CACHE/rootfs-$release-arm64-$key
    exec 9>"$CACHE/.lock-$key"
    flock 9
    if [ ! -e "$base/.complete" ]; then
        stamp "debootstrap $release (arm64) from $MIRROR into $base (first run: emulated, minutes)"
        rm -rf --one-file-system "$base.partial"
        if ! debootstrap --variant=minbase --arch=arm64 --include="$PACKAGES" "$release" \
                "$base.partial" "$MIRROR" >"$WORK/debootstrap-$release.log" 2>&1; then
            tail -n 20 "$WORK/debootstrap-$release.log" >&2
            flock -u 9
            return 1
        fi
        chroot "$base.partial" apt-get clean
        touch "$base.partial/.complete"
        mv "$base.partial" "$base"
    fi
    flock -u 9
    say "$base"
}

wheels() {  # wheels RELEASE ROOT: maskdoor's wheels for the release's Python, fetched here
    local release=$1 root=$2 py numpy dir
    py=$(ls "$root"/usr/bin/python3.[0-9]* | grep -o '3\.[0-9]*$' | sort -V | tail -n 1)
    numpy=$(chroot_dpkg_version "$root" python3-numpy)
    dir=$CACHE/wheels-$release-cp${py/./}
    mkdir -p "$dir" "$WORK/src"
    if [ ! -e "$WORK/src/pyproject.toml" ]; then  # a copy: the checkout gets no build/ or .egg-info
        if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
            (cd "$REPO" && git ls-files -z -co --exclude-standard | xargs -0 cp --parents -t "$WORK/src")
        else
            cp -a "$REPO/." "$WORK/src"
        fi
    fi
    $HOSTPY -m pip wheel -q --no-deps --wheel-dir "$WORK/wheels-$release" "$WORK/src" >"$WORK/pip.log" 2>&1 ||
        { tail -n 20 "$WORK/pip.log" >&2; return 1; }
    local whl extras=""
    whl=$(ls "$WORK/wheels-$release"/maskdoor-*.whl)
    [ "$release" = bookworm ] && extras="[tflite-runtime]"
    # resolved here as pip in the Pi's venv resolves: the system's numpy counts as installed, and
    # platform markers are not evaluated for the target, so the system's numpy pins it here
    mapfile -t plat < <(manylinux_platforms aarch64)
    $HOSTPY -m pip download -q --only-binary=:all: --python-version "$py" --implementation cp \
        --abi "cp${py/./}" --abi abi3 --abi none "${plat[@]}" --dest "$dir" \
        "$whl$extras" "numpy==$numpy" "setuptools>=69" >>"$WORK/pip.log" 2>&1 ||
        { tail -n 20 "$WORK/pip.log" >&2; return 1; }
    say "$dir"
}
chroot_dpkg_version() {  # the upstream version of an installed Debian package, read from dpkg
    awk -v p="$2" '$1 == "Package:" { hit = ($2 == p) } hit && $1 == "Version:" { print $2; exit }' \
        "$1/var/lib/dpkg/status" | sed 's/^[0-9]*://; s/-[^-]*$//; s/+.*//'
}

in_root() {  # in_root ROOT COMMAND...: as root on the emulated Cortex-A72 (a Pi 4)
    local root=$1
    shift
    QEMU_CPU=cortex-a72 chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive "$@"
}

enter() {  # enter ROOT WHEELS: the kernel's trees, a Pi 4's cpuinfo, the network, the wheels
    local root=$1
    mount --bind /proc "$root/proc"
    mount --bind "$HERE/pi4-cpuinfo.txt" "$root/proc/cpuinfo"
    mount --bind /sys "$root/sys"
    mount --bind /dev "$root/dev"
    mount --bind /dev/pts "$root/dev/pts"
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    grep -qw "$(hostname)" "$root/etc/hosts" 2>/dev/null || echo "127.0.1.1 $(hostname)" >>"$root/etc/hosts"
    # the host's CA bundle (it may hold a proxy's CA) so that apt and pip reach what the host does
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    # pip takes maskdoor's dependencies from the wheels fetched here (sudo keeps no environment)
    mkdir -p "$root/wheels"
    mount --bind "$2" "$root/wheels"
    printf '[global]\nno-index = true\nfind-links = /wheels\n' >"$root/etc/pip.conf"
}

deploy() {  # deploy RELEASE: the README's steps in a copy of the release's root file system
    local release=$1 base root wheeldir log t=$(date +%s)
    base=$(rootfs "$release") || { check 1 "$release: debootstrap from $MIRROR (log above)"; return; }
    root=$WORK/$release
    cp -a --reflink=auto "$base" "$root" || { check 1 "$release: copy of $base"; return; }
    wheeldir=$(wheels "$release" "$root") || { check 1 "$release: pip download of maskdoor's wheels (log above)"; return; }
    enter "$root" "$wheeldir"
    log=$CACHE/$release-deploy.log
    : >"$log"
    mkdir -p "$root/home/pi"
    cp -a "$WORK/src" "$root/home/pi/maskdoor"
    install -m 755 "$HERE/pi-install.sh" "$root/home/pi/pi-install.sh"
    local arch
    arch=$(in_root "$root" uname -m)
    [ "$arch" = aarch64 ]
    check $? "$release: the root file system runs as $arch on a $(sed -n 's/^Model[ \t]*: //p' "$root/proc/cpuinfo")"
    [ "$arch" = aarch64 ] || return

    stamp "$release: the README's install steps (log: $log)"
    in_root "$root" bash /home/pi/pi-install.sh install >>"$log" 2>&1
    local rc=$?
    check $rc "$release: the README's install steps ($(grep -h '^versions:' "$log" | tail -n 1 | cut -d' ' -f2-))"
    [ $rc -eq 0 ] || { tail -n 15 "$log" | sed 's/^/      /'; return; }
    check_app "$root" "$release" "" "$log"
    if [ "$release" = bookworm ]; then
        in_root "$root" bash /home/pi/pi-install.sh tflite-runtime >>"$log" 2>&1
        rc=$?
        check $rc "$release: pip install '.[tflite-runtime]' ($(grep -h '^versions:' "$log" | tail -n 1 | cut -d' ' -f2-))"
        [ $rc -eq 0 ] && check_app "$root" "$release" tflite-runtime "$log" || tail -n 15 "$log" | sed 's/^/      /'
    fi
    findmnt -rn -o TARGET | grep -F "$root/" | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf --one-file-system "$root"
    stamp "$release: done in $(( $(date +%s) - t )) s"
}

check_app() {  # check_app ROOT RELEASE RUNTIME LOG: one numpy and OpenCV, the stand-in, check, run
    local root=$1 release=$2 runtime=$3 log=$4 out what=$2 rc
    [ -z "$runtime" ] || what="$release --runtime $runtime"
    out=$(in_root "$root" bash /home/pi/pi-install.sh venv 2>&1); rc=$?
    echo "$out" >>"$log"
    check $rc "$what: the venv uses the system's numpy, one OpenCV, and the apt-built extension imports ($(echo "$out" | tail -n 1))"
    stamp "$what: maskdoor check"
    out=$(in_root "$root" bash /home/pi/pi-install.sh check "$runtime" 2>&1); rc=$?
    echo "$out" >>"$log"
    local models
    models=$(echo "$out" | sed -n 's/^PASS  *models: //p' | head -n 1)
    check $rc "$what: maskdoor check passes: ${models:-$(echo "$out" | grep -v '^PASS' | tail -n 3 | tr '\n' ' ')}"
    local want=${runtime:-litert}
    [ "$want" = litert ] && want=ai_edge_litert || want=tflite_runtime
    echo "$models" | grep -q "on $want [0-9]"
    check $? "$what: maskdoor check names the runtime that runs ($want)"
    stamp "$what: maskdoor run --source demo"
    in_root "$root" bash /home/pi/pi-install.sh run "$runtime" >"$WORK/run.out" 2>"$WORK/run.err"
    cat "$WORK/run.out" "$WORK/run.err" >>"$log"
    local alerts
    alerts=$(grep -c '^{"id"' "$WORK/run.out")
    [ "$alerts" = 1 ] && grep -q "($want)" "$WORK/run.err"
    check $? "$what: maskdoor run --source demo gives $alerts alert(s), want 1, on $want ($(grep -o '"label": "[a-z_]*"' "$WORK/run.out" | tr '\n' ' ')$(grep -o 'stopped after .*' "$WORK/run.err"))"
}

for release in "${RELEASES[@]}"; do
    deploy "$release"
done
say "done in $(( $(date +%s) - T0 )) s: $FAILS failure(s) (${RELEASES[*]})"
[ "$FAILS" -eq 0 ]
