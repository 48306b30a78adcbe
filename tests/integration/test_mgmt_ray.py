"""The MGMT experiment under the Ray executor (a local, loopback-only instance) gives the same
predictions and hold-out metrics as under the local executor (CPU training is deterministic per
seed, whichever process runs a job)."""

from __future__ import annotations

import json
import os

import pytest

# Bind the test instance to 127.0.0.1 (read when Ray is imported) and never phone home.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
ray = pytest.importorskip("ray")

import pandas as pd  # noqa: E402

from gliotl.mgmt.config import MGMTExperimentConfig  # noqa: E402

pytestmark = [pytest.mark.ray, pytest.mark.slow]


@pytest.fixture(scope="module")
def ray_instance():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             object_store_memory=100 * 1024**2)
    yield ray
    ray.shutdown()


def test_ray_executor_gives_the_local_metrics(ray_instance, tmp_path):
    from gliotl.core.runs.jobs import make_executor
    from gliotl.mgmt.pipeline.experiment import run_mgmt_experiment

    config = MGMTExperimentConfig.model_validate({
        "name": "ray", "seed": 2, "cache_dir": str(tmp_path / "cache"),
        "cohort": {"kind": "phantom", "n_patients": 20, "shape": [20, 20, 16], "signal": 2.0,
                   "seed": 3, "phantom_options": {
                       "missing_dsc_fraction": 0, "indeterminate_fraction": 0,
                       "not_available_fraction": 0, "followup_fraction": 0}},
        "preprocessing": {"target_shape": [16, 16, 16]},
        "modalities": ["DSC_ap-rCBV"],
        "model": {"depth": 10},
        "methods": ["spottune"],
        "training": {"epochs": 2, "batch_size": 8, "balancing": "weighted_loss",
                     "augment": None, "lr_backbone": 3e-3, "device": "cpu"},
        "split": {"test_size": 0.3, "n_splits": 2},
        "n_boot": 0,
    })
    local = run_mgmt_experiment(config, tmp_path, out=tmp_path / "local", progress=False)
    remote = run_mgmt_experiment(config, tmp_path, out=tmp_path / "ray", progress=False,
                                 executor=make_executor("ray", address="local"))
    assert remote.manifest()["status"] == "finished"
    for job in ("spottune-DSC_ap-rCBV-f0", "spottune-DSC_ap-rCBV-f1"):
        assert (remote.job_dir(job) / "model.pt").stat().st_size > 0
    pd.testing.assert_frame_equal(pd.read_csv(remote.predictions_path),
                                  pd.read_csv(local.predictions_path))
    expected = json.loads(local.metrics_path.read_text())
    got = json.loads(remote.metrics_path.read_text())
    for key in ("holdout", "policy_usage"):  # frames: NaN equals NaN there
        pd.testing.assert_frame_equal(pd.DataFrame(got[key]), pd.DataFrame(expected[key]))
