#!/bin/bash
# Fresh `layerfuse run` on the built-in default, two code versions back to back, each run from its
# own empty cache (dequantisation, extraction, profiles, grid: everything), in the order given:
#
#   git worktree add /tmp/before <commit>
#   benchmarks/fresh_ab.sh /tmp/before/src src before after after before
#
# Prints each run's `time` line (inside `layerfuse run`); the timelines (benchmarks/timeline.py)
# are left in /tmp/fresh_ab_<n>_<label>/timeline.txt, the embeddings and models removed after each.
set -u
cd "$(dirname "$0")/.."
before_src=$(realpath "$1"); after_src=$(realpath "$2"); shift 2
n=0
for v in "$@"; do
  n=$((n + 1))
  src=$([ "$v" = before ] && echo "$before_src" || echo "$after_src")
  d=/tmp/fresh_ab_${n}_$v; rm -rf "$d"; mkdir -p "$d"
  LAYERFUSE_CACHE=$d/cache PYTHONPATH=$src .venv/bin/python -m layerfuse run --out "$d/out" 2>&1 \
    | .venv/bin/python benchmarks/timeline.py "$d/timeline.txt" > /dev/null 2>&1
  echo "$n $v $(grep 'time  ' "$d/timeline.txt")"
  rm -rf "$d/cache/models" "$d/cache/embeddings"
done
