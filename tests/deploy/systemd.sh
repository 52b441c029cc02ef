#!/usr/bin/env bash
# Boots systemd/maskdoor.service under a real systemd and checks it there.
#
# A minimal Debian bookworm (debootstrap, cached under /var/cache/maskdoor-deploy/) is booted
# with systemd-nspawn; maskdoor is installed from wheels built here into /opt/maskdoor/venv, the
# unit is installed unchanged (plus a drop-in for gpiozero's mock pins) and the demo clip plays
# like a camera. Each check prints PASS or FAIL with its figure; any FAIL exits 1. Where this
# machine cannot do it (not root, no systemd-nspawn or debootstrap) it prints one line, exits 0.
#
# Run from the repository as root:  tests/deploy/systemd.sh
# Environment: MASKDOOR_DEPLOY_MIRROR (Debian mirror; default: the host's apt sources),
#              MASKDOOR_DEPLOY_CACHE (default /var/cache/maskdoor-deploy),
#              MASKDOOR_DEPLOY_UNIT (the unit to check; default systemd/maskdoor.service),
#              MASKDOOR_DEPLOY_FRAMES (frames per frame-rate measurement; default 300).
set -uo pipefail   # no -e: a failing check is counted, not fatal
export PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH"

REPO=$(cd "$(dirname "$0")/../.." && pwd)
SUITE=bookworm
PACKAGES=python3,python3-venv,systemd,systemd-sysv,dbus
CACHE=${MASKDOOR_DEPLOY_CACHE:-/var/cache/maskdoor-deploy}
UNIT_FILE=${MASKDOOR_DEPLOY_UNIT:-$REPO/systemd/maskdoor.service}
FRAMES=${MASKDOOR_DEPLOY_FRAMES:-300}   # frames per frame-rate measurement (realtime = false)
T0=$(date +%s)

. "$REPO/tests/deploy/common.sh"
skip() { say "SKIP systemd deploy check: $*"; exit 0; }

[ "$(id -u)" -eq 0 ] || skip "needs root (it debootstraps and boots a container)"

need_tool systemd-nspawn systemd-container || skip "no systemd-nspawn and apt-get could not install systemd-container"
need_tool debootstrap debootstrap || skip "no debootstrap and apt-get could not install it"
command -v nsenter >/dev/null || skip "no nsenter (util-linux)"

case $(uname -m) in
    x86_64) ARCH=amd64; PLAT=x86_64 ;;
    aarch64) ARCH=arm64; PLAT=aarch64 ;;
    *) skip "no wheels for $(uname -m) here" ;;
esac

MIRROR=${MASKDOOR_DEPLOY_MIRROR:-$(host_mirror "$SUITE")}

WORK=$(mktemp -d /var/tmp/maskdoor-deploy.XXXXXX)
NSPAWN_PID=""
LEADER=""
FAILS=0

cleanup() {
    set +e
    if [ -n "$NSPAWN_PID" ] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        local t=$SECONDS
        [ -n "$LEADER" ] && kill -s RTMIN+4 "$LEADER" 2>/dev/null   # systemd: poweroff
        for _ in $(seq 60); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.5; done
        kill -TERM "$NSPAWN_PID" 2>/dev/null
        for _ in $(seq 20); do kill -0 "$NSPAWN_PID" 2>/dev/null || break; sleep 0.5; done
        kill -KILL "$NSPAWN_PID" 2>/dev/null
        [ -n "$LEADER" ] && kill -KILL "$LEADER" 2>/dev/null
        wait "$NSPAWN_PID" 2>/dev/null
        say "container stopped in $((SECONDS - t)) s"
    fi
    # nspawn's mounts live in its own namespace; anything still mounted here is ours
    findmnt -rn -o TARGET | grep -F "$WORK/" | sort -r | while read -r m; do umount -l "$m"; done
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

since() { awk -v t="$1" -v n="$(date +%s.%N)" 'BEGIN { printf "%.1f", n - t }'; }
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a <= b) }'; }
check() {  # check OK_EXPR_RC MESSAGE: print PASS/FAIL
    if [ "$1" -eq 0 ]; then say "PASS $2"; else say "FAIL $2"; FAILS=$((FAILS + 1)); fi
}

