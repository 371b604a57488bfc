"""The package as a user installs it: the sdist and the wheel built from it, the wheel installed
(not editable) into a fresh virtual environment, every command run from a folder outside the
checkout.

The fresh environment takes its dependencies from this one through a `.pth` file (torch with its
CUDA libraries is 5 GB: not installed twice per test run); this one's editable install of the
project is not visible there (a `.pth` path line does not run that folder's own `.pth` files), so
`import separation` can only find the wheel's copy, as the tests check.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import socket
import subprocess
import sys
import tarfile
import time
import urllib.request
import zipfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from separation import Separator, __version__
from tests.helpers import ROOT

pytestmark = pytest.mark.slow

COMMANDS = ("separate", "separation-eval", "separation-train", "separation-lab")


def run(args, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kwargs)


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> Path:
    """sdist and wheel of a copy of the checkout (its tracked and new files): `python -m build`
    makes the sdist, then the wheel from the unpacked sdist, so the sdist must rebuild."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout to copy")
    root = tmp_path_factory.mktemp("build")
    files = run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, check=True).stdout.split("\0")
    for name in filter(None, files):
        if (ROOT / name).is_file():
            (root / "src" / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, root / "src" / name)
    out = run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(root / "dist"), str(root / "src")])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return root / "dist"


@pytest.fixture(scope="module")
def user(dist, tmp_path_factory) -> dict:
    """The wheel in a fresh environment; a home and a working folder of the user's, elsewhere."""
    root = tmp_path_factory.mktemp("user")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    (purelib / "_dependencies.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    wheel = next(dist.glob("*.whl"))
    out = run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)])
    assert out.returncode == 0, out.stderr
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("APP_", "SEPARATION_", "PYTHON", "DPRNN", "CONV1D"))
    }
    env |= {
        "PATH": f"{venv / 'bin'}{os.pathsep}{env['PATH']}",
        "HOME": str(root / "home"),
        "XDG_DATA_HOME": str(root / "home" / ".local" / "share"),
        "TORCH_HOME": str(root / "torch"),
        "HF_HUB_OFFLINE": "1",
    }
    work = root / "work"
    work.mkdir()
    return {"python": str(python), "purelib": purelib, "env": env, "work": work, "home": root / "home"}


def installed_files(purelib: Path) -> set[str]:
    return {str(p.relative_to(purelib)) for p in purelib.rglob("*") if "__pycache__" not in p.parts}


def test_sdist_and_wheel_carry_what_they_should(dist):
    with tarfile.open(next(dist.glob("*.tar.gz"))) as sdist:
        names = {n.split("/", 1)[1] for n in sdist.getnames() if "/" in n}
    for needed in (
        "README.md",
        "LICENSE",
        "pyproject.toml",
        "requirements.txt",
        "separation/weights/dprnn/model.safetensors",
    ):
        assert needed in names, needed
    wheel = next(dist.glob("*.whl"))
    assert wheel.name.startswith(f"separation_lab-{__version__}-")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in (
        "separation/weights/dprnn/model.safetensors",
        "separation/weights/conv1d/config.json",
        "webapp/listening/static/player.js",
    ):
        assert needed in names, needed
    assert not [n for n in names if n.startswith(("tests/", "bench/", "docs/", "assets/", "scripts/"))]
    assert wheel.stat().st_size < 10_000_000  # 7.5 MB: the demo weights are most of it


def test_commands_run_from_anywhere_with_the_shipped_weights(user):
    env, work, python = user["env"], user["work"], user["python"]
    before = installed_files(user["purelib"])
    for command in COMMANDS:
        out = run([command, "--version"], cwd=work, env=env)
        assert out.returncode == 0 and out.stdout.split()[-1] == __version__, (command, out)  # the one version
    where = run([python, "-c", "import separation; print(separation.__file__)"], cwd=work, env=env).stdout
    assert where.startswith(str(user["purelib"])), where  # the wheel's copy, not the checkout's

    song = (
        "from songgen.synthetic import make_track; import soundfile as sf; "
        "sf.write('song.wav', make_track(1, 4.0)['mixture'], 44100)"
    )
    run([python, "-c", song], cwd=work, env=env, check=True)
    out = run(["separate", "song.wav", "-o", "out"], cwd=work, env=env)
    assert out.returncode == 0, out.stderr
    assert "(dprnn, trained)" in out.stderr and "RANDOM" not in out.stdout + out.stderr
    # the same separation as the checkout's (to the 24-bit files' rounding)
    mix, rate = sf.read(work / "song.wav", dtype="float32", always_2d=True)
    here = Separator.from_name("dprnn", device="cpu").separate(torch.from_numpy(mix.T.copy()), rate)
    for stem in ("vocals", "accompaniment"):
        there, _ = sf.read(work / "out" / "song" / f"{stem}.wav", dtype="float32", always_2d=True)
        assert np.abs(there.T - here[stem].numpy()).max() < 1e-5, stem

    out = run([python, "-m", "separation", "models"], cwd=work, env=env)
    assert out.returncode == 0 and "random" not in out.stdout
    assert out.stdout.split("conv1d")[0].count("shipped checkpoint") == 1  # dprnn's line

    make_set = [
        python,
        "-m",
        "songgen.synthetic",
        "musdb",
        "--train",
        "0",
        "--valid",
        "0",
        "--test",
        "1",
        "--seconds",
        "6",
    ]
    run(make_set, cwd=work, env=env, check=True)
    out = run(
        ["separation-eval", "--methods", "dprnn", "--musdb-root", "musdb", "--is-wav", "--out", "res", "-q"],
        cwd=work,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    summary = json.loads((work / "res" / "dprnn" / "summary.json").read_text())
    assert summary["medians"]["vocals"]["SDR"] == summary["medians"]["vocals"]["SDR"]  # a number, not NaN
    assert installed_files(user["purelib"]) == before  # nothing written into the installation


def test_the_app_serves_its_page_and_keeps_its_data_in_the_users_folder(user):
    env, work = dict(user["env"]), user["work"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env |= {"GRADIO_SERVER_PORT": str(port), "APP_PREPARE_STIMULI": "0", "APP_MODELS": "dprnn"}
    before = installed_files(user["purelib"])
    app = subprocess.Popen(
        ["separation-lab"], cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        deadline, page = time.monotonic() + 180, None
        while time.monotonic() < deadline and app.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as response:
                    page = response.read().decode()
                    break
            except OSError:
                time.sleep(1)
        assert page is not None and "gradio" in page.lower(), app.poll()
    finally:
        app.terminate()
        log = app.communicate(timeout=30)[0]
    data = user["home"] / ".local" / "share" / "separation-lab"
    assert f"data (ratings, secret, demo clips) in {data}" in log
    assert (data / "ratings.sqlite").is_file() and (data / "secret.key").is_file()
    assert installed_files(user["purelib"]) == before
