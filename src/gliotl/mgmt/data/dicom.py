"""DICOM series -> one 3D volume, and several series resampled onto one world grid.

Reading is SimpleITK's (GDCM underneath): the headers of every slice are read first
(``ImageFileReader.ReadImageInformation``, no pixel data) so that the slices can be ordered by
geometry, their image position projected on the slice normal, never by file name or
InstanceNumber (neither is reliable: RSNA-MICCAI's ``Image-N.dcm`` numbers need not start at 1
and say nothing about position). The checks that make a stack a volume come before any pixel
is read, each failing with one line naming the file: one orientation, one matrix and one pixel
spacing for every slice, slices stacked along their normal, no two at one position, and a
uniform slice step (a gap means a missing file). ``ImageSeriesReader`` then reads the ordered
files with every slice's own rescale slope / intercept applied (float32 output, so a fractional
slope is never truncated), and the volume's origin, spacing and direction are set from the
checked geometry.

Resampling (:func:`reference_grid`, :func:`resample_onto`) is SimpleITK's ``Resample`` in world
coordinates (linear for images, 0 outside a series' field of view): series of one patient that
were not co-registered but share the scanner's patient coordinates land voxel for voxel on the
same anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from gliotl.errors import GliotlError, input_error

POSITION_TOLERANCE_MM = 0.01
"""Two slices closer than this along the normal are the same position (a duplicate)."""
DIRECTION_TOLERANCE = 1e-4
"""Largest difference between two slices' direction cosines still taken as equal."""
STEP_TOLERANCE = 0.2
"""Largest relative deviation of a slice step from the median step: a missing file doubles a
step, while positions written with few decimals jitter by a few percent."""
OFF_NORMAL_TOLERANCE = 0.25
"""Largest in-plane offset between two slices of one stack, in pixels (rounding of positions
stays far below it; a slice of another series is usually off by many pixels)."""


def _sitk() -> Any:
    import SimpleITK as sitk  # noqa: N813 - the library's own spelling

    return sitk


@dataclass(frozen=True)
class SliceHeader:
    """What one file says about where its pixels are (LPS mm, SimpleITK's convention)."""

    path: Path
    size: tuple[int, int]
    spacing: tuple[float, float]
    origin: np.ndarray
    direction: np.ndarray  # 3x3, columns: row direction, column direction, normal


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    detail = next((line for line in reversed(text) if line.strip()), "")
    return f"{type(exc).__name__}: {detail.strip()}" if detail else type(exc).__name__


def read_header(path: Path) -> SliceHeader:
    """One slice's geometry from its header (no pixel data read)."""
    reader = _sitk().ImageFileReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise input_error(path, None, f"not a readable DICOM file ({_first_line(exc)})") from None
    size = reader.GetSize()
    if len(size) != 3 or size[2] != 1:
        raise input_error(path, None, f"one 2D slice per file expected, got size {size}")
    if not reader.HasMetaDataKey("0020|0032") or not reader.HasMetaDataKey("0020|0037"):
        raise input_error(path, "ImagePositionPatient",
                          "slice without ImagePositionPatient / ImageOrientationPatient")
    direction = np.asarray(reader.GetDirection(), dtype=float).reshape(3, 3)
    return SliceHeader(path, (int(size[0]), int(size[1])),
                       (float(reader.GetSpacing()[0]), float(reader.GetSpacing()[1])),
                       np.asarray(reader.GetOrigin(), dtype=float), direction)


def series_files(folder: Path) -> list[Path]:
    """The ``.dcm`` files of one series folder (in no meaningful order)."""
    if not folder.is_dir():
        raise input_error(folder, None, "DICOM series folder not found")
    files = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == ".dcm"]
    if len(files) < 2:
        raise input_error(folder, None, f"a 3D series needs >= 2 .dcm slices, found {len(files)}")
    return files


