"""Benchmark of the MRI data layer (prints figures for benchmarks/RESULTS.md).

1. Preprocessing throughput (patients/min; 11 modalities at 240x240x155, phantom patients) of
   gliotl's ``preprocess_patient`` (medicalnet preset: RAS, brain box + margin 4, resize to
   70x86x86, z-score over non-zero voxels) as a ratio to the equivalent MONAI pipeline
   (LoadImaged, EnsureChannelFirstd, Orientationd RAS, CropForegroundd on T1, Resized,
   NormalizeIntensityd nonzero) measured in the same run on the same files.
2. Cached loading throughput (volumes/s) at 70x86x86 through MRIDataset.
3. Peak memory (RSS) while iterating a 60- and a 240-patient cache (synthetic 70x86x86 arrays
   written through VolumeCache), to show memory does not grow with the cohort.
4. DICOM series loading (RSNA-MICCAI Kaggle layout written with pydicom: four series per
   patient in different planes, tilts, spacings and slice counts): gliotl's loader
   (``read_coregistered``: every header read and checked, slices ordered by geometry, four
   series read and resampled onto the 1 mm reference grid) as a time ratio to SimpleITK's
   ``ImageSeriesReader`` alone (``GetGDCMSeriesFileNames`` + ``Execute`` of the same four
   series, no checks, no resampling), same run, same files, page cache warm; also the whole
   conversion of ``read_kaggle_rsna`` (including the NIfTI writes) per patient.

Usage: python benchmarks/bench_mri_data.py [--patients 2] [--dicom-patients 2]
       [--parts preprocessing cache dicom] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def monai_pipeline(modalities: list[str]):
    from monai.transforms import (
        Compose,
        CropForegroundd,
        EnsureChannelFirstd,
        LoadImaged,
        NormalizeIntensityd,
        Orientationd,
        Resized,
    )

    keys = list(modalities)
    return Compose([
        LoadImaged(keys=keys, image_only=True),
        EnsureChannelFirstd(keys=keys),
        Orientationd(keys=keys, axcodes="RAS"),
        CropForegroundd(keys=keys, source_key="T1", margin=4, allow_smaller=True),
        Resized(keys=keys, spatial_size=(86, 86, 70), mode="area"),
        NormalizeIntensityd(keys=keys, nonzero=True),
    ])


def bench_preprocessing(work: Path, n_patients: int) -> None:
    from gliotl.mgmt.data import (
        MODALITIES,
        PreprocessConfig,
        make_phantom_cohort,
        preprocess_patient,
        read_upenn,
    )

    root = work / "phantom"
    start = time.perf_counter()
    make_phantom_cohort(root, n_patients, seed=0, missing_dti_fraction=0, missing_dsc_fraction=0,
                        indeterminate_fraction=0, not_available_fraction=0, followup_fraction=0,
                        expert_fraction=0)
    print(f"phantom: {n_patients} patients x 11 modalities at 240x240x155 written in "
          f"{time.perf_counter() - start:.1f} s")
    cohort = read_upenn(root)
    rows = [cohort.row(p) for p in cohort.patient_ids]
    config = PreprocessConfig(preset="medicalnet")
    pipeline = monai_pipeline(list(MODALITIES))

    def run_ours(threads: int | None) -> float:
        start = time.perf_counter()
        for row in rows:
            out = preprocess_patient(row, config, list(MODALITIES), threads=threads)
            assert out["T1"].shape == (70, 86, 86)
        return time.perf_counter() - start

    def run_monai() -> float:
        start = time.perf_counter()
        for row in rows:
            out = pipeline({m: row[m] for m in MODALITIES})
            assert tuple(out["T1"].shape) == (1, 86, 86, 70)
        return time.perf_counter() - start

    # warm-up (imports, page cache) then interleaved timings, best of two
    preprocess_patient(rows[0], config, ["T1"])
    pipeline({m: rows[0][m] for m in MODALITIES})
    ours, ours_single, monai = [], [], []
    for _ in range(2):
        ours.append(run_ours(None))
        ours_single.append(run_ours(1))
        monai.append(run_monai())
    per_min = {name: 60 * len(rows) / min(times)
               for name, times in [("ours", ours), ("ours1", ours_single), ("monai", monai)]}
    print(f"preprocessing (11 modalities, 240x240x155 -> 70x86x86), patients/min: "
          f"gliotl {per_min['ours']:.1f} (decompression threads), "
          f"gliotl single-thread {per_min['ours1']:.1f}, MONAI {per_min['monai']:.1f}")
    print(f"  ratio gliotl / MONAI = {per_min['ours'] / per_min['monai']:.2f} "
          f"(single-thread {per_min['ours1'] / per_min['monai']:.2f}; target >= 1.0)")


def build_synthetic_cache(work: Path, n_patients: int):
    """A cohort of placeholder input files whose cache entries are written directly."""
    from gliotl.mgmt.data import Cohort, PreprocessConfig, VolumeCache

    inputs = work / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    rows = []
    for index in range(n_patients):
        path = inputs / f"p{index:04d}_T1.nii.gz"
        path.write_bytes(b"placeholder")
        rows.append({"patient_id": f"p{index:04d}", "label": index % 2, "T1": str(path)})
    cohort = Cohort(pd.DataFrame(rows), {}, "synthetic")
    cache = VolumeCache(work / "cache", PreprocessConfig())
    rng = np.random.default_rng(0)
    for _, row in cohort.table.iterrows():
        if not cache.has(row, "T1"):
            cache.put(row, "T1", rng.standard_normal((70, 86, 86), dtype=np.float32))
    return cohort, cache


def iterate(dataset) -> tuple[float, float]:
    """(seconds, peak RSS MB during the pass)."""
    peak = rss_mb()
    start = time.perf_counter()
    for index in range(len(dataset)):
        x, _ = dataset[index]
        assert tuple(x.shape) == (1, 70, 86, 86)
        del x
        peak = max(peak, rss_mb())
    return time.perf_counter() - start, peak


def bench_cache(work: Path) -> None:
    from gliotl.mgmt.data import MRIDataset

    cohort, cache = build_synthetic_cache(work, 240)
    small = MRIDataset(cohort, ["T1"], cache, patient_ids=cohort.patient_ids[:60])
    full = MRIDataset(cohort, ["T1"], cache)
    iterate(small)  # warm page cache and lazy imports
    baseline = rss_mb()
    _, peak_small = iterate(small)
    seconds, peak_full = iterate(full)
    print(f"cached loading at 70x86x86 (float16 mmap -> float32 tensor): "
          f"{len(full) / seconds:.0f} volumes/s")
    print(f"RSS while iterating: baseline {baseline:.0f} MB; peak 60 patients {peak_small:.0f} MB,"
          f" peak 240 patients {peak_full:.0f} MB (growth {peak_full - peak_small:+.1f} MB; "
          f"cache on disk {240 * 70 * 86 * 86 * 2 / 2**20:.0f} MB)")
    print(f"process max RSS (ru_maxrss): "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


def bench_dicom(work: Path, n_patients: int, scale: float = 3.0) -> None:
    import SimpleITK as sitk

    from gliotl.mgmt.data.dicom import read_coregistered
    from gliotl.mgmt.data.rsna import SERIES, read_kaggle_rsna
    from gliotl.mgmt.data.rsna_sample import write_kaggle_cohort

    root = work / "kaggle"
    start = time.perf_counter()
    write_kaggle_cohort(root, list(range(n_patients)), seed=0, scale=scale)
    patients = sorted(p for p in (root / "train").iterdir())
    folders = [{name: patient / name for name in SERIES} for patient in patients]
    files = sum(len(list(f.glob("*.dcm"))) for case in folders for f in case.values())
    shapes = {name: f"{len(list(folders[0][name].glob('*.dcm')))} slices"
              for name in SERIES}
    print(f"dicom: {n_patients} patients x 4 series ({files} files; patient 0: {shapes}) "
          f"written in {time.perf_counter() - start:.1f} s")

    def run_ours() -> float:
        start = time.perf_counter()
        for case in folders:
            images, grid = read_coregistered(case, "T1wCE", 1.0)
        return time.perf_counter() - start

    def run_sitk(resample: bool = False) -> float:
        start = time.perf_counter()
        for case, grid in zip(folders, grids, strict=True):
            for folder in case.values():
                reader = sitk.ImageSeriesReader()
                reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
                image = reader.Execute()
                if resample:
                    sitk.Resample(image, grid.size, sitk.Transform(), sitk.sitkLinear,
                                  grid.origin, grid.spacing, grid.direction, 0.0,
                                  sitk.sitkFloat32)
        return time.perf_counter() - start

    grids = [read_coregistered(case, "T1wCE", 1.0)[1] for case in folders]
    run_ours()
    run_sitk()  # warm-up: imports, page cache
    ours, theirs, theirs_resampled = [], [], []
    for _ in range(3):
        ours.append(run_ours())
        theirs.append(run_sitk())
        theirs_resampled.append(run_sitk(resample=True))
    print(f"DICOM loading (4 series/patient -> one {grids[0].size} grid at 1 mm), s/patient: "
          f"gliotl {min(ours) / n_patients:.3f}, SimpleITK ImageSeriesReader alone "
          f"{min(theirs) / n_patients:.3f}, ImageSeriesReader + Resample "
          f"{min(theirs_resampled) / n_patients:.3f}")
    print(f"  ratio gliotl / ImageSeriesReader alone = {min(ours) / min(theirs):.2f} (time; "
          f"gliotl also checks every header, orders by geometry and resamples all four series)"
          f"; gliotl / (ImageSeriesReader + Resample) = "
          f"{min(ours) / min(theirs_resampled):.2f}")
    start = time.perf_counter()
    read_kaggle_rsna(root, grid_spacing=1.0, converted=work / "nifti")
    convert = (time.perf_counter() - start) / n_patients
    start = time.perf_counter()
    read_kaggle_rsna(root, grid_spacing=1.0, converted=work / "nifti")
    reuse = (time.perf_counter() - start) / n_patients
    print(f"  read_kaggle_rsna conversion incl. NIfTI writes: {convert:.3f} s/patient "
          f"(reused unchanged: {reuse * 1000:.1f} ms/patient)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patients", type=int, default=2)
    parser.add_argument("--dicom-patients", type=int, default=2)
    parser.add_argument("--parts", nargs="+", default=["preprocessing", "cache", "dicom"],
                        choices=["preprocessing", "cache", "dicom"])
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="gliotl-bench-mri-"))
    try:
        total = time.perf_counter()
        if "preprocessing" in args.parts:
            bench_preprocessing(work, args.patients)
        if "cache" in args.parts:
            bench_cache(work)
        if "dicom" in args.parts:
            bench_dicom(work, args.dicom_patients)
        print(f"benchmark wall time {time.perf_counter() - total:.0f} s")
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
