"""Preprocessing of one patient's MRI volumes into fixed-size float32 arrays.

Axis convention: NIfTI arrays are stored (x, y, z), e.g. 240x240x155 on the SRI-24 grid. After
reorientation every output is transposed to (D, H, W) = (z, y, x), the order SimpleITK and the
paper's code use; ``target_shape``, ``crop_box`` and ``spacing`` are all given in that order.
So the paper's box [0:140, 39:211, 44:208] (z, y, x) selects z 0..139, y 39..210 and x 44..207
of the stored array (``orientation: native``: voxel order as stored, as the authors read it with
SimpleITK), and 0.5x downscaling gives 70x86x82, padded (centred) to 70x86x86.

Speed: all modalities of a patient share one geometry check (headers only), one crop box and
one batched interpolation; volumes are decompressed in threads (zlib releases the GIL) and only
the cropped region is converted to float and resized.
"""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from gliotl.core.config import StrictModel
from gliotl.errors import GliotlError, input_error
from gliotl.mgmt.data.modalities import MODALITIES

SRI24_SHAPE_ZYX = (155, 240, 240)
PAPER_CROP_BOX = ((0, 140), (39, 211), (44, 208))

PRESETS: dict[str, dict[str, Any]] = {
    # MedicalNet convention (default): brain box, resize, z-score over non-zero voxels.
    "medicalnet": {
        "orientation": "RAS",
        "region": "brain_bbox",
        "margin": 4,
        "target_shape": (70, 86, 86),
        "downscale": None,
        "intensity": "zscore",
        "mask_outside_tumour": False,
    },
    # Schmitz et al. 2024 geometry: whole-tumour mask, fixed SRI-24 crop, x0.5, pad to 70x86x86.
    # Intensity is z-score, not the authors' min-max: the backbone was pretrained on z-scores.
    "schmitz2024": {
        "orientation": "LPS",  # the box is in SRI-24's stored (LPS) voxel order: reorient to it
        "region": "tumour_mask_fixed_crop",
        "crop_box": PAPER_CROP_BOX,
        "downscale": 0.5,
        "target_shape": (70, 86, 86),
        "intensity": "zscore",
        "mask_outside_tumour": True,
    },
    # No segmentation (RSNA-MICCAI 2021 DICOM, raw head scans): Otsu head / brain foreground box
    # of the reference volume (mgmt.data.foreground), resize, z-score.
    "rsna2021": {
        "orientation": "RAS",
        "region": "foreground_bbox",
        "margin": 4,
        "target_shape": (70, 86, 86),
        "downscale": None,
        "intensity": "zscore",
        "mask_outside_tumour": False,
    },
}
REFERENCE_REGIONS = ("brain_bbox", "foreground_bbox")
"""Regions cut from the reference modality's content rather than from a segmentation."""


class PreprocessConfig(StrictModel):
    """How raw volumes become network inputs. ``preset`` fills every key not given explicitly."""

    preset: Literal["medicalnet", "schmitz2024", "rsna2021"] | None = None
    orientation: Literal["RAS", "LPS", "native"] = "RAS"
    spacing: tuple[float, float, float] | None = None  # mm, (z, y, x); None keeps the grid
    region: Literal["tumour_mask_fixed_crop", "tumour_bbox", "brain_bbox",
                    "foreground_bbox"] = "brain_bbox"
    crop_box: tuple[tuple[int, int], tuple[int, int], tuple[int, int]] = PAPER_CROP_BOX
    crop_grid: tuple[int, int, int] = Field(
        default=SRI24_SHAPE_ZYX,
        description="(D, H, W) grid crop_box is written for; any other grid is refused")
    crop_orientation: Literal["LPS", "RAS"] = Field(
        default="LPS", description="voxel order crop_box is written in (SRI-24 stored: LPS)")
    segmentation_labels: tuple[int, ...] = Field(
        default=(0, 1, 2, 4),
        description="labels a segmentation may hold (BraTS / UPenn: 0, 1, 2, 4)")
    margin: int = 4  # voxels around a bounding box
    target_shape: tuple[int, int, int] | None = (70, 86, 86)
    downscale: float | None = None  # zoom factor, then centred pad/crop to target_shape
    interpolation: Literal["area", "trilinear"] = "area"
    intensity: Literal["zscore", "minmax"] = "zscore"
    mask_outside_tumour: bool = False

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("preset") in PRESETS:
            return {**PRESETS[data["preset"]], **data}
        return data

    @model_validator(mode="after")
    def _check(self) -> PreprocessConfig:
        if self.margin < 0:
            raise ValueError("margin must be >= 0")
        if self.downscale is not None and not 0 < self.downscale <= 4:
            raise ValueError("downscale must be in (0, 4]")
        if self.target_shape is not None and min(self.target_shape) < 1:
            raise ValueError("target_shape entries must be >= 1")
        if self.region == "tumour_mask_fixed_crop" and \
                self.orientation not in ("native", self.crop_orientation):
            raise ValueError(f"crop_box is written in {self.crop_orientation} voxel order: "
                             f"orientation {self.orientation} would crop the wrong place")
        for (start, stop), size in zip(self.crop_box, self.crop_grid, strict=True):
            if not 0 <= start < stop <= size:
                raise ValueError(f"crop_box {self.crop_box} falls outside crop_grid "
                                 f"{self.crop_grid}")
        return self

    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> PreprocessConfig:
        if name not in PRESETS:
            raise GliotlError(f"unknown preprocessing preset '{name}': expected {list(PRESETS)}")
        return cls.model_validate({"preset": name, **overrides})

    @property
    def needs_segmentation(self) -> bool:
        return self.region not in REFERENCE_REGIONS or self.mask_outside_tumour

    def fingerprint(self) -> str:
        """Canonical JSON of what changes the output (the preset name itself does not)."""
        return json.dumps(self.model_dump(mode="json", exclude={"preset"}), sort_keys=True)


