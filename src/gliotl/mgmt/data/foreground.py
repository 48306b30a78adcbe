"""The head / brain foreground of a volume without a segmentation: the crop of cohorts that
have no tumour mask (RSNA-MICCAI 2021 as Kaggle ships it).

``region: brain_bbox`` takes every non-zero voxel as brain, which is right for skull-stripped
volumes with an exact 0 background (UPenn-GBM, BraTS) but takes the whole field of view of a
raw scan, whose background is noise, and of a resampled one, whose corners are 0 only outside
the acquired field of view. ``region: foreground_bbox`` instead thresholds the reference
volume with Otsu's method (SimpleITK), keeps the largest connected object (the head; noise
specks and small artefacts fall away) and crops its bounding box plus ``margin`` voxels.
"""

from __future__ import annotations

import numpy as np

from gliotl.errors import input_error
from gliotl.mgmt.data.preprocess import bounding_box


def foreground_mask(volume: np.ndarray) -> np.ndarray:
    """Boolean mask of the largest connected object above the volume's Otsu threshold."""
    import SimpleITK as sitk  # noqa: N813 - the library's own spelling

    image = sitk.GetImageFromArray(np.ascontiguousarray(volume, dtype=np.float32))
    above = sitk.OtsuThreshold(image, 0, 1)
    components = sitk.RelabelComponent(sitk.ConnectedComponent(above), sortByObjectSize=True)
    return sitk.GetArrayViewFromImage(components) == 1


def foreground_box(volume: np.ndarray, margin: int, source: str,
                   patient_id: str) -> tuple[slice, ...]:
    """The bounding box of :func:`foreground_mask`, ``margin`` voxels wider, in ``volume``'s
    axis order; a volume without any foreground is an error naming ``source``."""
    finite = np.isfinite(volume)
    if not finite.all() or float(np.ptp(volume)) == 0.0:
        reason = "non-finite voxels" if not finite.all() else "a constant volume"
        raise input_error(source, None, f"patient {patient_id}: no foreground to crop ({reason})")
    mask = foreground_mask(volume)
    if not mask.any():
        raise input_error(source, None, f"patient {patient_id}: no foreground to crop")
    return bounding_box(mask, margin)


__all__ = ["foreground_box", "foreground_mask"]
