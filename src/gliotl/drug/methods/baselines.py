"""Classical baselines for drug response on small targets.

Every transfer method has to beat these on the same outer splits to be worth its complexity:
the training-fold mean (the floor), an ElasticNet tuned inside the training fold, a random
forest, and MGMT promoter status (the one clinical temozolomide biomarker). All are plain
scikit-learn regressors: parameters in ``__init__``, learned state in ``*_`` attributes, so the
engine and :class:`gliotl.drug.methods.selection.NestedSelector` can ``clone`` them per fold.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import ElasticNet, ElasticNetCV
from sklearn.model_selection import KFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils import Tags
from sklearn.utils.validation import check_is_fitted, validate_data

__all__ = [
    "MGMTStatusRegressor",
    "RandomForestBaseline",
    "TrainingMeanRegressor",
    "TunedElasticNet",
    "inner_kfold",
]


def inner_kfold(n_samples: int, n_splits: int, seed: int | None) -> KFold:
    """Shuffled K-fold for inner tuning, shrunk so that every fold keeps at least one sample.

    Small targets (14 training cultures in a 3-fold outer split of 22) make a fixed ``n_splits``
    fail outright; fewer inner folds is the honest fallback, never a silent leak.
    """
    if n_samples < 2:
        raise ValueError(f"inner cross-validation needs 2+ samples, got n_samples = {n_samples}")
    return KFold(n_splits=max(2, min(n_splits, n_samples)), shuffle=True, random_state=seed)


class TrainingMeanRegressor(RegressorMixin, BaseEstimator):
    """Predicts the mean response of the training fold for every sample.

    The floor every model must clear; its constant prediction has no rank information, so its
    Spearman correlation is undefined (the evaluation core reports it as such).
    """

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.regressor_tags.poor_score = True  # a constant: R^2 is 0 by construction
        return tags

    def fit(self, X: np.ndarray, y: np.ndarray) -> TrainingMeanRegressor:
        X, y = validate_data(self, X, y, y_numeric=True)
        self.mean_ = float(np.mean(y))
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "mean_")
        X = validate_data(self, X, reset=False)
        return np.full(X.shape[0], self.mean_, dtype=float)


class TunedElasticNet(RegressorMixin, BaseEstimator):
    """ElasticNet whose alpha and l1_ratio are chosen by an inner CV on the fit data only.

    With ``standardise`` (the default, as before) standardisation is part of the model
    (``StandardScaler`` then ``ElasticNetCV`` in one pipeline), so the scaler is learned from
    the training fold and applied unchanged to test samples; the inner folds share it (it uses
    no labels and never sees the outer test fold, and it keeps the fast warm-started path).
    ``standardise=False`` fits on the features as given: per-gene scaling is a modelling
    choice (on expression z-scored per cell line it can hide or reveal signal).

    ``alpha`` fixes the penalty (only l1_ratio is then tuned, or nothing with one l1_ratio).
    After ``fit``, ``tuning_`` says where the alpha fell: the grid's range, and whether it is
    the top of the path (``at_top``), where every coefficient is zero and the model predicts
    the training mean (``constant``).
    """

    def __init__(
        self,
        l1_ratios: Sequence[float] = (0.1, 0.5, 0.9, 1.0),
        n_alphas: int = 50,
        inner_folds: int = 3,
        max_iter: int = 5000,
        standardise: bool = True,
        alpha: float | None = None,
        seed: int | None = 0,
    ) -> None:
        self.l1_ratios = l1_ratios
        self.n_alphas = n_alphas
        self.inner_folds = inner_folds
        self.max_iter = max_iter
        self.standardise = standardise
        self.alpha = alpha
        self.seed = seed

    def _model(self, n_samples: int) -> ElasticNet | ElasticNetCV:
        if self.alpha is not None and self.alpha <= 0:
            raise ValueError(f"alpha must be > 0, got {self.alpha}")
        if self.alpha is not None and len(self.l1_ratios) == 1:
            return ElasticNet(alpha=self.alpha, l1_ratio=float(self.l1_ratios[0]),
                              max_iter=self.max_iter, random_state=self.seed)
        return ElasticNetCV(
            l1_ratio=list(self.l1_ratios),
            alphas=[self.alpha] if self.alpha is not None else self.n_alphas,
            cv=inner_kfold(n_samples, self.inner_folds, self.seed),
            max_iter=self.max_iter,
            random_state=self.seed,
        )

    def fit(self, X: np.ndarray, y: np.ndarray) -> TunedElasticNet:
        X, y = validate_data(self, X, y, y_numeric=True)
        enet = self._model(X.shape[0])
        steps = [StandardScaler(), enet] if self.standardise else [enet]
        self.pipeline_: Pipeline = make_pipeline(*steps).fit(X, y)
        self.alpha_ = float(enet.alpha_ if hasattr(enet, "alpha_") else enet.alpha)
        self.l1_ratio_ = float(enet.l1_ratio_ if hasattr(enet, "l1_ratio_") else enet.l1_ratio)
        self.coef_ = enet.coef_
        self.n_iter_ = int(enet.n_iter_)
        self.tuning_ = self._tuning(enet)
        return self

    def _tuning(self, enet: ElasticNet | ElasticNetCV) -> dict[str, float | int | bool]:
        """Where the chosen alpha lies on its grid (a fixed alpha is its own grid)."""
        grid = np.atleast_2d(getattr(enet, "alphas_", [self.alpha_]))
        row = grid[list(self.l1_ratios).index(self.l1_ratio_)] if grid.shape[0] > 1 else grid[0]
        return {"alpha": self.alpha_, "l1_ratio": self.l1_ratio_,
                "grid_min": float(row.min()), "grid_max": float(row.max()),
                "fixed_alpha": self.alpha is not None,
                "at_top": bool(self.alpha is None and np.isclose(self.alpha_, row.max())),
                "n_nonzero": int(np.count_nonzero(self.coef_)),
                "constant": not bool(np.any(self.coef_))}

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "pipeline_")
        X = validate_data(self, X, reset=False)
        return self.pipeline_.predict(X)


class RandomForestBaseline(RegressorMixin, BaseEstimator):
    """Random forest with defaults suited to thousands of genes and tens of samples.

    ``max_features="sqrt"`` decorrelates trees when p >> n (and keeps fitting fast);
    ``min_samples_leaf=2`` stops single-sample leaves from memorising noise; ``n_jobs=1``
    because the engine already parallelises folds.
    """

    def __init__(
        self,
        n_estimators: int = 500,
        max_features: str | float | int = "sqrt",
        min_samples_leaf: int = 2,
        n_jobs: int = 1,
        seed: int | None = 0,
    ) -> None:
        self.n_estimators = n_estimators
        self.max_features = max_features
        self.min_samples_leaf = min_samples_leaf
        self.n_jobs = n_jobs
        self.seed = seed

    def fit(self, X: np.ndarray, y: np.ndarray) -> RandomForestBaseline:
        X, y = validate_data(self, X, y, y_numeric=True)
        self.forest_ = RandomForestRegressor(
            n_estimators=self.n_estimators,
            max_features=self.max_features,
            min_samples_leaf=self.min_samples_leaf,
            n_jobs=self.n_jobs,
            random_state=self.seed,
        ).fit(X, y)
        self.feature_importances_ = self.forest_.feature_importances_
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "forest_")
        X = validate_data(self, X, reset=False)
        return self.forest_.predict(X)


def _status_key(value: object) -> float | str | None:
    """Normalise a status code: numbers compare as floats (1 == 1.0 == True), labels compare
    case-insensitively ("Methylated" == "methylated"), missing values are unknown (None)."""
    if value is None or (isinstance(value, float | np.floating) and np.isnan(value)):
        return None
    if isinstance(value, bool | int | float | np.number):
        if not np.isfinite(float(value)):
            raise ValueError(f"MGMT status must be a finite code, a label or missing, got {value}")
        return float(value)
    text = str(value).strip().lower()
    return text if text and text not in ("nan", "na", "none") else None


class MGMTStatusRegressor(RegressorMixin, BaseEstimator):
    """Predicts the mean training response of the sample's MGMT promoter status.

    How the status arrives: as one column of ``X``, chosen by ``status_column`` (default the
    last), so the engine passes the annotation column alone as an ``n x 1`` array (or appends it
    to the expression matrix). Codes may be numbers (1 = methylated, 0 = unmethylated) or labels
    ("methylated", case-insensitive); NaN / None / "" mean unknown. A sample whose status is
    unknown or was not seen in training gets the training mean. Other columns are ignored.
    """

    def __init__(self, status_column: int = -1) -> None:
        self.status_column = status_column

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.allow_nan = True  # NaN means "status unknown"
        tags.input_tags.string = True  # labels such as "methylated"
        return tags

    def _status(self, X: np.ndarray) -> list[float | str | None]:
        n_features = X.shape[1]
        if not -n_features <= self.status_column < n_features:
            raise ValueError(
                f"status_column={self.status_column} is outside X's {n_features} columns"
            )
        return [_status_key(value) for value in X[:, self.status_column]]

    def fit(self, X: np.ndarray, y: np.ndarray) -> MGMTStatusRegressor:
        # dtype=None keeps label columns (strings) as they are; y is still checked numeric/finite
        X, y = validate_data(self, X, y, y_numeric=True, dtype=None, ensure_all_finite=False)
        status = self._status(X)
        self.mean_ = float(np.mean(y))
        groups: dict[float | str, list[float]] = {}
        for code, response in zip(status, y, strict=True):
            if code is not None:
                groups.setdefault(code, []).append(float(response))
        self.status_means_ = {code: float(np.mean(values)) for code, values in groups.items()}
        return self

    def predict(self, X: np.ndarray) -> np.ndarray:
        check_is_fitted(self, "status_means_")
        X = validate_data(self, X, reset=False, dtype=None, ensure_all_finite=False)
        return np.array(
            [self.status_means_.get(code, self.mean_) if code is not None else self.mean_
             for code in self._status(X)],
            dtype=float,
        )
