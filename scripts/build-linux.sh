#!/usr/bin/env bash
# npm run build:linux [-- PLATFORM...]
#
# Cross-builds the Linux addons with cargo-zigbuild (zig as C compiler and linker) and puts each one
# where `node scripts/package.mjs --linux` packs it: npm/<platform>/appkit-jobs.<platform>.node.
#
#   linux-x64-gnu    x86_64-unknown-linux-gnu.2.28    glibc floor pinned at 2.28 (Node 20's own floor)
#   linux-arm64-gnu  aarch64-unknown-linux-gnu.2.28
#   linux-x64-musl   x86_64-unknown-linux-musl        -C target-feature=-crt-static (a cdylib needs it)
#   linux-arm64-musl aarch64-unknown-linux-musl
#
# With no arguments all four are built; `scripts/build-linux.sh linux-arm64-gnu` builds a subset.
# Missing tools are installed: zig (pip install ziglang, linked as `zig`), cargo-zigbuild
# (cargo install --locked), the rustup targets. A glibc build whose newest GLIBC_ symbol version is
# above 2.28 fails the script and is not copied.
#
# Cargo output goes to $CARGO_TARGET_DIR/cross (default target/cross), not to the target dir of
# `npm run build`: cargo-zigbuild's x86_64-unknown-linux-gnu build would otherwise share
# target/x86_64-unknown-linux-gnu with the host build, and each would recompile every crate the other
# built. lib/ (the host build's binding and .node) is never touched.
set -euo pipefail

GLIBC_FLOOR=2.28
ALL_PLATFORMS=(linux-x64-gnu linux-arm64-gnu linux-x64-musl linux-arm64-musl)

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

if [ -t 2 ]; then B=$'\033[1m' R=$'\033[1;31m' N=$'\033[0m'; else B='' R='' N=''; fi
say() { printf '%s[build-linux]%s %s\n' "$B" "$N" "$*" >&2; }
die() { printf '%s[build-linux] error:%s %s\n' "$R" "$N" "$*" >&2; exit 1; }

usage() {
  echo "usage: scripts/build-linux.sh [PLATFORM...]   (default: ${ALL_PLATFORMS[*]})"
  echo "env:   CARGO_TARGET_DIR (cross builds go to \$CARGO_TARGET_DIR/cross; default target/cross)"
}

# zigbuild target (a gnu target's ".2.28" suffix is the glibc version to link against) per platform.
zig_target() {
  case "$1" in
    linux-x64-gnu) echo "x86_64-unknown-linux-gnu.$GLIBC_FLOOR" ;;
    linux-arm64-gnu) echo "aarch64-unknown-linux-gnu.$GLIBC_FLOOR" ;;
    linux-x64-musl) echo "x86_64-unknown-linux-musl" ;;
    linux-arm64-musl) echo "aarch64-unknown-linux-musl" ;;
    *) return 1 ;;
  esac
}

# ---- arguments ------------------------------------------------------------------------------------
PLATFORMS=()
for arg in "$@"; do
  case "$arg" in
    -h | --help) usage; exit 0 ;;
    all) PLATFORMS+=("${ALL_PLATFORMS[@]}") ;;
    *)
      zig_target "$arg" > /dev/null || { usage >&2; die "unknown platform '$arg'"; }
      PLATFORMS+=("$arg")
      ;;
  esac
done
[ ${#PLATFORMS[@]} -gt 0 ] || PLATFORMS=("${ALL_PLATFORMS[@]}")

# ---- tools ----------------------------------------------------------------------------------------
command -v cargo > /dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"
command -v rustup > /dev/null || die "rustup not found: the cross targets are added with rustup (https://rustup.rs)"
command -v node > /dev/null || die "node not found"

ensure_zig() {
  if command -v zig > /dev/null; then
    say "zig $(zig version) ($(command -v zig))"
    return
  fi
  say "zig not found: installing it from PyPI (pip install ziglang)"
  local py
  py="$(command -v python3 || command -v python || true)"
  [ -n "$py" ] || die "zig is missing and there is no python3 to pip-install it: install zig >= 0.13 (https://ziglang.org/download/) and put it on PATH"
  "$py" -m pip install --quiet ziglang || die "pip install ziglang failed: install zig (https://ziglang.org/download/) and put it on PATH"
  local zig_bin
  zig_bin="$("$py" -c 'import os, ziglang; print(os.path.join(os.path.dirname(ziglang.__file__), "zig"))')"
  [ -x "$zig_bin" ] || die "ziglang installed but $zig_bin is not there"
  local bin_dir=/usr/local/bin
  if [ ! -w "$bin_dir" ]; then
    bin_dir="$HOME/.local/bin"
    mkdir -p "$bin_dir"
  fi
  ln -sf "$zig_bin" "$bin_dir/zig"
  case ":$PATH:" in *":$bin_dir:"*) ;; *) export PATH="$bin_dir:$PATH"; say "note: add $bin_dir to your PATH to use zig outside this script" ;; esac
  say "zig $(zig version) linked at $bin_dir/zig"
}

ensure_zigbuild() {
  if ! command -v cargo-zigbuild > /dev/null; then
    say "cargo-zigbuild not found: installing it (cargo install cargo-zigbuild --locked, ~1.5 min)"
    cargo install cargo-zigbuild --locked
  fi
  say "$(cargo-zigbuild --version)"
}

