"""Modality names shared by readers, preprocessing, datasets and experiments.

Names follow UPenn-GBM's file suffixes. RSNA-MICCAI / BraTS 2021 scans map onto the four
structural names: T1w -> T1, T1wCE -> T1GD, T2w -> T2, FLAIR -> FLAIR (file suffixes t1, t1ce,
t2, flair), so a model trained on one cohort addresses the same channel names on the other.
"""

from __future__ import annotations

MODALITIES: tuple[str, ...] = (
    "T1",
    "T1GD",
    "T2",
    "FLAIR",
    "DTI_AD",
    "DTI_FA",
    "DTI_RD",
    "DTI_TR",
    "DSC_ap-rCBV",
    "DSC_PH",
    "DSC_PSR",
)

MODALITY_GROUPS: dict[str, tuple[str, ...]] = {
    "struct": MODALITIES[:4],
    "dti": MODALITIES[4:8],
    "dsc": MODALITIES[8:],
}

# RSNA-MICCAI 2021 series names and BraTS 2021 file suffixes -> gliotl modality names.
RSNA_MODALITIES: dict[str, str] = {"T1w": "T1", "T1wCE": "T1GD", "T2w": "T2", "FLAIR": "FLAIR"}
BRATS_SUFFIXES: dict[str, str] = {"T1": "t1", "T1GD": "t1ce", "T2": "t2", "FLAIR": "flair"}

# UPenn-GBM: modality -> (folder, file suffix after "<ID>_").
UPENN_FILES: dict[str, tuple[str, str]] = {
    **{m: ("images_structural", m) for m in MODALITY_GROUPS["struct"]},
    **{m: ("images_DTI", m) for m in MODALITY_GROUPS["dti"]},
    **{m: ("images_DSC", m) for m in MODALITY_GROUPS["dsc"]},
}


def resolve_modalities(names: list[str] | tuple[str, ...] | str) -> list[str]:
    """Expand group names ("struct", "dti", "dsc", "all") and RSNA aliases into modality names,
    in canonical order, so configs can say `modalities: [struct, dsc]`."""
    from gliotl.errors import GliotlError

    if isinstance(names, str):
        names = [names]
    chosen: set[str] = set()
    for name in names:
        if name == "all":
            chosen.update(MODALITIES)
        elif name in MODALITY_GROUPS:
            chosen.update(MODALITY_GROUPS[name])
        elif name in RSNA_MODALITIES:
            chosen.add(RSNA_MODALITIES[name])
        elif name in MODALITIES:
            chosen.add(name)
        else:
            raise GliotlError(
                f"unknown modality '{name}': expected one of {', '.join(MODALITIES)}, "
                f"a group ({', '.join(MODALITY_GROUPS)}) or 'all'"
            )
    return [m for m in MODALITIES if m in chosen]
