"""MRI data layer: readers, preprocessing, cache and dataset on a small phantom cohort."""

from __future__ import annotations

import gzip
import os
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from gliotl.errors import GliotlError
from gliotl.mgmt.data import (
    MODALITIES,
    MODALITY_GROUPS,
    AugmentConfig,
    MRIDataset,
    PreprocessConfig,
    VolumeCache,
    make_phantom_cohort,
    preprocess_patient,
    read_cohort_table,
    read_rsna,
    read_upenn,
    write_cohort_table,
)

SHAPE = (48, 48, 32)
SMALL = {"target_shape": (16, 20, 20)}
# the paper's SRI-24 box scaled to this phantom grid, declared as the grid it is written for
SMALL_BOX = {"crop_grid": (32, 48, 48), "crop_box": ((0, 29), (8, 42), (9, 42))}


@pytest.fixture(scope="module")
def phantom(tmp_path_factory) -> tuple[Path, pd.DataFrame]:
    root = tmp_path_factory.mktemp("upenn")
    truth = make_phantom_cohort(
        root, 8, shape=SHAPE, seed=3, missing_dti_fraction=0.25, missing_dsc_fraction=0.25,
        indeterminate_fraction=0.125, not_available_fraction=0.125, followup_fraction=0.125,
        expert_fraction=0.5,
    )
    return root, truth


@pytest.fixture()
def phantom_copy(phantom, tmp_path) -> tuple[Path, pd.DataFrame]:
    root, truth = phantom
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    return copy, truth


def test_read_upenn_gives_exactly_what_was_written(phantom):
    root, truth = phantom
    cohort = read_upenn(root)
    labelled = truth[~truth["followup"] & truth["MGMT"].isin(["Methylated", "Unmethylated"])]
    assert cohort.patient_ids == labelled["patient_id"].tolist()
    expected = (labelled["MGMT"] == "Methylated").astype(int).tolist()
    assert cohort.labels.tolist() == expected
    for _, t in labelled.iterrows():
        mods = cohort.modalities_available(t["patient_id"])
        want = list(MODALITY_GROUPS["struct"])
        want += list(MODALITY_GROUPS["dti"]) if t["has_dti"] else []
        want += list(MODALITY_GROUPS["dsc"]) if t["has_dsc"] else []
        assert mods == want
    assert cohort.exclusions == {"Indeterminate": 1, "Not Available": 1, "follow-up _21": 1}
    with_dti = cohort.patients_with(list(MODALITY_GROUPS["dti"]))
    assert with_dti == labelled.loc[labelled["has_dti"], "patient_id"].tolist()


def test_expert_segmentation_and_table_roundtrip(phantom, tmp_path):
    root, truth = phantom
    cohort = read_upenn(root, segmentation="expert")
    labelled = truth[~truth["followup"] & truth["MGMT"].isin(["Methylated", "Unmethylated"])]
    assert cohort.patient_ids == labelled.loc[labelled["has_expert_segm"], "patient_id"].tolist()
    missing = int((~labelled["has_expert_segm"]).sum())
    assert cohort.exclusions.get("missing segmentation", 0) == missing
    assert cohort.notes == {"segmentation expert": len(cohort.patient_ids)}
    assert all("images_segm" in s for s in cohort.table["segmentation"])

    path = write_cohort_table(cohort, tmp_path / "cohort.csv")
    back = read_cohort_table(path)
    pd.testing.assert_frame_equal(back.table.fillna("NA"), cohort.table.fillna("NA"),
                                  check_dtype=False)
    assert back.exclusions == cohort.exclusions


