"""Method kind ``sklearn``: any scikit-learn regressor, named by import path, with its params.

``estimator: sklearn.svm.SVR`` with ``params: {C: 2.0}`` compares an SVR beside gliotl's own
methods on the same splits and preprocessing. The path is checked when the config loads: it
must import, name a class, and that class must be a scikit-learn regressor (``RegressorMixin``)
accepting every given param; otherwise the config error names ``estimator`` or ``params``.
Nothing is imported from a path that is not a dotted Python name.
"""

from __future__ import annotations

import importlib
import inspect
import re
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationInfo, field_validator
from sklearn.base import BaseEstimator, RegressorMixin

from gliotl.drug.config import MethodConfig

if TYPE_CHECKING:
    from gliotl.drug.methods.registry import BuildContext

_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)+$")


def regressor_class(path: str) -> type[BaseEstimator]:
    """The class at ``module.Class``; ValueError unless it is a scikit-learn regressor."""
    if not _DOTTED.match(path):
        raise ValueError(f"expected an import path such as 'sklearn.svm.SVR', got {path!r}")
    module_name, _, class_name = path.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import module '{module_name}' ({exc})") from None
    cls = getattr(module, class_name, None)
    if not inspect.isclass(cls):
        raise ValueError(f"'{class_name}' is not a class of module '{module_name}'")
    if not (issubclass(cls, BaseEstimator) and issubclass(cls, RegressorMixin)):
        raise ValueError(f"'{path}' is not a scikit-learn regressor (a BaseEstimator with "
                         "RegressorMixin)")
    return cls


class SklearnMethod(MethodConfig):
    """A scikit-learn regressor; ``random_state`` follows the job's seed unless given."""

    kind: Literal["sklearn"]
    estimator: str
    params: dict[str, Any] = {}

    @field_validator("estimator")
    @classmethod
    def _importable_regressor(cls, value: str) -> str:
        regressor_class(value)
        return value

    @field_validator("params")
    @classmethod
    def _params_accepted(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        """Every param must be one the class takes, with a value it accepts."""
        if "estimator" not in info.data:  # the estimator itself failed; reported there
            return value
        path = info.data["estimator"]
        accepted = regressor_class(path)._get_param_names()
        unknown = sorted(set(value) - set(accepted))
        if unknown:
            raise ValueError(f"'{unknown[0]}' is not a parameter of {path} "
                             f"(expected one of {', '.join(sorted(accepted))})")
        try:
            estimator = regressor_class(path)(**value)
        except TypeError as exc:  # a parameter without a default that was not given
            raise ValueError(str(exc)) from None
        check = getattr(estimator, "_validate_params", None)  # scikit-learn's own constraints
        if check is not None:
            try:
                check()
            except (TypeError, ValueError) as exc:
                raise ValueError(str(exc).splitlines()[0]) from None
        return value


def build_sklearn(method: SklearnMethod, ctx: BuildContext) -> BaseEstimator:
    """A fresh estimator with the method's params (and the job's seed as ``random_state``)."""
    cls = regressor_class(method.estimator)
    params = dict(method.params)
    if "random_state" in cls._get_param_names() and "random_state" not in params:
        params["random_state"] = ctx.seed
    return cls(**params)