# --- 1. the root file system, cached by what it holds --------------------------------------------
KEY=$(printf '%s\n' "$SUITE" "$ARCH" "$MIRROR" "minbase" "$PACKAGES" "rootfs-v1" | sha256sum | cut -c1-12)
BASE="$CACHE/rootfs-$SUITE-$ARCH-$KEY"
mkdir -p "$CACHE" || skip "cannot create $CACHE"
exec 9>"$CACHE/.lock-$KEY"
flock 9
if [ ! -x "$BASE/usr/lib/systemd/systemd" ]; then
    say "debootstrap $SUITE ($ARCH) from $MIRROR into $BASE (first run: a few minutes)"
    rm -rf --one-file-system "$BASE.partial"
    if ! debootstrap --variant=minbase --arch="$ARCH" --include="$PACKAGES" "$SUITE" \
            "$BASE.partial" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
        tail -n 20 "$WORK/debootstrap.log"
        say "FAIL debootstrap of $SUITE from $MIRROR (log above)"
        exit 1
    fi
    chroot "$BASE.partial" apt-get clean
    rm -rf "$BASE.partial"/var/lib/apt/lists/*
    echo maskdoor-deploy >"$BASE.partial/etc/hostname"
    mv "$BASE.partial" "$BASE"
else
    say "root file system from the cache: $BASE"
fi
flock -u 9
ROOT="$WORK/root"
cp -a --reflink=auto "$BASE" "$ROOT" || { say "FAIL copy of the cached root file system"; exit 1; }

# --- 2. wheels for the container's Python 3.11, base dependencies only ----------------------------
say "building wheels of $REPO"
mkdir -p "$WORK/wheels" "$WORK/src"
# build from a copy, so that the checkout gets no build/ or .egg-info
if git -C "$REPO" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$REPO" && git ls-files -z -co --exclude-standard | xargs -0 cp --parents -t "$WORK/src")
else
    cp -a "$REPO/." "$WORK/src"
fi
python3 -m pip wheel -q --no-deps --wheel-dir "$WORK/wheels" "$WORK/src" >"$WORK/pip.log" 2>&1 ||
    { tail -n 20 "$WORK/pip.log"; say "FAIL pip wheel of the repository"; exit 1; }
mapfile -t PLATFORMS < <(manylinux_platforms "$PLAT")
python3 -m pip download -q --only-binary=:all: --python-version 3.11 --implementation cp \
    --abi cp311 --abi abi3 --abi none "${PLATFORMS[@]}" --dest "$WORK/wheels" \
    "$WORK"/wheels/maskdoor-*.whl >>"$WORK/pip.log" 2>&1 ||
    { tail -n 20 "$WORK/pip.log"; say "FAIL pip download of maskdoor's dependencies for Python 3.11"; exit 1; }

# --- 3. install as on a Pi: venv, user, unit (unchanged), config ---------------------------------
NSPAWN_OPTS=(-q -D "$ROOT" --register=no --keep-unit --private-network)
export SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1
systemd-nspawn "${NSPAWN_OPTS[@]}" --bind-ro="$WORK/wheels:/wheels" /bin/sh -ec '
    python3 -m venv /opt/maskdoor/venv
    /opt/maskdoor/venv/bin/pip install -q --no-index --find-links /wheels maskdoor
    getent group video >/dev/null || groupadd --system video
    getent group gpio >/dev/null || groupadd --system gpio
    useradd --system --user-group --home /var/lib/maskdoor --shell /usr/sbin/nologin \
        --groups video,gpio maskdoor
' >"$WORK/install.log" 2>&1 || { tail -n 20 "$WORK/install.log"; say "FAIL install in the container"; exit 1; }
install -m 0644 "$UNIT_FILE" "$ROOT/etc/systemd/system/maskdoor.service"
install -m 0644 "$REPO/README.md" "$ROOT/opt/maskdoor/README.md"
mkdir -p "$ROOT/etc/systemd/system/maskdoor.service.d" "$ROOT/etc/maskdoor"
printf '[Service]\n# no GPIO in a container: gpiozero'"'"'s mock pins\nEnvironment=GPIOZERO_PIN_FACTORY=mock\n' \
    >"$ROOT/etc/systemd/system/maskdoor.service.d/mock-pins.conf"
printf '[camera]\nsource = "demo"\nloop = true\nrealtime = true\n' >"$ROOT/etc/maskdoor/config.toml"
# the same clip as fast as the models go, for the frame-rate ratio
printf '[camera]\nsource = "demo"\nloop = true\nrealtime = false\n' >"$ROOT/etc/maskdoor/bench.toml"
say "installed: $(ls "$WORK/wheels" | tr '\n' ' ')"

# --- 4. boot -------------------------------------------------------------------------------------
systemd-nspawn "${NSPAWN_OPTS[@]}" -b --console=read-only --capability=CAP_BPF \
    --system-call-filter=bpf -M maskdoor-deploy </dev/null >"$WORK/boot.log" 2>&1 &
NSPAWN_PID=$!
for _ in $(seq 100); do
    LEADER=$(ps -o pid= --ppid "$NSPAWN_PID" | head -n 1 | tr -d ' ')
    [ -n "$LEADER" ] && [ "$(cat /proc/"$LEADER"/comm 2>/dev/null)" = systemd ] && break
    kill -0 "$NSPAWN_PID" 2>/dev/null || break
    LEADER=""; sleep 0.2
done
[ -n "$LEADER" ] || { tail -n 30 "$WORK/boot.log"; say "FAIL boot: no systemd in the container"; exit 1; }
ct() { nsenter -t "$LEADER" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
for _ in $(seq 240); do  # the bus is up a moment after PID 1 starts
    STATE=$(timeout 120 nsenter -t "$LEADER" -a /usr/bin/systemctl is-system-running --wait 2>&1)
    case $STATE in running|degraded|maintenance|stopping|offline) break ;; esac
    kill -0 "$NSPAWN_PID" 2>/dev/null || break
    sleep 0.5
done
say "booted $(ct systemctl --version | head -n 1) in $(( $(date +%s) - T0 )) s since the start: $STATE"
case $STATE in running|degraded) ;; *) tail -n 30 "$WORK/boot.log"; say "FAIL boot: $STATE"; exit 1 ;; esac
ct systemctl --failed --no-legend --plain | sed 's/^/  failed at boot (not maskdoor): /' | grep -v maskdoor || true
ct systemctl show -p DevicePolicy,DeviceAllow maskdoor | sed 's/^/  /'
CURSOR=$(ct journalctl -n 1 --show-cursor -q -o cat | sed -n 's/^-- cursor: //p')

unit_prop() { ct systemctl show -p "$1" --value maskdoor; }

# --- 5. the checks -------------------------------------------------------------------------------
# READY: Type=notify, so `systemctl start` returns once the models are loaded and the camera open;
# the STATUS sent with READY=1 names the source.
t=$(date +%s.%N)
rc=0; timeout 150 nsenter -t "$LEADER" -a /usr/bin/systemctl start maskdoor || rc=$?
dt=$(since "$t")
STATUS=$(unit_prop StatusText); ACTIVE=$(unit_prop ActiveState)/$(unit_prop SubState)
[ "$rc" -eq 0 ] && [ "$ACTIVE" = active/running ] && [[ $STATUS == watching* ]]; r=$?
check $r "systemctl start maskdoor returned on READY after $dt s (rc $rc, $ACTIVE, STATUS=\"$STATUS\")"

# The journal: XNNPACK delegate and an alert within 30 s of the start.
XNN=1; ALERT=1
for i in $(seq 60); do
    J=$(ct journalctl -u maskdoor --after-cursor="$CURSOR" -o cat --no-pager)
    grep -q "Created TensorFlow Lite XNNPACK delegate for CPU" <<<"$J" && XNN=0
    grep -Eq "alert [0-9a-f-]{36}: " <<<"$J" && ALERT=0
    [ $XNN -eq 0 ] && [ $ALERT -eq 0 ] && break
    sleep 0.5
done
waited=$(since "$t")
check $XNN "journal shows the XNNPACK delegate"
check $ALERT "journal shows an alert $waited s after the start ($(grep -Em1 'alert [0-9a-f-]{36}: ' <<<"$J" | cut -c1-80))"
! grep -q "Error in cpuinfo" <<<"$J"; check $? "no 'Error in cpuinfo' from LiteRT in the journal"

# Watchdog: a stopped main process stops pinging; systemd kills it and starts a new one.
PID0=$(unit_prop MainPID); N0=$(unit_prop NRestarts)
ct sh -c "kill -STOP $PID0"
t=$(date +%s)
ok=1
for _ in $(seq 120); do
    sleep 1
    PID1=$(unit_prop MainPID); N1=$(unit_prop NRestarts)
    if [ "$N1" -gt "$N0" ] && [ "$PID1" != 0 ] && [ "$PID1" != "$PID0" ] &&
       [ "$(unit_prop SubState)" = running ]; then ok=0; break; fi
done
RESULT=$(ct journalctl -u maskdoor --after-cursor="$CURSOR" -o cat --no-pager | grep -m1 -i "watchdog timeout" || true)
check $ok "SIGSTOP of MainPID $PID0: watchdog restart after $(( $(date +%s) - t )) s (NRestarts $N0 -> $N1, MainPID $PID1; \"$RESULT\")"

# DevicePolicy=closed is enforced (cgroup v2 device BPF): with the unit's device options a
# device outside its list (/dev/net/tun) cannot be opened, and can be without them.
DEVOPTS=(-p DevicePolicy=closed)
while read -r d; do DEVOPTS+=(-p "$d"); done < <(ct systemctl show -p DeviceAllow maskdoor)
opens() {  # opens NAME DEVICE [OPTION...]
    ct systemd-run --wait --quiet --collect --unit="$1" "${@:3}" /bin/sh -c ": <>$2"
}
opens devpolicy-free /dev/net/tun; free=$?
opens devpolicy-closed /dev/net/tun "${DEVOPTS[@]}"; closed=$?
opens devpolicy-null /dev/null "${DEVOPTS[@]}"; null=$?
[ $free -eq 0 ] && [ $closed -ne 0 ] && [ $null -eq 0 ]
check $? "DevicePolicy=closed enforced: /dev/net/tun opens without the unit's device options (rc $free), not with them (rc $closed); /dev/null does (rc $null)"

# Exposure, as systemd in the container rates the installed unit.
SEC=$(ct systemd-analyze security maskdoor.service 2>&1 | sed -n 's/.*Overall exposure level for maskdoor.service: \([0-9.]*\).*/\1/p')
[ -n "$SEC" ] && le "$SEC" 2.0; check $? "systemd-analyze security maskdoor.service: exposure ${SEC:-?} (<= 2.0)"