def test_cohort_table_relative_paths_and_bad_label(phantom, tmp_path):
    root, _ = phantom
    cohort = read_upenn(root)
    row = cohort.table.iloc[0]
    table = pd.DataFrame({"patient_id": ["p1"], "label": ["1"], "T1": [row["T1"]],
                          "segmentation": [row["segmentation"]]})
    shutil.copy(row["T1"], tmp_path / "t1.nii.gz")
    table["T1"] = "t1.nii.gz"
    table.to_csv(tmp_path / "mine.csv", index=False)
    mine = read_cohort_table(tmp_path / "mine.csv")
    assert mine.modalities_available("p1") == ["T1"]
    assert mine.table.loc[0, "T1"] == str((tmp_path / "t1.nii.gz").resolve())
    table["label"] = "Methylated"
    table.to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(GliotlError, match="label"):
        read_cohort_table(tmp_path / "bad.csv")


def test_clinical_table_without_mgmt_column(phantom_copy):
    root, _ = phantom_copy
    clinical = root / "UPENN-GBM_clinical_info_v2.1.csv"
    pd.read_csv(clinical).drop(columns=["MGMT"]).to_csv(clinical, index=False)
    with pytest.raises(GliotlError, match="MGMT"):
        read_upenn(root)


def test_missing_file_is_excluded_or_an_error(phantom_copy):
    root, _ = phantom_copy
    victim = read_upenn(root).patient_ids[0]
    Path(read_upenn(root).row(victim)["FLAIR"]).unlink()
    cohort = read_upenn(root)
    assert victim not in cohort.patient_ids
    assert cohort.exclusions["missing FLAIR"] == 1
    with pytest.raises(GliotlError, match=victim):
        read_upenn(root, on_missing="error")


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def test_corrupt_nifti_is_a_clear_error_or_reported_exclusion(phantom_copy, tmp_path):
    root, _ = phantom_copy
    cohort = read_upenn(root)
    victim = cohort.patient_ids[1]
    bad = Path(cohort.row(victim)["T2"])
    _truncate(bad)
    config = PreprocessConfig(**SMALL)
    with pytest.raises(GliotlError, match=bad.name):
        preprocess_patient(cohort.row(victim), config)
    cache = VolumeCache(tmp_path / "cache", config)
    report = cache.fill(cohort, ["T1", "T2"], progress=False, on_error="exclude")
    assert list(report.failed) == [victim]
    assert bad.name in report.failed[victim] and victim in report.failed[victim]
    kept = report.apply(cohort)
    assert victim not in kept.patient_ids and kept.exclusions["preprocessing failed"] == 1
    with pytest.raises(GliotlError, match=bad.name):
        VolumeCache(tmp_path / "cache2", config).fill(cohort, ["T2"], progress=False)
    bad.write_bytes(b"not a nifti at all")
    with pytest.raises(GliotlError, match="NIfTI"):
        preprocess_patient(cohort.row(victim), config)


def test_mismatched_geometry_names_patient_and_file(phantom_copy):
    root, _ = phantom_copy
    cohort = read_upenn(root)
    victim = cohort.patient_ids[0]
    path = Path(cohort.row(victim)["FLAIR"])
    image = nib.load(path)
    data = np.asarray(image.dataobj)
    nib.save(nib.Nifti1Image(np.zeros((40, 48, 32), np.int16), image.affine), path)
    with pytest.raises(GliotlError, match=rf"{path.name}.*shape.*{victim}"):
        preprocess_patient(cohort.row(victim), PreprocessConfig(**SMALL))
    shifted = image.affine.copy()
    shifted[0, 3] += 5
    nib.save(nib.Nifti1Image(data, shifted), path)
    with pytest.raises(GliotlError, match="affine"):
        preprocess_patient(cohort.row(victim), PreprocessConfig(**SMALL))


