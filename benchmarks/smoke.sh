#!/usr/bin/env bash
# Sanity for the benchmark itself (not a test): a fresh clone of HEAD runs --quick in <= 3 minutes.
# Uses the project's venv for dependencies; the clone's code comes first on PYTHONPATH.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
py="${PYTHON:-$repo/.venv/bin/python}"
dir="$(mktemp -d /tmp/canvas-stream-smoke-XXXXXX)"
trap 'rm -rf "$dir"' EXIT
git clone -q "$repo" "$dir/clone"
start=$(date +%s)
(cd "$dir/clone" && PYTHONPATH="$dir/clone" CANVAS_BENCH_CACHE="$dir/cache" timeout 300 "$py" -m benchmarks.run --quick)
elapsed=$(( $(date +%s) - start ))
echo "benchmark --quick on a fresh clone: ${elapsed}s"
if [ "$elapsed" -gt 180 ]; then echo "too slow: more than 3 minutes" >&2; exit 1; fi
