"""`mgmt prepare` uses the available cores by default, with outputs identical to one worker."""

from __future__ import annotations

import os
from pathlib import Path

from gliotl.mgmt.data import make_phantom_cohort
from gliotl.mgmt.data.cache import DEFAULT_MAX_WORKERS, default_workers
from gliotl.mgmt.data.prepare import PrepareConfig, run_prepare


def _prepare(root: Path, out: Path, workers: int) -> dict[str, bytes]:
    config = PrepareConfig(
        cohort={"kind": "upenn", "root": str(root)},
        preprocessing={"target_shape": [12, 16, 16]},
        cache_dir=str(out), cache_workers=workers, modalities=["T1", "FLAIR"],
    )
    run_prepare(config, progress=False)
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_default_is_the_available_cores_bounded():
    expected = min(len(os.sched_getaffinity(0)), DEFAULT_MAX_WORKERS)
    assert default_workers() == expected
    assert PrepareConfig(cohort={"kind": "upenn", "root": "x"}, cache_dir="c").cache_workers \
        == expected


def test_two_workers_write_the_same_bytes_as_one(tmp_path):
    root = tmp_path / "upenn"
    make_phantom_cohort(root, 3, shape=(32, 32, 24), seed=5)
    one = _prepare(root, tmp_path / "one", workers=1)
    two = _prepare(root, tmp_path / "two", workers=2)
    assert sum(name.endswith(".npy") for name in one) >= 4
    assert one.keys() == two.keys()
    differing = [name for name in one if one[name] != two[name]]
    assert differing == []
