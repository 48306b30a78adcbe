"""DICOM series reading and world-space resampling (gliotl.mgmt.data.dicom), on series written
with pydicom the way Kaggle's RSNA-MICCAI data come: shuffled file numbers and InstanceNumbers,
oblique and non-axial planes, rescale slope / intercept other than 1 / 0."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from gliotl.errors import GliotlError
from gliotl.mgmt.data.dicom import (
    lps_to_ras_affine,
    read_coregistered,
    read_series,
    reference_grid,
    write_nifti,
)
from gliotl.mgmt.data.foreground import foreground_box, foreground_mask
from gliotl.mgmt.data.rsna_sample import (
    Head,
    SeriesSpec,
    patient_series,
    series_geometry,
    write_series,
)

OBLIQUE = SeriesSpec(rows=20, cols=18, slices=14, pixel_spacing=(2.5, 2.0), slice_spacing=3.0,
                     centre=(3.0, -2.0, 4.0), plane="sagittal", tilt=(9.0, -7.0, 15.0),
                     slope=0.5, intercept=-100.0, first_number=387)


@pytest.fixture(scope="module")
def oblique(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("series") / "T1wCE"
    write_series(folder, OBLIQUE, Head(), "T1wCE", "00000", np.random.default_rng(1))
    return folder


def _copy(folder: Path, tmp_path: Path) -> Path:
    target = tmp_path / folder.name
    shutil.copytree(folder, target)
    return target


def test_files_are_shuffled_against_geometry(oblique):
    """The fixture really breaks name order and InstanceNumber order (else the test is void)."""
    files = sorted(oblique.glob("*.dcm"), key=lambda p: int(p.stem.split("-")[1]))
    assert int(files[0].stem.split("-")[1]) == 387
    _, _, normal, _ = series_geometry(OBLIQUE)
    depth = [float(np.dot(pydicom.dcmread(f).ImagePositionPatient, normal)) for f in files]
    instance = [int(pydicom.dcmread(f).InstanceNumber) for f in files]
    assert depth != sorted(depth) and depth != sorted(depth, reverse=True)
    assert np.argsort(instance).tolist() != np.argsort(depth).tolist()


def test_series_ordered_by_geometry_with_rescale_applied(oblique):
    image = read_series(oblique)
    row, col, normal, first = series_geometry(OBLIQUE)
    assert image.GetSize() == (OBLIQUE.cols, OBLIQUE.rows, OBLIQUE.slices)
    assert np.allclose(image.GetSpacing(), (2.0, 2.5, 3.0), atol=1e-4)
    assert np.allclose(np.asarray(image.GetDirection()).reshape(3, 3),
                       np.column_stack([row, col, normal]), atol=1e-6)
    assert np.allclose(image.GetOrigin(), first, atol=1e-4)
    # every voxel holds the value of the head at its own world position (slope 0.5: +-0.25)
    array = sitk.GetArrayFromImage(image)  # (slice, row, column)
    k, r, c = np.indices(array.shape)
    points = (first + k[..., None] * 3.0 * normal + r[..., None] * 2.5 * col
              + c[..., None] * 2.0 * row)
    assert np.abs(array - Head().values(points, "T1wCE")).max() <= 0.26
    assert array.dtype == np.float32


def test_marker_lands_on_one_voxel_in_every_modality(tmp_path):
    """Four series that differ in plane, tilt, offset, spacing and slice count, resampled onto
    the reference grid: the marker's centroid is the same voxel (within 1) in all four, and
    that voxel is the marker's world position."""
    rng = np.random.default_rng(7)
    marker = (6.0, -5.0, 4.0)
    folders = {}
    for name, spec in patient_series(rng).items():
        folders[name] = tmp_path / name
        write_series(folders[name], spec, Head(marker=marker), name, "00001", rng)
    images, grid = read_coregistered(folders, "T1wCE", spacing=2.0)
    assert grid.direction == (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    sizes = {image.GetSize() for image in images.values()}
    assert sizes == {grid.size}
    expected = np.asarray(images["T1wCE"].TransformPhysicalPointToContinuousIndex(marker))
    for name, image in images.items():
        array = sitk.GetArrayFromImage(image)
        weights = np.where(array > 0.5 * array.max(), array, 0.0)
        centroid = np.array([(weights * idx).sum() / weights.sum()
                             for idx in np.indices(array.shape)])[::-1]  # -> (x, y, z)
        assert np.abs(centroid - expected).max() <= 1.0, name


def test_reference_grid_covers_an_oblique_series(oblique):
    image = read_series(oblique)
    grid = reference_grid(image, 1.5)
    low = np.asarray(grid.origin) - 0.75
    high = low + np.asarray(grid.size) * 1.5
    for corner in [(0, 0, 0), (17, 19, 13), (17, 0, 13), (0, 19, 0)]:
        point = np.asarray(image.TransformIndexToPhysicalPoint(corner))
        assert np.all(point >= low) and np.all(point <= high)
    with pytest.raises(GliotlError, match="spacing"):
        reference_grid(image, 0.0)


def test_write_nifti_matches_simpleitk_and_nibabel_reads_lps(oblique, tmp_path):
    image = read_series(oblique)
    grid = reference_grid(image, 2.0)
    resampled = sitk.Resample(image, grid.size, sitk.Transform(), sitk.sitkLinear, grid.origin,
                              grid.spacing, grid.direction, 0.0, sitk.sitkFloat32)
    write_nifti(resampled, tmp_path / "ours.nii.gz")
    sitk.WriteImage(resampled, str(tmp_path / "sitk.nii.gz"))
    ours, theirs = nib.load(tmp_path / "ours.nii.gz"), nib.load(tmp_path / "sitk.nii.gz")
    assert np.allclose(ours.affine, theirs.affine, atol=1e-4)
    assert np.allclose(ours.affine, lps_to_ras_affine(resampled), atol=1e-6)
    assert nib.aff2axcodes(ours.affine) == ("L", "P", "S")
    assert ours.header.get_data_dtype() == np.int16
    data, truth = ours.get_fdata(), theirs.get_fdata()
    assert np.abs(data - truth).max() <= (truth.max() - truth.min()) / 30000


def _set(path: Path, **attributes) -> None:
    ds = pydicom.dcmread(path)
    for key, value in attributes.items():
        setattr(ds, key, value)
    ds.save_as(path)


def test_duplicate_position_names_both_files(oblique, tmp_path):
    folder = _copy(oblique, tmp_path)
    source = sorted(folder.glob("*.dcm"))[3]
    shutil.copy(source, folder / "Image-9999.dcm")
    with pytest.raises(GliotlError, match="duplicate slice position") as info:
        read_series(folder)
    assert "Image-9999.dcm" in str(info.value) or source.name in str(info.value)


def test_mixed_orientation_is_an_error_naming_the_file(oblique, tmp_path):
    folder = _copy(oblique, tmp_path)
    victim = sorted(folder.glob("*.dcm"))[5]
    _set(victim, ImageOrientationPatient=[1, 0, 0, 0, 1, 0])
    with pytest.raises(GliotlError, match="mixed geometry") as info:
        read_series(folder)
    assert "\n" not in str(info.value)


def test_mixed_matrix_and_off_normal_slices_are_errors(oblique, tmp_path):
    folder = _copy(oblique, tmp_path)
    victim = sorted(folder.glob("*.dcm"))[2]
    ds = pydicom.dcmread(victim)
    shifted = [float(v) + 5.0 * float(r) for v, r in
               zip(ds.ImagePositionPatient, ds.ImageOrientationPatient[:3], strict=True)]
    _set(victim, ImagePositionPatient=shifted)
    with pytest.raises(GliotlError, match="not on the normal") as info:
        read_series(folder)
    assert victim.name in str(info.value) or "Image-" in str(info.value)


def test_missing_slice_and_unreadable_file(oblique, tmp_path):
    folder = _copy(oblique, tmp_path)
    _, _, normal, _ = series_geometry(OBLIQUE)
    files = sorted(folder.glob("*.dcm"),
                   key=lambda p: float(np.dot(pydicom.dcmread(p).ImagePositionPatient, normal)))
    files[6].unlink()
    with pytest.raises(GliotlError, match="non-uniform slice step"):
        read_series(folder)
    (folder / "Image-5000.dcm").write_bytes(b"not a dicom file at all")
    with pytest.raises(GliotlError, match="Image-5000.dcm: not a readable DICOM file"):
        read_series(folder)
    with pytest.raises(GliotlError, match="folder not found"):
        read_series(tmp_path / "nowhere")


def test_foreground_box_finds_the_head_in_noise():
    rng = np.random.default_rng(0)
    volume = rng.uniform(0, 30, (30, 40, 36)).astype(np.float32)
    zz, yy, xx = np.indices(volume.shape)
    head = ((zz - 14) / 8) ** 2 + ((yy - 22) / 12) ** 2 + ((xx - 17) / 10) ** 2 <= 1
    volume[head] += 400
    volume[2, 2, 2] = 900  # a bright speck: not the largest object
    mask = foreground_mask(volume)
    assert mask[head].mean() > 0.99 and mask[~head].mean() < 0.01
    box = foreground_box(volume, 2, "t1.nii.gz", "p1")
    assert box == (slice(4, 25), slice(8, 37), slice(5, 30))
    with pytest.raises(GliotlError, match="t1.nii.gz: patient p1: no foreground"):
        foreground_box(np.zeros((8, 8, 8), np.float32), 2, "t1.nii.gz", "p1")


def test_positions_written_with_few_decimals_still_form_a_stack(oblique, tmp_path):
    """Some writers round ImagePositionPatient to 0.1 mm: not a mixed geometry."""
    folder = _copy(oblique, tmp_path)
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        _set(path, ImagePositionPatient=[round(float(v), 1) for v in ds.ImagePositionPatient])
    image = read_series(folder)
    assert image.GetSize() == (OBLIQUE.cols, OBLIQUE.rows, OBLIQUE.slices)
    assert abs(image.GetSpacing()[2] - 3.0) < 0.05
