"""A torch Dataset streaming preprocessed volumes from the cache, with seeded augmentation.

Volumes are memory-mapped from the cache and copied only for the item being returned, so memory
does not grow with the cohort. Augmentation (training only) draws its randomness from
``derive_seed(seed, epoch, index)``: the same (seed, epoch, index) always gives the same tensor,
whatever the DataLoader worker or order. Evaluation datasets pass ``augment=None``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gliotl.core.config import StrictModel
from gliotl.core.seeding import derive_seed
from gliotl.errors import GliotlError
from gliotl.mgmt.data.cache import VolumeCache, _row_dict
from gliotl.mgmt.data.cohort import Cohort

try:  # torch is a hard dependency, but keep import errors readable
    from torch.utils.data import Dataset
except ImportError:  # pragma: no cover
    Dataset = object  # type: ignore[misc,assignment]


class AugmentConfig(StrictModel):
    """On-the-fly training augmentation (MONAI Rand* transforms); one spatial draw per item is
    shared by all channels so modalities stay aligned."""

    flip_prob: float = 0.5  # per axis
    rotation_degrees: float = 10.0
    rotation_prob: float = 0.5
    noise_std: float = 0.05
    noise_prob: float = 0.5
    elastic: bool = False
    elastic_prob: float = 0.3
    elastic_sigma: tuple[float, float] = (5.0, 8.0)
    elastic_magnitude: tuple[float, float] = (50.0, 100.0)

    def build(self) -> Any:
        import math

        from monai.transforms import (
            Compose,
            Rand3DElastic,
            RandFlip,
            RandGaussianNoise,
            RandRotate,
        )

        rad = math.radians(self.rotation_degrees)
        steps: list[Any] = [RandFlip(prob=self.flip_prob, spatial_axis=a) for a in range(3)]
        if self.rotation_degrees > 0:
            steps.append(RandRotate(range_x=rad, range_y=rad, range_z=rad,
                                    prob=self.rotation_prob, keep_size=True,
                                    padding_mode="zeros"))
        if self.elastic:
            steps.append(Rand3DElastic(sigma_range=self.elastic_sigma,
                                       magnitude_range=self.elastic_magnitude,
                                       prob=self.elastic_prob, padding_mode="zeros"))
        if self.noise_std > 0:
            steps.append(RandGaussianNoise(prob=self.noise_prob, std=self.noise_std))
        return Compose(steps)


class MRIDataset(Dataset):
    """Items are (float32 tensor [C, D, H, W], float label) for the chosen modalities.

    ``resident`` (a torch device) reads every volume once, as the cache stores it (float16),
    into one tensor on that device; items are then sliced from it and augmented there, with
    no disk read or host-to-device copy per batch. The values are the streamed ones (float16
    to float32 is exact); on the CPU the items are bit-identical, on a GPU the augmentation's
    interpolation rounds as the GPU's kernels do.
    """

    def __init__(
        self,
        cohort: Cohort,
        modalities: list[str],
        cache: VolumeCache,
        patient_ids: list[str] | None = None,
        augment: AugmentConfig | None = None,
        seed: int = 0,
        resident: Any = None,
    ) -> None:
        if not modalities:
            raise GliotlError("MRIDataset needs at least one modality")
        eligible = set(cohort.patients_with(modalities))
        if patient_ids is None:
            patient_ids = [p for p in cohort.patient_ids if p in eligible]
        lacking = [p for p in patient_ids if p not in eligible]
        if lacking:
            raise GliotlError(
                f"patient {lacking[0]} lacks one of {modalities} (or is not in the cohort); "
                "choose patients with cohort.patients_with(modalities)"
            )
        rows = {r["patient_id"]: _row_dict(r) for _, r in cohort.table.iterrows()}
        self.modalities = list(modalities)
        self.patient_ids = list(patient_ids)
        self.labels = np.array([float(rows[p]["label"]) for p in self.patient_ids])
        # keys are computed once (file stats) so __getitem__ only touches the cache files
        self._keys = [[cache.key(rows[p], m) for m in self.modalities] for p in self.patient_ids]
        self.cache = cache
        self.augment = augment
        self.seed = seed
        self.epoch = 0
        self._transform = augment.build() if augment is not None else None
        self.resident = None if resident is None else self._load_resident(resident)

    def _load_resident(self, device: Any) -> Any:
        """Every item's volumes, float16 as cached, in one [N, C, D, H, W] tensor on ``device``."""
        import torch

        if not self._keys:
            return torch.zeros((0, len(self.modalities)), dtype=torch.float16, device=device)
        first = self.cache.load_key(self._keys[0][0])
        out = torch.empty((len(self._keys), len(self.modalities), *first.shape),
                          dtype=torch.float16, device=device)
        for index, keys in enumerate(self._keys):
            for channel, key in enumerate(keys):
                volume = self.cache.load_key(key)
                if volume.shape != first.shape:
                    raise GliotlError(
                        f"{self.cache.path_for_key(key)}: volume shape {volume.shape}, expected "
                        f"{first.shape} like the rest of the cohort; re-run `gliotl mgmt prepare`")
                out[index, channel].copy_(torch.from_numpy(np.array(volume, np.float16)))
                del volume
        return out

    @property
    def resident_on_cuda(self) -> bool:
        """Whether items live on a GPU (DataLoader workers and pinned memory cannot serve them)."""
        return self.resident is not None and self.resident.device.type == "cuda"

    def set_epoch(self, epoch: int) -> None:
        """Call once per training epoch so each epoch sees different (but seeded) augmentations."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.patient_ids)

    def __getitem__(self, index: int) -> tuple[Any, float]:
        import torch

        if self.resident is not None:
            tensor = self.resident[index].float()
        else:
            volumes = [self.cache.load_key(key) for key in self._keys[index]]
            array = np.stack([np.asarray(v, dtype=np.float32) for v in volumes])
            del volumes  # release the memory maps
            tensor = torch.from_numpy(array)
        if self._transform is not None:
            self._transform.set_random_state(seed=derive_seed(self.seed, self.epoch, index))
            tensor = torch.as_tensor(self._transform(tensor), dtype=torch.float32)
            tensor = tensor.as_subclass(torch.Tensor).contiguous()
        return tensor, float(self.labels[index])
