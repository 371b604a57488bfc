"""The allocator settings every Separator applies: freed tensors reused instead of unmapped.

Each case runs in a fresh interpreter: the settings are process-wide and applied once.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from tests.helpers import ROOT

CHILD = """
from separation import allocator  # what applies the settings
import resource, torch
from separation.models import build_model
build_model("dprnn")  # the work a program does before it separates
faults = []
def cycles():  # 100 MB written and freed: above glibc's largest adaptive mmap threshold (32 MB)
    for i in range(WARM_UP + CYCLES):
        if i == WARM_UP:
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
        x = torch.ones(25_000_000)
        del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
if IN_THREAD:  # as the app separates: in a server's worker thread
    import threading
    worker = threading.Thread(target=cycles)
    worker.start()
    worker.join()
else:
    cycles()
print(allocator.tune(), "|", faults[1] - faults[0])
"""
WARM_UP = 5  # cycles before the count: the heap's first growths (a small allocation may split a freed block)
CYCLES = 10
PAGES = 25_000_000 * 4 // 4096  # of one 100-MB tensor


def run_child(in_thread: bool = False, **env: str) -> tuple[str, int]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "SEPARATION_ALLOCATOR"}
    out = subprocess.run(
        [sys.executable, "-c", f"CYCLES, WARM_UP, IN_THREAD = {CYCLES}, {WARM_UP}, {in_thread}\n{CHILD}"],
        env=clean | env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    state, faults = out.stdout.strip().splitlines()[-1].split(" | ")
    return state, int(faults)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the settings are glibc's")
@pytest.mark.parametrize("in_thread", [False, True])
def test_a_freed_tensor_is_reused_without_page_faults(in_thread):
    state, faults = run_child(in_thread)
    assert state == "tuned"
    # Once warm, the same memory again; left as it is, a fresh mapping each time, a fault per 4-kB page.
    assert faults < 0.3 * CYCLES * PAGES
    state, faults = run_child(in_thread, SEPARATION_ALLOCATOR="default")
    assert state.startswith("left as it is (SEPARATION_ALLOCATOR=default)")
    assert faults > 0.9 * CYCLES * PAGES


def test_the_users_own_malloc_settings_win():
    state, _ = run_child(MALLOC_ARENA_MAX="2")
    assert state == "left as it is (MALLOC_* set in the environment)"