def _check_same_plane(headers: list[SliceHeader]) -> None:
    """Every slice must share the first one's matrix, pixel spacing and orientation."""
    first = headers[0]
    for header in headers[1:]:
        if header.size != first.size:
            raise input_error(header.path, "Rows/Columns", f"mixed geometry: matrix "
                              f"{header.size} differs from {first.path.name} {first.size}")
        if not np.allclose(header.spacing, first.spacing, rtol=1e-4, atol=1e-4):
            raise input_error(header.path, "PixelSpacing", f"mixed geometry: {header.spacing} "
                              f"differs from {first.path.name} {first.spacing}")
        if not np.allclose(header.direction, first.direction, atol=DIRECTION_TOLERANCE):
            raise input_error(header.path, "ImageOrientationPatient", "mixed geometry: "
                              f"orientation differs from {first.path.name}")


def _check_stack(ordered: list[SliceHeader], depths: np.ndarray, normal: np.ndarray) -> float:
    """Slices stacked along the normal, none twice, at one step; returns the step (mm)."""
    limit = OFF_NORMAL_TOLERANCE * min(ordered[0].spacing)
    for header, depth in zip(ordered, depths, strict=True):
        offset = header.origin - depth * normal - (ordered[0].origin - depths[0] * normal)
        if np.linalg.norm(offset) > limit:
            raise input_error(header.path, "ImagePositionPatient", "mixed geometry: slice not "
                              f"on the normal through {ordered[0].path.name} (another series?)")
    steps = np.diff(depths)
    for index, step in enumerate(steps):
        if step < POSITION_TOLERANCE_MM:
            raise input_error(ordered[index + 1].path, "ImagePositionPatient",
                              f"duplicate slice position {depths[index]:.3f} mm along the "
                              f"normal, also in {ordered[index].path.name}")
    median = float(np.median(steps))
    for index, step in enumerate(steps):
        if abs(step - median) > STEP_TOLERANCE * median:
            raise input_error(ordered[index + 1].path, "ImagePositionPatient",
                              f"non-uniform slice step {step:.3f} mm (median {median:.3f} mm) "
                              f"after {ordered[index].path.name}: a slice missing?")
    return float((depths[-1] - depths[0]) / (len(depths) - 1))


def order_slices(headers: list[SliceHeader]) -> tuple[list[SliceHeader], float]:
    """Slices sorted by position along their normal (ascending), and the slice step (mm)."""
    _check_same_plane(headers)
    direction = headers[0].direction
    normal = np.cross(direction[:, 0], direction[:, 1])
    depths = np.array([float(h.origin @ normal) for h in headers])
    order = np.argsort(depths, kind="stable")
    ordered = [headers[i] for i in order]
    return ordered, _check_stack(ordered, depths[order], normal)


def read_series(folder: str | Path) -> Any:
    """Read one DICOM series folder as a float32 ``SimpleITK.Image`` ordered by geometry, with
    rescale slope / intercept applied and origin, spacing and direction set from the checked
    slice geometry (x along the rows, y along the columns, z along the normal)."""
    sitk = _sitk()
    folder = Path(folder)
    headers = [read_header(path) for path in series_files(folder)]
    ordered, step = order_slices(headers)
    reader = sitk.ImageSeriesReader()
    reader.SetImageIO("GDCMImageIO")
    reader.SetFileNames([str(h.path) for h in ordered])
    reader.SetOutputPixelType(sitk.sitkFloat32)
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise input_error(folder, None,
                          f"DICOM pixel data unreadable ({_first_line(exc)})") from None
    first = ordered[0]
    direction = first.direction.copy()
    direction[:, 2] = np.cross(direction[:, 0], direction[:, 1])
    image.SetOrigin(tuple(float(v) for v in first.origin))
    image.SetSpacing((first.spacing[0], first.spacing[1], step))
    image.SetDirection(tuple(float(v) for v in direction.ravel()))
    return image


