"""Would `torch.compile` pay on the CPU? One model's forward on a batch of segments, eager and compiled.

    ./run.sh bench separation_compile [--model dprnn] [--seconds 20] [--batch 2] [--repeats 5]

Prints the compile time (the first compiled call), the eager and compiled times of one forward
(best of `--repeats`), how many forwards the compile time buys back, and how far the compiled
output is from the eager one. Needs a C++ compiler (inductor builds its kernels with it); the
app and the CLI stay eager whatever this says, as a first request must not wait on a compiler.
"""

from __future__ import annotations

import argparse
import time

import torch

from common import separator, test_signal


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="dprnn")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    model = separator(args.model).model
    x = test_signal(args.seconds * args.batch).reshape(2, args.batch, -1).transpose(0, 1).contiguous()
    with torch.inference_mode():
        ref = model(x)
        eager = best_of(lambda: model(x), args.repeats)
        compiled = torch.compile(model)
        start = time.perf_counter()
        out = compiled(x)
        compile_s = time.perf_counter() - start
        fast = best_of(lambda: compiled(x), args.repeats)
    err = float((out - ref).square().sum() / ref.square().sum())
    gain = eager - fast
    print(f"{args.model}: {args.batch} x {args.seconds:.0f}-s segments, {torch.get_num_threads()} threads")
    print(f"  eager    {eager:6.3f} s per forward")
    print(f"  compiled {fast:6.3f} s per forward ({fast / eager:.2f}x eager), first call {compile_s:.1f} s")
    if gain > 0:
        print(f"  the compile time is bought back after {compile_s / gain:,.0f} forwards")
    else:
        print("  never bought back: the compiled forward is not faster")
    print(f"  compiled vs eager: {-10 * torch.log10(torch.tensor(err)):.1f} dB SNR")


if __name__ == "__main__":
    main()
