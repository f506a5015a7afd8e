# Shared helpers for the testdata scripts. Sourced, not run.
# Nothing here needs root mounts: everything is built from Debian packages with
# `apt-get download` + `dpkg -x`, cpio, mkfs.ext4 -d, mtools and sfdisk on plain files.

log() { printf '[testdata] %s\n' "$*" >&2; }
die() { printf '[testdata] error: %s\n' "$*" >&2; exit 1; }

# The output directory: first argument, else $PLATTER_TESTDATA, else target/testdata at the
# top of the repository (outside git: target/ is ignored).
testdata_out_dir() {
  local here
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
  local out="${1:-${PLATTER_TESTDATA:-$here/../target/testdata}}"
  mkdir -p "$out"
  (cd "$out" && pwd)
}

need_tools() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null 2>&1 || die "missing tool '$t' (run scripts/install.sh)"
  done
}

# Downloads (once) and unpacks a Debian package into DIR. The .deb files are cached in
# $OUT/debs so that a rebuild does not fetch again.
fetch_deb() {
  local out="$1" pkg="$2" dest="$3"
  mkdir -p "$out/debs" "$dest"
  local deb
  deb="$(find "$out/debs" -maxdepth 1 -name "${pkg}_*.deb" | head -n 1)"
  if [ -z "$deb" ]; then
    log "downloading $pkg"
    # apt-get download writes into the current directory; _apt may not be able to write
    # there, which only produces a warning when run as root.
    (cd "$out/debs" && apt-get download -q "$pkg" 2>&1 | grep -v '^W: Download is performed unsandboxed' >&2 || true)
    deb="$(find "$out/debs" -maxdepth 1 -name "${pkg}_*.deb" | head -n 1)"
    [ -n "$deb" ] || die "apt-get download $pkg produced no .deb (apt-get update needed?)"
  fi
  dpkg -x "$deb" "$dest"
}

# The versioned kernel package the cloud kernel meta-package points at today.
cloud_kernel_package() {
  local pkg
  pkg="$(apt-cache depends linux-image-cloud-amd64 2>/dev/null \
    | awk '/Depends: linux-image-[0-9]/ { print $2; exit }')"
  [ -n "$pkg" ] || die "apt-cache depends linux-image-cloud-amd64 found no kernel package (apt-get update needed?)"
  printf '%s\n' "$pkg"
}

# A fingerprint of the given files' contents: cached outputs carry the fingerprint of the
# scripts that made them, so changing a script (the guest's /init, a module list, a
# kernel option) rebuilds them instead of reusing stale ones.
fingerprint() {
  cat "$@" | sha256sum | cut -c1-16
}