@dataclass(frozen=True)
class Grid:
    """A sampling grid in world (LPS) coordinates: SimpleITK's size, origin, spacing and
    direction (row-major 3x3)."""

    size: tuple[int, int, int]
    origin: tuple[float, float, float]
    spacing: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)


def _corners(image: Any) -> np.ndarray:
    """World positions of the 8 outer corners of ``image``'s voxels (8 x 3)."""
    size = np.asarray(image.GetSize(), dtype=float)
    corners = []
    for mask in range(8):
        index = [(-0.5 if not (mask >> axis) & 1 else size[axis] - 0.5) for axis in range(3)]
        corners.append(image.TransformContinuousIndexToPhysicalPoint(index))
    return np.asarray(corners)


def reference_grid(image: Any, spacing: float = 1.0) -> Grid:
    """An isotropic grid with LPS-aligned axes (identity direction) covering ``image``'s field of
    view: the same axial orientation for every patient whatever plane or obliquity the reference
    series was acquired in, at ``spacing`` mm."""
    if not spacing > 0:
        raise GliotlError(f"grid spacing must be > 0 mm, got {spacing}")
    corners = _corners(image)
    low, high = corners.min(axis=0), corners.max(axis=0)
    size = np.maximum(np.ceil((high - low) / spacing - 1e-6), 1).astype(int)
    origin = low + spacing / 2.0
    return Grid((int(size[0]), int(size[1]), int(size[2])),
                (float(origin[0]), float(origin[1]), float(origin[2])), (float(spacing),) * 3)


def resample_onto(image: Any, grid: Grid) -> Any:
    """``image`` resampled in world coordinates onto ``grid``: linear interpolation, 0 outside
    its field of view, float32."""
    sitk = _sitk()
    return sitk.Resample(image, grid.size, sitk.Transform(), sitk.sitkLinear, grid.origin,
                         grid.spacing, grid.direction, 0.0, sitk.sitkFloat32)


def read_coregistered(folders: dict[str, Path], reference: str,
                      spacing: float = 1.0) -> tuple[dict[str, Any], Grid]:
    """Read every series of ``folders`` and resample all of them onto the grid of
    :func:`reference_grid` around the ``reference`` series: voxel (i, j, k) is one world
    position, so one anatomy, in every returned image."""
    if reference not in folders:
        raise GliotlError(f"reference series '{reference}' not among {sorted(folders)}")
    images = {name: read_series(folder) for name, folder in folders.items()}
    grid = reference_grid(images[reference], spacing)
    return {name: resample_onto(image, grid) for name, image in images.items()}, grid


def lps_to_ras_affine(image: Any) -> np.ndarray:
    """The NIfTI (RAS) voxel-to-world affine of a SimpleITK image (whose world is LPS)."""
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(3, 3)
    affine = np.eye(4)
    affine[:3, :3] = direction * np.asarray(image.GetSpacing(), dtype=float)
    affine[:3, 3] = image.GetOrigin()
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine


def write_nifti(image: Any, path: Path) -> None:
    """Write a SimpleITK image as NIfTI the way the NIfTI readers expect it: array (x, y, z),
    RAS affine, int16 voxels with the header's scale factors chosen by nibabel (half the disk
    of float32; the rounding error, range / 65535, is far below MRI noise)."""
    import nibabel as nib

    sitk = _sitk()
    data = sitk.GetArrayViewFromImage(image).transpose(2, 1, 0)
    nifti = nib.Nifti1Image(np.asarray(data, dtype=np.float32), lps_to_ras_affine(image))
    nifti.set_data_dtype(np.int16)
    nifti.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nifti, str(path))


__all__ = [
    "Grid",
    "SliceHeader",
    "lps_to_ras_affine",
    "order_slices",
    "read_coregistered",
    "read_header",
    "read_series",
    "reference_grid",
    "resample_onto",
    "series_files",
    "write_nifti",
]