ensure_targets() {
  local installed missing=() p t
  installed="$(rustup target list --installed)"
  for p in "${PLATFORMS[@]}"; do
    t="$(zig_target "$p")"
    t="${t%.$GLIBC_FLOOR}"
    grep -qx "$t" <<< "$installed" || missing+=("$t")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    say "adding rustup targets: ${missing[*]}"
    rustup target add "${missing[@]}"
  fi
}

ensure_binutils() {
  command -v objdump > /dev/null && command -v readelf > /dev/null && return
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    say "objdump/readelf not found: installing binutils (apt-get install -y binutils)"
    apt-get install -y binutils > /dev/null || { apt-get update > /dev/null && apt-get install -y binutils > /dev/null; }
  else
    die "objdump and readelf are needed to check the builds: install binutils (e.g. sudo apt-get install binutils)"
  fi
}

ensure_zig
ensure_zigbuild
ensure_targets
ensure_binutils

# ---- build ----------------------------------------------------------------------------------------
BINARY="$(node -p 'require("./package.json").napi.binaryName')"
BASE_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$BASE_TARGET_DIR" in /*) ;; *) BASE_TARGET_DIR="$ROOT/$BASE_TARGET_DIR" ;; esac
export CARGO_TARGET_DIR="$BASE_TARGET_DIR/cross"

# musl targets default to +crt-static, which refuses to build a cdylib. Set per target so host build
# scripts and proc-macros keep their flags. A global RUSTFLAGS would override target rustflags in
# cargo, so when one is set the flag is appended to it for the musl builds instead.
MUSL_FLAG="-C target-feature=-crt-static"
export CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="${CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS:+$CARGO_TARGET_X86_64_UNKNOWN_LINUX_MUSL_RUSTFLAGS }$MUSL_FLAG"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS="${CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS:+$CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUSTFLAGS }$MUSL_FLAG"
[ -z "${CARGO_ENCODED_RUSTFLAGS:-}" ] || die "CARGO_ENCODED_RUSTFLAGS is set; it would override the per-target musl flags: unset it"

say "building ${PLATFORMS[*]} into $CARGO_TARGET_DIR"
ROWS=()
START=$SECONDS
for platform in "${PLATFORMS[@]}"; do
  target="$(zig_target "$platform")"
  triple="${target%.$GLIBC_FLOOR}"
  say "── $platform: cargo zigbuild -p appkit-jobs --release --target $target"
  t0=$SECONDS
  if [[ "$triple" == *-musl && -n "${RUSTFLAGS:-}" ]]; then
    RUSTFLAGS="$RUSTFLAGS $MUSL_FLAG" cargo zigbuild -p appkit-jobs --release --target "$target"
  else
    cargo zigbuild -p appkit-jobs --release --target "$target"
  fi
  secs=$((SECONDS - t0))

  so="$CARGO_TARGET_DIR/$triple/release/libappkit_jobs.so"
  [ -f "$so" ] || die "$platform: cargo finished but $so is not there"

  # Right CPU?
  machine="$(readelf -h "$so" | sed -n 's/^ *Machine: *//p')"
  case "$triple" in
    x86_64-*) [[ "$machine" == *X86-64* ]] || die "$platform: $so is for '$machine', not x86-64" ;;
    aarch64-*) [[ "$machine" == *AArch64* ]] || die "$platform: $so is for '$machine', not AArch64" ;;
  esac

  # Right libc? gnu: the newest GLIBC_ symbol version must not exceed the floor. musl: none at all.
  floor="$(objdump -T "$so" | grep -o 'GLIBC_[0-9.]*' | sort -Vu | tail -1 || true)"
  if [[ "$triple" == *-gnu ]]; then
    [ -n "$floor" ] || die "$platform: no GLIBC_ symbol versions in $so (not a glibc build?)"
    version="${floor#GLIBC_}"
    newest="$(printf '%s\n%s\n' "$GLIBC_FLOOR" "$version" | sort -V | tail -1)"
    [ "$newest" = "$GLIBC_FLOOR" ] || die "$platform: needs $floor, newer than the GLIBC_$GLIBC_FLOOR floor (objdump -T $so)"
  else
    [ -z "$floor" ] || die "$platform: musl build references $floor (objdump -T $so)"
    floor="musl"
  fi

  dest="npm/$platform/$BINARY.$platform.node"
  [ -f "npm/$platform/package.json" ] || die "npm/$platform/package.json is missing (run npx napi create-npm-dirs)"
  cp "$so" "$dest.tmp" && mv -f "$dest.tmp" "$dest"
  size="$(stat -c %s "$dest")"
  say "$platform: $dest ($size bytes, $floor, ${secs}s)"
  ROWS+=("$(printf '%-32s %-17s %11s %8.1f MB  %-12s %5ss' "$target" "$platform" "$size" "$(awk -v s="$size" 'BEGIN { print s / 1048576 }')" "$floor" "$secs")")
done

echo
printf '%-32s %-17s %11s %11s  %-12s %6s\n' "target" "platform" "bytes" "size" "glibc floor" "time"
printf '%s\n' "${ROWS[@]}"
echo
say "done in $((SECONDS - START))s; pack with: node scripts/package.mjs --linux"
