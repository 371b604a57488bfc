#!/usr/bin/env bash
# The project's two commands (each sets itself up on first use, see scripts/setup.sh):
#   ./run.sh app    start the app (until the Gradio app lands: separate a generated demo clip)
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
    if [ -f app.py ]; then
      exec "$py" app.py "$@"
    fi
    "$py" scripts/make_demo_clip.py out/demo.wav
    exec "$py" -m separation out/demo.wav --model dprnn -o out/separated "$@"
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
