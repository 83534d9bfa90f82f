#!/usr/bin/env bash
# Install pinned pm2 versions from the npm registry for the real-PM2 tests.
#
#   tests/support/install-pm2.sh VERSION...      e.g. 5.4.3 7.0.4
#
# Each version goes to <repo>/target/pm2/<VERSION>/ (override the root with
# PM2_TRACE_PM2_ROOT), with its CLI at
# target/pm2/<VERSION>/node_modules/pm2/bin/pm2.
# - idempotent: a version whose bin/pm2 exists is skipped;
# - safe to run concurrently (several test binaries at once): one flock per
#   version, and the install goes to a scratch dir that is renamed into place,
#   so nobody ever sees a half-installed tree;
# - needs node and npm; says exactly which one is missing otherwise.
set -euo pipefail

if [ "$#" -eq 0 ]; then
  echo "usage: $0 VERSION..." >&2
  exit 2
fi

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
root="${PM2_TRACE_PM2_ROOT:-$repo/target/pm2}"

for tool in node npm flock; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "install-pm2.sh: '$tool' is not installed or not on PATH (PATH=$PATH)." >&2
    case "$tool" in
      node|npm) echo "install-pm2.sh: install Node.js 18+ with npm, e.g. 'apt-get install -y nodejs npm'." >&2 ;;
      flock) echo "install-pm2.sh: flock comes with util-linux ('apt-get install -y util-linux')." >&2 ;;
    esac
    exit 3
  fi
done

mkdir -p "$root"

for version in "$@"; do
  case "$version" in
    *[!0-9A-Za-z.+-]*|"") echo "install-pm2.sh: bad version '$version'" >&2; exit 2 ;;
  esac
  dest="$root/$version"
  bin="$dest/node_modules/pm2/bin/pm2"
  if [ -x "$bin" ] || [ -f "$bin" ]; then
    continue
  fi
  (
    flock -x 9
    # Someone else may have finished while we waited for the lock.
    if [ -f "$bin" ]; then exit 0; fi
    tmp="$root/.tmp-$version-$$"
    rm -rf "$tmp"
    mkdir -p "$tmp"
    echo "install-pm2.sh: installing pm2@$version into $dest" >&2
    if ! npm install --no-audit --no-fund --loglevel=error --prefix "$tmp" "pm2@$version" >&2; then
      rm -rf "$tmp"
      echo "install-pm2.sh: npm install pm2@$version failed" >&2
      exit 1
    fi
    if [ ! -f "$tmp/node_modules/pm2/bin/pm2" ]; then
      rm -rf "$tmp"
      echo "install-pm2.sh: pm2@$version installed but bin/pm2 is missing" >&2
      exit 1
    fi
    rm -rf "$dest"
    mv "$tmp" "$dest"
  ) 9>"$root/.lock-$version"
done
