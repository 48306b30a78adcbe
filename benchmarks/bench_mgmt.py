"""Cost of SpotTune relative to ordinary fine-tuning of the same MedicalNet backbone.

Measured in one run, phases interleaved so that machine load affects all of them alike:

* training step (forward, loss, backward, Adam step): SpotTune vs full fine-tuning
  (target ratio <= 1.8: SpotTune computes both block copies but only one copy has weight
  gradients);
* inference (``eval()``, no autograd): SpotTune with the default policy network vs the plain
  network (target ratio <= 1.3 for ResNet-50: only the chosen copy runs per sample), and with
  every block splitting the batch, routed per sample (``split_batches='index'``) or with both
  copies run on the whole batch and selected per sample (``split_batches='whole'``).

On CUDA it uses bf16 autocast and reports peak memory. Defaults: ResNet-50 at 70x86x86, batch
12 on a GPU (the paper's setting); on a CPU a small configuration (ResNet-10 and ResNet-50 at
32x40x40, batch 2) so that it finishes in a few minutes.

    python benchmarks/bench_mgmt.py [--depth 10 50] [--shape D H W] [--batch N] [--device cpu]
    python benchmarks/bench_mgmt.py --protocol [...]   # speed options, paper protocol total
    python benchmarks/bench_mgmt.py --share 1 2 4 [...] # trainings sharing one device
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from gliotl.core.io import write_json
from gliotl.mgmt.models.finetune import configure_strategy, parameter_groups
from gliotl.mgmt.models.resnet import medicalnet_resnet
from gliotl.mgmt.models.spottune import SpotTune


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _autocast(device: torch.device) -> AbstractContextManager:
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return nullcontext()


class Phase:
    """One measured operation: its per-call times and (on CUDA) its peak memory."""

    def __init__(self, name: str, fn: Callable[[], None], device: torch.device) -> None:
        self.name, self.fn, self.device = name, fn, device
        self.times: list[float] = []
        self.peak_bytes = 0

    def run(self, calls: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        for _ in range(calls):
            _sync(self.device)
            start = time.perf_counter()
            self.fn()
            _sync(self.device)
            self.times.append(time.perf_counter() - start)
        if self.device.type == "cuda":
            self.peak_bytes = max(self.peak_bytes, torch.cuda.max_memory_allocated(self.device))

    @property
    def median(self) -> float:
        return statistics.median(self.times)


def bench_depth(
    depth: int, shape: tuple[int, int, int], batch: int, device: torch.device,
    repeats: int, calls: int,
) -> dict:
    torch.manual_seed(0)
    x = torch.randn(batch, 1, *shape, device=device)
    y = (torch.arange(batch, device=device) % 2).float().unsqueeze(1)

    plain = configure_strategy(medicalnet_resnet(depth).to(device), "full")
    plain_opt = torch.optim.Adam(parameter_groups(plain, 1e-5))
    spot = SpotTune(copy.deepcopy(plain), temperature=5.0).to(device)
    spot_opt = torch.optim.Adam(spot.parameter_groups(1e-5, 1e-4))

    def train_step(model: torch.nn.Module, optimiser: torch.optim.Optimizer) -> Callable[[], None]:
        def step() -> None:
            model.train()
            optimiser.zero_grad(set_to_none=True)
            with _autocast(device):
                loss = F.binary_cross_entropy_with_logits(model(x).float(), y)
            loss.backward()
            optimiser.step()
        return step

    def infer(model: torch.nn.Module) -> Callable[[], None]:
        def run() -> None:
            model.eval()
            with torch.inference_mode(), _autocast(device):
                model(x)
        return run

    # Worst case for routing: every block splits the batch between the two copies.
    alternating = (torch.arange(batch, device=device) % 2).bool().unsqueeze(1)
    split_gates = alternating.expand(batch, spot.n_blocks)

    def infer_split() -> None:
        spot.eval()
        with torch.inference_mode(), _autocast(device):
            spot.policy(x)
            spot.forward_routed(x, split_gates)

    def infer_split_whole() -> None:
        spot.eval()
        spot.split_batches = "whole"
        with torch.inference_mode(), _autocast(device):
            spot.policy(x)
            spot.forward_routed(x, split_gates)
        spot.split_batches = "index"

    def policy_only() -> None:
        spot.eval()
        with torch.inference_mode(), _autocast(device):
            spot.policy(x)

    phases = [
        Phase("train_full", train_step(plain, plain_opt), device),
        Phase("train_spottune", train_step(spot, spot_opt), device),
        Phase("infer_plain", infer(plain), device),
        Phase("infer_spottune", infer(spot), device),
        Phase("infer_spottune_split", infer_split, device),
        Phase("infer_split_whole", infer_split_whole, device),
        Phase("infer_policy_only", policy_only, device),
    ]
    for phase in phases:  # warm-up: allocator, cuDNN autotuning, first-call overheads
        phase.fn()
    for phase in phases:
        phase.times.clear()
    for _ in range(repeats):
        for phase in phases:
            phase.run(calls)

    spot.reset_policy_usage()
    infer(spot)()
    usage = spot.policy_usage()["tuned_fraction"]
    split_blocks = int(((usage > 0) & (usage < 1)).sum())
    by_name = {p.name: p for p in phases}
    result = {
        "depth": depth,
        "shape": list(shape),
        "batch": batch,
        "device": str(device),
        "seconds": {p.name: p.median for p in phases},
        "samples_per_second": {p.name: batch / p.median for p in phases},
        "train_ratio": by_name["train_spottune"].median / by_name["train_full"].median,
        "infer_ratio": by_name["infer_spottune"].median / by_name["infer_plain"].median,
        "infer_split_ratio": (
            by_name["infer_spottune_split"].median / by_name["infer_plain"].median
        ),
        "infer_split_whole_ratio": (
            by_name["infer_split_whole"].median / by_name["infer_plain"].median
        ),
        "policy_share_of_plain_inference": (
            by_name["infer_policy_only"].median / by_name["infer_plain"].median
        ),
        "blocks_with_split_batch": split_blocks,
        "n_blocks": spot.n_blocks,
        "trainable_params": {
            "full": sum(p.numel() for p in plain.parameters() if p.requires_grad),
            "spottune": sum(p.numel() for g in spot.parameter_groups(1, 1) for p in g["params"]),
        },
    }
    if device.type == "cuda":
        result["peak_memory_gib"] = {p.name: p.peak_bytes / 2**30 for p in phases}
    return result


PROTOCOL_TRAININGS = 11 * 5 * 6
"""The paper's protocol: 11 modalities x 5 folds x 6 methods."""


