"""Nested selection: choose the method and its hyper-parameters inside the training fold.

On 14-30 target samples no method wins everywhere, and picking the best method by its outer
test score is optimistic. :class:`NestedSelector` is itself a regressor: the engine gives it the
outer training fold, it runs an inner cross-validation on those rows only, picks the
(candidate, parameters) with the best mean inner score, refits that on all the rows it was
given, and predicts the outer test fold once. The outer test labels never reach ``fit``.

Inner folds are stratified on equal-size quantile bins of ``y`` (as the paper stratifies GDSC
CV on a median split) so that every inner validation fold spans the response range.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import pearsonr, rankdata, spearmanr
from sklearn.base import BaseEstimator, RegressorMixin, clone
from sklearn.metrics import mean_squared_error, r2_score
from sklearn.model_selection import ParameterGrid, StratifiedKFold
from sklearn.utils.validation import check_is_fitted, validate_data

from gliotl.core.seeding import derive_seed

__all__ = [
    "Candidate",
    "NestedSelector",
    "accepted_fit_params",
    "score_predictions",
    "stratified_inner_splits",
]

ParamGrid = Mapping[str, Sequence[Any]] | Sequence[Mapping[str, Sequence[Any]]]
Scorer = Callable[[np.ndarray, np.ndarray], float]
SCORINGS = ("spearman", "pearson", "neg_mse", "r2")


@dataclass(frozen=True)
class Candidate:
    """One method to choose from: a name, an estimator template or factory, a parameter grid.

    ``estimator`` is a scikit-learn estimator (cloned for every fit, never fitted itself) or a
    zero-argument callable returning a fresh estimator. ``param_grid`` follows
    :class:`sklearn.model_selection.ParameterGrid`; ``{}`` means "as configured".
    """

    name: str
    estimator: Any
    param_grid: ParamGrid = field(default_factory=dict)

    def build(self, params: Mapping[str, Any]) -> Any:
        """A fresh, unfitted estimator with ``params`` applied."""
        template = self.estimator
        model = clone(template) if hasattr(template, "get_params") else template()
        return model.set_params(**params) if params else model


def score_predictions(scoring: str | Scorer, y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Higher is better. An undefined correlation (constant predictions or labels) scores 0:
    predictions without rank information carry no association, and NaN would break ranking."""
    if callable(scoring):
        return float(scoring(y_true, y_pred))
    if scoring in ("spearman", "pearson"):
        if np.ptp(y_true) == 0 or np.ptp(y_pred) == 0:
            return 0.0
        corr = spearmanr if scoring == "spearman" else pearsonr
        value = float(corr(y_true, y_pred).statistic)
        return 0.0 if np.isnan(value) else value
    if scoring == "neg_mse":
        return -float(mean_squared_error(y_true, y_pred))
    if scoring == "r2":
        return float(r2_score(y_true, y_pred))
    raise ValueError(f"scoring must be one of {SCORINGS} or a callable, got {scoring!r}")


