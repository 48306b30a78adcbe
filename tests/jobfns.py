"""Job functions for the executor tests.

They live in a module (not in the test files) because worker processes must import them by name:
spawn-based pools get the parent's ``sys.path``; Ray workers get this folder on ``PYTHONPATH``
through the executor's ``runtime_env``.
"""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import numpy as np
import pandas as pd

from gliotl.core.io import save_torch
from gliotl.core.seeding import derive_seed, seed_everything


def train_tiny(job_dir: Path, seed: int, fold: int, epochs: int = 30) -> dict:
    """A real (tiny) seeded regression training: MLP on synthetic data, held-out predictions."""
    import torch

    rng = seed_everything(derive_seed(seed, "fold", fold))
    x = rng.normal(size=(64, 8)).astype(np.float32)
    y = (x @ rng.normal(size=8) + 0.1 * rng.normal(size=64)).astype(np.float32)
    train, test = np.arange(48), np.arange(48, 64)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
    optimiser = torch.optim.Adam(model.parameters(), lr=0.01)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    for _ in range(epochs):
        for batch in torch.randperm(len(train)).split(16):
            index = torch.from_numpy(train)[batch]
            optimiser.zero_grad()
            loss = torch.nn.functional.mse_loss(model(xt[index]).squeeze(1), yt[index])
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        pred = model(xt[test]).squeeze(1).numpy()
    save_torch(job_dir / "model.pt", model.state_dict())
    digest = hashlib.sha256(
        b"".join(p.detach().numpy().tobytes() for p in model.parameters())
    ).hexdigest()
    _count_call(job_dir)
    return {
        "fold": fold,
        "mse": float(np.mean((pred - y[test]) ** 2)),
        "weights_sha256": digest,
        "predictions": pd.DataFrame({"sample": test, "y_true": y[test], "y_pred": pred}),
    }


def _count_call(job_dir: Path) -> None:
    with open(job_dir / "calls.txt", "a", encoding="utf-8") as handle:
        handle.write(f"{os.getpid()}\n")


def always_fails(job_dir: Path) -> dict:
    _count_call(job_dir)
    raise ValueError("synthetic failure")


def quick(job_dir: Path, value: int) -> dict:
    _count_call(job_dir)
    (job_dir / "sub").mkdir(exist_ok=True)
    (job_dir / "sub" / "note.txt").write_text(f"value {value}\n", encoding="utf-8")
    return {"value": value * 2}


def killed_first_time(job_dir: Path, value: int) -> dict:
    """SIGKILLs its own worker process on the first attempt (marker file), then succeeds."""
    marker = job_dir / "first-attempt"
    _count_call(job_dir)
    if not marker.exists():
        marker.write_text("started\n", encoding="utf-8")
        os.kill(os.getpid(), signal.SIGKILL)
    return {"value": value}


def always_killed(job_dir: Path) -> dict:
    _count_call(job_dir)
    os.kill(os.getpid(), signal.SIGKILL)
    return {}


def calls(job_dir: Path) -> int:
    path = Path(job_dir) / "calls.txt"
    return len(path.read_text(encoding="utf-8").splitlines()) if path.is_file() else 0


# -- used by tests/test_core_runtime.py -------------------------------------------------------


def square_job(job_dir: Path, value: int, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    noise = float(rng.normal())
    (job_dir / "artifact.txt").write_text(str(value))
    return {"value": value, "square": value * value, "noise": noise,
            "predictions": pd.DataFrame({"sample_id": [f"s{value}"], "y_pred": [noise]})}


def failing_job(job_dir: Path, fail_times: int) -> dict:
    marker = job_dir / "attempts"
    attempts = int(marker.read_text()) + 1 if marker.exists() else 1
    marker.write_text(str(attempts))
    if attempts <= fail_times:
        raise RuntimeError(f"planned failure {attempts}")
    return {"attempts": attempts}


def busy(job_dir: Path, seconds: float) -> dict:
    """Mark the start (``started``), then work for ``seconds``: a job in flight for as long
    as a test needs one."""
    import time

    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "started").write_text(str(os.getpid()))
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        time.sleep(0.05)
    return {"seconds": seconds}


def sleeps(job_dir: Path, seconds: float, index: int = 0) -> dict:
    """A deliberately slow job (progress heartbeat tests)."""
    import time

    time.sleep(seconds)
    return {"index": index}


def fits_unconverged(job_dir: Path, fits: int = 2) -> dict:
    """Real scikit-learn fits stopped before converging: each raises a ConvergenceWarning."""
    from sklearn.linear_model import ElasticNet

    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 30))
    y = x[:, 0] + rng.normal(size=40)
    for alpha in range(fits):
        ElasticNet(alpha=1e-4 * (alpha + 1), max_iter=1, tol=1e-12).fit(x, y)
    return {"fits": fits}
