#!/usr/bin/env bash
# Builds the Debian and RPM packages of sersync in one command:
#
#     packaging/build.sh              # -> target/debian/sersync_*.deb, target/generate-rpm/sersync-*.rpm
#     packaging/build.sh --no-build   # package the release binaries already built
#
# Steps: installs cargo-deb and cargo-generate-rpm (cargo install --locked) if missing;
# cargo build --release; lays out every file of the package under target/pkgroot/ (see
# stage() below); then cargo deb --no-build and cargo generate-rpm, which read
# [package.metadata.deb] and [package.metadata.generate-rpm] in Cargo.toml.
#
# Why a staging tree: what the package holds depends on what the repository holds
# (units, sysctl file, generator binary, man pages, completions are globbed), and both
# tools refuse a pattern that matches nothing. So this script decides, file by file, and
# the metadata takes target/pkgroot/exec (mode 0755) and target/pkgroot/data (0644) as
# they are. It also strips the binaries (cargo-generate-rpm does not) and gzips the man
# pages, so both packages get the same bytes. The maintainer scripts are copied to
# target/pkgroot/{deb,rpm}-scripts with @SYSCTL_FILES@ replaced by the names of the
# sysctl.d files shipped.
#
# Prints the paths of the two packages on its last two lines.
set -euo pipefail
# grep that reads all its input: `grep -q` exits at the first match, and under
# pipefail the writer's SIGPIPE would then fail the pipeline at random.
has() { grep "$@" >/dev/null; }

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# Tool versions known to work with the metadata in Cargo.toml.
CARGO_DEB_VERSION=${CARGO_DEB_VERSION:-^3.8}
CARGO_GENERATE_RPM_VERSION=${CARGO_GENERATE_RPM_VERSION:-^0.21}

build=yes
for arg in "$@"; do
    case "$arg" in
        --no-build) build=no ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        *) echo "build.sh: unknown argument $arg" >&2; exit 64 ;;
    esac
done

log() { printf '==> %s\n' "$*" >&2; }

ensure_tool() { # ensure_tool SUBCOMMAND CRATE VERSION
    if cargo "$1" --version >/dev/null 2>&1; then
        return 0
    fi
    log "installing $2 ($3) with cargo install --locked"
    cargo install --locked --quiet "$2" --version "$3"
}

ensure_tool deb cargo-deb "$CARGO_DEB_VERSION"
ensure_tool generate-rpm cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"

