#!/bin/bash
# The README's Raspberry Pi install, followed on 64-bit ARM Debian under emulation:
# bookworm (Python 3.11, Raspberry Pi OS 12) and trixie (Python 3.13, Raspberry Pi OS 13).
#
# Each release is a debootstrap --arch=arm64 rootfs run through qemu-user (Cortex-A72, a Pi 4's
# /proc/cpuinfo), cached under /var/cache/maskdoor-deploy/ so that a second run skips the
# bootstrap and the downloads. In each: the README's apt and venv steps, `pip install .` from a
# copy of this checkout, an apt-built numpy extension (python3-pywt, standing in for picamera2's
# apt dependencies) imported from the venv, `maskdoor check --source demo`, and
# `maskdoor run --source demo` giving exactly one alert; on bookworm once more with tflite-runtime.
# Emulated timing means nothing: only correctness is checked.
#
# Needs root, binfmt_misc and qemu-user-static (installed with apt-get when missing); where the
# machine cannot, it says so in one line and exits 0. Prints PASS/FAIL lines; exits 1 on a FAIL.
#   tests/deploy/arm64.sh [RELEASE...]     (default: bookworm trixie)
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
CACHE=${MASKDOOR_DEPLOY_CACHE:-/var/cache/maskdoor-deploy}
RELEASES=("$@")
[ ${#RELEASES[@]} -gt 0 ] || RELEASES=(bookworm trixie)
STANDIN=python3-pywt  # a small Cython extension built against the OS numpy, like picamera2's deps
FAILED=0
MOUNTS=()

skip() { echo "SKIP arm64 deploy: $*"; exit 0; }
pass() { echo "PASS  $*"; }
fail() { echo "FAIL  $*"; FAILED=1; }
stamp() { echo "--    $(date -u +%H:%M:%S) $*"; }

unmount_all() {
    local i
    for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
        umount -l "${MOUNTS[i]}" 2>/dev/null || true
    done
    MOUNTS=()
}
trap unmount_all EXIT
trap 'exit 130' INT TERM

bind() {  # bind SOURCE TARGET [mount options...]
    local src=$1 dst=$2
    shift 2
    mount "$@" "$src" "$dst"
    MOUNTS+=("$dst")
}

host_ready() {
    [ "$(id -u)" -eq 0 ] || skip "needs root (debootstrap, chroot and mounts)"
    local need=()
    command -v debootstrap >/dev/null || need+=(debootstrap)
    command -v qemu-aarch64-static >/dev/null || need+=(qemu-user-static)
    command -v update-binfmts >/dev/null || need+=(binfmt-support)
    if [ ${#need[@]} -gt 0 ]; then
        command -v apt-get >/dev/null || skip "needs ${need[*]} and there is no apt-get"
        stamp "installing ${need[*]} on the host"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } \
            >/dev/null || skip "could not install ${need[*]}"
    fi
    if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
        mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null ||
            skip "binfmt_misc cannot be mounted here (a container without it?)"
    fi
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || update-binfmts --enable qemu-aarch64 >/dev/null 2>&1 || true
    [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || skip "no qemu-aarch64 binfmt handler"
    grep -q '^flags:.*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 ||
        skip "the qemu-aarch64 binfmt handler lacks the F flag (chroots cannot find qemu)"
}

debian_mirror() {  # the Debian archive the host's apt uses (one-line or deb822 sources)
    local uri
    uri=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
          awk '$1 == "deb" { for (i = 2; i <= NF; i++) if ($i ~ /^https?:/) { print $i; break } }' |
          grep -v -- '-security' | grep '/debian/\?$' | head -1 || true)
    [ -n "$uri" ] || uri=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null |
          awk '/^URIs:/ { for (i = 2; i <= NF; i++) print $i }' |
          grep -v -- '-security' | grep '/debian/\?$' | head -1 || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

bootstrap() {  # bootstrap() RELEASE DIR: once; a rootfs is kept only once complete
    local release=$1 dir=$2
    if [ ! -e "$dir/.maskdoor-bootstrapped" ]; then
        rm -rf "$dir" "$dir.partial"
        mkdir -p "$CACHE"
        stamp "debootstrap $release arm64 from $MIRROR (minutes under emulation)"
        if ! debootstrap --arch=arm64 --variant=minbase --include=sudo,ca-certificates \
                "$release" "$dir.partial" "$MIRROR" >"$CACHE/$release-debootstrap.log" 2>&1; then
            tail -5 "$CACHE/$release-debootstrap.log" >&2
            return 1
        fi
        mv "$dir.partial" "$dir"
        touch "$dir/.maskdoor-bootstrapped"
    fi
}

enter() {  # what the chroot needs: the kernel's trees, a Pi 4's cpuinfo, the network, pip's cache
    local root=$1 release=$2
    bind /proc "$root/proc" --bind
    bind "$HERE/pi4-cpuinfo.txt" "$root/proc/cpuinfo" --bind
    bind /sys "$root/sys" --bind
    bind /dev "$root/dev" --bind
    bind /dev/pts "$root/dev/pts" --bind
    rm -f "$root/etc/resolv.conf"
    touch "$root/etc/resolv.conf"
    bind /etc/resolv.conf "$root/etc/resolv.conf" --bind
    grep -qw "$(hostname)" "$root/etc/hosts" 2>/dev/null || echo "127.0.1.1 $(hostname)" >>"$root/etc/hosts"
    # the host's CA bundle (it may hold a proxy's CA) so that pip reaches PyPI as the host does
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n' >"$root/etc/pip.conf"
    mkdir -p "$CACHE/pip-$release" "$root/root/.cache/pip"
    bind "$CACHE/pip-$release" "$root/root/.cache/pip" --bind
}

in_chroot() {  # in_chroot ROOT COMMAND...: run as root on the emulated Cortex-A72
    local root=$1
    shift
    QEMU_CPU=cortex-a72 chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        DEBIAN_FRONTEND=noninteractive "$@"
}

deploy() {  # deploy RELEASE: the README's steps, then the checks
    local release=$1 root=$CACHE/$1-arm64 log t0
    t0=$(date +%s)
    bootstrap "$release" "$root" || { fail "$release: debootstrap failed (log: $CACHE/$release-debootstrap.log)"; return; }
    enter "$root" "$release"
    log=$CACHE/$release-deploy.log
    : >"$log"
    rm -rf "$root/home/pi/maskdoor"
    mkdir -p "$root/home/pi"
    git -C "$REPO" ls-files -z --cached --others --exclude-standard |
        (cd "$REPO" && tar --null -T - -cf - 2>/dev/null) | tar -xf - -C "$root/home/pi" --one-top-level=maskdoor
    install -m 755 "$HERE/pi-install.sh" "$root/home/pi/pi-install.sh"

    local arch
    arch=$(in_chroot "$root" uname -m)
    [ "$arch" = aarch64 ] && pass "$release: the rootfs runs as aarch64 on a $(grep -m1 '^Model' "$root/proc/cpuinfo" | cut -d: -f2- | sed 's/^ *//')" ||
        { fail "$release: the rootfs runs as '$arch', not aarch64"; unmount_all; return; }

    stamp "$release: README install steps (log: $log)"
    if in_chroot "$root" bash /home/pi/pi-install.sh install "$STANDIN" >>"$log" 2>&1; then
        pass "$release: README install steps ($(grep -h '^versions:' "$log" | tail -1 | cut -d' ' -f2-))"
    else
        fail "$release: README install steps (last lines of $log follow)"
        tail -15 "$log" | sed 's/^/      /'
        unmount_all
        return
    fi
    check_app "$root" "$release" "" "$log"
    if [ "$release" = bookworm ]; then
        stamp "$release: with the tflite-runtime extra"
        if in_chroot "$root" bash /home/pi/pi-install.sh tflite-runtime >>"$log" 2>&1; then
            pass "$release: pip install '.[tflite-runtime]'"
            check_app "$root" "$release" tflite-runtime "$log"
        else
            fail "$release: pip install '.[tflite-runtime]' (last lines of $log follow)"
            tail -15 "$log" | sed 's/^/      /'
        fi
    fi
    unmount_all
    stamp "$release: done in $(($(date +%s) - t0)) s"
}

check_app() {  # check_app ROOT RELEASE RUNTIME LOG: the stand-in imports, check passes, one alert
    local root=$1 release=$2 runtime=$3 log=$4 out what=$2
    [ -z "$runtime" ] || what="$release --runtime $runtime"
    if out=$(in_chroot "$root" bash /home/pi/pi-install.sh standin 2>&1); then
        pass "$what: the apt-built numpy extension imports in the venv ($out)"
    else
        fail "$what: the apt-built numpy extension does not import in the venv: $(echo "$out" | tail -1)"
    fi
    echo "$out" >>"$log"
    if out=$(in_chroot "$root" bash /home/pi/pi-install.sh check "$runtime" 2>&1); then
        pass "$what: maskdoor check: $(echo "$out" | grep -m1 'models:' | sed 's/^PASS  models: //')"
    else
        fail "$what: maskdoor check: $(echo "$out" | grep -v '^PASS' | tail -3 | tr '\n' ' ')"
    fi
    echo "$out" >>"$log"
    if [ -n "$runtime" ] && ! echo "$out" | grep -q "models:.*${runtime//-/_}"; then
        fail "$what: maskdoor check does not name $runtime as the runtime"
    fi
    local alerts err=$CACHE/$release-run.err
    out=$(in_chroot "$root" bash /home/pi/pi-install.sh run "$runtime" 2>"$err") || true
    { echo "$out"; cat "$err"; } >>"$log"
    alerts=$(echo "$out" | grep -c '^{"id"' || true)
    if [ "$alerts" = 1 ]; then
        pass "$what: maskdoor run --source demo gives exactly one alert ($(echo "$out" | grep -o '"label": "[a-z_]*"'))"
    else
        fail "$what: maskdoor run --source demo gave $alerts alert(s), want 1: $(tail -2 "$err" | tr '\n' ' ')"
    fi
    if [ -n "$runtime" ] && ! grep -q "(${runtime//-/_})" "$err"; then
        fail "$what: maskdoor run did not say it runs $runtime: $(grep -m1 watching "$err")"
    fi
}

host_ready
MIRROR=$(debian_mirror)
START=$(date +%s)
for release in "${RELEASES[@]}"; do
    deploy "$release"
done
echo "arm64 deploy: $([ $FAILED = 0 ] && echo PASS || echo FAIL) in $(($(date +%s) - START)) s (${RELEASES[*]})"
exit $FAILED
