"""Camera-aware neighbourhoods for pseudo-labelling.

On few-camera data the nearest neighbours of an image are mostly images of the *same camera*
(background, light, viewpoint), so the k-reciprocal sets and DBSCAN group by camera. Removing each
camera's feature statistics before the k-NN step is the idea of camera-based batch normalisation
(Zhuang et al., "Rethinking the Distribution Gap of Person Re-identification with Camera-based
Batch Normalization", ECCV 2020, Sec. 3.2: normalise each camera's samples with that camera's own
mean and variance). Here it is applied to the extracted features of the pseudo-labelling step only
(the network itself is unchanged): ``f' = normalize((f - mu_c) / sigma_c)``.

Camera ids are free metadata in unsupervised re-ID; identities are never used.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor


def camera_standardize(features: Tensor, camids: np.ndarray | Tensor, eps: float = 1e-6) -> Tensor:
    """Standardise features per camera, then L2-normalise.

    Args:
        features: ``(N, d) float`` features (any norm).
        camids: ``(N,) int`` camera ids.
        eps: added to the per-dimension standard deviation.

    Returns:
        ``(N, d) float32`` L2-normalised features where each camera's samples have zero mean and
        unit variance per dimension before the final normalisation. A camera with a single image has
        no statistics to remove (its mean is the image itself): its feature is kept, only normalised.

    Raises:
        ValueError: ``camids`` length differs from ``features``.
    """
    f = torch.as_tensor(features, dtype=torch.float32)
    cams = torch.as_tensor(np.asarray(camids), dtype=torch.long, device=f.device)
    if cams.shape[0] != f.shape[0]:
        raise ValueError(f"camids has {cams.shape[0]} entries for {f.shape[0]} features")
    out = torch.empty_like(f)
    for c in torch.unique(cams):
        idx = cams == c
        x = f[idx]
        if x.shape[0] > 1:
            x = (x - x.mean(0, keepdim=True)) / (x.std(0, keepdim=True) + eps)
        out[idx] = x
    return F.normalize(out, dim=1)
