# Helpers shared by the deployment checks; sourced, not run.

say() { printf '%s\n' "$*"; }

need_tool() {  # need_tool COMMAND PACKAGE: install PACKAGE with apt-get where COMMAND is missing
    command -v "$1" >/dev/null && return 0
    command -v apt-get >/dev/null || return 1
    say "installing $2 (for $1) with apt-get"
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q "$2" \
        >/dev/null 2>&1 || { apt-get -q update >/dev/null 2>&1 &&
        DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -q "$2" \
        >/dev/null 2>&1; } || return 1
    command -v "$1" >/dev/null
}

host_mirror() {  # host_mirror SUITE: the Debian mirror apt uses here for SUITE (deb822 or one-line)
    local f uri suite=$1
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk -v s="$suite" '
            /^[ \t]*$/ { if (uri != "" && hit && main) { print uri; exit } uri=""; hit=0; main=0; next }
            /^URIs:/ { uri=$2 }
            /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == s) hit=1 }
            /^Components:/ { for (i = 2; i <= NF; i++) if ($i == "main") main=1 }
            END { if (uri != "" && hit && main) print uri }' "$f" | head -n 1)
        [ -n "$uri" ] && { say "$uri"; return; }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk -v s="$suite" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) while ($i !~ /\]$/) i++;
              if ($2 ~ /^\[/) i++; if ($(i + 1) == s) { print $i; exit } }' "$f")
        [ -n "$uri" ] && { say "$uri"; return; }
    done
    say http://deb.debian.org/debian
}

# pip download for another machine: every manylinux tag up to glibc 2.36 (bookworm's) for ARCH
manylinux_platforms() {  # manylinux_platforms ARCH -> --platform options, one per line
    local m
    printf -- '--platform\nmanylinux2014_%s\n' "$1"
    for m in $(seq 17 36); do printf -- '--platform\nmanylinux_2_%s_%s\n' "$m" "$1"; done
}