def stratified_inner_splits(
    y: np.ndarray, n_splits: int, n_repeats: int, seed: int, n_bins: int | None = None
) -> list[tuple[int, int, np.ndarray, np.ndarray]]:
    """``(repeat, fold, train_idx, val_idx)`` for K-fold x repeats stratified on y's quantiles.

    Bins are equal-size rank bins; their number is capped so that each bin holds at least
    ``n_splits`` samples (StratifiedKFold's requirement), and ``n_splits`` is capped by ``n``.
    """
    n = len(y)
    if n < 2:
        raise ValueError(f"inner cross-validation needs 2+ samples, got n_samples = {n}")
    n_splits = max(2, min(n_splits, n))
    bins = max(1, min(n_bins or 5, n // n_splits))
    labels = (rankdata(y, method="ordinal") - 1) * bins // n
    splits = []
    for repeat in range(n_repeats):
        folds = StratifiedKFold(
            n_splits=n_splits, shuffle=True, random_state=derive_seed(seed, "inner", repeat)
        )
        for fold, (train, val) in enumerate(folds.split(np.zeros((n, 1)), labels)):
            splits.append((repeat, fold, train, val))
    return splits


def accepted_fit_params(estimator: Any, fit_params: Mapping[str, Any]) -> dict[str, Any]:
    """The subset of ``fit_params`` that ``estimator.fit`` names (all of them for ``**kwargs``)."""
    parameters = inspect.signature(estimator.fit).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return dict(fit_params)
    return {key: value for key, value in fit_params.items() if key in parameters}


def _params_label(params: Mapping[str, Any]) -> str:
    """A stable, readable key for a parameter setting (JSON, sorted keys)."""
    return json.dumps(dict(params), sort_keys=True, default=str)


class NestedSelector(RegressorMixin, BaseEstimator):
    """Chooses among candidate methods by inner CV on the fit data, then refits the winner.

    ``fit(X, y, **fit_params)``: extra fit arguments (such as a network's ``source=``) are passed
    unchanged to each candidate whose ``fit`` accepts them (by signature) and dropped for the
    others; they are not sliced per inner fold, so pass per-dataset objects, not per-sample
    arrays. After fitting: ``selected_`` (``{"method", "params"}``), ``inner_scores_`` (one row
    per candidate x parameter setting: mean/std of the inner fold scores, rank),
    ``inner_fold_scores_`` (one row per setting x repeat x fold) and ``best_estimator_`` (alias
    ``selected_estimator_``), refitted on all the fit data.
    Ties go to the earlier candidate and grid point, so list simpler methods first.
    """

    def __init__(
        self,
        candidates: Sequence[Candidate],
        inner_splits: int = 3,
        inner_repeats: int = 1,
        scoring: str | Scorer = "spearman",
        n_bins: int | None = None,
        seed: int = 0,
    ) -> None:
        self.candidates = candidates
        self.inner_splits = inner_splits
        self.inner_repeats = inner_repeats
        self.scoring = scoring
        self.n_bins = n_bins
        self.seed = seed

    def __sklearn_clone__(self) -> NestedSelector:
        """Candidates are templates that are only ever cloned, so clones may share them (a
        deep copy would duplicate every bound source model)."""
        params = self.get_params(deep=False)
        candidates = params.pop("candidates")
        return type(self)(candidates=candidates, **params)

    def _check_params(self) -> None:
        if not self.candidates:
            raise ValueError("NestedSelector needs at least one candidate")
        names = [c.name for c in self.candidates]
        if len(set(names)) != len(names):
            raise ValueError(f"candidate names must be unique, got {names}")
        if not callable(self.scoring) and self.scoring not in SCORINGS:
            raise ValueError(f"scoring must be one of {SCORINGS} or a callable")
        if self.inner_repeats < 1 or self.inner_splits < 2:
            raise ValueError("inner_splits must be >= 2 and inner_repeats >= 1")

    def fit(self, X: np.ndarray, y: np.ndarray, **fit_params: Any) -> NestedSelector:
        X, y = validate_data(self, X, y, y_numeric=True)
        self._check_params()
        splits = stratified_inner_splits(
            y, self.inner_splits, self.inner_repeats, self.seed, self.n_bins
        )
        summary, per_fold, settings = [], [], []
        for candidate in self.candidates:
            for params in ParameterGrid(candidate.param_grid):
                label = _params_label(params)
                scores = []
                for repeat, fold, train, val in splits:
                    model = candidate.build(params)
                    try:
                        model.fit(X[train], y[train], **accepted_fit_params(model, fit_params))
                        score = score_predictions(self.scoring, y[val], model.predict(X[val]))
                    except Exception as err:
                        err.add_note(f"nested selection: candidate '{candidate.name}' {label}, "
                                     f"inner repeat {repeat} fold {fold}")
                        raise
                    scores.append(score)
                    per_fold.append({"candidate": candidate.name, "params": label,
                                     "repeat": repeat, "fold": fold, "n_val": len(val),
                                     "score": score})
                summary.append({"candidate": candidate.name, "params": label,
                                "mean_score": float(np.mean(scores)),
                                "std_score": float(np.std(scores)), "n_splits": len(scores)})
                settings.append((candidate, params))
        table = pd.DataFrame(summary)
        ranked = table["mean_score"].fillna(-np.inf)  # a NaN custom score never wins
        table["rank"] = ranked.rank(ascending=False, method="first").astype(int)
        best = int(np.argmax(ranked.to_numpy()))
        candidate, params = settings[best]
        self.inner_scores_ = table
        self.inner_fold_scores_ = pd.DataFrame(per_fold)
        self.selected_ = {"method": candidate.name, "params": dict(params)}
        self.best_estimator_ = candidate.build(params)
        self.best_estimator_.fit(X, y, **accepted_fit_params(self.best_estimator_, fit_params))
        self.selected_estimator_ = self.best_estimator_  # the engine's name for the same model
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "best_estimator_")
        X = validate_data(self, X, reset=False)
        return np.asarray(self.best_estimator_.predict(X), dtype=float)
