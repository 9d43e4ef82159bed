#!/usr/bin/env bash
# Idempotent setup for a fresh clone: Debian packages, the virtualenv (cached outside the
# checkout, keyed by the requirements hash) and this package installed into it.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${MLCORE_CACHE:-$HOME/.cache/mlcore}"
hash=$(cat requirements.txt constraints.txt | sha256sum | cut -c1-16)
venv="$cache/venv-$hash"
python=$(command -v python3.11 || command -v python3)

# System packages: the data set, and the servers/browsers the integration tests drive.
need=()
[ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v redis-server >/dev/null || need+=(redis-server)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "==> apt-get install ${need[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}" >/dev/null
  else
    echo "!! missing Debian packages: ${need[*]} (install them, or set MLCORE_FMNIST_DIR)" >&2
  fi
fi

if [ ! -f "$venv/.complete" ]; then
  echo "==> creating $venv (first run: a few minutes, mostly torch)"
  rm -rf "$venv"
  mkdir -p "$cache"
  "$python" -m venv "$venv"
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -r requirements.txt -c constraints.txt
  touch "$venv/.complete"
fi
ln -sfn "$venv" .venv

# Point the (possibly shared) venv's editable install at this checkout. `-I` keeps the
# current directory off sys.path, so the check sees the installed package, not ./mlcore.
if ! .venv/bin/python -I -c 'import sys, mlcore; sys.exit(not mlcore.__file__.startswith(sys.argv[1] + "/"))' "$PWD" 2>/dev/null; then
  echo "==> installing mlcore (editable) from $PWD"
  .venv/bin/pip install -q --no-deps --no-build-isolation -e .
fi

# Browser assets of the Data Docs pages (Bootstrap, jQuery, ...), pinned by package-lock.json
# and served by the Airflow plugin, so the pages need nothing from the internet. `npm ci`
# only when the lock changed since the last install (a copy of it marks a finished install).
assets=plugins/mlcore_ui_assets
stamp="$assets/node_modules/.mlcore-installed-lock"
if ! cmp -s "$assets/package-lock.json" "$stamp" 2>/dev/null; then
  if command -v npm >/dev/null; then
    echo "==> npm ci (Data Docs assets)"
    (cd "$assets" && npm ci --ignore-scripts --omit=dev --no-audit --no-fund --loglevel=error)
    cp "$assets/package-lock.json" "$stamp"
  else
    echo "!! npm is missing: Data Docs will render unstyled (install nodejs and npm)" >&2
  fi
fi