# Frame rate under the unit vs. the same command in the container outside it. The unit runs with
# a second drop-in that only swaps ExecStart for a bounded run on bench.toml (realtime = false)
# and asks for the run's report; every hardening option stays. The plain run is the same command
# as the maskdoor user. Two rounds, alternating; each side keeps its best run.
BENCH="/opt/maskdoor/venv/bin/maskdoor run --config /etc/maskdoor/bench.toml --max-frames $FRAMES"
ct systemctl stop maskdoor
cat >"$ROOT/etc/systemd/system/maskdoor.service.d/zz-bench.conf" <<EOF
[Service]
ExecStart=
ExecStart=$BENCH
Environment=MASKDOOR_RUN_REPORT=/var/lib/maskdoor/report.json
Restart=no
EOF
ct systemctl daemon-reload
fps() { sed -n 's/.*"fps": \([0-9.]*\).*/\1/p' | grep . || echo 0; }
UNIT_FPS=(); PLAIN_FPS=()
for round in 1 2; do
    ct rm -f /var/lib/maskdoor/report.json
    ct systemctl start maskdoor
    for _ in $(seq 600); do
        case $(unit_prop ActiveState) in inactive|failed) break ;; esac; sleep 0.5
    done
    UNIT_FPS+=("$(ct cat /var/lib/maskdoor/report.json 2>/dev/null | fps)")
    ct runuser -u maskdoor -- env GPIOZERO_PIN_FACTORY=mock MASKDOOR_RUN_REPORT=/tmp/plain.json \
        $BENCH >"$WORK/plain$round.log" 2>&1
    PLAIN_FPS+=("$(ct cat /tmp/plain.json 2>/dev/null | fps)")
    ct rm -f /tmp/plain.json
