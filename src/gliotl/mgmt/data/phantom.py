"""A synthetic MGMT cohort in the exact UPenn-GBM TCIA tree, built on real brain anatomy.

Tree (as the TCIA download unpacks, docs: real-data-layouts.md): the clinical, acquisition and
data-availability CSVs beside ``UPENN-GBM/``; ``UPENN-GBM/NIfTI-files/`` holds
``images_structural/<ID>/`` (with a stale ``old/`` copy for the first patient),
``images_structural_unstripped/<ID>/<ID>_<m>_unstripped.nii.gz``, the nested
``images_DTI/images_DTI/<ID>/``, ``images_DSC/<ID>/`` with the 4D ``<ID>_DSC.nii.gz`` beside the
maps, ``automated_segm/`` (pre-operative scans only) and ``images_segm/``.

Anatomy: the MNI152 2009c T1 template and its grey / white-matter maps, shipped inside nilearn's
wheel (read from disk, no download). Per patient the template is scaled and warped by a smooth
random displacement (a different "brain" each time), resampled to the phantom grid (240x240x155
at 1 mm by default, stored like SRI-24 / BraTS with an LPS affine; smaller shapes cover the same
field of view with larger voxels), and a tumour is placed in white matter: a necrotic core
(label 1), an enhancing rim (label 4) and surrounding oedema (label 2), with irregular borders.
All 11 UPenn modalities are synthesised with plausible relative contrasts (T1 from the real
template; T2 / FLAIR / DTI / DSC from tissue fractions and tumour compartments), bias fields and
noise; outside the brain every map is 0 (skull-stripped, as the real data).

How the MGMT label is encoded (``signal`` = s >= 0). Two latent tumour properties are drawn per
patient, each Gaussian with its own spread, and shifted by +-0.75 s standard deviations between
classes (methylated = +1, unmethylated = -1):

* necrotic fraction of the tumour core (volume of label 1 / labels 1+4):
  mean 0.35 - 0.75 s * 0.08 * y, sd 0.08 -> methylated tumours are LESS necrotic;
* enhancement strength e (relative T1GD increase of the enhancing rim, also scaling the rim's
  rCBV / DSC peak height and the rim's texture heterogeneity 0.1 + 0.25 e):
  mean 0.6 + 0.75 s * 0.15 * y, sd 0.15 -> methylated tumours enhance MORE and more unevenly.

Each property alone separates the classes by 1.5 s standard deviations; an ideal model that
recovers both reaches AUC = Phi(1.5 s) (0.93 at s = 1, 0.5 at s = 0: with s = 0 images carry no
label information at all). :func:`oracle_auc` gives that number. Everything else (anatomy,
tumour position and size, oedema extent, noise) is independent of the label.

As in the real cohort, some patients lack DTI or DSC, some labels are Indeterminate or Not
Available, a few patients have a ``_21`` follow-up scan, and a subset has an expert
segmentation (``images_segm``). ``phantom_truth.csv`` (not part of UPenn) records the latents.
"""

from __future__ import annotations

import gzip
import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from gliotl.core.io import write_bytes, write_csv
from gliotl.errors import GliotlError, input_error
from gliotl.mgmt.data.modalities import UPENN_FILES
from gliotl.mgmt.data.upenn import NIFTI_DIR, UPENN_DIR

FULL_SHAPE = (240, 240, 155)
FIELD_OF_VIEW_MM = (240.0, 240.0, 155.0)
NECROSIS_MEAN, NECROSIS_SD = 0.35, 0.08
ENHANCE_MEAN, ENHANCE_SD = 0.6, 0.15
SHIFT_SD = 0.75  # class means sit +-0.75 s sd from the overall mean
METHYLATED_FRACTION = 121 / 291  # UPenn-GBM v2.1 among labelled patients
CLINICAL_NAME = "UPENN-GBM_clinical_info_v2.1.csv"

