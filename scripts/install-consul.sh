#!/usr/bin/env bash
# Installs the Consul agent the project runs (`consul agent -dev`), as DEST_DIR/consul
# (default .tools/bin). A `consul` >= 1.8 already on PATH or in DEST_DIR is used as is.
# Otherwise Debian bullseye's `consul` package (1.8.7) is fetched WITHOUT touching the
# machine's apt configuration: apt runs against a throw-away sources.list, lists dir and
# cache, downloads the .deb and we unpack only the binary. See shared/TOOLS.md.
# The mirror is the one this machine's apt already uses (its sources, found with
# apt-config, so APT_CONFIG is honoured); CONSUL_DEB_MIRRORS="URI ..." overrides it.
# Idempotent: a second run finds the binary and does nothing. Run as root on Debian.
set -euo pipefail

MIN_MAJOR=1
MIN_MINOR=8
DEST_DIR=${1:-.tools/bin}

log() { printf 'install-consul: %s\n' "$*" >&2; }

# The URI of each `deb` entry in a one-line-style file (sources.list, *.list).
one_line_uris() {
    awk '$1 == "deb" { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/ && i < NF) i++; i++ } print $i }' "$1"
}

# The URIs of each enabled deb822 stanza (*.sources) whose Types include `deb`.
deb822_uris() {
    awk 'BEGIN { RS = ""; FS = "\n" }
    {
        types = ""; uris = ""; enabled = "yes"
        for (i = 1; i <= NF; i++) {
            line = $i
            if (line ~ /^#/) continue
            key = tolower(line); sub(/:.*/, "", key); sub(/^[^:]*:[ \t]*/, "", line)
            if (key == "types") types = line
            else if (key == "uris") uris = line
            else if (key == "enabled") enabled = tolower(line)
        }
        if (enabled != "no" && (" " types " ") ~ / deb /) {
            n = split(uris, u, /[ \t]+/)
            for (j = 1; j <= n; j++) if (u[j] != "") print u[j]
        }
    }' "$1"
}

# The archives this machine's apt uses, in apt's own reading order, each once. Tried in
# order: a security or third-party archive has no bullseye `consul` and is passed over.
machine_mirrors() {
    local list parts file
    eval "$(apt-config shell list Dir::Etc::SourceList/f parts Dir::Etc::SourceParts/d)"
    {
        if [ -f "${list:-}" ]; then one_line_uris "$list"; fi
        for file in "${parts:-/nonexistent/}"*; do
            case $file in
                *.list) one_line_uris "$file" ;;
                *.sources) deb822_uris "$file" ;;
            esac
        done
    } | grep -v '^cdrom:' | sed 's:/*$::' | awk '!seen[$0]++'
}

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
    local work=$1 mirrors mirror opts
    mirrors=${CONSUL_DEB_MIRRORS:-$(machine_mirrors)}
    [ -n "$mirrors" ] || { log "no deb archive in this machine's apt sources; set CONSUL_DEB_MIRRORS"; return 1; }
    mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
    # apt drops to the _apt user for downloads; let it write into the work dir.
    if id _apt >/dev/null 2>&1; then chown _apt "$work"; else chmod 755 "$work"; fi
    for mirror in $mirrors; do
        echo "deb $mirror bullseye main" >"$work/sources.list"
        opts=(-o "Dir::Etc::SourceList=$work/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
            -o "Dir::State::Lists=$work/lists" -o "Dir::Cache=$work/cache"
            -o "Acquire::Check-Valid-Until=false" -o "APT::Get::List-Cleanup=false")
        log "fetching the consul package list from $mirror (bullseye)"
        if apt-get "${opts[@]}" -q update >&2 && (cd "$work" && apt-get "${opts[@]}" -q download consul >&2); then
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
    command -v apt-config >/dev/null || { log "no consul >= 1.8 and no apt-config to find a mirror"; exit 1; }

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
