#!/usr/bin/env bash
# Idempotent set-up on a fresh Debian/Ubuntu machine or a developer's checkout:
#   1. Debian packages: ffmpeg (musdb/stempeg refuse to import without ffmpeg and ffprobe,
#      and m4a/aac/webm decode through it); chromium (PNG plots of `eval report` through
#      kaleido, and the browser tests through playwright; never a browser download);
#   2. a virtual environment in .venv with requirements.txt (+ requirements-dev.txt).
# Re-running it is cheap: pip only runs again when a requirements file changed.
set -euo pipefail
cd "$(dirname "$0")/.."

apt_packages=()
{ command -v ffmpeg && command -v ffprobe; } >/dev/null 2>&1 || apt_packages+=(ffmpeg)
command -v chromium >/dev/null 2>&1 || apt_packages+=(chromium)
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
want=$(cat requirements.txt requirements-dev.txt | sha256sum | cut -d' ' -f1)
stamp=.venv/.requirements-sha256
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing Python requirements into .venv (first time: a few minutes)" >&2
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.txt -r requirements-dev.txt
  echo "$want" > "$stamp"
fi
