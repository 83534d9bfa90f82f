#!/bin/sh
# Re-record the captures in this folder from real pm2 5.4.3 and 7.0.4 daemons (installed
# into target/pm2/ on first use), and rewrite their golden findings. About 2.5 minutes.
#   captures/make.sh                                   # all of them
#   captures/make.sh drain-child-restart-5.4.3 ...     # some
# Then review `git diff captures/` and run `cargo test --test findings_captures`.
set -eu
cd "$(dirname "$0")/.."
if [ "$#" -gt 0 ]; then
  CAPTURES=$(echo "$@" | tr ' ' ',')
  export CAPTURES
fi
exec cargo test --test findings_captures -- --ignored make_captures --nocapture --test-threads=1
