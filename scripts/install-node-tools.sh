#!/usr/bin/env bash
# Install the Node tools the test suite drives the server with:
#   .tools/node   (package.json + package-lock.json at the repository root, run on the machine's Node 20+):
#     @modelcontextprotocol/conformance@0.1.13, @modelcontextprotocol/inspector@0.21.2, and for the player's
#     browser test the official MCP Apps host bridge @modelcontextprotocol/ext-apps@1.7.5 with the TypeScript
#     SDK client @modelcontextprotocol/sdk@1.32.2, bundled into the test host page by esbuild@0.28.2
#   .tools/node22 (tools/node22/package.json + package-lock.json; brings its own Node 22 from npm's `node`
#     package, because the newest tools need Node >= 22): conformance@0.1.16, inspector@2.12.0 and the
#     TypeScript SDK client @modelcontextprotocol/sdk@1.32.2
# Both trees are pinned by their lockfiles (npm ci).
# Idempotent: when that tree is already installed it exits at once.
# Needs node >= 20 and npm on PATH; says what to install when they are missing.
set -euo pipefail

CONFORMANCE_VERSION="0.1.13"
INSPECTOR_VERSION="0.21.2"
EXT_APPS_VERSION="1.7.5"
ESBUILD_VERSION="0.28.2"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
prefix="${KLING_MCP_NODE_TOOLS:-$root/.tools/node}"

if ! command -v npm >/dev/null 2>&1 || ! command -v node >/dev/null 2>&1; then
    echo "install-node-tools: node and npm are required (Node 20 or newer) to run the MCP conformance suite" \
         "and the MCP Inspector; install Node.js 20+ (e.g. apt-get install nodejs npm, or https://nodejs.org)" \
         "and run this script again." >&2
    exit 127
fi
major="$(node -p 'process.versions.node.split(".")[0]')"
if [ "$major" -lt 20 ]; then
    echo "install-node-tools: Node $(node --version) is too old; install Node.js 20 or newer." >&2
    exit 1
fi

installed_version() {  # prints the installed version of package $1, or nothing
    local manifest="$prefix/node_modules/$1/package.json"
    [ -f "$manifest" ] && node -p "require(process.argv[1]).version" "$manifest" 2>/dev/null || true
}

lock_matches() {  # the installed tree was made from the repository's lockfile
    [ ! -f "$root/package-lock.json" ] || cmp -s "$root/package-lock.json" "$prefix/package-lock.json"
}

install_node22() {  # the newest tools, with their own Node 22; idempotent
    local dir="$root/tools/node22" dest="${KLING_MCP_NODE22_TOOLS:-$root/.tools/node22}"
    if [ -x "$dest/node_modules/node/bin/node" ] && cmp -s "$dir/package-lock.json" "$dest/package-lock.json"; then
        return 0
    fi
    mkdir -p "$dest"
    echo "install-node-tools: installing Node 22 and the newest MCP tools into $dest" >&2
    cp "$dir/package.json" "$dir/package-lock.json" "$dest/"
    npm ci --prefix "$dest" --no-audit --no-fund >&2
}
install_node22
# Every Node tool runs on that Node 22 (the pinned Inspector 0.21.2 declares node >= 22.7.5): npm too, so
# its engine check sees the Node the tools will run on, and no warning needs hiding.
export PATH="${KLING_MCP_NODE22_TOOLS:-$root/.tools/node22}/node_modules/node/bin:$PATH"

if [ "$(installed_version @modelcontextprotocol/conformance)" = "$CONFORMANCE_VERSION" ] \
   && [ "$(installed_version @modelcontextprotocol/inspector)" = "$INSPECTOR_VERSION" ] \
   && [ "$(installed_version @modelcontextprotocol/ext-apps)" = "$EXT_APPS_VERSION" ] \
   && [ "$(installed_version esbuild)" = "$ESBUILD_VERSION" ] \
   && [ -x "$prefix/node_modules/.bin/conformance" ] && [ -x "$prefix/node_modules/.bin/mcp-inspector" ] \
   && [ -x "$prefix/node_modules/.bin/esbuild" ] \
   && lock_matches; then
    exit 0
fi

mkdir -p "$prefix"
echo "install-node-tools: installing conformance@$CONFORMANCE_VERSION, inspector@$INSPECTOR_VERSION," \
     "ext-apps@$EXT_APPS_VERSION and esbuild@$ESBUILD_VERSION into $prefix" >&2
npm_flags=(--prefix "$prefix" --no-audit --no-fund)
if [ -f "$root/package-lock.json" ]; then
    # The exact dependency tree pinned by the repository's package.json + package-lock.json.
    cp "$root/package.json" "$root/package-lock.json" "$prefix/"
    npm ci "${npm_flags[@]}" >&2
else
    npm install "${npm_flags[@]}" --save-exact \
        "@modelcontextprotocol/conformance@$CONFORMANCE_VERSION" \
        "@modelcontextprotocol/inspector@$INSPECTOR_VERSION" \
        "@modelcontextprotocol/ext-apps@$EXT_APPS_VERSION" "@modelcontextprotocol/sdk@1.32.2" \
        "esbuild@$ESBUILD_VERSION" >&2
fi
for bin in conformance mcp-inspector esbuild; do
    if [ ! -x "$prefix/node_modules/.bin/$bin" ]; then
        echo "install-node-tools: npm finished but $prefix/node_modules/.bin/$bin is missing;" \
             "delete $prefix and run this script again." >&2
        exit 1
    fi
done
