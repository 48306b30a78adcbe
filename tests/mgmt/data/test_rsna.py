"""RSNA-MICCAI 2021 as Kaggle ships it (gliotl.mgmt.data.rsna): patient discovery, labels,
exclusions, conversion onto one grid, and every bad input as exit 2 with one line naming the
file (through the real ``gliotl`` entry point)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom
import pytest
import yaml

from clirun import run_gliotl
from gliotl.errors import GliotlError
from gliotl.mgmt.data import CohortConfig, load_cohort
from gliotl.mgmt.data.preprocess import PreprocessConfig, preprocess_patient
from gliotl.mgmt.data.rsna import default_converted_dir, read_kaggle_rsna
from gliotl.mgmt.data.rsna_sample import write_kaggle_cohort


def cohort_spec(**fields):
    """A validated cohort config (whatever form CohortConfig takes: a model or a union)."""
    from pydantic import TypeAdapter

    return TypeAdapter(CohortConfig).validate_python(fields)


IDS = (0, 2, 109, 123, 5, 8)
"""Two of the organisers' exclusions among them; 00011 has images but no label."""


@pytest.fixture(scope="module")
def download(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("kaggle")
    truth = write_kaggle_cohort(root, IDS, labels=[1, 0, 1, 0, 0, 1], seed=4, scale=0.7,
                                unlabelled=[11])
    labels = pd.read_csv(root / "train_labels.csv", dtype=str)
    extra = pd.DataFrame({"BraTS21ID": ["00077"], "MGMT_value": ["1"]})  # no image folder
    pd.concat([labels, extra]).to_csv(root / "train_labels.csv", index=False)
    return root, truth


@pytest.fixture()
def small(download, tmp_path) -> Path:
    """A two-patient copy to damage."""
    root, _ = download
    copy = tmp_path / "kaggle"
    for patient in ("00000", "00002"):
        shutil.copytree(root / "train" / patient, copy / "train" / patient)
    pd.DataFrame({"BraTS21ID": ["00000", "00002"], "MGMT_value": [1, 0]}).to_csv(
        copy / "train_labels.csv", index=False)
    return copy


def test_patients_labels_and_exclusions_are_counted(download, tmp_path):
    root, truth = download
    cohort = read_kaggle_rsna(root, grid_spacing=2.0, converted=tmp_path / "nifti")
    assert cohort.patient_ids == ["BraTS2021_00000", "BraTS2021_00002", "BraTS2021_00005",
                                  "BraTS2021_00008"]
    assert cohort.labels.tolist() == [1, 0, 0, 1]
    assert cohort.exclusions == {"exclusion list": 2,
                                 "label without image folder": 1,
                                 "image folder without label": 1}
    assert cohort.modalities_available("BraTS2021_00005") == ["T1", "T1GD", "T2", "FLAIR"]
    # an explicit exclusion list replaces the default; integers are zero-padded
    other = read_kaggle_rsna(root / "train", root / "train_labels.csv", exclude=[5],
                             grid_spacing=2.0, converted=tmp_path / "nifti")
    assert "BraTS2021_00109" in other.patient_ids and "BraTS2021_00005" not in other.patient_ids
    assert other.exclusions["exclusion list"] == 1


def test_marker_at_one_world_position_is_one_voxel_in_every_modality(download, tmp_path):
    root, truth = download
    cohort = read_kaggle_rsna(root, grid_spacing=2.0, converted=tmp_path / "nifti")
    for record in truth.itertuples():
        if f"BraTS2021_{record.BraTS21ID}" not in cohort.patient_ids:
            continue
        row = cohort.row(f"BraTS2021_{record.BraTS21ID}")
        world_ras = np.array([-record.marker_x, -record.marker_y, record.marker_z, 1.0])
        centroids = {}
        for modality in ("T1", "T1GD", "T2", "FLAIR"):
            image = nib.load(row[modality])
            data = image.get_fdata()
            weights = np.where(data > 0.5 * data.max(), data, 0.0)
            centroids[modality] = np.array([(weights * i).sum() / weights.sum()
                                            for i in np.indices(data.shape)])
            expected = (np.linalg.inv(image.affine) @ world_ras)[:3]
            assert np.abs(centroids[modality] - expected).max() <= 1.0, (record, modality)
        spread = np.ptp(np.stack(list(centroids.values())), axis=0)
        assert spread.max() <= 1.0
        # after preprocessing (one shared foreground box) the marker is still one voxel
        out = preprocess_patient(row, PreprocessConfig(preset="rsna2021",
                                                       target_shape=(24, 24, 24)))
        peaks = [np.unravel_index(np.argmax(v), v.shape) for v in out.values()]
        assert np.ptp(np.array(peaks), axis=0).max() <= 1


def test_conversion_is_reused_until_a_dicom_file_changes(small, tmp_path):
    out = tmp_path / "nifti"
    first = read_kaggle_rsna(small, grid_spacing=2.0, converted=out)
    t1 = Path(first.row("BraTS2021_00000")["T1"])
    stamp = t1.stat().st_mtime_ns
    again = read_kaggle_rsna(small, grid_spacing=2.0, converted=out)
    assert again.table.equals(first.table) and t1.stat().st_mtime_ns == stamp
    victim = next((small / "train" / "00000" / "T1w").glob("*.dcm"))
    os.utime(victim, ns=(stamp + 10**9, stamp + 10**9))
    read_kaggle_rsna(small, grid_spacing=2.0, converted=out)
    assert t1.stat().st_mtime_ns != stamp


def test_default_converted_dir_is_under_gliotl_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("GLIOTL_CACHE", str(tmp_path))
    folder = default_converted_dir(Path("/data/train"), "T1wCE", 1.0)
    assert folder.parent == tmp_path / "rsna_nifti"
    assert folder != default_converted_dir(Path("/data/train"), "T1wCE", 2.0)


def test_config_kinds_rsna_and_brats2021(small, tmp_path):
    """kind rsna reads the DICOM download; its converted tree is the BraTS 2021 Task 1 NIfTI
    form, which kind brats2021 reads as before."""
    converted = tmp_path / "nifti"
    spec = cohort_spec(kind="rsna", root=small, grid_spacing=2.0, converted=converted)
    cohort = load_cohort(spec, tmp_path / "unused")
    assert cohort.patient_ids == ["BraTS2021_00000", "BraTS2021_00002"]
    brats = load_cohort(cohort_spec(kind="brats2021", root=converted,
                                     labels=small / "train_labels.csv"), tmp_path / "unused")
    assert brats.patient_ids == cohort.patient_ids
    assert brats.table["T1GD"].tolist() == cohort.table["T1GD"].tolist()
    with pytest.raises(GliotlError, match="use cohort kind 'brats2021'"):
        load_cohort(cohort_spec(kind="rsna", root=converted,
                                 labels=small / "train_labels.csv"), tmp_path / "unused")


# -- bad inputs: exit 2, one line naming the file ------------------------------------------


def _prepare(root: Path, tmp_path: Path, monkeypatch, capsys, **cohort) -> tuple[int, str]:
    config = tmp_path / "prepare.yaml"
    config.write_text(yaml.safe_dump({
        "cohort": {"kind": "rsna", "root": str(root), "grid_spacing": 2.0,
                   "converted": str(tmp_path / "nifti"), **cohort},
        "preprocessing": {"preset": "rsna2021", "target_shape": [16, 16, 16]},
        "cache_dir": str(tmp_path / "cache"), "modalities": ["struct"]}))
    code, _, err = run_gliotl(["mgmt", "prepare", str(config), "--no-progress"], capsys)
    return code, err


def _one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


def test_prepare_succeeds_and_reports_exclusions(download, tmp_path, monkeypatch, capsys):
    root, _ = download
    code, _ = _prepare(root, tmp_path, monkeypatch, capsys)
    assert code in (0, None)


def test_missing_series_folder(small, tmp_path, monkeypatch, capsys):
    shutil.rmtree(small / "train" / "00002" / "FLAIR")
    _one_line_error(*_prepare(small, tmp_path, monkeypatch, capsys),
                    str(small / "train" / "00002" / "FLAIR"), "series folder missing")
    # the same through a config dumped and validated again (run dirs, --resume)
    spec = cohort_spec(kind="rsna", root=small, grid_spacing=2.0, converted=tmp_path / "n")
    with pytest.raises(GliotlError, match="series folder missing"):
        load_cohort(cohort_spec(**spec.model_dump()), tmp_path / "unused")
    # opting in to exclusion counts the patient instead
    cohort = read_kaggle_rsna(small, grid_spacing=2.0, converted=tmp_path / "n",
                              on_missing="exclude")
    assert cohort.patient_ids == ["BraTS2021_00000"]
    assert cohort.exclusions == {"missing FLAIR series": 1}


def test_unreadable_dcm(small, tmp_path, monkeypatch, capsys):
    victim = next((small / "train" / "00000" / "T2w").glob("*.dcm"))
    victim.write_bytes(b"\x00" * 64)
    _one_line_error(*_prepare(small, tmp_path, monkeypatch, capsys), str(victim),
                    "not a readable DICOM file")


def test_duplicate_positions(small, tmp_path, monkeypatch, capsys):
    folder = small / "train" / "00002" / "T1wCE"
    shutil.copy(next(folder.glob("*.dcm")), folder / "Image-99999.dcm")
    _one_line_error(*_prepare(small, tmp_path, monkeypatch, capsys), str(folder),
                    "duplicate slice position")


def test_mixed_geometry(small, tmp_path, monkeypatch, capsys):
    victim = sorted((small / "train" / "00000" / "FLAIR").glob("*.dcm"))[1]
    ds = pydicom.dcmread(victim)
    ds.PixelSpacing = [9.0, 9.0]
    ds.save_as(victim)
    _one_line_error(*_prepare(small, tmp_path, monkeypatch, capsys), str(victim),
                    "mixed geometry")


@pytest.mark.parametrize("table, needle", [
    ("BraTS21ID,label\n00000,1\n", "MGMT_value"),
    ("BraTS21ID,MGMT_value\n00000,1\n00002,2\n", "0 or 1 expected"),
    ("BraTS21ID,MGMT_value\n00000,1\n00002,\n", "0 or 1 expected"),
    ("BraTS21ID,MGMT_value\nabc,1\n", "BraTS21ID"),
    ("BraTS21ID,MGMT_value\n00000,1\n0,1\n", "'00000' repeats"),
])
def test_bad_labels_csv(small, tmp_path, monkeypatch, capsys, table, needle):
    (small / "train_labels.csv").write_text(table)
    _one_line_error(*_prepare(small, tmp_path, monkeypatch, capsys),
                    str(small / "train_labels.csv"), needle)


def test_zero_patients_remain(small, tmp_path, monkeypatch, capsys):
    (small / "train_labels.csv").write_text("BraTS21ID,MGMT_value\n00109,1\n00555,0\n")
    _one_line_error(*_prepare(small, tmp_path, monkeypatch, capsys), "0 patients remain",
                    "label without image folder: 1", "image folder without label: 2",
                    "exclusion list: 1")


def test_no_case_folders_and_missing_labels(tmp_path, monkeypatch, capsys):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    _one_line_error(*_prepare(tmp_path / "empty", tmp_path, monkeypatch, capsys),
                    "no case folders")


def test_real_entry_point_prints_no_traceback(small, tmp_path):
    """The installed command itself: exit status 2 and one line on stderr."""
    (small / "train_labels.csv").unlink()
    config = tmp_path / "prepare.yaml"
    config.write_text(yaml.safe_dump({
        "cohort": {"kind": "rsna", "root": str(small), "converted": str(tmp_path / "n")},
        "cache_dir": str(tmp_path / "cache")}))
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[3] / "src")}
    result = subprocess.run([sys.executable, "-m", "gliotl", "mgmt", "prepare", str(config)],
                            capture_output=True, text=True, env=env, timeout=300)
    _one_line_error(result.returncode, result.stderr, "train_labels.csv",
                    "labels CSV not found")


