#!/usr/bin/env bash
# Build (once) a Debian root folder with a real GIMP 3 for the end-to-end tests.
#
#   bash tests/e2e/ensure_gimp_root.sh ROOT [SUITE]
#
# SUITE: trixie (default: GIMP 3.0) or sid (GIMP 3.2).  Needs root (debootstrap, chroot).
# Packages: gimp with the Python the plug-in needs (python3-gi, python3-zmq; python3-numpy only
# so that the plug-in's optional numpy path runs too) and xvfb for the interactive-dialog test.
# Idempotent: a finished root carries a marker with a key of what it was built from; a later run
# with the same key costs ~0 s.  A half-built root (interrupted run, changed package list) is
# rebuilt from scratch.  The build happens in ROOT.partial and is renamed into place only when it
# passed its checks, so ROOT always holds a complete root (or none), and an older complete root
# stays usable while a new one builds.  Every mount (debootstrap's, /proc and /dev for apt) lives
# in a private mount namespace (unshare), so nothing stays mounted on the host whatever happens
# to this script.  Concurrent runs serialise on ROOT.lock.  Logs: ROOT.debootstrap.log, ROOT.apt.log.
set -euo pipefail

root=${1:?usage: ensure_gimp_root.sh ROOT [trixie|sid]}
suite=${2:-${AI_ENHANCE_GIMP_SUITE:-trixie}}
# The Debian mirror: AI_ENHANCE_DEBIAN_MIRROR, else the first Debian archive the machine's own apt
# sources use (one-line .list files and deb822 .sources files; security and updates suites
# skipped).  The repository names no package host of its own.
apt_etc=${AI_ENHANCE_APT_ETC:-/etc/apt}     # tests point this at fake sources
apt_mirror() {
    local f
    {
        for f in "$apt_etc"/sources.list "$apt_etc"/sources.list.d/*.list; do
            [ -f "$f" ] || continue
            awk '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
                               if ($(i+1) !~ /-(security|updates|backports)$/ && $0 ~ / main( |$)/) print $i }' "$f"
        done
        for f in "$apt_etc"/sources.list.d/*.sources; do
            [ -f "$f" ] || continue
            awk 'BEGIN { RS = ""; FS = "\n" }
                 { types = ""; uris = ""; suites = ""; comps = ""; enabled = "yes"
                   for (i = 1; i <= NF; i++) {
                       if ($i ~ /^Types:/) types = $i; else if ($i ~ /^URIs:/) uris = $i
                       else if ($i ~ /^Suites:/) suites = $i; else if ($i ~ /^Components:/) comps = $i
                       else if ($i ~ /^Enabled:/) enabled = $i }
                   if (types ~ /(^|[ :])deb( |$)/ && comps ~ / main( |$)/ && enabled !~ /no/) {
                       split(suites, s, " "); if (s[2] ~ /-(security|updates|backports)$/) next
                       split(uris, u, " "); print u[2] } }' "$f"
        done
    } | head -n1
}
mirror=${AI_ENHANCE_DEBIAN_MIRROR:-$(apt_mirror)}
if [ "${AI_ENHANCE_PRINT_MIRROR:-0}" = 1 ]; then   # tests: say which mirror, build nothing
    echo "$mirror"
    exit 0
fi
if [ -z "$mirror" ]; then
    echo "== [gimp-root] no Debian archive found in /etc/apt/sources.list{,.d}; set AI_ENHANCE_DEBIAN_MIRROR to a Debian mirror URL" >&2
    exit 2
fi
packages="gimp python3-gi python3-zmq python3-numpy xvfb xauth"
recipe_version=1
key=$(printf '%s\n' "$recipe_version" "$suite" "$mirror" "$packages" | sha256sum | cut -c1-16)
marker_name=.ai-enhance-gimp-root
root=${root%/}

say() { echo "== [gimp-root $suite] $*" >&2; }

is_complete() {
    [ -f "$1/$marker_name" ] && [ "$(head -n1 "$1/$marker_name")" = "$key" ] \
        && compgen -G "$1/usr/bin/gimp-console-3*" >/dev/null
}

if is_complete "$root"; then
    exit 0
fi

if [ "$(id -u)" != 0 ]; then
    say "needs root (debootstrap + chroot); not building"
    exit 2
fi

mkdir -p "$(dirname "$root")"
exec 9>"$root.lock"
flock 9
# someone else may have finished it while we waited for the lock
if is_complete "$root"; then
    exit 0
fi

# Never rm -rf a tree that has something mounted in it (a bind-mounted /dev would be wiped).
safe_remove() {
    local dir=$1
    [ -e "$dir" ] || return 0
    local m
    while read -r m; do
        umount -l "$m" 2>/dev/null || true
    done < <(awk -v d="$(readlink -f "$dir")/" 'index($2"/", d) == 1 {print $2}' /proc/self/mounts | sort -r)
    if awk -v d="$(readlink -f "$dir")/" 'index($2"/", d) == 1 {found=1} END {exit !found}' /proc/self/mounts; then
        say "something is still mounted under $dir; refusing to delete it"
        return 1
    fi
    rm -rf --one-file-system "$dir"
}

if ! command -v debootstrap >/dev/null 2>&1; then
    say "installing debootstrap on the host"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null \
        || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q debootstrap >/dev/null; }
fi
# Debian 12's debootstrap knows trixie and sid; older ones may need the script link.
if [ ! -e "/usr/share/debootstrap/scripts/$suite" ] && [ -e /usr/share/debootstrap/scripts/sid ]; then
    ln -s sid "/usr/share/debootstrap/scripts/$suite"
fi

partial="$root.partial"
safe_remove "$partial"
t0=$(date +%s)
say "debootstrap into $partial (~1 min)"
# in its own mount namespace too: the /proc and /sys debootstrap mounts in the target vanish
# with it even when it is interrupted
unshare --mount --propagation private -- \
    debootstrap --variant=minbase "$suite" "$partial" "$mirror" >"$root.debootstrap.log" 2>&1 || {
    tail -n 20 "$root.debootstrap.log" >&2
    say "debootstrap failed (log: $root.debootstrap.log)"
    exit 1
}

cp /etc/resolv.conf "$partial/etc/resolv.conf" 2>/dev/null || true
# A machine clock ahead of the archive (or a mirror snapshot) makes apt reject sid's short-lived
# Release file as "expired"; this root only serves tests, so do not check Valid-Until.
echo 'Acquire::Check-Valid-Until "false";' >"$partial/etc/apt/apt.conf.d/99ai-enhance-no-valid-until"
printf '#!/bin/sh\nexit 101\n' >"$partial/usr/sbin/policy-rc.d"
chmod +x "$partial/usr/sbin/policy-rc.d"

say "apt-get install $packages (~1 min)"
unshare --mount --propagation private -- bash -euc '
    r=$1; shift
    mount --bind /proc "$r/proc"
    mount --bind /dev "$r/dev"
    chroot "$r" env DEBIAN_FRONTEND=noninteractive LC_ALL=C apt-get update -q
    chroot "$r" env DEBIAN_FRONTEND=noninteractive LC_ALL=C \
        apt-get install -y -q --no-install-recommends "$@"
    chroot "$r" apt-get clean
    # smoke test: GIMP starts headless and its Python has what the plug-in imports
    chroot "$r" env HOME=/root python3 -c "import gi, zmq; gi.require_version(\"Gimp\", \"3.0\"); from gi.repository import Gimp"
    chroot "$r" env HOME=/root gimp-console-3 --version
' _ "$partial" $packages >"$root.apt.log" 2>&1 || {
    tail -n 30 "$root.apt.log" >&2
    say "package installation failed (log: $root.apt.log)"
    exit 1
}
version=$(grep -o 'version [0-9][0-9.]*' "$root.apt.log" | tail -n1 | cut -d' ' -f2)

printf '%s\nsuite=%s\ngimp=%s\npackages=%s\n' "$key" "$suite" "$version" "$packages" >"$partial/$marker_name"
# swap in with two renames (ROOT is missing only between them), then delete the old tree
safe_remove "$root.old"
if [ -e "$root" ]; then
    mv "$root" "$root.old"
fi
mv "$partial" "$root"
safe_remove "$root.old" || true
say "ready: GIMP $version in $root ($(( $(date +%s) - t0 )) s)"
