#!/usr/bin/env bash
# Build the local sandbox base image (default openenv-ws/python-base:3.11) without any
# container registry: debootstrap a minimal Debian bookworm with python3 from the Debian
# mirror this machine's apt is configured with, trim it, and `docker import` it.
#
# Run as root with a running dockerd (scripts/setup_docker.sh does both).
# Idempotent: does nothing if the image exists, unless FORCE=1.
#
# Environment:
#   OPENENV_BASE_IMAGE  image tag to create        (default openenv-ws/python-base:3.11)
#   FORCE=1             rebuild even if the image exists
#   DEBIAN_SUITE        suite to bootstrap          (default bookworm; Python 3.11)
#   DEBIAN_MIRROR       mirror URL                  (default: parsed from /etc/apt/sources.list*)
#   TMPDIR              where the temporary rootfs goes (default /var/tmp)
set -euo pipefail

IMAGE=${OPENENV_BASE_IMAGE:-openenv-ws/python-base:3.11}
SUITE=${DEBIAN_SUITE:-bookworm}
FALLBACK_MIRROR=http://deb.debian.org/debian
INCLUDE=python3,python3-venv,ca-certificates
export PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

LOG_TAG=build_base_image
# shellcheck source=scripts/timing.sh
source "$(dirname -- "${BASH_SOURCE[0]}")/../scripts/timing.sh"

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap needs it)"
command -v docker >/dev/null 2>&1 || die "no docker CLI in PATH (run scripts/setup_docker.sh)"
timeout 10 docker version >/dev/null 2>&1 </dev/null || die "dockerd is not answering (run scripts/setup_docker.sh)"

if [[ ${FORCE:-0} != 1 ]] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
    log "$IMAGE already exists (FORCE=1 to rebuild)"
    exit 0
fi
command -v debootstrap >/dev/null 2>&1 || die "debootstrap missing (apt-get install debootstrap)"

# ------------------------------------------------------------------ mirror
# Print "URI<TAB>SIGNED-BY" for every enabled `deb` source of $SUITE with component main,
# in apt's order: sources.list, then sources.list.d/*.list and *.sources (one-line and deb822).
list_sources() {
    local f
    local files=()
    [[ -f /etc/apt/sources.list ]] && files+=(/etc/apt/sources.list)
    for f in /etc/apt/sources.list.d/*; do
        [[ -f $f ]] && files+=("$f")
    done
    for f in "${files[@]}"; do
        case $f in
        *.list)
            awk -v suite="$SUITE" '
                { sub(/#.*/, "") }
                $1 != "deb" { next }
                {
                    i = 2; opts = ""
                    if ($2 ~ /^\[/) {           # [ key=value ... ]
                        for (; i <= NF; i++) { opts = opts " " $i; if ($i ~ /\]$/) { i++; break } }
                    }
                    uri = $i; s = $(i + 1); main = 0
                    for (j = i + 2; j <= NF; j++) if ($j == "main") main = 1
                    sb = ""
                    if (match(opts, /signed-by=[^] ]+/)) sb = substr(opts, RSTART + 10, RLENGTH - 10)
                    if (s == suite && main) print uri "\t" sb
                }' "$f"
            ;;
        *.sources)
            awk -v suite="$SUITE" '
                function flush(   n, u, k, ok, m) {
                    if (types ~ /(^| )deb( |$)/ && tolower(enabled) != "no") {
                        ok = 0; m = 0
                        n = split(suites, a, " "); for (k = 1; k <= n; k++) if (a[k] == suite) ok = 1
                        n = split(comps, a, " ");  for (k = 1; k <= n; k++) if (a[k] == "main") m = 1
                        if (ok && m) {
                            n = split(uris, u, " ")
                            for (k = 1; k <= n; k++) print u[k] "\t" signed
                        }
                    }
                    types = uris = suites = comps = signed = enabled = ""; last = ""
                }
                /^[ \t]*#/ { next }
                /^[ \t]*$/ { flush(); next }
                /^[ \t]/ { if (last == "uris") uris = uris " " $0; next }   # continuation line
                {
                    key = tolower($0); sub(/:.*/, "", key)
                    val = $0; sub(/^[^:]*:[ \t]*/, "", val); gsub(/\t/, " ", val)
                    last = key
                    if (key == "types") types = val
                    else if (key == "uris") uris = val
                    else if (key == "suites") suites = val
                    else if (key == "components") comps = val
                    else if (key == "signed-by") signed = val
                    else if (key == "enabled") enabled = val
                }
                END { flush() }' "$f"
            ;;
        esac
    done
}