# ---------------------------------------------------------------------------- reading volumes


def open_nifti(path: str | Path) -> Any:
    """Open a NIfTI header (cheap: the voxel data stay on disk)."""
    import nibabel as nib

    path = Path(path)
    if not path.is_file():
        raise input_error(path, None, "NIfTI file not found")
    try:
        image = nib.load(str(path))
    except Exception as exc:  # nibabel raises many types for a damaged header
        raise input_error(path, None, f"not a readable NIfTI file ({_first_line(exc)})") from None
    if not isinstance(image, nib.spatialimages.SpatialImage):  # e.g. a CIFTI or surface file
        raise input_error(path, None, f"a NIfTI volume expected, got {type(image).__name__}")
    if len(image.shape) != 3:
        raise input_error(path, "shape", f"a 3D volume expected, got shape {image.shape}")
    return image


def read_voxels(image: Any, path: str | Path) -> np.ndarray:
    """All voxels of an opened image in their stored dtype (scaled if the header says so)."""
    try:
        data = np.asanyarray(image.dataobj)
    except Exception as exc:  # truncated gzip, wrong byte count, ...
        raise input_error(
            path, None, f"NIfTI voxel data unreadable, file damaged or truncated "
            f"({_first_line(exc)})"
        ) from None
    if not np.issubdtype(data.dtype, np.number):
        raise input_error(path, "datatype", f"numeric voxels expected, got {data.dtype}")
    return data


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def check_geometry(
    patient_id: str, images: dict[str, Any], paths: dict[str, str], atol: float = 1e-3
) -> None:
    """Every volume of a patient must share shape and affine, or voxels would not correspond."""
    names = list(images)
    ref_name = names[0]
    ref = images[ref_name]
    for name in names[1:]:
        image = images[name]
        if tuple(image.shape) != tuple(ref.shape):
            raise input_error(
                paths[name], "shape",
                f"patient {patient_id}: shape {tuple(image.shape)} differs from "
                f"{tuple(ref.shape)} of {ref_name} {paths[ref_name]}",
            )
        if not np.allclose(image.affine, ref.affine, atol=atol):
            raise input_error(
                paths[name], "affine",
                f"patient {patient_id}: affine differs from that of {ref_name} "
                f"{paths[ref_name]} (not co-registered)",
            )


# ---------------------------------------------------------------------------- geometry helpers


def _orientation_transform(affine: np.ndarray, orientation: str) -> np.ndarray | None:
    if orientation == "native":
        return None
    from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

    codes = ("R", "A", "S") if orientation == "RAS" else ("L", "P", "S")
    transform = ornt_transform(io_orientation(affine), axcodes2ornt(codes))
    if np.array_equal(transform, [[0, 1], [1, 1], [2, 1]]):
        return None
    return transform