done
rm "$ROOT/etc/systemd/system/maskdoor.service.d/zz-bench.conf"
ct systemctl daemon-reload
best() { printf '%s\n' "$@" | sort -g | tail -n 1; }
U=$(best "${UNIT_FPS[@]}"); P=$(best "${PLAIN_FPS[@]}")
RATIO=$(awk -v u="$U" -v p="$P" 'BEGIN { printf "%.2f", (p > 0 ? u / p : 0) }')
le 0.8 "$RATIO"
check $? "frame rate under the unit ${UNIT_FPS[*]} fps vs outside it ${PLAIN_FPS[*]} fps: best/best $RATIO (>= 0.8)"

# Warnings from systemd about the unit: those naming it since boot (loading the unit file), and
# every one since the checks began, as some ("Couldn't stat device ...") do not name the unit.
# The watchdog check causes three on purpose, the DevicePolicy check one.
EXPECTED='^maskdoor\.service: (Watchdog timeout|Killing process .* with signal SIGABRT|Main process exited, code=(dumped|killed), status=6/ABRT|Failed with result .watchdog.)|^devpolicy-closed\.service: (Main process exited|Failed with result .exit-code.)'
WARN=$( { ct journalctl -b -p warning -o cat --no-pager _PID=1 | grep -i maskdoor
          ct journalctl -p warning -o cat --no-pager --after-cursor="$CURSOR" _PID=1 | grep -v -i maskdoor
        } | sort -u)
BAD=$(grep -v -E "$EXPECTED" <<<"$WARN" | sed '/^$/d' || true)
grep -E "$EXPECTED" <<<"$WARN" | sed 's/^/  expected (caused by the checks above): /'
[ -z "$BAD" ]; check $? "no journal warning from the unit's options$([ -n "$BAD" ] && printf ':\n%s' "$(sed 's/^/    /' <<<"$BAD")")"

say "done in $(( $(date +%s) - T0 )) s: $FAILS failure(s)"
[ "$FAILS" -eq 0 ]
