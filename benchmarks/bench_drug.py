"""Drug-response network throughput against the machine's float32 matmul peak.

Prints, measured in this one run:
1. the float32 matmul peak (``torch.matmul`` of large square matrices, best of several);
2. training throughput of the paper's network at pretraining scale (default 700 samples x 6000
   genes, batch 32, Adam) as useful FLOPs per second and as a fraction of that peak;
3. stacked against sequential fits (issue 17): ``--stack-fits`` target fine-tunes (default 30;
   29 samples, the real 6,163 genes, the paper's 200 epochs, each on its own rows, init and
   seed) and ``--stack-permutations`` label-permutation refits (default 200, one training fold,
   its response permuted per refit), each timed fitted one after another
   (:func:`~gliotl.drug.network.model.train_network`) and stacked
   (:func:`~gliotl.drug.network.batched.train_networks`), as ratios, plus the stacked step's
   fraction of the roofline bound (the slower of compute at the matmul peak and memory traffic at
   the copy bandwidth, both measured in this run). Members are built one chunk at a time (thousands
   of the paper's networks do not fit in memory at once), and ``--sequential-fits N`` times only
   the first N sequential fits of each count and scales them, which the output says;
4. with ``--stack-sizes``, sequential against stacked fits for networks from 2,177 to 6.3 M
   parameters (:func:`stacking_by_size`): where stacking stops paying on this machine;
5. the wall time of the benchmark.

Useful FLOPs per training sample (see ``gliotl.drug.network.model.useful_flops_per_sample``):
forward ``2 * MACs`` of every Dense layer, backward ``2 * MACs`` for each trainable layer's weight
gradient plus ``2 * MACs`` for the input gradient of every layer above the first (no gradient flows
into the expression data). For the default network this is slightly less than the common
``6 * n_params`` estimate, which is printed too. Optimiser updates, activations and dropout are
counted as overhead, not as useful work.

``measure_case_study(run_dir)`` computes the same figure for a finished experiment run: it sums the
``useful_flops`` each job reported in ``jobs/<id>/result.json`` and divides by the run's wall time
(manifest ``started`` -> ``finished``).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from gliotl.drug.network.batched import (
    BatchMember,
    chunk_budget,
    members_per_chunk,
    train_networks,
)
from gliotl.drug.network.model import (
    FINETUNE,
    PRETRAIN,
    DrugResponseNet,
    LayerTraining,
    NetworkConfig,
    train_network,
    useful_flops_per_sample,
)


def best_seconds(fn, repeats: int, device: str = "cpu") -> float:
    """Fastest of ``repeats`` timed calls of ``fn`` after one warm-up call (thread pool, caches,
    kernels); on a GPU each call is bracketed by synchronisations."""
    fn()
    best = float("inf")
    for _ in range(repeats):
        if device != "cpu":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return best


def matmul_peak(size: int = 2048, repeats: int = 5, device: str = "cpu") -> float:
    """Best float32 FLOP/s of ``size x size`` matmuls (2 * size**3 FLOPs each)."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    out = torch.empty(size, size, device=device)
    return 2.0 * size**3 / best_seconds(lambda: torch.matmul(a, b, out=out), repeats, device)


def training_throughput(
    samples: int, genes: int, batch_size: int, epochs: int, device: str = "cpu", seed: int = 0
) -> dict[str, float]:
    """Train the default network; report the best epoch's samples/s and useful FLOP/s."""
    rng = np.random.default_rng(seed)
    X = torch.as_tensor(rng.normal(size=(samples, genes)).astype(np.float32), device=device)
    y = torch.as_tensor(rng.uniform(0, 10, size=samples).astype(np.float32), device=device)
    net = DrugResponseNet(genes, NetworkConfig()).to(device)
    train = PRETRAIN.model_copy(update={"epochs": 1, "batch_size": batch_size})
    rules = [LayerTraining() for _ in net.layers]
    per_sample = useful_flops_per_sample(net, rules)
    train_network(net, X, y, train, rules, seed=seed)  # warm-up epoch (allocations, kernels)
    best = float("inf")
    for epoch in range(epochs):
        result = train_network(net, X, y, train, rules, seed=seed + epoch + 1)
        if device != "cpu":
            torch.cuda.synchronize()
        best = min(best, result.seconds)
    n_params = sum(p.numel() for p in net.parameters())
    return {
        "samples_per_s": samples / best,
        "useful_flops_per_sample": per_sample,
        "six_n_flops_per_sample": 6.0 * n_params,
        "useful_flops_per_s": per_sample * samples / best,
        "epoch_seconds": best,
    }