@pytest.mark.parametrize("preset", ["medicalnet", "schmitz2024"])
def test_preprocessing_is_deterministic_and_normalised(phantom, preset):
    root, _ = phantom
    cohort = read_upenn(root)
    row = cohort.row(cohort.patient_ids[0])
    box = SMALL_BOX if preset == "schmitz2024" else {}
    config = PreprocessConfig.from_preset(preset, **SMALL, **box)
    first = preprocess_patient(row, config)
    second = preprocess_patient(row, config, threads=1)
    assert list(first) == cohort.modalities_available(row["patient_id"])
    for name, volume in first.items():
        assert volume.shape == (16, 20, 20) and volume.dtype == np.float32
        np.testing.assert_array_equal(volume, second[name])
        values = volume[volume != 0]
        assert abs(values.mean()) < 1e-3 and abs(values.std() - 1) < 1e-3
    if preset == "schmitz2024":
        # outside the whole-tumour mask every modality is exactly zero, and at the same voxels
        masks = [v != 0 for v in first.values()]
        assert all((m == masks[0]).all() for m in masks)
        assert 0 < masks[0].mean() < 0.6
    minmax = preprocess_patient(row, config.model_copy(update={"intensity": "minmax"}))
    values = minmax["T1"][minmax["T1"] != 0]
    assert values.min() >= 0 and values.max() == pytest.approx(1.0)


def test_paper_geometry_on_the_full_grid_mapping():
    config = PreprocessConfig(preset="schmitz2024")
    assert config.crop_box == ((0, 140), (39, 211), (44, 208))
    assert config.target_shape == (70, 86, 86) and config.downscale == 0.5
    assert config.orientation == "LPS" and config.intensity == "zscore"
    assert config.crop_grid == (155, 240, 240) and config.segmentation_labels == (0, 1, 2, 4)
    assert PreprocessConfig().region == "brain_bbox"


def test_orientation_ras_flips_the_lps_phantom(phantom):
    root, _ = phantom
    cohort = read_upenn(root)
    row = cohort.row(cohort.patient_ids[0])
    base = {"target_shape": None, "region": "brain_bbox", "margin": 0}
    native = preprocess_patient(row, PreprocessConfig(orientation="native", **base), ["T1"])
    ras = preprocess_patient(row, PreprocessConfig(orientation="RAS", **base), ["T1"])
    # stored LPS: RAS flips x and y, i.e. the W and H axes of (D, H, W)
    np.testing.assert_array_equal(ras["T1"], native["T1"][:, ::-1, ::-1])
    spaced = preprocess_patient(
        row, PreprocessConfig(orientation="RAS", spacing=(2.5, 2.5, 2.5), **base), ["T1"])
    assert spaced["T1"].shape == tuple(round(n * 5 / 2.5 * (1 if i else 155 / 160))
                                       for i, n in enumerate(native["T1"].shape))


def test_cache_keys_fill_resume_and_invalidation(phantom_copy, tmp_path):
    root, _ = phantom_copy
    cohort = read_upenn(root)
    config = PreprocessConfig(**SMALL)
    cache = VolumeCache(tmp_path / "cache", config)
    first_two = cohort.subset(cohort.patient_ids[:2])
    report = cache.fill(first_two, ["T1", "FLAIR"], progress=False)
    assert report.processed == first_two.patient_ids
    # resume: finished patients are skipped, only the rest is computed
    report = cache.fill(cohort, ["T1", "FLAIR"], progress=False)
    assert report.skipped == first_two.patient_ids
    assert report.processed == cohort.patient_ids[2:]
    assert not list((tmp_path / "cache").rglob("*.tmp"))

    row = cohort.row(cohort.patient_ids[0])
    stored = cache.load(row, "T1")
    assert isinstance(stored, np.memmap) and stored.dtype == np.float16
    fresh = preprocess_patient(row, config, ["T1"])["T1"]
    np.testing.assert_allclose(stored, fresh, atol=1e-2)

    other = VolumeCache(tmp_path / "cache", config.model_copy(update={"margin": 2}))
    assert other.key(row, "T1") != cache.key(row, "T1") and not other.has(row, "T1")
    # the preset name itself does not change the output, so not the key either
    same = VolumeCache(tmp_path / "cache", PreprocessConfig(preset="medicalnet", **SMALL))
    assert same.key(row, "T1") == cache.key(row, "T1")

    key = cache.key(row, "T1")
    t1 = Path(row["T1"])
    stat = t1.stat()
    os.utime(t1, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    assert cache.key(row, "T1") != key and not cache.has(row, "T1")
    # brain box comes from T1, so FLAIR's entry depends on T1 too
    assert not cache.has(row, "FLAIR")
    hashed = VolumeCache(tmp_path / "h", config, content_hash=True)
    before = hashed.key(row, "T1")
    os.utime(t1, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2 * 10**9))
    assert hashed.key(row, "T1") == before
    with gzip.open(t1, "rb") as handle:
        data = handle.read()
    t1.write_bytes(gzip.compress(data[:-2] + b"\x01\x02"))
    assert hashed.key(row, "T1") != before