# Relative contrasts per compartment: csf, grey matter, white matter, necrosis, enhancing, oedema.
CONTRASTS = {
    "T2": (1.0, 0.55, 0.4, 0.9, 0.6, 0.8),
    "FLAIR": (0.08, 0.55, 0.4, 0.45, 0.65, 0.85),
    "MD": (3.0, 0.8, 0.7, 2.0, 1.1, 1.5),  # 1e-3 mm^2/s
    "FA": (0.05, 0.15, 0.45, 0.08, 0.15, 0.2),
    "rCBV": (0.3, 1.6, 0.8, 0.25, 2.2, 0.9),
    "PSR": (0.95, 0.88, 0.9, 0.85, 0.7, 0.88),
}


def oracle_auc(signal: float) -> float:
    """AUC of an ideal classifier on the two latent properties: Phi(1.5 * signal)."""
    return 0.5 * (1.0 + math.erf(1.5 * signal / math.sqrt(2.0)))


def _template() -> dict[str, np.ndarray]:
    import nibabel as nib
    import nilearn

    folder = Path(nilearn.__file__).parent / "datasets" / "data"
    maps = {}
    for name in ("t1", "gm", "wm"):
        path = folder / f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz"
        if not path.is_file():
            raise GliotlError(f"{path}: MNI152 template missing from the nilearn installation")
        image = nib.Nifti1Image.from_filename(str(path))
        maps[name] = np.asarray(image.dataobj, dtype=np.float32) / 255.0
        maps["affine"] = image.affine
    # one contiguous (1, 3, X, Y, Z) tensor, built once and sampled for every patient
    maps["stack"] = np.stack([maps["t1"], maps["gm"], maps["wm"]])[None]
    return maps


def phantom_affine(shape: tuple[int, int, int]) -> np.ndarray:
    """LPS-stored grid like SRI-24 / BraTS: x and y run right-to-left / anterior-to-posterior."""
    sizes = [fov / n for fov, n in zip(FIELD_OF_VIEW_MM, shape, strict=True)]
    affine = np.diag([-sizes[0], -sizes[1], sizes[2], 1.0])
    # grid centre -> MNI point (0, -18, 12): the brain sits in the middle of the box
    centre = (np.asarray(shape) - 1) / 2.0
    affine[:3, 3] = np.array([0.0, -18.0, 12.0]) - affine[:3, :3] @ centre
    return affine


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: tuple[int, ...],
                  channels: int = 1) -> np.ndarray:
    """Random field smooth at the scale of the coarse grid (trilinear upsampling)."""
    import torch
    import torch.nn.functional as F

    base = torch.from_numpy(rng.standard_normal((1, channels, *coarse)).astype(np.float32))
    out = F.interpolate(base, size=tuple(shape), mode="trilinear", align_corners=True)
    return out[0].numpy()


def _warp_anatomy(template: dict, shape: tuple[int, int, int], rng: np.random.Generator
                  ) -> dict[str, np.ndarray]:
    """Template maps resampled onto the phantom grid through a random scale + smooth warp
    (one batched trilinear ``grid_sample`` for the three maps)."""
    import torch
    import torch.nn.functional as F

    affine = phantom_affine(shape)
    inverse = np.linalg.inv(template["affine"])
    scale = rng.normal(1.0, 0.04, size=3)
    # phantom voxel -> world (scaled about the origin) -> template voxel, as one affine map
    to_template = inverse @ np.diag([*(1.0 / scale), 1.0]) @ affine
    axes = [torch.arange(n, dtype=torch.float32) for n in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)  # (X, Y, Z, 3)
    matrix = torch.from_numpy(to_template[:3, :3].astype(np.float32))
    offset = torch.from_numpy(to_template[:3, 3].astype(np.float32))
    coords = grid @ matrix.T + offset
    del grid
    warp_mm = 4.0 * _smooth_field(rng, shape, (5, 5, 4), channels=3)  # ~4 mm smooth warp
    warp_vox = np.tensordot(inverse[:3, :3].astype(np.float32), warp_mm, axes=1)
    coords += torch.from_numpy(np.moveaxis(warp_vox, 0, -1))
    sizes = torch.tensor(template["t1"].shape, dtype=torch.float32)
    normalised = (2.0 * coords / (sizes - 1.0) - 1.0).flip(-1)  # grid_sample wants (W, H, D)
    stack = torch.from_numpy(template["stack"])
    with torch.no_grad():
        out = F.grid_sample(stack, normalised[None], mode="bilinear", padding_mode="zeros",
                            align_corners=True)[0].numpy()
    return {"t1": out[0], "gm": out[1], "wm": out[2]}