def _to_dhw(data: np.ndarray, transform: np.ndarray | None) -> np.ndarray:
    """A (z, y, x) view of an (x, y, z) array after reorientation (no copy)."""
    if transform is not None:
        from nibabel.orientations import apply_orientation

        data = apply_orientation(data, transform)
    return data.transpose(2, 1, 0)


def _voxel_sizes_dhw(affine: np.ndarray, transform: np.ndarray | None) -> np.ndarray:
    sizes = np.sqrt((affine[:3, :3] ** 2).sum(axis=0))
    if transform is not None:
        reordered = np.empty(3)
        reordered[transform[:, 0].astype(int)] = sizes
        sizes = reordered
    return sizes[::-1]


def bounding_box(mask: np.ndarray, margin: int) -> tuple[slice, ...]:
    """The box of ``mask``'s non-zero voxels, ``margin`` voxels wider (within the volume)."""
    slices = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        hits = np.flatnonzero(mask.any(axis=other))
        start = max(int(hits[0]) - margin, 0)
        stop = min(int(hits[-1]) + 1 + margin, mask.shape[axis])
        slices.append(slice(start, stop))
    return tuple(slices)


def fixed_box(config: PreprocessConfig, shape: tuple[int, ...], path: str,
              patient_id: str) -> tuple[slice, ...]:
    """The fixed crop box, only on the grid it was written for: on any other grid the same
    voxel numbers are other anatomy, and rescaling them would be a guess."""
    if tuple(shape) != tuple(config.crop_grid):
        grid = "x".join(map(str, config.crop_grid))
        raise input_error(
            path, "shape", f"patient {patient_id}: crop_box is written for the "
            f"{grid} (z, y, x) grid (SRI-24 as TCIA ships it), this volume is "
            f"{'x'.join(map(str, shape))}: use region tumour_bbox or brain_bbox, or give "
            "crop_box and crop_grid for this grid")
    return tuple(slice(start, stop) for start, stop in config.crop_box)


def check_orientation(config: PreprocessConfig, affine: np.ndarray, path: str,
                      patient_id: str) -> None:
    """A fixed voxel box read in stored order (``orientation: native``) is only right when the
    volume is stored in the box's orientation; reorienting (``orientation: LPS``) always is."""
    if config.region != "tumour_mask_fixed_crop" or config.orientation != "native":
        return
    from nibabel.orientations import aff2axcodes

    codes = "".join(str(c) for c in aff2axcodes(affine))
    if codes != config.crop_orientation:
        raise input_error(
            path, "affine", f"patient {patient_id}: stored {codes}, but crop_box is written "
            f"for {config.crop_orientation}-stored volumes; set preprocessing.orientation: "
            f"{config.crop_orientation} to reorient before cropping")


def check_content(name: str, data: np.ndarray, path: str, patient_id: str,
                  labels: tuple[int, ...]) -> np.ndarray:
    """Refuse voxels that would be cached as garbage: non-finite values, a constant volume, or
    a segmentation that is not integer labels from ``labels``."""
    if data.dtype.kind == "f" and not np.isfinite(data).all():
        bad = int((~np.isfinite(data)).sum())
        raise input_error(path, None, f"patient {patient_id}: {bad} non-finite voxels "
                                      "(NaN or inf)")
    if name == "segmentation":
        _check_labels(data, path, patient_id, labels)
    elif data.size and data.min() == data.max():
        raise input_error(path, None, f"patient {patient_id}: every voxel is "
                                      f"{data.flat[0]}: an empty or constant volume")
    return data


def _check_labels(data: np.ndarray, path: str, patient_id: str, labels: tuple[int, ...]
                  ) -> None:
    if data.dtype.kind == "f":
        fractional = data[data != np.round(data)]
        if fractional.size:
            raise input_error(path, None, f"patient {patient_id}: segmentation is not "
                                          f"integer-valued (e.g. {fractional.flat[0]:g}); "
                                          f"integer labels {set(labels)} expected")
        data = data.astype(np.int64)
    if data.min() >= 0 and data.max() < 1 << 16:
        present = np.flatnonzero(np.bincount(data.ravel().astype(np.int64)))
    else:
        present = np.unique(data)
    unexpected = sorted(set(present.tolist()) - set(labels))
    if unexpected:
        raise input_error(path, None, f"patient {patient_id}: segmentation labels "
                                      f"{sorted(present.tolist())}, expected only "
                                      f"{sorted(labels)} (unexpected {unexpected})")