@pytest.mark.slow
def test_dataset_streams_and_augments_deterministically(phantom, tmp_path):
    root, _ = phantom
    cohort = read_upenn(root)
    config = PreprocessConfig(**SMALL)
    cache = VolumeCache(tmp_path / "cache", config)
    mods = ["T1", "T1GD", "FLAIR"]
    cache.fill(cohort, mods, progress=False)
    plain = MRIDataset(cohort, mods, cache)
    assert len(plain) == len(cohort.patient_ids)
    x, y = plain[0]
    assert tuple(x.shape) == (3, 16, 20, 20) and str(x.dtype) == "torch.float32"
    assert y == float(cohort.labels.iloc[0])
    row = cohort.row(cohort.patient_ids[0])
    np.testing.assert_array_equal(x[1].numpy(), np.asarray(cache.load(row, "T1GD"), np.float32))
    np.testing.assert_array_equal(plain[0][0].numpy(), x.numpy())  # no augmentation at eval

    augment = AugmentConfig(flip_prob=0.5, rotation_degrees=10, noise_std=0.1, noise_prob=1.0,
                            elastic=True, elastic_prob=1.0)
    a = MRIDataset(cohort, mods, cache, augment=augment, seed=7)
    b = MRIDataset(cohort, mods, cache, augment=augment, seed=7)
    xa, xb = a[1][0], b[1][0]
    assert tuple(xa.shape) == (3, 16, 20, 20) and str(xa.dtype) == "torch.float32"
    np.testing.assert_array_equal(xa.numpy(), xb.numpy())
    assert not np.allclose(xa.numpy(), plain[1][0].numpy())
    a.set_epoch(1)
    assert not np.allclose(a[1][0].numpy(), xa.numpy())
    c = MRIDataset(cohort, mods, cache, augment=augment, seed=8)
    assert not np.allclose(c[1][0].numpy(), xa.numpy())

    with pytest.raises(GliotlError, match="prepare"):
        MRIDataset(cohort, ["T2"], cache)[0]
    lacking = [p for p in cohort.patient_ids if p not in cohort.patients_with(["DTI_FA"])]
    with pytest.raises(GliotlError, match=lacking[0]):
        MRIDataset(cohort, ["DTI_FA"], cache, patient_ids=lacking)


def test_read_rsna_brats_layout(phantom, tmp_path):
    root, _ = phantom
    cohort = read_upenn(root)
    ids = [0, 2, 5]
    for number, pid in zip(ids, cohort.patient_ids, strict=False):
        folder = tmp_path / "brats" / f"BraTS2021_{number:05d}"
        folder.mkdir(parents=True)
        row = cohort.row(pid)
        for ours, suffix in [("T1", "t1"), ("T1GD", "t1ce"), ("T2", "t2"), ("FLAIR", "flair")]:
            shutil.copy(row[ours], folder / f"BraTS2021_{number:05d}_{suffix}.nii.gz")
    (tmp_path / "brats" / "BraTS2021_00005" / "BraTS2021_00005_t2.nii.gz").unlink()
    pd.DataFrame({"BraTS21ID": [0, 2, 5], "MGMT_value": [1, 0, 1]}).to_csv(
        tmp_path / "train_labels.csv", index=False)
    rsna = read_rsna(tmp_path / "brats", tmp_path / "train_labels.csv")
    assert rsna.patient_ids == ["BraTS2021_00000", "BraTS2021_00002"]
    assert rsna.labels.tolist() == [1, 0]
    assert rsna.modalities_available("BraTS2021_00000") == ["T1", "T1GD", "T2", "FLAIR"]
    assert rsna.exclusions == {"missing files": 1}
    out = preprocess_patient(rsna.row("BraTS2021_00000"), PreprocessConfig(**SMALL))
    assert set(out) == {"T1", "T1GD", "T2", "FLAIR"}
    with pytest.raises(GliotlError, match="MGMT_value"):
        pd.DataFrame({"BraTS21ID": [0]}).to_csv(tmp_path / "bad.csv", index=False)
        read_rsna(tmp_path / "brats", tmp_path / "bad.csv")


