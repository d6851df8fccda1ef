#!/bin/sh
# hookway vs the floor benchmark; all options go to bench.py (see README.md).
set -e
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
exec "$ROOT/.venv/bin/python" "$ROOT/contrib/bench/bench.py" "$@"
