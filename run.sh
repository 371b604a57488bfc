#!/usr/bin/env bash
# The project's two commands (each sets itself up on first use, see scripts/setup.sh):
#   ./run.sh app    start the web app on http://127.0.0.1:7860 (python app.py)
#   ./run.sh test   run the test suite (extra arguments go to pytest)
# and the benchmarks:
#   ./run.sh bench NAME   run bench/NAME.py
set -euo pipefail
cd "$(dirname "$0")"
command=${1:-app}
shift || true
bash scripts/setup.sh
py=.venv/bin/python
case "$command" in
  app)
    exec "$py" app.py "$@"
    ;;
  test)
    exec "$py" -m pytest "$@"
    ;;
  bench)
    name=${1:?usage: ./run.sh bench NAME (one of: $(ls bench/*.py | xargs -n1 basename | sed 's/\.py$//' | tr '\n' ' '))}
    shift
    exec "$py" "bench/$name.py" "$@"
    ;;
  *)
    echo "usage: ./run.sh [app|test|bench NAME] [args...]" >&2
    exit 2
    ;;
esac