MIRROR=${DEBIAN_MIRROR:-}
KEYRING=
if [[ -z $MIRROR ]]; then
    # prefer a source signed by the Debian archive keyring (or unsigned-by), so that a
    # third-party repo using suite "bookworm" + component "main" is not mistaken for Debian
    first_uri='' first_sb=''
    while IFS=$'\t' read -r uri sb; do
        case $uri in http://* | https://* | file:/*) ;; *) continue ;; esac
        [[ -z $first_uri ]] && first_uri=$uri first_sb=$sb
        if [[ -z $sb || $sb == *debian-archive* ]]; then
            MIRROR=$uri KEYRING=$sb
            break
        fi
    done < <(list_sources)
    if [[ -z $MIRROR && -n $first_uri ]]; then
        MIRROR=$first_uri KEYRING=$first_sb
    fi
    if [[ -z $MIRROR ]]; then
        MIRROR=$FALLBACK_MIRROR
        log "no '$SUITE main' source found in /etc/apt/sources.list*; using $MIRROR"
    fi
fi
keyring_args=()
# Signed-By may also be an inline key block; debootstrap can only use a keyring file
if [[ $KEYRING == /* && $KEYRING == *.gpg && -f $KEYRING ]]; then
    keyring_args=(--keyring="$KEYRING")
fi

# ------------------------------------------------------------------ work dir + cleanup
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/openenv-base.XXXXXX")
ROOTFS=$WORK/rootfs
cleanup() {
    local m
    [[ -n ${WORK:-} && -d $WORK ]] || return 0
    # unmount whatever an interrupted debootstrap left mounted inside (deepest first)
    awk -v w="$WORK/" 'index($2, w) == 1 { print $2 }' /proc/mounts | sort -r |
        while read -r m; do umount -l "$m" 2>/dev/null || true; done
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT
trap 'log "interrupted; cleaning up"; exit 130' INT
trap 'log "terminated; cleaning up"; exit 143' TERM

# ------------------------------------------------------------------ debootstrap
now_us
t=$NOW_US
log "debootstrap --variant=minbase --include=$INCLUDE $SUITE from $MIRROR ${keyring_args[*]} (1-2 min)"
if ! debootstrap --variant=minbase --include="$INCLUDE" "${keyring_args[@]}" \
    "$SUITE" "$ROOTFS" "$MIRROR" </dev/null >"$WORK/debootstrap.out" 2>&1; then
    echo "----- last 30 lines of debootstrap output -----" >&2
    tail -n 30 "$WORK/debootstrap.out" >&2 || true
    if [[ -f $ROOTFS/debootstrap/debootstrap.log ]]; then
        echo "----- last 30 lines of debootstrap.log -----" >&2
        tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2 || true
    fi
    die "debootstrap failed"
fi
fmt_since "$t"
log "debootstrap done in $SINCE ($(du -sh --one-file-system "$ROOTFS" | cut -f1))"

# ------------------------------------------------------------------ trim + finish rootfs
now_us
t=$NOW_US
# nothing must stay mounted inside before we tar it
awk -v r="$ROOTFS/" 'index($2, r) == 1 { print $2 }' /proc/mounts | sort -r |
    while read -r m; do umount -l "$m" || true; done

rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/cache/apt/archives/partial/* \
    "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/var/lib/apt/lists/* \
    "$ROOTFS"/usr/share/man/* "$ROOTFS"/usr/share/info/* "$ROOTFS"/usr/share/lintian \
    "$ROOTFS"/usr/share/linda "$ROOTFS"/var/cache/man/* "$ROOTFS"/var/cache/debconf/*-old \
    "$ROOTFS"/var/log/*.log "$ROOTFS"/var/log/apt/* "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/*
mkdir -p "$ROOTFS"/var/lib/apt/lists/partial
# docs: keep only the copyright files
find "$ROOTFS"/usr/share/doc -xdev -mindepth 1 ! -type d ! -name copyright -delete 2>/dev/null || true
find "$ROOTFS"/usr/share/doc -xdev -mindepth 1 -type d -empty -delete 2>/dev/null || true
# locales: keep the alias file only
find "$ROOTFS"/usr/share/locale -xdev -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} + 2>/dev/null || true
# same as debian:*-slim: packages installed later inside the image skip docs/man/locales too
cat >"$ROOTFS"/etc/dpkg/dpkg.cfg.d/openenv-slim <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/lintian/*
CFG
cat >"$ROOTFS"/etc/apt/apt.conf.d/openenv-slim <<'CFG'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb || true"; };
CFG

# bytecode for the stdlib and Debian's dist-packages (the root fs is read-only at run time)
pydirs=()
for d in "$ROOTFS"/usr/lib/python3.*; do
    [[ -d $d ]] && pydirs+=("${d#"$ROOTFS"}")
done
[[ -d $ROOTFS/usr/lib/python3/dist-packages ]] && pydirs+=(/usr/lib/python3/dist-packages)
((${#pydirs[@]})) || die "no python3 in the rootfs"
chroot "$ROOTFS" /usr/bin/python3 -m compileall -q "${pydirs[@]}" >"$WORK/compileall.out" 2>&1 || {
    tail -n 30 "$WORK/compileall.out" >&2
    log "WARNING: compileall reported errors (see above)"
}

ln -sfn /usr/bin/python3 "$ROOTFS"/usr/local/bin/python
: >"$ROOTFS"/etc/resolv.conf          # debootstrap copied the host's; docker provides its own
echo localhost >"$ROOTFS"/etc/hostname # do not leak the build host's name
fmt_since "$t"
log "trim + compileall done in $SINCE ($(du -sh --one-file-system "$ROOTFS" | cut -f1))"

# ------------------------------------------------------------------ import
now_us
t=$NOW_US
old_id=$(docker image inspect --format '{{.Id}}' "$IMAGE" 2>/dev/null || true)
py_version=$(chroot "$ROOTFS" /usr/bin/python3 -c 'import platform; print(platform.python_version())')
tar --numeric-owner -C "$ROOTFS" -c --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' . |
    docker import \
        --change 'ENV LANG=C.UTF-8' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change "LABEL org.openenv-ws.base.method=debootstrap org.openenv-ws.base.suite=$SUITE org.openenv-ws.base.python=$py_version" \
        --change 'CMD ["python3"]' \
        --message "openenv-ws base: debootstrap minbase $SUITE + python3 $py_version" \
        - "$IMAGE" >/dev/null
fmt_since "$t"
log "imported $IMAGE in $SINCE ($(docker image inspect --format '{{.Size}}' "$IMAGE" | awk '{ printf "%.0f MB", $1 / 1e6 }'), Python $py_version)"

if [[ -n $old_id && $old_id != "$(docker image inspect --format '{{.Id}}' "$IMAGE")" ]]; then
    # FORCE=1 rebuild: drop the previous, now untagged, image (kept if a container still uses it)
    if docker rmi "$old_id" >/dev/null 2>&1; then
        log "removed previous image ${old_id#sha256:}"
    fi
fi

# smoke test, with the flags sandboxes run under
docker run --rm --network none --read-only --user 65534:65534 "$IMAGE" \
    python -c 'import ssl, venv, sys; print(sys.version.split()[0])' >/dev/null ||
    die "smoke test of $IMAGE failed"
log "done: $IMAGE"
