"""gliotl's methods inside drevalpy's pipeline (extra ``gliotl[drevalpy]``, drevalpy 1.6.0).

``drevalpy_model(config, method)`` makes a drevalpy ``DRPModel`` class for one method of a
gliotl drug experiment config and registers it with drevalpy, so that
``drug_response_experiment(models=[cls], ...)`` trains and evaluates it like any drevalpy model:
one model per drug (a gliotl target is one drug), on drevalpy's gene-expression view
(``gene_list``, default the export's ``all_genes``). A transfer method loads its upstream steps
from the config's own datasets and trains its chain itself (:mod:`.configured_method`); the
chain does not depend on the target fold, so it is trained once per process and gene set.
``gliotl_splitter(splits.csv)`` hands a gliotl run's saved splits to drevalpy as its
``custom_splitter``, so both tools score the same folds.
"""

from __future__ import annotations

import hashlib
import tempfile
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from drevalpy.datasets.dataset import DrugResponseDataset, FeatureDataset
from drevalpy.models import MODEL_FACTORY, SINGLE_DRUG_MODEL_FACTORY
from drevalpy.models.drp_model import DRPModel
from drevalpy.models.utils import load_and_select_gene_features

from gliotl.core.evaluation.splits import load_splits
from gliotl.drug.data.drevalpy_export import ALL_GENES_LIST
from gliotl.errors import GliotlError
from gliotl.interop.configured_method import ConfiguredMethodRegressor
from gliotl.interop.drevalpy_files import gliotl_folds

VIEW = "gene_expression"


class GliotlDRPModel(DRPModel):
    """One gliotl method as a single-drug drevalpy model (subclassed by :func:`drevalpy_model`)."""

    is_single_drug_model = True
    early_stopping = False
    cell_line_views: ClassVar[list[str]] = [VIEW]
    drug_views: ClassVar[list[str]] = []
    model_name: ClassVar[str] = "Gliotl"
    config_path: ClassVar[str] = ""
    method: ClassVar[str] = ""
    gene_list: ClassVar[str | None] = ALL_GENES_LIST
    _work_dirs: ClassVar[dict[str, Path]] = {}

    @classmethod
    def get_model_name(cls) -> str:
        return cls.model_name

    @classmethod
    def get_hyperparameter_set(cls) -> list[dict[str, Any]]:
        """One set: gliotl tunes inside its own methods (nested CV), not through drevalpy."""
        return [{"gliotl_config": cls.config_path, "gliotl_method": cls.method,
                 "gene_list": cls.gene_list}]

    def build_model(self, hyperparameters: dict[str, Any]) -> None:
        self.hyperparameters = hyperparameters
        self.regressor: ConfiguredMethodRegressor | None = None

    def load_cell_line_features(self, data_path: str, dataset_name: str) -> FeatureDataset:
        return load_and_select_gene_features(VIEW, self.hyperparameters.get(
            "gene_list", self.gene_list), data_path, dataset_name)

    def load_drug_features(self, data_path: str, dataset_name: str) -> None:
        return None

    @staticmethod
    def _frame(cell_line_ids: np.ndarray, cell_line_input: FeatureDataset) -> pd.DataFrame:
        return pd.DataFrame(cell_line_input.get_feature_matrix(VIEW, cell_line_ids),
                            index=[str(c) for c in cell_line_ids],
                            columns=[str(g) for g in cell_line_input.meta_info[VIEW]])

    def _work_dir(self, genes: list[str]) -> Path:
        """Upstream models are shared by every fold of one config and gene set."""
        text = Path(self.hyperparameters["gliotl_config"]).read_bytes()
        key = hashlib.sha256(text + "\n".join(genes).encode()).hexdigest()[:16]
        if key not in GliotlDRPModel._work_dirs:
            GliotlDRPModel._work_dirs[key] = Path(tempfile.mkdtemp(prefix=f"gliotl-{key}-"))
        return GliotlDRPModel._work_dirs[key]

    def train(self, output: DrugResponseDataset, cell_line_input: FeatureDataset,
              drug_input: FeatureDataset | None = None,
              output_earlystopping: DrugResponseDataset | None = None,
              model_checkpoint_dir: str = "checkpoints") -> None:
        # in cell-line order: drevalpy shuffles its rows, gliotl's fit should not depend on it
        order = np.argsort(np.asarray([str(c) for c in output.cell_line_ids]), kind="stable")
        X = self._frame(np.asarray(output.cell_line_ids)[order], cell_line_input)
        self.regressor = ConfiguredMethodRegressor(
            self.hyperparameters["gliotl_config"], self.hyperparameters["gliotl_method"],
            work_dir=self._work_dir(list(X.columns)))
        self.regressor.fit(X, np.asarray(output.response, float)[order])

    def predict(self, cell_line_ids: np.ndarray, drug_ids: np.ndarray,
                cell_line_input: FeatureDataset,
                drug_input: FeatureDataset | None = None) -> np.ndarray:
        if self.regressor is None:
            raise GliotlError(f"{self.model_name}: predict called before train")
        return self.regressor.predict(self._frame(cell_line_ids, cell_line_input))


def drevalpy_model(config_path: str | Path, method: str, name: str | None = None,
                   gene_list: str | None = ALL_GENES_LIST) -> type[GliotlDRPModel]:
    """A drevalpy model class for ``method`` of the gliotl config, registered with drevalpy
    under ``name`` (default ``Gliotl_<method>``)."""
    name = name or f"Gliotl_{method}"
    if "." in name:  # drevalpy splits '<model>.<drug>' at the first dot
        raise GliotlError(f"drevalpy model name '{name}': expected no '.'")
    cls = type(name, (GliotlDRPModel,), {
        "model_name": name, "config_path": str(Path(config_path).resolve()),
        "method": method, "gene_list": gene_list, "__module__": __name__,
    })
    MODEL_FACTORY[name] = cls
    SINGLE_DRUG_MODEL_FACTORY[name] = cls
    return cls


def gliotl_splitter(splits_path: str | Path, repeat: int = 0,
                    sample_ids: dict[str, str] | None = None, seed: int = 0) -> Any:
    """A drevalpy ``custom_splitter`` giving one repeat of a gliotl ``splits.csv`` (sample IDs
    matched to drevalpy cell-line names through ``sample_ids``, name -> ID)."""
    splits = load_splits(splits_path)

    def create_splits(response_data: DrugResponseDataset, params: Any) -> list[dict[str, Any]]:
        names = np.asarray([str(c) for c in response_data.cell_line_ids])
        ids = names if sample_ids is None else np.asarray([sample_ids.get(n, n) for n in names])
        folds = []
        for fold in gliotl_folds(splits, repeat, params.validation_ratio, seed):
            roles = {}
            for role, members in fold.items():
                part = response_data.copy()
                part.mask(np.isin(ids, members))
                roles[role] = part
            folds.append(roles)
        return folds

    return create_splits