def step_floor(genes: int, hidden: int, batch_size: int, device: str = "cpu",
               repeats: int = 20) -> dict[str, float]:
    """Time the three first-layer kernels every training step must run, one after another.

    forward ``X_b @ W.T``, weight gradient ``delta.T @ X_b`` (into a preallocated buffer) and
    Adam's fused update of ``W`` (with the paper's L2 as weight decay). Each streams the
    ``hidden x genes`` matrix through memory at least once (Adam: 7 times: read ``W``, its
    gradient and both moments, write three), so at small batches their sum, not the matmul peak,
    bounds a step. ``copy`` measures the memory bandwidth of the same matrix in the same run.
    """

    weight = torch.nn.Parameter(torch.empty(hidden, genes, device=device).uniform_(-0.05, 0.05))
    bias = torch.zeros(hidden, device=device)
    xb = torch.randn(batch_size, genes, device=device)
    delta = torch.randn(batch_size, hidden, device=device)
    weight.grad = torch.empty_like(weight)
    scratch = torch.empty_like(weight)
    opt = torch.optim.Adam([weight], lr=1e-3, eps=1e-7, weight_decay=2e-4,
                           fused=device in ("cpu", "cuda"))
    forward = best_seconds(lambda: torch.addmm(bias, xb, weight.detach().t()), repeats, device)
    wgrad = best_seconds(lambda: torch.mm(delta.t(), xb, out=weight.grad), repeats, device)
    adam = best_seconds(opt.step, repeats, device)
    copy = best_seconds(lambda: scratch.copy_(weight.detach()), repeats, device)
    return {"forward_s": forward, "wgrad_s": wgrad, "adam_s": adam,
            "bandwidth_bytes_per_s": 2 * weight.numel() * 4 / copy}


def member_builder(samples: int, genes: int, permutations: bool, device: str,
                   seed: int = 0) -> Callable[[int], BatchMember]:
    """Fine-tunes of the paper's network from one source (the paper's transfer: copy the first
    layer, re-initialise the rest), built one at a time so that thousands never sit in memory at
    once: ``build(k)`` is member ``k``, the same on every call. Each member has its own rows of a
    43-line cohort (or, with ``permutations``, one fold with its responses permuted), its own
    initialisation of the layers above the first and its own seed."""
    from gliotl.drug.network.transfer import apply_policy, parse_policy

    rng = np.random.default_rng(seed)
    cohort = max(43, samples)
    X = torch.as_tensor(rng.normal(size=(cohort, genes)).astype(np.float32), device=device)
    y = torch.as_tensor(rng.uniform(0.9, 1.0, size=cohort).astype(np.float32), device=device)
    source = DrugResponseNet(genes, NetworkConfig())
    src = [(lay.weight.detach().clone(), lay.bias.detach().clone())
           for lay in source.dense_layers]
    template = DrugResponseNet(genes, NetworkConfig())
    rules = apply_policy(parse_policy("paper"), template, src, torch.Generator().manual_seed(seed))
    if any(rule.anchor is not None or rule.frozen for rule in rules):
        raise AssertionError("the paper's transfer copies the first layer and trains every layer")
    template = template.to(device)
    fold = rng.permutation(cohort)[:samples]

    def build(k: int) -> BatchMember:
        own = np.random.default_rng([seed, k])
        net = copy.deepcopy(template)  # the copied first layer, on the device already
        generator = torch.Generator().manual_seed(seed + k)
        for index in range(1, len(net.layers)):
            net.reset_layer(index, generator)
        if permutations:
            rows = torch.as_tensor(fold, device=device)
            y_k = y[rows][torch.as_tensor(own.permutation(samples), device=device)]
        else:
            rows = torch.as_tensor(own.permutation(cohort)[:samples], device=device)
            y_k = y[rows]
        return BatchMember(net, X[rows], y_k, [LayerTraining() for _ in rules], seed=seed + k)

    return build


