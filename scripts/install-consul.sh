#!/usr/bin/env bash
# Installs the Consul agent the project runs (`consul agent -dev`), as DEST_DIR/consul
# (default .tools/bin). A `consul` >= 1.8 already on PATH or in DEST_DIR is used as is.
# Otherwise Debian bullseye's `consul` package (1.8.7) is fetched WITHOUT touching the
# machine's apt configuration: apt runs against a throw-away sources.list, lists dir and
# cache, downloads the .deb and we unpack only the binary. See shared/TOOLS.md.
# Idempotent: a second run finds the binary and does nothing. Run as root on Debian.
set -euo pipefail

MIN_MAJOR=1
MIN_MINOR=8
DEST_DIR=${1:-.tools/bin}
# Tried in order: the normal mirror first; bullseye moves to the archive when its LTS ends.
MIRRORS=${CONSUL_DEB_MIRRORS:-"http://deb.debian.org/debian http://archive.debian.org/debian"}

log() { printf 'install-consul: %s\n' "$*" >&2; }

# True when the binary runs and reports version >= MIN_MAJOR.MIN_MINOR.
recent_enough() {
    local version major minor
    version=$("$1" version 2>/dev/null | sed -n 's/^Consul v\([0-9][0-9.]*\).*/\1/p' | head -n1)
    [ -n "$version" ] || return 1
    major=${version%%.*}
    minor=${version#*.}
    minor=${minor%%.*}
    [ "$major" -gt "$MIN_MAJOR" ] || { [ "$major" -eq "$MIN_MAJOR" ] && [ "$minor" -ge "$MIN_MINOR" ]; }
}

# Downloads the bullseye .deb into $1 using only files under $1; prints the .deb path.
download_deb() {
    local work=$1 mirror opts
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
    # apt drops to the _apt user for downloads; let it write into the work dir.
    if id _apt >/dev/null 2>&1; then chown _apt "$work"; else chmod 755 "$work"; fi
    for mirror in $MIRRORS; do
        echo "deb $mirror bullseye main" >"$work/sources.list"
        opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
            -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
            -o "Acquire::Check-Valid-Until=false" -o "APT::Get::List-Cleanup=false")
        log "fetching the consul package list from $mirror (bullseye)"
        if apt-get "${opts[@]}" -qq update >&2 && (cd "$work" && apt-get "${opts[@]}" -qq download consul >&2); then
            ls "$work"/consul_*.deb
            return 0
        fi
        log "no consul package from $mirror"
    done
    return 1
}

main() {
    local found
    if [ -x "$DEST_DIR/consul" ] && recent_enough "$DEST_DIR/consul"; then
        echo "$DEST_DIR/consul"
        return 0
    fi
    if found=$(command -v consul) && recent_enough "$found"; then
        echo "$found"
        return 0
    fi
    command -v apt-get >/dev/null || { log "no consul >= 1.8 and no apt-get to fetch one"; exit 1; }
    command -v dpkg-deb >/dev/null || { log "no consul >= 1.8 and no dpkg-deb to unpack one"; exit 1; }

    local work deb
    work=$(mktemp -d)
    # shellcheck disable=SC2064  # expand $work now: it is local to this function.
    trap "rm -rf '$work'" EXIT
    deb=$(download_deb "$work") || { log "could not download Debian's consul package"; exit 1; }
    dpkg-deb -x "$deb" "$work/x"
    mkdir -p "$DEST_DIR"
    install -m 755 "$work/x/usr/bin/consul" "$DEST_DIR/consul"
    recent_enough "$DEST_DIR/consul" || { log "installed consul does not run"; exit 1; }
    log "installed $("$DEST_DIR/consul" version | head -n1)"
    echo "$DEST_DIR/consul"
}

main
