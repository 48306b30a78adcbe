"""UPenn-GBM exactly as the TCIA download unpacks (the phantom writes that tree): where the
reader looks, what it skips, what it counts, and every bad input as one line and exit 2."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from clirun import run_gliotl
from gliotl.errors import GliotlError
from gliotl.mgmt.data import PreprocessConfig, make_phantom_cohort, preprocess_patient, read_upenn
from gliotl.mgmt.data.source import UpennCohort, load_cohort

SHAPE = (32, 32, 24)
IMAGES = Path("UPENN-GBM") / "NIfTI-files"
CLINICAL = "UPENN-GBM_clinical_info_v2.1.csv"
# the paper's box scaled to the phantom grid, declared as the grid it is written for
BOX = {"crop_grid": (24, 32, 32), "crop_box": ((0, 22), (5, 28), (6, 28)),
       "target_shape": (12, 14, 14)}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("download")
    truth = make_phantom_cohort(
        root, 7, shape=SHAPE, seed=4, missing_dti_fraction=0.3, missing_dsc_fraction=0.3,
        indeterminate_fraction=1 / 7, not_available_fraction=1 / 7, followup_fraction=0.15,
        expert_fraction=0.45)
    return root, truth


@pytest.fixture()
def copy(phantom, tmp_path) -> Path:
    shutil.copytree(phantom[0], tmp_path / "download")
    return tmp_path / "download"


def _labelled(truth: pd.DataFrame) -> pd.DataFrame:
    return truth[~truth["followup"] & truth["MGMT"].isin(["Methylated", "Unmethylated"])]


def _cli(args: list[str], monkeypatch, capsys) -> tuple[int, str, str]:
    """`gliotl ...` through the real entry point: exit status, stdout, stderr."""
    return run_gliotl(args, capsys)


def test_the_phantom_writes_the_tcia_tree(phantom):
    root, truth = phantom
    images = root / IMAGES
    assert (root / CLINICAL).is_file() and (root / "UPENN-GBM_data_availability.csv").is_file()
    first = truth["patient_id"].iloc[0]
    assert (images / "images_structural" / first / "old" / f"{first}_T1.nii.gz").is_file()
    assert (images / "images_structural_unstripped" / first
            / f"{first}_FLAIR_unstripped.nii.gz").is_file()
    with_dti = truth.loc[truth["has_dti"], "patient_id"].iloc[0]
    assert (images / "images_DTI" / "images_DTI" / with_dti / f"{with_dti}_DTI_FA.nii.gz").is_file()
    with_dsc = truth.loc[truth["has_dsc"], "patient_id"].iloc[0]
    series = nib.load(images / "images_DSC" / with_dsc / f"{with_dsc}_DSC.nii.gz")
    assert series.ndim == 4 and series.shape[:3] == SHAPE
    t1 = nib.load(images / "images_structural" / first / f"{first}_T1.nii.gz")
    assert nib.aff2axcodes(t1.affine) == ("L", "P", "S")
    followups = truth.loc[truth["followup"], "patient_id"]
    assert len(followups) and not any(
        (images / "automated_segm" / f"{p}_automated_approx_segm.nii.gz").exists()
        for p in followups)


def test_root_may_be_any_level_of_the_download(phantom):
    root, truth = phantom
    labelled = _labelled(truth)
    cohorts = [read_upenn(r) for r in (root, root / "UPENN-GBM", root / IMAGES)]
    for cohort in cohorts:
        pd.testing.assert_frame_equal(cohort.table, cohorts[0].table)
        assert cohort.exclusions == cohorts[0].exclusions
    cohort = cohorts[0]
    assert cohort.patient_ids == labelled["patient_id"].tolist()
    assert cohort.patients_with(["DTI_FA"]) == labelled.loc[labelled["has_dti"],
                                                            "patient_id"].tolist()
    assert cohort.patients_with(["DSC_PH"]) == labelled.loc[labelled["has_dsc"],
                                                            "patient_id"].tolist()
    paths = [p for p in cohort.table.drop(columns=["patient_id", "label"]).to_numpy().ravel()
             if isinstance(p, str)]
    assert len(paths) > 5 * len(labelled)
    assert not any("/old/" in p or "_unstripped" in p for p in paths)
    assert all("images_DTI/images_DTI/" in p for p in cohort.table["DTI_FA"].dropna())
    status = truth.loc[~truth["followup"], "MGMT"].value_counts()
    assert cohort.exclusions == {"Indeterminate": status["Indeterminate"],
                                 "Not Available": status["Not Available"],
                                 "follow-up _21": int(truth["followup"].sum())}
    assert cohort.found["T1"] == len(labelled)
    assert cohort.found["DTI_AD"] == int(labelled["has_dti"].sum())
    assert cohort.notes == {"segmentation automated": len(labelled)}


def test_the_newest_clinical_table_beside_or_inside_is_used(copy):
    v21 = pd.read_csv(copy / CLINICAL, dtype=str, keep_default_na=False)
    flipped = v21.copy()
    flipped["MGMT"] = flipped["MGMT"].map({"Methylated": "Unmethylated",
                                           "Unmethylated": "Methylated"}).fillna(flipped["MGMT"])
    flipped.to_csv(copy / "UPENN-GBM" / "UPENN-GBM_clinical_info_v1.0.csv", index=False)
    labels = read_upenn(copy / "UPENN-GBM").labels
    (copy / CLINICAL).unlink()
    assert (read_upenn(copy / IMAGES).labels == 1 - labels).all()


def test_stale_copies_are_skipped_and_a_duplicate_is_named(copy):
    cohort = read_upenn(copy)
    pid = cohort.patient_ids[0]
    folder = copy / IMAGES / "images_structural" / pid
    shutil.copy(folder / f"{pid}_T2.nii.gz", folder / f"{pid}_T2_unstripped.nii.gz")
    shutil.copy(folder / f"{pid}_T2.nii.gz", folder / "old" / f"{pid}_T2.nii.gz")
    assert read_upenn(copy).row(pid)["T2"] == str(folder / f"{pid}_T2.nii.gz")
    (folder / "copy").mkdir()
    shutil.copy(folder / f"{pid}_T2.nii.gz", folder / "copy" / f"{pid}_T2.nii.gz")
    with pytest.raises(GliotlError, match="duplicate") as error:
        read_upenn(copy)
    assert str(folder / "copy" / f"{pid}_T2.nii.gz") in str(error.value)
    assert str(folder / f"{pid}_T2.nii.gz") in str(error.value)


def test_expert_segmentations_with_the_automated_fallback(phantom):
    root, truth = phantom
    labelled = _labelled(truth)
    expert = labelled.loc[labelled["has_expert_segm"], "patient_id"].tolist()
    assert 0 < len(expert) < len(labelled)
    strict = read_upenn(root, segmentation="expert")
    assert strict.patient_ids == expert
    assert strict.exclusions["missing segmentation"] == len(labelled) - len(expert)
    fallback = read_upenn(root, segmentation="expert", segmentation_fallback=True)
    assert fallback.patient_ids == labelled["patient_id"].tolist()
    assert fallback.notes == {"segmentation expert": len(expert),
                              "segmentation automated": len(labelled) - len(expert)}
    for pid in fallback.patient_ids:
        kind = "images_segm" if pid in expert else "automated_segm"
        assert f"/{kind}/" in fallback.row(pid)["segmentation"]


def test_nothing_found_is_an_error_naming_where_it_looked(copy, tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(GliotlError, match="UPENN-GBM/NIfTI-files"):
        read_upenn(tmp_path / "empty")
    for path in (copy / IMAGES / "images_DTI").rglob("*_DTI_FA.nii.gz"):
        path.unlink()
    spec = UpennCohort(kind="upenn", root=str(copy))
    assert len(load_cohort(spec, tmp_path, ["T1", "DTI_AD"]).patient_ids) > 0
    with pytest.raises(GliotlError, match=r"DTI_FA matched 0 files.*images_DTI/\*\*/"
                                          r"<ID>_DTI_FA\.nii\.gz"):
        load_cohort(spec, tmp_path, ["T1", "DTI_FA"])
    clinical = pd.read_csv(copy / CLINICAL, dtype=str, keep_default_na=False)
    clinical["MGMT"] = "Indeterminate"
    clinical.to_csv(copy / CLINICAL, index=False)
    with pytest.raises(GliotlError, match="0 patients remain.*Indeterminate"):
        load_cohort(spec, tmp_path)


def _prepare_config(path: Path, root: Path, **extra) -> Path:
    config = {"cohort": {"kind": "upenn", "root": str(root)},
              "preprocessing": {"region": "tumour_bbox", "target_shape": [12, 12, 12]},
              "cache_dir": str(path.parent / "cache"), "modalities": ["T1GD", "FLAIR"],
              **extra}
    path.write_text(yaml.safe_dump(config))
    return path


def test_prepare_reports_per_modality_and_refuses_an_empty_cohort(copy, tmp_path, monkeypatch,
                                                                   capsys):
    config = _prepare_config(tmp_path / "prepare.yaml", copy, modalities=["struct", "dti"])
    code, out, err = _cli(["mgmt", "prepare", str(config), "--no-progress"], monkeypatch, capsys)
    assert code == 0, err
    cohort = read_upenn(copy)
    assert f"{len(cohort.patient_ids)} patients; excluded: " in out
    have = cohort.found["DTI_FA"]
    assert f"DTI_FA: {have} labelled patients have a file; " \
           f"{len(cohort.patient_ids) - have} kept without it (optional)" in out
    assert "searched " in out and "segmentation automated" in out

    clinical = pd.read_csv(copy / CLINICAL, dtype=str, keep_default_na=False)
    clinical["MGMT"] = "Not Available"
    clinical.to_csv(copy / CLINICAL, index=False)
    code, _, err = _cli(["mgmt", "prepare", str(config)], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "0 patients remain" in err and "images_structural/**/<ID>_T1.nii.gz" in err


def test_run_refuses_a_modality_without_files(copy, tmp_path, monkeypatch, capsys):
    for path in (copy / IMAGES / "images_DSC").rglob("*_DSC_PSR.nii.gz"):
        path.unlink()
    config = tmp_path / "run.yaml"
    config.write_text(yaml.safe_dump({
        "name": "x", "cohort": {"kind": "upenn", "root": str(copy)},
        "modalities": ["T1GD", "DSC_PSR"], "model": {"depth": 10}}))
    code, _, err = _cli(["mgmt", "run", str(config), "--out", str(tmp_path / "run")],
                        monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "DSC_PSR matched 0 files" in err and "images_DSC/**/<ID>_DSC_PSR.nii.gz" in err


def test_phantom_refuses_a_non_empty_folder(tmp_path, monkeypatch, capsys):
    (tmp_path / "mine.txt").write_text("keep me")
    code, _, err = _cli(["mgmt", "phantom", "--out", str(tmp_path), "--patients", "2",
                         "--shape", "16,16,16"], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "not empty" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


# ---------------------------------------------------------------- geometry and content checks


def _as_ras(path: Path) -> None:
    image = nib.as_closest_canonical(nib.load(path))
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), image.affine), path)


def test_a_ras_stored_patient_is_reoriented_for_the_fixed_box(copy):
    cohort = read_upenn(copy)
    row = cohort.row(cohort.patient_ids[0])
    config = PreprocessConfig(preset="schmitz2024", **BOX)
    assert config.orientation == "LPS"
    before = preprocess_patient(row, config, ["T1GD", "FLAIR"])
    for column in ("T1GD", "FLAIR", "segmentation"):
        _as_ras(Path(row[column]))
    assert nib.aff2axcodes(nib.load(row["T1GD"]).affine) == ("R", "A", "S")
    after = preprocess_patient(row, config, ["T1GD", "FLAIR"])
    for name in before:
        np.testing.assert_array_equal(after[name], before[name])
    native = config.model_copy(update={"orientation": "native"})
    with pytest.raises(GliotlError, match=r"T1GD\.nii\.gz.*stored RAS.*orientation: LPS"):
        preprocess_patient(row, native, ["T1GD", "FLAIR"])
    with pytest.raises(ValueError, match="wrong place"):
        PreprocessConfig(preset="schmitz2024", orientation="RAS")


def test_the_fixed_box_is_refused_on_another_grid(phantom):
    cohort = read_upenn(phantom[0])
    row = cohort.row(cohort.patient_ids[0])
    with pytest.raises(GliotlError, match=r"T1GD\.nii\.gz.*155x240x240.*24x32x32"):
        preprocess_patient(row, PreprocessConfig(preset="schmitz2024"), ["T1GD"])


def _rewrite(path: Path, change) -> str:
    """Replace the voxels of ``path`` by ``change(voxels)`` (same affine); returns the path."""
    image = nib.load(path)
    nib.save(nib.Nifti1Image(change(np.asarray(image.dataobj)), image.affine), path)
    return str(path)


def _labels_1235(row: pd.Series) -> str:
    def relabel(data: np.ndarray) -> np.ndarray:
        data = data.copy()
        data[data == 4] = 5
        data[data == 2] = 3
        return data

    return _rewrite(Path(row["segmentation"]), relabel)


def _float_mask(row: pd.Series) -> str:
    return _rewrite(Path(row["segmentation"]),
                    lambda data: np.where(data == 0, 0.001, data).astype(np.float32))


def _nan_voxels(row: pd.Series) -> str:
    def one_nan(data: np.ndarray) -> np.ndarray:
        data = data.astype(np.float32)
        data[3, 4, 5] = np.nan
        return data

    return _rewrite(Path(row["T1GD"]), one_nan)


def _shifted_affine(row: pd.Series) -> str:
    path = Path(row["FLAIR"])
    image = nib.load(path)
    affine = image.affine.copy()
    affine[0, 3] += 4.0
    nib.save(nib.Nifti1Image(np.asarray(image.dataobj), affine), path)
    return f"{path} {row['T1GD']}"


def _constant(row: pd.Series) -> str:
    return _rewrite(Path(row["FLAIR"]), lambda data: np.full(data.shape, 7, np.int16))


BAD_INPUTS = {
    "labels 1,2,3,5": (_labels_1235, "labels .*unexpected \\[3, 5\\]"),
    "float mask, 0.001 background": (_float_mask, "not integer-valued \\(e.g. 0.001\\)"),
    "NaN voxels": (_nan_voxels, "1 non-finite voxels"),
    "affine mismatch": (_shifted_affine, "affine differs"),
    "constant volume": (_constant, "every voxel is 7"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_each_bad_input_is_one_line_naming_the_file(case, copy, tmp_path, monkeypatch, capsys):
    spoil, message = BAD_INPUTS[case]
    cohort = read_upenn(copy)
    victim = cohort.patient_ids[1]
    files = spoil(cohort.row(victim)).split()  # the file(s) the message must name
    config = PreprocessConfig(region="tumour_bbox", target_shape=(12, 12, 12))
    with pytest.raises(GliotlError, match=message) as error:
        preprocess_patient(cohort.row(victim), config, ["T1GD", "FLAIR"])
    assert str(error.value).startswith(files[0]) and all(f in str(error.value) for f in files)
    config = _prepare_config(tmp_path / "prepare.yaml", copy, on_error="error")
    code, _, err = _cli(["mgmt", "prepare", str(config), "--no-progress"], monkeypatch, capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert all(f in err for f in files) and victim in err and "Traceback" not in err
    # excluded and reported (not cached) when failures are allowed
    config = _prepare_config(tmp_path / "prepare.yaml", copy, on_error="exclude")
    code, out, err = _cli(["mgmt", "prepare", str(config), "--no-progress"], monkeypatch, capsys)
    assert code == 0, err
    assert "failed 1" in out and "excluded: preprocessing failed: 1" in out