def stacked_vs_sequential(n_fits: int, samples: int, genes: int, epochs: int,
                          permutations: bool, device: str = "cpu",
                          sequential_fits: int | None = None) -> dict[str, float]:
    """Training time of ``n_fits`` fine-tunes fitted one after another and stacked, from
    identical members (same init, rows and seeds); building the members is not timed.

    The stacked fits run in the chunks :func:`~gliotl.drug.network.batched.train_networks`
    would form, each chunk's members built just before it. ``sequential_fits`` (default: all)
    times only the first that many sequential fits and scales their time to ``n_fits`` (every
    fit is the same work on its own rows), so that thousands of fits need not be run twice;
    ``sequential_measured`` says how many were.
    """
    train = FINETUNE.model_copy(update={"epochs": epochs, "stacking": "always"})
    build = member_builder(samples, genes, permutations, device)

    def sync() -> None:
        if device != "cpu":
            torch.cuda.synchronize()

    measured = n_fits if sequential_fits is None else max(1, min(n_fits, sequential_fits))
    sequential = 0.0
    for k in range(measured):
        member = build(k)
        sync()
        start = time.perf_counter()
        train_network(member.net, member.X, member.y, train, member.rules, seed=member.seed)
        sync()
        sequential += time.perf_counter() - start
        del member
    sequential *= n_fits / measured
    if device != "cpu":
        torch.cuda.empty_cache()
    first = build(0)
    budget = chunk_budget(torch.device(device))
    size = members_per_chunk(first.net, first.rules, train, budget)
    del first
    stacked = 0.0
    for begin in range(0, n_fits, size):
        members = [build(k) for k in range(begin, min(n_fits, begin + size))]
        sync()
        start = time.perf_counter()
        train_networks(members, train, chunk_bytes=budget)
        sync()
        stacked += time.perf_counter() - start
        del members
        if device != "cpu":
            torch.cuda.empty_cache()
    steps = n_fits * epochs * -(-samples // train.batch_size)
    return {"sequential_s": sequential, "stacked_s": stacked,
            "ratio": sequential / stacked, "stacked_step_s": stacked / steps,
            "sequential_step_s": sequential / steps, "sequential_measured": measured,
            "chunk": size}


#: (genes, hidden layers) of the networks ``--stack-sizes`` compares, smallest first.
#: The 130 k and 194 k rungs bracket ``CPU_STACKING_MAX_PARAMETERS`` (150 k), the size up to
#: which ``stacking: auto`` stacks on a CPU.
SIZE_LADDER = ((50, [32, 16]), (1000, [64, 32]), (2000, [64, 32]), (3000, [64, 32]),
               (6163, [64, 32]), (6163, [256, 64]), (6163, [1000, 100]))


def stacking_by_size(n_fits: int = 30, epochs: int = 10, samples: int = 29,
                     device: str = "cpu") -> list[dict[str, Any]]:
    """Sequential against stacked fits for networks of growing size (:data:`SIZE_LADDER`):
    where stacking stops paying on this machine. Each size trains ``n_fits`` members with
    their own rows, initialisation and seed, from identical members in both settings."""
    from gliotl.drug.network.model import FINETUNE

    rng = np.random.default_rng(0)
    train = FINETUNE.model_copy(update={"epochs": epochs, "stacking": "always"})
    rows_out = []
    cohort = max(43, samples)
    for genes, hidden in SIZE_LADDER:
        X = torch.as_tensor(rng.normal(size=(cohort, genes)).astype(np.float32), device=device)
        y = torch.as_tensor(rng.uniform(0.9, 1.0, cohort).astype(np.float32), device=device)
        config = NetworkConfig(hidden=hidden, dropout=[0.3] * len(hidden),
                               activations=["sigmoid"] * len(hidden))

        def members(config: NetworkConfig = config, X: torch.Tensor = X,
                    y: torch.Tensor = y, genes: int = genes) -> list[BatchMember]:
            out = []
            for k in range(n_fits):
                net = DrugResponseNet(genes, config)
                net.reset_parameters(torch.Generator().manual_seed(k))
                rows = torch.as_tensor(np.random.default_rng(k).permutation(cohort)[:samples],
                                       device=device)
                out.append(BatchMember(net.to(device), X[rows], y[rows],
                                       [LayerTraining() for _ in net.layers], seed=k))
            return out

        sequential = stacked = float("inf")
        for _ in range(2):  # best of two, each setting from fresh identical members
            fits = members()
            start = time.perf_counter()
            for member in fits:
                train_network(member.net, member.X, member.y, train, member.rules,
                              seed=member.seed)
            sequential = min(sequential, time.perf_counter() - start)
            fits = members()
            start = time.perf_counter()
            train_networks(fits, train)
            stacked = min(stacked, time.perf_counter() - start)
        n_params = sum(p.numel() for p in members()[0].net.parameters())
        rows_out.append({"genes": genes, "hidden": hidden, "parameters": n_params,
                         "sequential_s": sequential, "stacked_s": stacked,
                         "ratio": sequential / stacked})
    return rows_out


def roofline_step(genes: int, batch: int, peak: float, bandwidth: float) -> dict[str, float]:
    """Lower bounds of one model's fine-tuning step: its useful FLOPs at the matmul peak, and
    its memory traffic at the copy bandwidth (every parameter read by the forward pass, its
    gradient written, and Adam's 7 passes: read weight, gradient, both moments, write three)."""
    net = DrugResponseNet(genes, NetworkConfig())
    rules = [LayerTraining() for _ in net.layers]
    n_params = sum(p.numel() for p in net.parameters())
    compute = useful_flops_per_sample(net, rules) * batch / peak
    memory = 4.0 * n_params * (1 + 1 + 7) / bandwidth
    return {"compute_s": compute, "memory_s": memory, "bound_s": max(compute, memory)}


def _print_stacked(args: argparse.Namespace, peak: float) -> None:
    bandwidth = step_floor(args.stack_genes, NetworkConfig().hidden[0], 32,
                           args.device)["bandwidth_bytes_per_s"]
    runs = [("target fine-tunes", n, False) for n in args.stack_fits]
    runs.append(("permutation refits", args.stack_permutations, True))
    for label, n_fits, perms in runs:
        if n_fits < 1:
            continue
        stats = stacked_vs_sequential(n_fits, args.stack_samples, args.stack_genes,
                                      args.stack_epochs, perms, args.device,
                                      sequential_fits=args.sequential_fits)
        bound = roofline_step(args.stack_genes, min(args.stack_samples, 32), peak, bandwidth)
        scaled = ("" if stats["sequential_measured"] == n_fits else
                  f" (timed on the first {stats['sequential_measured']} fits, scaled)")
        print(f"{n_fits} {label} ({args.stack_epochs} epochs, {args.stack_samples} samples, "
              f"{args.stack_genes} genes): sequential {stats['sequential_s']:.1f} s{scaled}, "
              f"stacked {stats['stacked_s']:.1f} s in chunks of {stats['chunk']} = "
              f"{stats['ratio']:.2f}x; stacked step "
              f"{stats['stacked_step_s'] * 1e3:.1f} ms per model against the roofline bound "
              f"{bound['bound_s'] * 1e3:.1f} ms (compute {bound['compute_s'] * 1e3:.1f} ms, "
              f"memory {bound['memory_s'] * 1e3:.1f} ms at {bandwidth / 1e9:.1f} GB/s) = "
              f"{bound['bound_s'] / stats['stacked_step_s']:.2f} of the roofline (sequential "
              f"step {stats['sequential_step_s'] * 1e3:.1f} ms = "
              f"{bound['bound_s'] / stats['sequential_step_s']:.2f})")


def _parse_time(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _job_group(job_id: str) -> str:
    """``target-elasticnet-r3-f1`` -> ``target-elasticnet``; ``upstream-x`` -> ``upstream``
    (the stage, and the method within the per-fold stages)."""
    parts = job_id.split("-")
    return "-".join(parts[:2]) if parts[0] in ("target", "select") else parts[0]


def measure_case_study(run_dir: str | Path, peak_flops: float | None = None) -> dict[str, Any]:
    """Useful FLOP/s of a finished run: sum of the jobs' ``useful_flops`` over the run's wall time.

    Every job of the drug engine reports ``useful_flops`` (the ``useful_flops_`` of the networks it
    fitted) in its ``result.json``; jobs without the key count as zero useful work. Each job's own
    time comes from ``jobs/<id>/timing.json`` (written by the executor), grouped by stage/method so
    that the table shows where the wall time goes.
    """
    run_dir = Path(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text(encoding="utf-8"))
    started, finished = _parse_time(manifest.get("started")), _parse_time(manifest.get("finished"))
    if started is None or finished is None:
        raise ValueError(f"{run_dir / 'manifest.json'}: run has not finished (no 'finished' time)")
    wall = max((finished - started).total_seconds(), 1e-9)
    total, n_jobs, job_seconds = 0.0, 0, 0.0
    groups: dict[str, dict[str, float]] = {}
    for result_path in sorted((run_dir / "jobs").glob("*/result.json")):
        if result_path.parent.name.startswith("batch-"):
            continue  # a stacked batch: its members' timing.json hold their shares of its time
        result = json.loads(result_path.read_text(encoding="utf-8"))
        timing_path = result_path.with_name("timing.json")
        seconds = (float(json.loads(timing_path.read_text(encoding="utf-8"))["seconds"])
                   if timing_path.exists() else 0.0)
        flops = float(result.get("useful_flops", 0.0))
        group = groups.setdefault(_job_group(result_path.parent.name),
                                  {"jobs": 0, "seconds": 0.0, "useful_flops": 0.0})
        group["jobs"] += 1
        group["seconds"] += seconds
        group["useful_flops"] += flops
        total += flops
        job_seconds += seconds
        n_jobs += 1
    out: dict[str, Any] = {
        "run_dir": str(run_dir),
        "jobs": n_jobs,
        "wall_seconds": wall,
        "useful_flops": total,
        "useful_flops_per_s": total / wall,
        "job_seconds": job_seconds,
        "groups": groups,
    }
    if peak_flops:
        out["fraction_of_peak"] = out["useful_flops_per_s"] / peak_flops
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=700)
    parser.add_argument("--genes", type=int, nargs="+", default=[6000, 6163],
                        help="gene counts to time (6,163: the real GDSC glioma set, unaligned)")
    parser.add_argument("--epochs", type=int, default=3, help="timed epochs (best one counts)")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="torch CPU thread counts to try (default: torch's default)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--case-study", type=Path, default=None, help="a finished run folder")
    parser.add_argument("--stack-fits", type=int, nargs="+", default=[30],
                        help="numbers of target fine-tunes to time (a GPU: 30 300 3000)")
    parser.add_argument("--sequential-fits", type=int, default=None,
                        help="time at most this many sequential fits per count and scale "
                             "(default: all)")
    parser.add_argument("--stack-sizes", action="store_true",
                        help="also compare stacked and sequential fits across network sizes")
    parser.add_argument("--stack-permutations", type=int, default=200)
    parser.add_argument("--stack-epochs", type=int, default=200)
    parser.add_argument("--stack-samples", type=int, default=29)
    parser.add_argument("--stack-genes", type=int, default=6163)
    args = parser.parse_args(argv)

    wall_start = time.perf_counter()
    threads = args.threads or [torch.get_num_threads()]
    print(f"device {args.device}; torch {torch.__version__}; "
          f"data {args.samples} samples x {args.genes} genes; network {NetworkConfig().hidden}")
    best_peak = 0.0
    for n_threads in threads:
        torch.set_num_threads(n_threads)
        peak = matmul_peak(device=args.device)
        best_peak = max(best_peak, peak)
        print(f"[threads={n_threads}] float32 matmul peak (2048^2, best of 5): "
              f"{peak / 1e9:.1f} GFLOP/s")
        for genes, batch in [(g, b) for g in args.genes for b in args.batch_sizes]:
            stats = training_throughput(args.samples, genes, batch, args.epochs, args.device)
            print(
                f"[threads={n_threads}] {genes} genes, batch {batch:4d}: "
                f"{stats['samples_per_s']:8.0f} samples/s, "
                f"{stats['useful_flops_per_s'] / 1e9:6.1f} useful GFLOP/s "
                f"({stats['useful_flops_per_sample'] / 1e6:.1f} MFLOP/sample; "
                f"6N = {stats['six_n_flops_per_sample'] / 1e6:.1f}) = "
                f"{stats['useful_flops_per_s'] / peak:.2f} of this thread count's peak"
            )
            floor = step_floor(genes, NetworkConfig().hidden[0], batch, args.device)
            kernels = floor["forward_s"] + floor["wgrad_s"] + floor["adam_s"]
            ideal = stats["useful_flops_per_sample"] * batch / peak  # whole step at peak
            step = batch / stats["samples_per_s"]
            print(
                f"[threads={n_threads}] {genes} genes, batch {batch:4d} step {step * 1e3:.1f} ms; "
                f"first layer "
                f"forward {floor['forward_s'] * 1e3:.1f} + weight grad "
                f"{floor['wgrad_s'] * 1e3:.1f} + Adam {floor['adam_s'] * 1e3:.1f} ms "
                f"(memory {floor['bandwidth_bytes_per_s'] / 1e9:.1f} GB/s); the step at peak "
                f"would take {ideal * 1e3:.1f} ms, so these kernels alone cap the fraction at "
                f"{ideal / kernels:.2f} (the step reaches {kernels / step:.2f} of that cap)"
            )
        _print_stacked(args, peak)
        if args.stack_sizes:
            for row in stacking_by_size(device=args.device):
                print(f"[threads={n_threads}] 30 fits of {row['genes']} genes x "
                      f"{row['hidden']} ({row['parameters']:,} parameters, 10 epochs): "
                      f"sequential {row['sequential_s']:.2f} s, stacked {row['stacked_s']:.2f} s "
                      f"= {row['ratio']:.2f}x")
    if args.case_study is not None:
        case = measure_case_study(args.case_study, best_peak)
        print(f"case study {case['run_dir']}: {case['jobs']} jobs, "
              f"wall {case['wall_seconds']:.1f} s, "
              f"{case['useful_flops_per_s'] / 1e9:.2f} useful GFLOP/s = "
              f"{case.get('fraction_of_peak', float('nan')):.3f} of peak; "
              f"jobs' own time {case['job_seconds']:.1f} s")
        print(f"{'jobs (stage / method)':32s} {'n':>4s} {'seconds':>9s} {'share':>6s} "
              f"{'GFLOP/s':>8s} {'of peak':>8s}")
        for name, group in sorted(case["groups"].items(), key=lambda kv: -kv[1]["seconds"]):
            rate = group["useful_flops"] / group["seconds"] if group["seconds"] else 0.0
            print(f"{name:32s} {group['jobs']:4.0f} {group['seconds']:9.1f} "
                  f"{group['seconds'] / case['wall_seconds']:6.1%} {rate / 1e9:8.2f} "
                  f"{rate / best_peak:8.3f}")
    print(f"benchmark wall time: {time.perf_counter() - wall_start:.1f} s")


if __name__ == "__main__":
    main()