# Where cargo puts the release binaries (CARGO_TARGET_DIR and .cargo/config honoured).
METADATA=$(cargo metadata --format-version 1 --no-deps)
TARGET_DIR=$(printf '%s' "$METADATA" | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$TARGET_DIR" ] || TARGET_DIR=$ROOT/target
if printf '%s' "$METADATA" | has '{"kind":\["bin"\],"crate_types":\["bin"\],"name":"sersync-generator"'; then
    HAS_GENERATOR=yes
else
    HAS_GENERATOR=no
fi

if [ "$build" = yes ]; then
    log "cargo build --release"
    cargo build --release
fi
RELEASE=$TARGET_DIR/release
BINS="sersyncd sersyncctl"
[ "$HAS_GENERATOR" = no ] || BINS="$BINS sersync-generator"
for bin in $BINS; do
    [ -x "$RELEASE/$bin" ] || { echo "build.sh: $RELEASE/$bin missing (build first)" >&2; exit 1; }
done

# --- the staging tree ------------------------------------------------------------------
STAGE=$ROOT/target/pkgroot     # the path Cargo.toml names (relative: target/pkgroot)
EXEC=$STAGE/exec
DATA=$STAGE/data
rm -rf "$STAGE"
mkdir -p "$EXEC/usr/bin" "$DATA"

put() { # put SRC DEST-RELATIVE-TO-DATA-ROOT
    install -D -m 0644 "$1" "$DATA/$2"
    printf '    %-44s -> /%s\n' "${1#"$ROOT"/}" "$2" >&2
}

stage() {
    log "staging the package tree in ${STAGE#"$ROOT"/}"

    # Binaries, stripped (the packages carry no debug info).
    for bin in sersyncd sersyncctl; do
        strip -o "$EXEC/usr/bin/$bin" "$RELEASE/$bin"
        chmod 0755 "$EXEC/usr/bin/$bin"
        printf '    %-44s -> /usr/bin/%s\n' "target/release/$bin (stripped)" "$bin" >&2
    done
    # The systemd generator, when the crate has that binary target.
    if [ "$HAS_GENERATOR" = yes ]; then
        mkdir -p "$EXEC/usr/lib/systemd/system-generators"
        strip -o "$EXEC/usr/lib/systemd/system-generators/sersync-generator" \
            "$RELEASE/sersync-generator"
        chmod 0755 "$EXEC/usr/lib/systemd/system-generators/sersync-generator"
        printf '    %-44s -> /usr/lib/systemd/system-generators/sersync-generator\n' \
            "target/release/sersync-generator (stripped)" >&2
    else
        log "no sersync-generator binary in this build: the package has no generator"
    fi

    local f name
    # systemd units (all templates today) and the sysctl.d file(s). Everything goes under
    # /usr/lib, also on Debian 12 where systemd itself still ships /lib/systemd/...
    # (the same directory: /lib -> usr/lib). The one visible effect: dpkg -r prints
    # "directory '/usr/lib/systemd/system-generators' not empty so not removed", because
    # dpkg knows that directory under its /lib name only. Harmless.
    SYSCTL_FILES=
    for f in systemd/*; do
        [ -f "$f" ] || continue
        name=${f##*/}
        case "$name" in
            *.service|*.timer|*.socket|*.path|*.target)
                put "$f" "usr/lib/systemd/system/$name" ;;
            *.sysctl|*.sysctl.conf|*sysctl*.conf|[0-9][0-9]-*.conf)
                # A sysctl.d file: "key = value" lines. The installed name ends in .conf.
                name=${name%.sysctl}
                case "$name" in *.conf) ;; *) name=$name.conf ;; esac
                put "$f" "usr/lib/sysctl.d/$name"
                SYSCTL_FILES="$SYSCTL_FILES $name" ;;
        esac
    done
    for f in systemd/sysctl.d/*.conf; do
        [ -f "$f" ] || continue
        put "$f" "usr/lib/sysctl.d/${f##*/}"
        SYSCTL_FILES="$SYSCTL_FILES ${f##*/}"
    done
    SYSCTL_FILES=${SYSCTL_FILES# }

    # D-Bus: the system-bus policy, and the interface definition where D-Bus looks for
    # them (/usr/share/dbus-1/interfaces/).
    for f in dbus/*.conf; do
        [ -f "$f" ] && put "$f" "usr/share/dbus-1/system.d/${f##*/}"
    done
    for f in dbus/*.xml; do
        [ -f "$f" ] && put "$f" "usr/share/dbus-1/interfaces/${f##*/}"
    done

    # Man pages, gzipped (-n: no name or time stamp, reproducible), by section suffix.
    for f in packaging/man/*.[1-8]; do
        [ -f "$f" ] || continue
        name=${f##*/}
        mkdir -p "$DATA/usr/share/man/man${name##*.}"
        gzip -9n -c "$f" >"$DATA/usr/share/man/man${name##*.}/$name.gz"
        printf '    %-44s -> /usr/share/man/man%s/%s.gz\n' "$f" "${name##*.}" "$name" >&2
    done

    # Shell completions: NAME.bash, _NAME (zsh), NAME.fish.
    for f in packaging/completions/*; do
        [ -f "$f" ] || continue
        name=${f##*/}
        case "$name" in
            *.bash) put "$f" "usr/share/bash-completion/completions/${name%.bash}" ;;
            _*) put "$f" "usr/share/zsh/vendor-completions/$name" ;;
            *.fish) put "$f" "usr/share/fish/vendor_completions.d/$name" ;;
        esac
    done

    # Maintainer scripts.
    mkdir -p "$STAGE/deb-scripts" "$STAGE/rpm-scripts"
    for f in packaging/deb/postinst packaging/deb/prerm packaging/deb/postrm; do
        sed "s|@SYSCTL_FILES@|$SYSCTL_FILES|g" "$f" >"$STAGE/deb-scripts/${f##*/}"
        chmod 0755 "$STAGE/deb-scripts/${f##*/}"
    done
    for f in packaging/rpm/*.sh; do
        sed "s|@SYSCTL_FILES@|$SYSCTL_FILES|g" "$f" >"$STAGE/rpm-scripts/${f##*/}"
    done
    log "sysctl.d files: ${SYSCTL_FILES:-none}"
}
stage

# --- the packages ----------------------------------------------------------------------
log "cargo deb --no-build"
cargo deb --no-build --no-strip --quiet >"$STAGE/cargo-deb.out"
DEB=$(tail -n 1 "$STAGE/cargo-deb.out")

log "cargo generate-rpm"
rm -f "$TARGET_DIR"/generate-rpm/sersync-*.rpm
cargo generate-rpm --target-dir "$TARGET_DIR"
# shellcheck disable=SC2012 # our own file names
RPM=$(ls -t "$TARGET_DIR"/generate-rpm/sersync-*.rpm | head -n 1)

echo "$DEB"
echo "$RPM"
