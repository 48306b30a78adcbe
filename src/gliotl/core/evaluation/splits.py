"""Train / validation / test splits shared by every compared method.

Splits are data, not code: they are generated once, saved to ``splits.csv`` (``sample_id, repeat,
fold, role``) and read back, so that every method (and a user's own splits) is evaluated on exactly
the same partition. Stratification keeps small folds representative (classes, or quantile bins
of a continuous response); grouping keeps every sample of one patient / cell line on one side.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import (
    GroupKFold,
    KFold,
    StratifiedGroupKFold,
    StratifiedKFold,
    train_test_split,
)

from gliotl.core.io import read_table, require_columns, write_csv
from gliotl.core.seeding import derive_seed
from gliotl.errors import GliotlError, input_error

SPLIT_COLUMNS = ["sample_id", "repeat", "fold", "role"]
ROLES = ("train", "val", "test")
MAX_CLASSES_AUTO = 10
"""``task="auto"``: integer-valued responses with at most this many distinct values are classes."""


@dataclass
class Fold:
    """The sample ids of one (repeat, fold), by role."""

    repeat: int
    fold: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


# --------------------------------------------------------------------------------------------
# input checks and stratification labels
# --------------------------------------------------------------------------------------------


def _as_ids(sample_ids: Sequence[Any], source: str = "sample_ids") -> np.ndarray:
    ids = pd.Series(list(sample_ids), dtype=object)
    if ids.isna().any():
        raise input_error(source, "sample_id", "missing sample ids; expected one id per sample")
    ids = ids.astype(str)
    if ids.empty:
        raise input_error(source, "sample_id", "no samples; expected at least one sample id")
    duplicated = ids[ids.duplicated()]
    if not duplicated.empty:
        raise input_error(
            source, "sample_id", f"duplicate sample id '{duplicated.iloc[0]}'; expected unique ids"
        )
    return ids.to_numpy(dtype=object)


def _aligned(values: Any, n: int, field: str) -> np.ndarray:
    arr = np.asarray(list(values), dtype=object)
    if arr.shape[0] != n:
        raise input_error(
            "splits", field, f"{arr.shape[0]} values for {n} samples; expected one per sample"
        )
    if pd.isna(pd.Series(arr, dtype=object)).any():
        raise input_error("splits", field, "missing values; expected a value for every sample")
    return arr


def _is_classification(y: pd.Series) -> bool:
    if not pd.api.types.is_numeric_dtype(y) or pd.api.types.is_bool_dtype(y):
        return True
    values = y.to_numpy(dtype=float)
    return bool(np.all(values == np.round(values)) and y.nunique() <= MAX_CLASSES_AUTO)


def stratification_labels(
    y: Sequence[Any] | None, n: int, task: str = "auto", n_bins: int = 5, min_count: int = 2
) -> np.ndarray | None:
    """Integer labels to stratify on: the classes, or quantile bins of a continuous response.

    Bins are merged (fewer bins) until each holds at least ``min_count`` samples, because a
    stratified K-fold needs every stratum in every fold. Returns None when y is None.
    """
    if y is None:
        return None
    if task not in ("auto", "classification", "regression"):
        raise input_error(
            "splits", "task", f"'{task}'; expected auto, classification or regression"
        )
    series = pd.Series(_aligned(y, n, "y"))
    numeric = pd.to_numeric(series, errors="coerce")
    if not numeric.isna().any():
        series = numeric
    is_class = task == "classification" or (task == "auto" and _is_classification(series))
    if is_class:
        return pd.factorize(series.astype(str), sort=True)[0]
    if not pd.api.types.is_numeric_dtype(series):
        raise input_error("splits", "y", "non-numeric values; expected a numeric response")
    for bins in range(max(int(n_bins), 1), 0, -1):
        labels = pd.qcut(series.rank(method="first"), bins, labels=False)
        if bins == 1 or np.bincount(labels).min() >= min_count:
            return np.asarray(labels, dtype=int)
    return np.zeros(n, dtype=int)


def _group_labels(groups: np.ndarray, labels: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Unique groups and, per group, its most frequent stratum (for group-level splitting)."""
    unique = pd.unique(pd.Series(groups, dtype=object))
    if labels is None:
        return unique, np.zeros(len(unique), dtype=int)
    frame = pd.DataFrame({"g": groups, "y": labels})
    majority = frame.groupby("g", sort=False)["y"].agg(lambda s: s.value_counts().index[0])
    return unique, majority.loc[unique].to_numpy(dtype=int)


