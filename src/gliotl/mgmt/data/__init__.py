"""MRI cohorts: readers, preprocessing, cache, augmentation and the phantom cohort.

Heavy modules (torch, MONAI) are imported lazily by the functions that need them.
"""

from gliotl.mgmt.data.cache import FillReport, VolumeCache
from gliotl.mgmt.data.cohort import (
    Cohort,
    read_cohort_table,
    read_rsna,
    write_cohort_table,
)
from gliotl.mgmt.data.dataset import AugmentConfig, MRIDataset
from gliotl.mgmt.data.modalities import (
    MODALITIES,
    MODALITY_GROUPS,
    RSNA_MODALITIES,
    resolve_modalities,
)
from gliotl.mgmt.data.phantom import make_phantom_cohort, oracle_auc
from gliotl.mgmt.data.prepare import PrepareConfig, run_prepare
from gliotl.mgmt.data.preprocess import PreprocessConfig, check_geometry, preprocess_patient
from gliotl.mgmt.data.source import CohortConfig, load_cohort
from gliotl.mgmt.data.upenn import read_upenn

__all__ = [
    "MODALITIES",
    "MODALITY_GROUPS",
    "RSNA_MODALITIES",
    "AugmentConfig",
    "Cohort",
    "CohortConfig",
    "FillReport",
    "MRIDataset",
    "PrepareConfig",
    "PreprocessConfig",
    "VolumeCache",
    "check_geometry",
    "load_cohort",
    "make_phantom_cohort",
    "oracle_auc",
    "preprocess_patient",
    "read_cohort_table",
    "read_rsna",
    "read_upenn",
    "resolve_modalities",
    "run_prepare",
    "write_cohort_table",
]
