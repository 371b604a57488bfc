#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian/Ubuntu machine or a developer's checkout:
#   1. Debian packages: ffmpeg (musdb/stempeg refuse to import without ffmpeg and ffprobe,
#      and m4a/aac/webm decode through it); with --dev also chromium (PNG plots of `eval report`
#      through kaleido, and the browser tests through playwright; never a browser download);
#      and the training world's sounds (packages-world.txt);
#   2. a virtual environment in .venv with requirements.txt (+ requirements-dev.txt and
#      requirements-world.txt, the `world` extra, with --dev),
#      and this project installed into it in editable mode (`pip install -e .`): `python -m
#      separation` and the `separate`, `separation-eval`, `separation-train`, `separation-lab`
#      commands then work from any folder.
# Re-running it is cheap: pip only runs again when a requirements file changed.
#   scripts/setup.sh          what the app needs (./run.sh app)
#   scripts/setup.sh --dev    and what the tests, linters and benchmarks need
set -euo pipefail
cd "$(dirname "$0")/.."
dev=false
[ "${1:-}" = "--dev" ] && dev=true

apt_packages=()
{ command -v ffmpeg && command -v ffprobe; } >/dev/null 2>&1 || apt_packages+=(ffmpeg)
if $dev; then
  command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium)
  # the training world's sounds and synthesisers (python -m songgen.world; tests/test_world.py)
  while read -r pkg; do
    if [ -n "$pkg" ] && ! dpkg -s "$pkg" >/dev/null 2>&1; then apt_packages+=("$pkg"); fi
  done < packages-world.txt
fi
if [ ${#apt_packages[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "setup: installing ${apt_packages[*]} (apt)" >&2
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${apt_packages[@]}" >/dev/null
  else
    echo "setup: please install ${apt_packages[*]} (e.g. sudo apt-get install ${apt_packages[*]}), then re-run" >&2
    exit 1
  fi
fi

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "setup: creating .venv with $($python --version)" >&2
  "$python" -m venv .venv
fi
files=(requirements.txt)
$dev && files+=(requirements-dev.txt requirements-world.txt)
want=$(cat "${files[@]}" pyproject.toml | sha256sum | cut -d' ' -f1)
stamp=.venv/.requirements-$($dev && echo dev || echo app)-sha256
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing ${files[*]} into .venv (first time: a few minutes)" >&2
  args=()
  for f in "${files[@]}"; do args+=(-r "$f"); done
  .venv/bin/python -m pip install -q --disable-pip-version-check "${args[@]}"
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps -e .
  echo "$want" > "$stamp"
fi