def test_modalities_contract():
    assert MODALITIES == ("T1", "T1GD", "T2", "FLAIR", "DTI_AD", "DTI_FA", "DTI_RD", "DTI_TR",
                          "DSC_ap-rCBV", "DSC_PH", "DSC_PSR")
    assert MODALITY_GROUPS["dsc"] == ("DSC_ap-rCBV", "DSC_PH", "DSC_PSR")


@pytest.mark.slow
def test_a_resident_cohort_serves_the_streamed_items_and_trains_the_same_model(phantom, tmp_path):
    """``training.resident_cohort``: the volumes are read once into memory (float16 as cached);
    items, augmented or not, equal the streamed ones bit for bit, the cache is not read again,
    and a fit on the resident datasets gives the streamed fit's weights."""
    import torch

    from gliotl.mgmt.config import TrainingConfig
    from gliotl.mgmt.pipeline.training import build_model, fit

    root, _ = phantom
    cohort = read_upenn(root)
    cache = VolumeCache(tmp_path / "cache", PreprocessConfig(**SMALL))
    mods = ["T1GD", "FLAIR"]
    cache.fill(cohort, mods, progress=False)
    augment = AugmentConfig(rotation_degrees=10, noise_std=0.1, noise_prob=1.0)
    ids = cohort.patient_ids
    train_ids, val_ids = ids[: len(ids) - 2], ids[len(ids) - 2:]
    cpu = torch.device("cpu")
    streamed = MRIDataset(cohort, mods, cache, train_ids, augment, seed=5)
    resident = MRIDataset(cohort, mods, cache, train_ids, augment, seed=5, resident=cpu)
    assert resident.resident.dtype == torch.float16 and not resident.resident_on_cuda
    assert tuple(resident.resident.shape) == (len(train_ids), 2, 16, 20, 20)
    for epoch in (0, 1):
        streamed.set_epoch(epoch)
        resident.set_epoch(epoch)
        for index in range(len(train_ids)):
            assert torch.equal(streamed[index][0], resident[index][0])
            assert streamed[index][1] == resident[index][1]
    val_streamed = MRIDataset(cohort, mods, cache, val_ids)
    val_resident = MRIDataset(cohort, mods, cache, val_ids, resident=cpu)
    expected = val_streamed[0][0]
    training = TrainingConfig(epochs=2, batch_size=2, eval_batch_size=2, device="cpu",
                              lr_backbone=1e-3, balancing="none", resident_cohort=True)

    def weights(train_set: MRIDataset, val_set: MRIDataset) -> dict:
        torch.manual_seed(0)
        model = build_model("full", 10, None, 2, 0.0, training)
        return fit(model, train_set, val_set, training, cpu, seed=3).state_dict

    shutil.rmtree(tmp_path / "cache")  # the resident datasets are served from memory
    assert torch.equal(val_resident[0][0], expected)
    from_memory = weights(resident, val_resident)
    cache.fill(cohort, mods, progress=False)  # the streamed fit reads the cache again
    from_cache = weights(streamed, val_streamed)
    for key, value in from_memory.items():
        assert torch.equal(value, from_cache[key]), key