def _tumour(anatomy: dict[str, np.ndarray], shape: tuple[int, int, int], rng: np.random.Generator,
            necrotic_fraction: float) -> np.ndarray:
    """Label map 0 / 1 necrosis / 2 oedema / 4 enhancing, placed in central white matter."""
    sizes = np.array([fov / n for fov, n in zip(FIELD_OF_VIEW_MM, shape, strict=True)])
    brain = anatomy["t1"] > 0.02
    wm = anatomy["wm"] > 0.5
    centre_zone = np.zeros(shape, dtype=bool)
    lo = [int(n * 0.3) for n in shape]
    hi = [int(n * 0.7) for n in shape]
    centre_zone[lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]] = True
    candidates = np.argwhere(wm & centre_zone)
    if len(candidates) == 0:
        candidates = np.argwhere(brain & centre_zone)
    centre = candidates[rng.integers(len(candidates))]
    grids = np.meshgrid(*[(np.arange(n) - c) * s for n, c, s in zip(shape, centre, sizes,
                                                                     strict=True)],
                        indexing="ij", sparse=True)
    dist = np.sqrt(sum(g.astype(np.float32) ** 2 for g in grids))
    bumps = _smooth_field(rng, shape, (6, 6, 5))[0]
    dist = dist / (1.0 + 0.12 * np.clip(bumps, -2.5, 2.5))  # irregular borders
    r_core = rng.uniform(15.0, 25.0)
    r_necrosis = r_core * float(np.clip(necrotic_fraction, 0.02, 0.9)) ** (1.0 / 3.0)
    r_oedema = r_core + rng.uniform(8.0, 18.0)
    labels = np.zeros(shape, dtype=np.uint8)
    labels[(dist < r_oedema) & brain] = 2
    labels[(dist < r_core) & brain] = 4
    labels[(dist < r_necrosis) & brain] = 1
    return labels


