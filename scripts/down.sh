#!/usr/bin/env bash
# Stop what scripts/up.sh started.
set -uo pipefail
cd "$(dirname "$0")/.."
logs="${MLCORE_HOME:-$PWD/var}/logs"
for name in airflow mlflow; do
  if [ -f "$logs/$name.pid" ]; then
    kill -- -"$(cat "$logs/$name.pid")" 2>/dev/null && echo "stopped $name"
    rm -f "$logs/$name.pid"
  fi
done
