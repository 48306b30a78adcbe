"""The phantom carries exactly the documented MGMT signal: a two-feature handcrafted model
(necrotic fraction from the segmentation, rim enhancement T1GD / T1) reaches a high AUC at
strong signal, and about 0.5 with signal 0 or with shuffled labels."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from gliotl.mgmt.data import make_phantom_cohort, oracle_auc, read_upenn

N_PATIENTS = 40


def _features(cohort) -> np.ndarray:
    rows = []
    for pid in cohort.patient_ids:
        row = cohort.row(pid)
        seg = np.asarray(nib.load(row["segmentation"]).dataobj)
        t1 = np.asarray(nib.load(row["T1"]).dataobj, dtype=np.float32)
        t1gd = np.asarray(nib.load(row["T1GD"]).dataobj, dtype=np.float32)
        necrosis, rim = seg == 1, seg == 4
        fraction = necrosis.sum() / max(1, (necrosis | rim).sum())
        enhancement = np.median(t1gd[rim] / np.maximum(t1[rim], 1.0))
        rows.append([fraction, enhancement])
    return np.asarray(rows)


def _cv_auc(x: np.ndarray, y: np.ndarray) -> float:
    model = make_pipeline(StandardScaler(), LogisticRegression())
    folds = StratifiedKFold(5, shuffle=True, random_state=0)
    scores = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
    return roc_auc_score(y, scores)


def _cohort(root, signal):
    make_phantom_cohort(root, N_PATIENTS, shape=(48, 48, 32), signal=signal, seed=11,
                        missing_dti_fraction=0, missing_dsc_fraction=0, indeterminate_fraction=0,
                        not_available_fraction=0, followup_fraction=0, expert_fraction=0)
    cohort = read_upenn(root)
    return _features(cohort), cohort.labels.to_numpy()


@pytest.mark.slow
def test_phantom_signal_is_learnable_and_absent_at_zero(tmp_path):
    x, y = _cohort(tmp_path / "strong", signal=2.0)
    assert len(y) == N_PATIENTS and 0 < y.sum() < N_PATIENTS
    strong = _cv_auc(x, y)
    assert strong > 0.85, strong
    assert oracle_auc(2.0) > 0.99 and oracle_auc(0.0) == 0.5
    # each documented property points the documented way (methylated: less necrosis, more enh.)
    assert x[y == 1, 0].mean() < x[y == 0, 0].mean()
    assert x[y == 1, 1].mean() > x[y == 0, 1].mean()
    shuffled = np.random.default_rng(0).permutation(y)
    assert abs(_cv_auc(x, shuffled) - 0.5) < 0.25

    x0, y0 = _cohort(tmp_path / "none", signal=0.0)
    assert abs(_cv_auc(x0, y0) - 0.5) < 0.25
