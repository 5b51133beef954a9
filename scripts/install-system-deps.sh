#!/usr/bin/env bash
# Install the Debian packages the tests need when they are missing:
#   postgresql  - the store contract and replica tests start a throwaway cluster on loopback;
#   chromium    - the inline player is tested in a real headless browser (driven by Playwright).
# Needs root (or sudo) and apt-get; elsewhere it says what to install and exits non-zero.
set -euo pipefail

missing=()
pg_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1; }
[ -n "$(pg_bin)" ] && [ -x "$(pg_bin)/initdb" ] || missing+=(postgresql)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "install-system-deps: install ${missing[*]} with your system's package manager, then run the tests again." >&2
  exit 1
fi
sudo=()
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null 2>&1 || { echo "install-system-deps: run as root to install ${missing[*]}." >&2; exit 1; }
  sudo=(sudo)
fi
echo "install-system-deps: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq >&2
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
# Debian starts a cluster on install where it can; the tests start their own, so leave the port free.
if command -v pg_lsclusters >/dev/null 2>&1; then
  pg_lsclusters -h 2>/dev/null | while read -r version name _; do
    "${sudo[@]}" pg_ctlcluster "$version" "$name" stop 2>/dev/null || true
  done
fi
