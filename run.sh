#!/usr/bin/env bash
# The project's two commands (each sets itself up on first use, see scripts/setup.sh):
#   ./run.sh app    start the web app on http://127.0.0.1:7860 (python app.py)
#   ./run.sh test   check the code (ruff, import layers) and run the test suite (extra arguments go to pytest)
# and the benchmarks:
#   ./run.sh bench          list them
#   ./run.sh bench NAME     run bench/NAME.py
set -euo pipefail
cd "$(dirname "$0")"
command=${1:-app}
shift || true
py=.venv/bin/python
case "$command" in
  app)
    bash scripts/setup.sh
    exec "$py" app.py "$@"
    ;;
  test)
    bash scripts/setup.sh --dev
    .venv/bin/ruff check .
    .venv/bin/ruff format --check .
    .venv/bin/lint-imports --no-cache
    exec "$py" -m pytest "$@"
    ;;
  bench)
    bash scripts/setup.sh --dev
    if [ $# -eq 0 ]; then
      echo "benchmarks (./run.sh bench NAME [--help]):"
      for f in bench/*.py; do
        first=$(sed -n '1s/^"""//p' "$f")
        case "$(basename "$f")" in common.py|procmem.py) continue ;; esac
        printf '  %-22s %s\n' "$(basename "$f" .py)" "$first"
      done
      exit 0
    fi
    name=$1
    shift
    [ -f "bench/$name.py" ] || { echo "no benchmark bench/$name.py: ./run.sh bench lists them" >&2; exit 2; }
    exec "$py" "bench/$name.py" "$@"
    ;;
  *)
    echo "usage: ./run.sh [app|test|bench [NAME]] [args...]" >&2
    exit 2
    ;;
esac