def test_shipped_rsna_configs_share_one_cohort_block():
    """configs/rsna2021_prepare.yaml and configs/rsna2021.yaml validate and agree on cohort,
    preprocessing and cache, so the run finds what prepare converted and cached."""
    from gliotl.core.config import load_config
    from gliotl.mgmt.config import load_mgmt_config
    from gliotl.mgmt.data.prepare import PrepareConfig

    configs = Path(__file__).resolve().parents[3] / "configs"
    prepare = load_config(PrepareConfig, configs / "rsna2021_prepare.yaml")
    run, _ = load_mgmt_config(configs / "rsna2021.yaml")
    assert prepare.cohort == run.cohort and prepare.cohort.kind == "rsna"
    assert prepare.preprocessing == run.preprocessing
    assert run.preprocessing.region == "foreground_bbox"
    assert prepare.cache_dir == run.cache_dir
    assert run.cohort.exclude == ["00109", "00123", "00709"]


def test_parallel_conversion_writes_the_same_volumes(small, tmp_path):
    one = read_kaggle_rsna(small, grid_spacing=2.0, converted=tmp_path / "one")
    two = read_kaggle_rsna(small, grid_spacing=2.0, converted=tmp_path / "two", workers=2)
    assert one.patient_ids == two.patient_ids
    for modality in ("T1", "T1GD", "T2", "FLAIR"):
        for a, b in zip(one.table[modality], two.table[modality], strict=True):
            assert np.array_equal(nib.load(a).get_fdata(), nib.load(b).get_fdata())