def _split_off(
    index: np.ndarray, groups: np.ndarray, labels: np.ndarray | None, fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split ``index`` into (rest, part) with ``part`` ~ fraction of the groups, stratified by
    each group's stratum when possible (falls back to a plain random split when a stratum is
    too small to appear on both sides)."""
    sub_groups = groups[index]
    sub_labels = None if labels is None else labels[index]
    unique, group_strata = _group_labels(sub_groups, sub_labels)
    if len(unique) < 2:
        raise input_error("splits", "groups", f"{len(unique)} group(s); need at least 2 to split")
    try:
        rest_g, part_g = train_test_split(
            unique, test_size=fraction, random_state=seed,
            stratify=group_strata if labels is not None else None,
        )
    except ValueError:
        rest_g, part_g = train_test_split(unique, test_size=fraction, random_state=seed)
    in_part = pd.Series(sub_groups, dtype=object).isin(set(part_g)).to_numpy()
    return index[~in_part], index[in_part]


def _kfold_indices(
    n: int, n_splits: int, groups: np.ndarray | None, labels: np.ndarray | None, seed: int
) -> list[np.ndarray]:
    """Test indices of each fold, chosen by the matching scikit-learn splitter."""
    dummy = np.zeros(n)
    with warnings.catch_warnings():
        # "The least populated class has only k members": stratification is best effort there.
        warnings.simplefilter("ignore", UserWarning)
        if groups is not None and labels is not None:
            splitter = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed)
            parts = splitter.split(dummy, labels, groups)
        elif groups is not None:
            parts = GroupKFold(n_splits, shuffle=True, random_state=seed).split(dummy, None, groups)
        elif labels is not None:
            parts = StratifiedKFold(n_splits, shuffle=True, random_state=seed).split(dummy, labels)
        else:
            parts = KFold(n_splits, shuffle=True, random_state=seed).split(dummy)
        return [test for _, test in parts]


def _check_counts(n_splits: int, groups: np.ndarray) -> None:
    if n_splits < 2:
        raise input_error("splits", "n_splits", f"{n_splits}; expected at least 2 folds")
    n_groups = len(pd.unique(pd.Series(groups, dtype=object)))
    if n_groups < n_splits:
        raise input_error(
            "splits", "n_splits", f"{n_splits} folds but only {n_groups} samples/groups; "
            "expected at least one per fold"
        )


def _finish(rows: list[pd.DataFrame]) -> pd.DataFrame:
    return normalise_splits(pd.concat(rows, ignore_index=True))


def normalise_splits(splits: pd.DataFrame) -> pd.DataFrame:
    """Canonical column order and dtypes, so that a frame and its CSV reload compare equal."""
    out = splits.loc[:, SPLIT_COLUMNS].copy()
    out["sample_id"] = out["sample_id"].astype(str)
    out["repeat"] = out["repeat"].astype("int64")
    out["fold"] = out["fold"].astype("int64")
    out["role"] = out["role"].astype(str)
    return out.reset_index(drop=True)


# --------------------------------------------------------------------------------------------
# generators
# --------------------------------------------------------------------------------------------


def kfold_splits(
    sample_ids: Sequence[Any],
    y: Sequence[Any] | None = None,
    n_splits: int = 5,
    n_repeats: int = 1,
    seed: int = 0,
    groups: Sequence[Any] | None = None,
    task: str = "auto",
    n_bins: int = 5,
    val_fraction: float = 0.0,
) -> pd.DataFrame:
    """Repeated (stratified, grouped) K-fold: each fold is 'test' once, the rest 'train'.

    With ``val_fraction > 0`` a stratified, grouped 'val' part is carved from each fold's
    training samples (for early stopping / thresholds). Each repeat uses its own seed derived
    from ``seed``, so repeats differ but the whole table is reproducible.
    """
    ids = _as_ids(sample_ids)
    n = len(ids)
    grp = ids.copy() if groups is None else _aligned(groups, n, "groups").astype(str)
    labels = stratification_labels(y, n, task, n_bins, min_count=n_splits)
    _check_counts(n_splits, grp)
    if n_repeats < 1:
        raise input_error("splits", "n_repeats", f"{n_repeats}; expected at least 1")
    if not 0.0 <= val_fraction < 1.0:
        raise input_error("splits", "val_fraction", f"{val_fraction}; expected 0 <= value < 1")
    rows = []
    for repeat in range(n_repeats):
        repeat_seed = derive_seed(seed, "kfold", repeat)
        grouping = grp if groups is not None else None
        tests = _kfold_indices(n, n_splits, grouping, labels, repeat_seed)
        for fold, test_idx in enumerate(tests):
            role = np.full(n, "train", dtype=object)
            role[test_idx] = "test"
            if val_fraction > 0:
                train_idx = np.flatnonzero(role == "train")
                _, val_idx = _split_off(
                    train_idx, grp, labels, val_fraction, derive_seed(repeat_seed, "val", fold)
                )
                role[val_idx] = "val"
            rows.append(pd.DataFrame({"sample_id": ids, "repeat": repeat, "fold": fold,
                                      "role": role}))
    return _finish(rows)


def holdout_kfold_splits(
    sample_ids: Sequence[Any],
    y: Sequence[Any] | None,
    test_size: float = 0.3,
    n_splits: int = 5,
    seed: int = 0,
    groups: Sequence[Any] | None = None,
    task: str = "auto",
    n_bins: int = 5,
    n_repeats: int = 1,
) -> pd.DataFrame:
    """Stratified hold-out test set + K-fold on the rest (the MGMT paper's protocol).

    The hold-out samples have role 'test' in every fold; of the remaining samples one fold is
    'val' (checkpointing, thresholds) and the others 'train'. Each repeat redraws everything.
    """
    ids = _as_ids(sample_ids)
    n = len(ids)
    grp = ids.copy() if groups is None else _aligned(groups, n, "groups").astype(str)
    labels = stratification_labels(y, n, task, n_bins, min_count=2)
    if not 0.0 < test_size < 1.0:
        raise input_error("splits", "test_size", f"{test_size}; expected 0 < value < 1")
    if n_repeats < 1:
        raise input_error("splits", "n_repeats", f"{n_repeats}; expected at least 1")
    rows = []
    for repeat in range(n_repeats):
        repeat_seed = derive_seed(seed, "holdout", repeat)
        rest_idx, test_idx = _split_off(np.arange(n), grp, labels, test_size, repeat_seed)
        _check_counts(n_splits, grp[rest_idx])
        rest_labels = None
        if labels is not None:
            rest_labels = stratification_labels(
                labels[rest_idx], len(rest_idx), "classification", min_count=n_splits
            )
        folds = _kfold_indices(
            len(rest_idx), n_splits, grp[rest_idx] if groups is not None else None, rest_labels,
            derive_seed(repeat_seed, "kfold"),
        )
        for fold, val_local in enumerate(folds):
            role = np.full(n, "train", dtype=object)
            role[test_idx] = "test"
            role[rest_idx[val_local]] = "val"
            rows.append(pd.DataFrame({"sample_id": ids, "repeat": repeat, "fold": fold,
                                      "role": role}))
    return _finish(rows)


# --------------------------------------------------------------------------------------------
# validation, persistence, iteration
# --------------------------------------------------------------------------------------------


def _group_map(
    groups: Mapping[Any, Any] | pd.Series | Sequence[Any] | None,
    sample_ids: Sequence[Any] | None,
) -> dict[str, str] | None:
    if groups is None:
        return None
    if isinstance(groups, pd.Series):
        return {str(k): str(v) for k, v in groups.items()}
    if isinstance(groups, Mapping):
        return {str(k): str(v) for k, v in groups.items()}
    if sample_ids is None:
        raise GliotlError("splits: field 'groups': a sequence of groups needs sample_ids")
    ids = [str(s) for s in sample_ids]
    return dict(zip(ids, (str(g) for g in _aligned(groups, len(ids), "groups")), strict=True))


def _check_raw(splits: pd.DataFrame, source: str | Path) -> None:
    """The table as given: non-empty, all columns, no blanks, integer repeat / fold."""
    if not isinstance(splits, pd.DataFrame) or splits.shape[0] == 0:
        raise input_error(source, None, "splits table is empty; expected rows of " +
                          ", ".join(SPLIT_COLUMNS))
    require_columns(splits, SPLIT_COLUMNS, source)
    for column in SPLIT_COLUMNS:
        missing = int(splits[column].isna().sum())
        if missing:
            raise input_error(source, column, f"{missing} missing values; expected no blanks")
    for column in ("repeat", "fold"):
        numbers = pd.to_numeric(splits[column], errors="coerce")
        bad = numbers.isna() | (numbers != np.floor(numbers)) | (numbers < 0)
        if bad.any():
            value = splits[column][bad].iloc[0]
            raise input_error(source, column, f"value '{value}'; expected an integer >= 0")


def _check_roles(frame: pd.DataFrame, source: str | Path) -> None:
    """Known roles, one row per (sample, repeat, fold), train and test in every fold."""
    unknown = frame.loc[~frame["role"].isin(ROLES), "role"]
    if not unknown.empty:
        raise input_error(source, "role", f"unknown role '{unknown.iloc[0]}'; expected one of "
                          + ", ".join(ROLES))
    dup = frame.duplicated(["sample_id", "repeat", "fold"])
    if dup.any():
        row = frame[dup].iloc[0]
        raise input_error(source, "sample_id", f"sample '{row['sample_id']}' appears twice in "
                          f"repeat {row['repeat']} fold {row['fold']}; expected one row per "
                          "(sample, fold)")
    for (repeat, fold), part in frame.groupby(["repeat", "fold"], sort=True):
        for needed in ("train", "test"):
            if not (part["role"] == needed).any():
                raise input_error(source, "role", f"repeat {repeat} fold {fold} has no '{needed}' "
                                  "samples; expected train and test samples in every fold")


def _check_ids(frame: pd.DataFrame, sample_ids: Sequence[Any], source: str | Path) -> None:
    """Every split sample is a sample of the data."""
    known = {str(s) for s in sample_ids}
    unknown_ids = frame.loc[~frame["sample_id"].isin(known), "sample_id"]
    if not unknown_ids.empty:
        raise input_error(source, "sample_id", f"{unknown_ids.nunique()} ids not in the data "
                          f"(e.g. '{unknown_ids.iloc[0]}'); expected ids of the dataset")


def _check_groups(frame: pd.DataFrame, group_of: dict[str, str], source: str | Path) -> None:
    """Every sample has a group, and no group sits in two roles within one fold."""
    unmapped = frame.loc[~frame["sample_id"].isin(group_of.keys()), "sample_id"]
    if not unmapped.empty:
        raise input_error(source, "sample_id", f"sample '{unmapped.iloc[0]}' has no group; "
                          "expected a group for every sample")
    with_group = frame.assign(_group=frame["sample_id"].map(group_of))
    roles = with_group.groupby(["repeat", "fold", "_group"])["role"].nunique()
    mixed = roles[roles > 1]
    if not mixed.empty:
        repeat, fold, group = mixed.index[0]
        raise input_error(source, "role", f"group '{group}' has samples in more than one role "
                          f"in repeat {repeat} fold {fold}; expected one role per group")


def validate_splits(
    splits: pd.DataFrame,
    source: str | Path = "splits",
    sample_ids: Sequence[Any] | None = None,
    groups: Mapping[Any, Any] | pd.Series | Sequence[Any] | None = None,
) -> pd.DataFrame:
    """Check a splits table (generated or user-supplied) and return it in canonical form.

    Raises a one-line GliotlError for: missing columns, missing values, non-integer repeat /
    fold, an unknown role, a duplicated (sample, repeat, fold), a fold without train or test
    samples, a sample id not in the data, or a group placed in two roles within one fold.
    """
    _check_raw(splits, source)
    frame = splits.copy()
    frame["repeat"] = pd.to_numeric(frame["repeat"]).astype("int64")
    frame["fold"] = pd.to_numeric(frame["fold"]).astype("int64")
    frame = normalise_splits(frame)
    _check_roles(frame, source)
    if sample_ids is not None:
        _check_ids(frame, sample_ids, source)
    group_of = _group_map(groups, sample_ids)
    if group_of is not None:
        _check_groups(frame, group_of, source)
    return frame


def save_splits(splits: pd.DataFrame, path: str | Path) -> Path:
    """Validate and write ``splits.csv`` atomically."""
    return write_csv(path, validate_splits(splits, path))


def load_splits(
    path: str | Path,
    sample_ids: Sequence[Any] | None = None,
    groups: Mapping[Any, Any] | pd.Series | Sequence[Any] | None = None,
) -> pd.DataFrame:
    """Read and validate a splits CSV (ours or a user's); sample ids stay strings ('007')."""
    frame = read_table(path, dtype={"sample_id": str, "role": str})
    return validate_splits(frame, path, sample_ids=sample_ids, groups=groups)


def iter_folds(splits: pd.DataFrame) -> Iterator[Fold]:
    """Yield each (repeat, fold) with its train / val / test sample ids, in order."""
    frame = normalise_splits(splits)
    for (repeat, fold), part in frame.groupby(["repeat", "fold"], sort=True):
        by_role = {role: part.loc[part["role"] == role, "sample_id"].to_numpy(dtype=object)
                   for role in ROLES}
        yield Fold(int(repeat), int(fold), by_role["train"], by_role["val"], by_role["test"])


__all__ = [
    "ROLES",
    "SPLIT_COLUMNS",
    "Fold",
    "holdout_kfold_splits",
    "iter_folds",
    "kfold_splits",
    "load_splits",
    "normalise_splits",
    "save_splits",
    "stratification_labels",
    "validate_splits",
]