def _centre_fit(volume: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Centred zero-pad / crop of the last three axes to ``shape``."""
    out = np.zeros(volume.shape[:-3] + tuple(shape), dtype=volume.dtype)
    src, dst = [], []
    for have, want in zip(volume.shape[-3:], shape, strict=True):
        if have >= want:
            lo = (have - want) // 2
            src.append(slice(lo, lo + want))
            dst.append(slice(0, want))
        else:
            lo = (want - have) // 2
            src.append(slice(0, have))
            dst.append(slice(lo, lo + have))
    out[..., dst[0], dst[1], dst[2]] = volume[..., src[0], src[1], src[2]]
    return out


def resize_stack(stack: np.ndarray, size: tuple[int, ...], mode: str) -> np.ndarray:
    """Resize a (C, D, H, W) stack in one batched call (``mode``: area, trilinear or nearest,
    the last for label masks)."""
    if tuple(stack.shape[1:]) == tuple(size):
        return stack
    import torch
    import torch.nn.functional as F

    tensor = torch.from_numpy(np.ascontiguousarray(stack))[None]
    with torch.no_grad():
        enlarging = any(s > h for s, h in zip(size, stack.shape[1:], strict=True))
        if mode == "nearest":
            out = F.interpolate(tensor, size=tuple(size), mode="nearest")
        elif mode == "area" and not enlarging:  # area averaging cannot enlarge smoothly
            depth, height, width = size
            out = F.adaptive_avg_pool3d(tensor, (depth, height, width))
        else:
            out = F.interpolate(tensor, size=tuple(size), mode="trilinear", align_corners=False)
    return out[0].numpy()


def normalise(volume: np.ndarray, method: str) -> np.ndarray:
    """z-score or min-max over the non-zero (brain) voxels; the background stays 0."""
    nonzero = volume != 0
    if not nonzero.any():
        return volume
    values = volume[nonzero]
    out = np.zeros_like(volume)
    if method == "zscore":
        std = float(values.std())
        out[nonzero] = (values - float(values.mean())) / (std if std > 0 else 1.0)
    else:
        lo, hi = float(values.min()), float(values.max())
        out[nonzero] = (values - lo) / (hi - lo if hi > lo else 1.0)
    return out


# ---------------------------------------------------------------------------- the pipeline


def _row_paths(row: Any, modalities: list[str] | None) -> tuple[str, dict[str, str]]:
    patient_id = str(row["patient_id"])
    available = [m for m in MODALITIES if isinstance(row.get(m), str) and row.get(m)]
    if modalities is None:
        modalities = available
    missing = [m for m in modalities if m not in available]
    if missing:
        raise GliotlError(f"patient {patient_id}: modality {missing[0]} not in the cohort table")
    return patient_id, {m: str(row[m]) for m in modalities}


def reference_modality(row: Any) -> str:
    """The volume whose non-zero voxels define the brain box (first structural scan present)."""
    for modality in MODALITIES:
        value = row.get(modality)
        if isinstance(value, str) and value:
            return modality
    raise GliotlError(f"patient {row['patient_id']}: no modality files in the cohort table")


def input_files(row: Any, modality: str, config: PreprocessConfig) -> list[str]:
    """Every file whose content changes the output for ``modality`` (for cache keys)."""
    files = [str(row[modality])]
    if config.needs_segmentation:
        files.append(str(row["segmentation"]))
    if config.region in REFERENCE_REGIONS:
        files.append(str(row[reference_modality(row)]))
    return files


def _extra_paths(row: Any, config: PreprocessConfig, patient_id: str,
                 paths: dict[str, str]) -> dict[str, str]:
    """The segmentation the region needs, and the brain reference when it is not an input."""
    extra: dict[str, str] = {}
    if config.needs_segmentation:
        seg = row.get("segmentation")
        if not isinstance(seg, str) or not seg:
            raise GliotlError(f"patient {patient_id}: segmentation needed by region "
                              f"'{config.region}' but missing from the cohort table")
        extra["segmentation"] = seg
    if config.region in REFERENCE_REGIONS:
        ref = reference_modality(row)
        if ref not in paths:
            extra["reference"] = str(row[ref])
    return extra


def _crop_box(row: Any, config: PreprocessConfig, views: dict[str, np.ndarray],
              all_paths: dict[str, str], patient_id: str) -> tuple[slice, ...]:
    """The region of ``config`` in (D, H, W) voxels: fixed box, tumour or brain bounding box."""
    tumour = views["segmentation"] > 0 if "segmentation" in views else None
    if tumour is not None and not tumour.any():
        raise input_error(all_paths["segmentation"], None,
                          f"patient {patient_id}: segmentation has no tumour voxels")
    if config.region == "tumour_mask_fixed_crop":
        name = next(iter(views))
        return fixed_box(config, views[name].shape, all_paths[name], patient_id)
    if config.region == "tumour_bbox":
        if tumour is None:
            raise GliotlError(f"patient {patient_id}: region tumour_bbox needs a segmentation")
        return bounding_box(tumour, config.margin)
    ref_name = "reference" if "reference" in views else reference_modality(row)
    if config.region == "foreground_bbox":
        from gliotl.mgmt.data.foreground import foreground_box

        return foreground_box(views[ref_name], config.margin, all_paths[ref_name], patient_id)
    brain = views[ref_name] != 0
    if not brain.any():
        raise input_error(all_paths[ref_name], None,
                          f"patient {patient_id}: volume is empty (all zero)")
    return bounding_box(brain, config.margin)


def _output_size(stack: np.ndarray, config: PreprocessConfig, affine: np.ndarray,
                 transform: np.ndarray | None) -> tuple[int, ...]:
    """The resize target: resampled to ``spacing``, then zoomed by ``downscale`` or set to
    ``target_shape``."""
    size = np.array(stack.shape[1:], dtype=float)
    if config.spacing is not None:
        size = size * _voxel_sizes_dhw(affine, transform) / np.asarray(config.spacing)
    if config.downscale is not None:
        size = size * config.downscale
    elif config.target_shape is not None:
        size = np.asarray(config.target_shape, dtype=float)
    return tuple(max(1, int(round(s))) for s in size)


def preprocess_patient(
    row: Any,
    config: PreprocessConfig,
    modalities: list[str] | None = None,
    threads: int | None = None,
) -> dict[str, np.ndarray]:
    """Preprocess one patient's modalities -> {modality: float32 (D, H, W)}.

    ``row`` is a cohort-table row (Series or dict). Raises GliotlError naming the patient and the
    file for unreadable volumes, geometry mismatches or empty masks.
    """
    patient_id, paths = _row_paths(row, modalities)
    all_paths = {**paths, **_extra_paths(row, config, patient_id, paths)}
    images = {name: open_nifti(path) for name, path in all_paths.items()}
    check_geometry(patient_id, images, all_paths)

    threads = threads or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        futures = {n: pool.submit(_read_checked, n, images[n], all_paths[n], patient_id,
                                  config.segmentation_labels) for n in all_paths}
        raw = {n: f.result() for n, f in futures.items()}

    affine = images[next(iter(images))].affine
    check_orientation(config, affine, next(iter(all_paths.values())), patient_id)
    transform = _orientation_transform(affine, config.orientation)
    views = {name: _to_dhw(data, transform) for name, data in raw.items()}
    box = _crop_box(row, config, views, all_paths, patient_id)

    names = list(paths)
    stack = np.stack([np.asarray(views[m][box], dtype=np.float32) for m in names])
    if config.mask_outside_tumour:
        stack *= (views["segmentation"] > 0)[box][None]
    stack = resize_stack(stack, _output_size(stack, config, affine, transform),
                         config.interpolation)
    if config.downscale is not None and config.target_shape is not None:
        stack = _centre_fit(stack, config.target_shape)
    return {m: normalise(stack[i], config.intensity) for i, m in enumerate(names)}


def _read_checked(name: str, image: Any, path: str, patient_id: str,
                  labels: tuple[int, ...]) -> np.ndarray:
    return check_content(name, read_voxels(image, path), path, patient_id, labels)


def file_identity(path: str | Path, content_hash: bool = False) -> dict[str, Any]:
    """What identifies an input file for caching: path + size + mtime, or its content hash."""
    path = Path(path)
    try:
        stat = path.stat()
    except OSError:
        raise input_error(path, None, "input file not found") from None
    ident: dict[str, Any] = {"path": str(path.resolve()), "size": stat.st_size}
    if content_hash:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        ident["sha256"] = digest.hexdigest()
    else:
        ident["mtime_ns"] = stat.st_mtime_ns
    return ident