def _axial_symmetric(md: np.ndarray, fa: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Axial / radial diffusivity of a cylindrically symmetric tensor with given MD and FA."""
    fa = np.clip(fa, 0.0, 0.95, dtype=np.float32)
    a = np.sqrt(3 * fa**2 / (9 - 6 * fa**2))
    return md * (1 + 2 * a), md * (1 - a)


def _synthesise(anatomy: dict[str, np.ndarray], labels: np.ndarray, enhancement: float,
                rng: np.random.Generator) -> dict[str, np.ndarray]:
    """The 11 modality maps (float32, zero outside the brain)."""
    shape = labels.shape
    brain = anatomy["t1"] > 0.02
    gm, wm = anatomy["gm"], anatomy["wm"]
    csf = np.clip(1.0 - gm - wm, 0.0, 1.0)
    necrosis, rim, oedema = labels == 1, labels == 4, labels == 2
    compartments = (necrosis, rim, oedema)
    texture = _smooth_field(rng, shape, tuple(max(2, n // 8) for n in shape))[0][rim]
    rim_gain = 1.0 + enhancement * (1.0 + (0.1 + 0.25 * enhancement) * texture)

    def mix(values: tuple[float, ...]) -> np.ndarray:
        out = values[0] * csf + values[1] * gm + values[2] * wm
        for mask, value in zip(compartments, values[3:], strict=True):
            out[mask] = value
        return out

    t1 = anatomy["t1"] * np.float32(0.85 / 0.72)
    for mask, value in zip(compartments, (0.3, 0.55, 0.6), strict=True):
        t1[mask] = value
    t1gd = t1.copy()
    t1gd[rim] *= rim_gain
    maps = {"T1": t1, "T1GD": t1gd, "T2": mix(CONTRASTS["T2"]), "FLAIR": mix(CONTRASTS["FLAIR"])}
    md = mix(CONTRASTS["MD"])
    fa = mix(CONTRASTS["FA"])
    ad, rd = _axial_symmetric(md, fa)
    maps.update({"DTI_AD": ad, "DTI_FA": fa, "DTI_RD": rd, "DTI_TR": 3 * md})
    rcbv = mix(CONTRASTS["rCBV"])
    rcbv[rim] *= 1.0 + 0.5 * enhancement * rim_gain
    maps.update({"DSC_ap-rCBV": rcbv, "DSC_PH": 25.0 * rcbv + 5.0,
                 "DSC_PSR": mix(CONTRASTS["PSR"])})
    bias = (1.0 + 0.05 * _smooth_field(rng, shape, (3, 3, 3))[0])[brain]
    reference = brain & (wm > 0.5)
    out = {}
    for name, volume in maps.items():
        values = volume[brain]
        scale = float(np.median(volume[reference])) if reference.any() else 1.0
        noise = rng.standard_normal(values.shape, dtype=np.float32) * np.float32(0.03 * scale)
        result = np.zeros(shape, dtype=np.float32)
        result[brain] = np.maximum(values * bias + noise, 1e-3 * scale)
        out[name] = result
    return out


def _save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    """Atomic .nii.gz write (fast compression: the phantom is mostly about geometry)."""
    import nibabel as nib

    image = nib.Nifti1Image(data, affine)
    image.header.set_xyzt_units("mm")
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    write_bytes(path, gzip.compress(image.to_bytes(), compresslevel=1))


def _structural_int16(volume: np.ndarray) -> np.ndarray:
    return np.clip(np.round(volume * 1000.0), 0, 32767).astype(np.int16)


class _Scan(NamedTuple):
    """One scan to write and what it has."""

    patient_id: str
    has_dti: bool
    has_dsc: bool
    has_expert: bool
    followup: bool
    stale_copy: bool


def image_folder(out: Path, modality_folder: str) -> Path:
    """Where a UPenn image folder sits in the real TCIA tree below the download folder ``out``
    (DTI nested one level deeper, as in the download)."""
    base = out / UPENN_DIR / NIFTI_DIR / modality_folder
    return base / "images_DTI" if modality_folder == "images_DTI" else base


def _skull(shape: tuple[int, int, int], brain: np.ndarray) -> np.ndarray:
    """A fixed shell of bright scalp / bone around the brain (for the unstripped copies)."""
    grids = np.meshgrid(*[np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape],
                        indexing="ij", sparse=True)
    head = sum(g**2 for g in grids) < 0.95
    return np.asarray(head & ~brain)


def _dsc_series(rcbv: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """The 4D DSC perfusion series (baseline, bolus dip deeper where rCBV is higher, recovery):
    TCIA ships it as ``<ID>_DSC.nii.gz`` beside the derived maps; it is not a modality."""
    dip = np.array([0.0, 0.35, 1.0, 0.45, 0.1], dtype=np.float32)
    baseline = np.where(brain, 1000.0, 0.0).astype(np.float32)
    drop = np.clip(0.25 * rcbv, 0.0, 0.8)[..., None] * dip
    return np.round(baseline[..., None] * (1.0 - drop)).astype(np.int16)


def _scan_files(out: Path, scan: _Scan, maps: dict[str, np.ndarray], labels: np.ndarray
                ) -> list[tuple[Path, np.ndarray]]:
    """Every file of one scan in the TCIA tree, with its voxels."""
    pid = scan.patient_id
    brain = maps["T1"] > 0
    files: list[tuple[Path, np.ndarray]] = []
    skull = _skull(labels.shape, brain)
    for modality, (folder, suffix) in UPENN_FILES.items():
        if folder == "images_DTI" and not scan.has_dti or \
                folder == "images_DSC" and not scan.has_dsc:
            continue
        volume = maps[modality]
        folder_path = image_folder(out, folder) / pid
        if folder == "images_structural":
            volume = _structural_int16(volume)
            unstripped = np.where(skull, np.int16(400), volume).astype(np.int16)
            files.append((image_folder(out, "images_structural_unstripped") / pid
                          / f"{pid}_{suffix}_unstripped.nii.gz", unstripped))
            if scan.stale_copy:  # a stale, mis-registered copy, as TCIA keeps for a few IDs
                files.append((folder_path / "old" / f"{pid}_{suffix}.nii.gz",
                              np.ascontiguousarray(volume[::-1])))
        files.append((folder_path / f"{pid}_{suffix}.nii.gz", volume))
    if scan.has_dsc:
        files.append((image_folder(out, "images_DSC") / pid / f"{pid}_DSC.nii.gz",
                      _dsc_series(maps["DSC_ap-rCBV"], brain)))
    if not scan.followup:  # TCIA's automated segmentations cover the pre-operative scans
        files.append((image_folder(out, "automated_segm")
                      / f"{pid}_automated_approx_segm.nii.gz", labels))
    if scan.has_expert:
        files.append((image_folder(out, "images_segm") / f"{pid}_segm.nii.gz", labels))
    return files


def _write_patient(out: Path, scan: _Scan, shape: tuple[int, int, int],
                   rng: np.random.Generator, template: dict, necrotic_fraction: float,
                   enhancement: float) -> None:
    affine = phantom_affine(shape)
    anatomy = _warp_anatomy(template, shape, rng)
    labels = _tumour(anatomy, shape, rng, necrotic_fraction)
    maps = _synthesise(anatomy, labels, enhancement, rng)
    files = _scan_files(out, scan, maps, labels)
    # gzip compression releases the GIL: write the files in parallel threads
    with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        for future in [pool.submit(_save_nifti, path, data, affine) for path, data in files]:
            future.result()


def _check_arguments(n_patients: int, shape: tuple[int, ...], signal: float,
                     fractions: dict[str, float]) -> tuple[int, int, int]:
    """Refuse impossible cohort settings; returns the shape as three ints."""
    if n_patients < 1:
        raise GliotlError(f"--patients must be >= 1, got {n_patients}")
    shape = tuple(int(n) for n in shape)
    if len(shape) != 3 or min(shape) < 16:
        raise GliotlError(f"shape must be three sizes >= 16 (x, y, z), got {shape}")
    for name, value in fractions.items():
        if not 0.0 <= value <= 1.0:
            raise GliotlError(f"{name} must be in [0, 1], got {value}")
    if fractions["indeterminate_fraction"] + fractions["not_available_fraction"] > 1.0:
        raise GliotlError("indeterminate_fraction + not_available_fraction must be <= 1")
    if signal < 0:
        raise GliotlError(f"signal must be >= 0, got {signal}")
    return shape


def _draw_status(rng: np.random.Generator, n_patients: int, fractions: dict[str, float]
                 ) -> list[str]:
    """MGMT label per patient: exact counts per status, then a random assignment to patients."""
    n_ind = int(round(n_patients * fractions["indeterminate_fraction"]))
    n_na = int(round(n_patients * fractions["not_available_fraction"]))
    n_lab = n_patients - n_ind - n_na
    n_meth = int(round(n_lab * METHYLATED_FRACTION))
    if n_lab >= 2:
        n_meth = min(max(n_meth, 1), n_lab - 1)
    status = (["Methylated"] * n_meth + ["Unmethylated"] * (n_lab - n_meth)
              + ["Indeterminate"] * n_ind + ["Not Available"] * n_na)
    return [status[i] for i in rng.permutation(n_patients)]


def _draw_subset(rng: np.random.Generator, n_patients: int, fraction: float) -> set[int]:
    """A random ``fraction`` of the patients (rounded)."""
    return set(rng.permutation(n_patients)[: int(round(n_patients * fraction))])


def _draw_followups(rng: np.random.Generator, n_patients: int, fraction: float) -> set[int]:
    """Patients with a follow-up scan: at least one whenever ``fraction`` is not zero."""
    n_follow = max(1, int(round(n_patients * fraction))) if fraction else 0
    return set(rng.permutation(n_patients)[:n_follow])


def _phenotype(prng: np.random.Generator, mgmt: str, signal: float) -> tuple[int, float, float]:
    """Hidden label (random for unlabelled patients), necrotic fraction and enhancement."""
    hidden = {"Methylated": 1, "Unmethylated": 0}.get(mgmt, int(prng.integers(2)))
    sign = 1.0 if hidden == 1 else -1.0
    necrotic = prng.normal(NECROSIS_MEAN - SHIFT_SD * signal * NECROSIS_SD * sign,
                           NECROSIS_SD)
    enhance = prng.normal(ENHANCE_MEAN + SHIFT_SD * signal * ENHANCE_SD * sign, ENHANCE_SD)
    return hidden, float(np.clip(necrotic, 0.02, 0.9)), float(np.clip(enhance, 0.05, 2))


def _clinical_row(prng: np.random.Generator, patient_id: str, mgmt: str) -> dict[str, object]:
    """One row of the clinical table, in UPenn-GBM's columns."""
    return {
        "ID": patient_id,
        "Gender": "M" if prng.random() < 0.6 else "F",
        "Age_at_scan_years": round(float(prng.normal(63, 11)), 2),
        "Survival_from_surgery_days_UPDATED": int(prng.integers(30, 1500)),
        "Survival_Status": "Deceased" if prng.random() < 0.8 else "Alive",
        "Survival_Censor": "",
        "IDH1": "Wildtype",
        "MGMT": mgmt,
        "KPS": int(prng.choice([70, 80, 90, 100])),
        "GTR_over90percent": "Y" if prng.random() < 0.5 else "N",
        "PsP_TP_score": "",
    }


class _Plan(NamedTuple):
    """What the cohort-level draws decided for every patient."""

    status: list[str]
    no_dti: set[int]
    no_dsc: set[int]
    expert: set[int]
    followups: set[int]


def _write_case(out: Path, index: int, seed: int, shape: tuple[int, int, int], signal: float,
                template: dict, plan: _Plan) -> tuple[list[dict], list[dict]]:
    """Write one patient's scans (pre-operative, maybe a follow-up); their truth, clinical rows."""
    prng = np.random.default_rng([seed, 1, index])
    mgmt = plan.status[index]
    hidden, necrotic, enhance = _phenotype(prng, mgmt, signal)
    has_dti, has_dsc, has_expert = (index not in plan.no_dti, index not in plan.no_dsc,
                                    index in plan.expert)
    base = f"UPENN-GBM-{index + 1:05d}"
    scans = [(f"{base}_11", False)] + ([(f"{base}_21", True)] if index in plan.followups else [])
    truth, clinical = [], []
    for patient_id, is_followup in scans:
        scan = _Scan(patient_id, has_dti, has_dsc, has_expert, is_followup,
                     stale_copy=index == 0 and not is_followup)
        _write_patient(out, scan, shape, prng, template, necrotic, enhance)
        truth.append({
            "patient_id": patient_id, "MGMT": mgmt, "hidden_label": hidden,
            "necrotic_fraction": necrotic, "enhancement": enhance,
            "has_dti": has_dti, "has_dsc": has_dsc,
            "has_expert_segm": has_expert, "followup": is_followup,
        })
        clinical.append(_clinical_row(prng, patient_id, mgmt))
    return truth, clinical


def make_phantom_cohort(  # noqa: PLR0913  (keyword options of the phantom generator's API)
    out: str | Path,
    n_patients: int,
    shape: tuple[int, int, int] = FULL_SHAPE,
    signal: float = 1.0,
    seed: int = 0,
    missing_dti_fraction: float = 0.25,
    missing_dsc_fraction: float = 0.2,
    indeterminate_fraction: float = 0.1,
    not_available_fraction: float = 0.1,
    followup_fraction: float = 0.05,
    expert_fraction: float = 0.3,
    progress: bool = False,
    resume: bool = False,
) -> pd.DataFrame:
    """Write a phantom UPenn-GBM cohort of ``n_patients`` pre-operative patients into ``out``
    as TCIA's download unpacks (see the module docstring); returns the truth table (also
    written as ``phantom_truth.csv``). Deterministic for a given seed. ``out`` must be new or
    empty, so nothing of the user's is mixed in or overwritten; ``resume`` completes an
    interrupted generation instead (the files are rewritten identically)."""
    fractions = {"missing_dti_fraction": missing_dti_fraction,
                 "missing_dsc_fraction": missing_dsc_fraction,
                 "indeterminate_fraction": indeterminate_fraction,
                 "not_available_fraction": not_available_fraction,
                 "followup_fraction": followup_fraction,
                 "expert_fraction": expert_fraction}
    shape = _check_arguments(n_patients, shape, signal, fractions)
    out = Path(out)
    if not resume and out.is_dir() and any(out.iterdir()):
        raise input_error(out, None, "folder is not empty; the phantom is written only into a "
                                     "new or empty folder")
    if out.exists() and not out.is_dir():
        raise input_error(out, None, "not a folder")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 0])
    # one generator, drawn in this order: status, DTI, DSC, expert segmentation, follow-ups
    status = _draw_status(rng, n_patients, fractions)
    no_dti = _draw_subset(rng, n_patients, missing_dti_fraction)
    no_dsc = _draw_subset(rng, n_patients, missing_dsc_fraction)
    expert = _draw_subset(rng, n_patients, expert_fraction)
    plan = _Plan(status, no_dti, no_dsc, expert,
                 _draw_followups(rng, n_patients, followup_fraction))

    template = _template()
    truth, clinical = [], []
    for index in range(n_patients):
        rows, clinical_rows = _write_case(out, index, seed, shape, signal, template, plan)
        truth += rows
        clinical += clinical_rows
        if progress:
            print(f"phantom patient {index + 1}/{n_patients}", flush=True)
    truth_frame = pd.DataFrame(truth)
    write_csv(out / "phantom_truth.csv", truth_frame)
    _write_side_tables(out, truth_frame)
    write_csv(out / CLINICAL_NAME, pd.DataFrame(clinical))  # last: marks a complete phantom
    return truth_frame


def _write_side_tables(out: Path, truth: pd.DataFrame) -> None:
    """The other CSVs TCIA puts beside ``UPENN-GBM/`` (acquisition, data availability)."""
    ids = truth["patient_id"]
    write_csv(out / "UPENN-GBM_acquisition.csv", pd.DataFrame({
        "ID": ids, "Scanner": "phantom", "Field_strength_T": 3.0, "Voxel_size_mm": "1x1x1"}))

    def flag(values: pd.Series) -> list[str]:
        return ["available" if v else "not available" for v in values]

    write_csv(out / "UPENN-GBM_data_availability.csv", pd.DataFrame({
        "ID": ids, "Structural": flag(pd.Series(True, index=ids.index)),
        "DTI": flag(truth["has_dti"]), "DSC": flag(truth["has_dsc"]),
        "Automated_segm": flag(~truth["followup"]),
        "Expert_segm": flag(truth["has_expert_segm"])}))
