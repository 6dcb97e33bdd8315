"""The floor a plain PyTorch loop sets: Lenet-300-100, batch 60, Adam 1.2e-3, on this CPU.

No input pipeline and no evaluation: a random 55,000 x 784 float32 training set already in
memory, indexed with a fresh permutation per epoch, and ``--steps`` optimizer steps of
``nn.Sequential(Linear(784, 300), ReLU, Linear(300, 100), ReLU, Linear(100, 10))`` with
cross-entropy, timed after ``--warmup`` steps; median ms/step over ``--repeats``. It runs
with the PyTorch venv of ``open_lth_comparison.py`` (torch is not a dependency):

    /work/venvs/torch/bin/python benchmarks/torch_loop.py          # default and fused Adam

It is the number to hold ``benchmarks/step_time.py``'s XLA rows against: what the machine
does for this network when nothing but the training step runs.
"""

import argparse
import statistics
import time

import torch
from torch import nn


def ms_per_step(steps: int, warmup: int, fused: bool) -> float:
    images = torch.randn(55_000, 784)
    labels = torch.randint(0, 10, (55_000,))
    model = nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                          nn.Linear(100, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=1.2e-3, fused=fused)
    loss_fn = nn.CrossEntropyLoss()
    order = torch.randperm(55_000)
    started = 0.0
    for step in range(warmup + steps):
        if step == warmup:
            started = time.perf_counter()
        position = (step * 60) % 54_960
        if position == 0:
            order = torch.randperm(55_000)
        batch = order[position:position + 60]
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(images[batch]), labels[batch]).backward()
        optimizer.step()
    return (time.perf_counter() - started) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, {args.steps} steps, "
          f"{args.repeats} repeats")
    for fused in (False, True):
        times = [ms_per_step(args.steps, args.warmup, fused) for _ in range(args.repeats)]
        print(f"{'fused' if fused else 'default'} Adam: median {statistics.median(times):.3f} "
              f"ms/step (min {min(times):.3f}, max {max(times):.3f})")


if __name__ == "__main__":
    main()
