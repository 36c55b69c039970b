#!/usr/bin/env bash
# usage: .ci/need_disk.sh GB WHAT -- stop with one line, before installing, when the disk holding
# the checkout or $TMPDIR (pip unpacks there) has less than GB free. A full disk otherwise shows up
# as an OSError deep in pip's output.
set -euo pipefail
need_gb=$1 what=$2
for dir in . "${TMPDIR:-/tmp}"; do
  free_kb=$(df -Pk "$dir" | awk 'NR==2 {print $4}')
  if [ "$free_kb" -lt $((need_gb * 1024 * 1024)) ]; then
    echo "$what needs about $need_gb GB of free disk; $(awk -v k="$free_kb" 'BEGIN {printf "%.1f", k / 1048576}') GB free under $dir: free some space (old clones, venvs, /tmp) and rerun" >&2
    exit 2
  fi
done