def bench_protocol(depth: int, shape: tuple[int, int, int], batch: int, device: torch.device,
                   calls: int, epochs: int = 90, n_train: int = 134) -> dict:
    """Training-step time under each speed option, in one interleaved run, and the paper
    protocol extrapolated from it: ``n_train`` = 240 x 0.7 x 4/5 training patients per fold
    (undersampling lowers it), ``epochs`` per training; validation passes are not counted.
    "loaded" batches come from host float32 memory, "resident" ones from a float16 copy on the
    device converted per batch."""
    from gliotl.mgmt.config import TrainingConfig
    from gliotl.mgmt.pipeline import acceleration

    torch.manual_seed(0)
    host = torch.randn(batch, 1, *shape)
    resident = host.half().to(device)
    y = (torch.arange(batch, device=device) % 2).float().unsqueeze(1)
    variants = {
        "fp32": (TrainingConfig(precision="fp32"), host),
        "bf16": (TrainingConfig(precision="bf16"), host),
        "fp32_channels_last": (TrainingConfig(precision="fp32", channels_last=True), host),
        "fp32_resident_fp16": (TrainingConfig(precision="fp32"), resident),
    }

    def step_for(training: TrainingConfig, source: torch.Tensor) -> Callable[[], None]:
        model = acceleration.place_model(
            configure_strategy(medicalnet_resnet(depth), "full"), training, device)
        optimiser = torch.optim.Adam(parameter_groups(model, 1e-5))
        dtype = acceleration.autocast_dtype(training, device)

        def step() -> None:
            model.train()
            optimiser.zero_grad(set_to_none=True)
            x = acceleration.place_batch(source, training, device)
            with acceleration.autocast(device, dtype):
                loss = F.binary_cross_entropy_with_logits(model(x).float(), y)
            loss.backward()
            optimiser.step()
        return step

    phases = [Phase(name, step_for(*v), device) for name, v in variants.items()]
    for phase in phases:
        phase.fn()
    for phase in phases:
        phase.times.clear()
    for _ in range(max(1, calls)):
        for phase in phases:
            phase.run(1)
    seconds = {p.name: p.median for p in phases}
    steps = -(-n_train // batch) * epochs
    return {
        "depth": depth, "shape": list(shape), "batch": batch, "device": str(device),
        "step_seconds": seconds,
        "ratios": {name: seconds["fp32"] / value for name, value in seconds.items()},
        "steps_per_training": steps,
        "training_hours": {k: v * steps / 3600 for k, v in seconds.items()},
        "protocol_hours": {k: v * steps * PROTOCOL_TRAININGS / 3600 for k, v in seconds.items()},
    }


def _shared_worker(rank: int, depth: int, shape: tuple[int, int, int], batch: int,
                   device_name: str, steps: int, threads: int, barrier: Any, queue: Any) -> None:
    """One training process of :func:`bench_sharing`: warm up, wait for the others, time
    ``steps`` fp32 training steps of the full fine-tuning network (``threads`` CPU threads)."""
    torch.set_num_threads(threads)
    device = torch.device(device_name)
    torch.manual_seed(rank)
    model = configure_strategy(medicalnet_resnet(depth), "full").to(device)
    optimiser = torch.optim.Adam(parameter_groups(model, 1e-5))
    x = torch.randn(batch, 1, *shape, device=device)
    y = (torch.arange(batch, device=device) % 2).float().unsqueeze(1)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        F.binary_cross_entropy_with_logits(model(x), y).backward()
        optimiser.step()

    step()
    _sync(device)
    barrier.wait()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    queue.put(time.perf_counter() - start)


def bench_sharing(depth: int, shape: tuple[int, int, int], batch: int, device: torch.device,
                  trainings: list[int], steps: int) -> dict:
    """Several trainings sharing one device: for each N, N processes train at once (what
    ``--workers N`` does with ``training.trainings_per_gpu``); the aggregate steps/s against
    one process alone, measured in one run."""
    import multiprocessing

    context = multiprocessing.get_context("spawn")
    rates: dict[int, float] = {}
    for n in trainings:
        barrier, queue = context.Barrier(n), context.Queue()
        procs = [context.Process(target=_shared_worker, args=(rank, depth, shape, batch,
                                                              str(device), steps,
                                                              torch.get_num_threads(), barrier,
                                                              queue))
                 for rank in range(n)]
        for proc in procs:
            proc.start()
        seconds = [queue.get() for _ in procs]
        for proc in procs:
            proc.join()
        rates[n] = n * steps / max(seconds)
    base = rates[trainings[0]]
    return {"depth": depth, "shape": list(shape), "batch": batch, "device": str(device),
            "steps": steps, "steps_per_second": rates,
            "throughput_vs_first": {n: rate / base for n, rate in rates.items()}}


def _setting(result: dict) -> str:
    """``ResNet-10  input 32x40x40  batch 4``: the network and input a result was timed on."""
    return (f"ResNet-{result['depth']}  input {'x'.join(map(str, result['shape']))}  "
            f"batch {result['batch']}")


def _print_sharing(result: dict) -> None:
    print(f"\nTrainings sharing one {result['device']}: {_setting(result)}, fp32, "
          f"{result['steps']} timed steps each")
    for n, rate in result["steps_per_second"].items():
        print(f"  {n} at once: {rate:7.2f} steps/s in all = "
              f"{result['throughput_vs_first'][n]:.2f}x the throughput of the first row")


def _print_protocol(result: dict) -> None:
    print(f"\nProtocol (extrapolated from measured steps): {_setting(result)}  "
          f"{result['steps_per_training']} steps per training x {PROTOCOL_TRAININGS} trainings")
    for name, seconds in result["step_seconds"].items():
        print(f"  {name:<20} {seconds * 1000:9.1f} ms/step  speed-up vs fp32 "
              f"{result['ratios'][name]:.2f}  per training {result['training_hours'][name]:.2f} h"
              f"  protocol {result['protocol_hours'][name]:.1f} h")


def _print(result: dict) -> None:
    print(f"\n{_setting(result)}  device {result['device']}")
    mem = result.get("peak_memory_gib", {})
    for name, seconds in result["seconds"].items():
        extra = f"  peak {mem[name]:.2f} GiB" if name in mem else ""
        print(
            f"  {name:<18} {seconds * 1000:9.1f} ms/step  "
            f"{result['samples_per_second'][name]:8.2f} samples/s{extra}"
        )
    train_ok = "meets" if result["train_ratio"] <= 1.8 else "MISSES"
    infer_ok = "meets" if result["infer_ratio"] <= 1.3 else "MISSES"
    print(f"  SpotTune / full fine-tuning train step: {result['train_ratio']:.2f} "
          f"({train_ok} target <= 1.8)")
    print(f"  SpotTune / plain inference:             {result['infer_ratio']:.2f} "
          f"({infer_ok} target <= 1.3)")
    print(f"  same, every block splitting the batch:  {result['infer_split_ratio']:.2f} "
          f"(index routing); {result['infer_split_whole_ratio']:.2f} (split_batches='whole')")
    print(f"  policy net alone / plain inference:     "
          f"{result['policy_share_of_plain_inference']:.3f}; blocks whose batch was split "
          f"between copies: {result['blocks_with_split_batch']}/{result['n_blocks']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, nargs="+", default=None)
    parser.add_argument("--shape", type=int, nargs=3, default=None, metavar=("D", "H", "W"))
    parser.add_argument("--batch", type=int, default=None)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--calls", type=int, default=3, help="timed calls per phase per round")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="CPU threads for torch (1 avoids OpenMP stalls on an oversubscribed machine)",
    )
    parser.add_argument("--json", type=Path, default=None, help="also write results here")
    parser.add_argument("--protocol", action="store_true",
                        help="time the speed options and extrapolate the paper protocol")
    parser.add_argument("--share", type=int, nargs="+", default=None, metavar="N",
                        help="time N trainings at once on the device for each N (e.g. 1 2 4)")
    parser.add_argument("--share-steps", type=int, default=20)
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    gpu = device.type == "cuda"
    depths = args.depth or ([50] if gpu else [10, 50])
    shape = tuple(args.shape or ((70, 86, 86) if gpu else (32, 40, 40)))
    batch = args.batch or (12 if gpu else 2)
    if gpu:
        torch.backends.cudnn.benchmark = True
        print(f"GPU: {torch.cuda.get_device_name(device)}; bf16 autocast")
    else:
        print(f"CPU: {torch.get_num_threads()} threads; float32")
    results = []
    for depth in depths:
        if args.share:
            results.append(bench_sharing(depth, shape, batch, device, args.share,
                                         args.share_steps))
            _print_sharing(results[-1])
        if args.protocol:
            results.append(bench_protocol(depth, shape, batch, device, args.calls))
            _print_protocol(results[-1])
        if not (args.share or args.protocol):
            results.append(bench_depth(depth, shape, batch, device, args.repeats, args.calls))
            _print(results[-1])
    if args.json:
        write_json(args.json, results)


if __name__ == "__main__":
    main()
