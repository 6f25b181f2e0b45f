"""Camera-aware proxy memory and its intra- / inter-camera contrastive losses.

Wang et al., "Camera-aware Proxies for Unsupervised Person Re-Identification", AAAI 2021 (CAP),
Sec. 3.2-3.4; reference code Terminator8758/CAP-master ``reid/loss/CamAwareMemory.py`` and
``train_cap.py`` (read to learn; behaviour reproduced, not copied).

Every pseudo-identity (cluster) is split into one **proxy** per camera that sees it; the memory
holds one L2-normalised vector per proxy, initialised from the proxy's mean feature each epoch
(CAP ``img_association(..., intra_id_reinitialize=True)``) and momentum-updated per sample.

* Intra-camera loss (CAP eq. 4): for a sample ``i`` of camera ``c`` with proxy ``y_i``,
  ``-log softmax_{k in proxies of c}(m_k . f_i / tau)[y_i]``, averaged over the batch samples of
  camera ``c`` and **summed over cameras** (as the reference does).
* Inter-camera loss (CAP eq. 5-6): positives ``P_i`` = every proxy of the same cluster (all
  cameras), negatives ``Q_i`` = the ``num_hard_negatives`` proxies of other clusters most similar to
  ``f_i``; ``-1/|P_i| sum_{p in P_i} log( exp(s_p) / sum_{k in P_i u Q_i} exp(s_k) )`` with
  ``s = m . f / tau``; averaged per camera, summed over cameras, weighted by ``inter_weight``.

Defaults from the reference ``train_cap.py`` / ``CamAwareMemory.py``: tau (``--inv_beta``) 0.07,
momentum (``--inv_alpha``) 0.2, 50 hard negatives (``bg_knn``), inter weight 0.5, inter loss from
epoch 5 (``crosscam_epoch``).

* Online association loss (O2CAP: Wang et al., "Offline-Online Associated Camera-Aware Proxies for
  Unsupervised Person Re-Identification", IEEE TIP 2022, its online association loss; the behaviour
  follows the reference code Terminator8758/O2CAP
  ``reid/models/o2cap.py::get_proxy_cam_wise_nn_enhance_loss``, read to learn):
  for a sample ``i`` with proxy ``y_i``, score every proxy ``k`` by
  ``sigma_k = w * (f_i . m_k) + (1 - w) * (m_{y_i} . m_k)`` (``balance_w`` w = 0.15). Take the
  best-scoring proxy of every camera, keep the ``posK`` = 3 best of those as positives (the sample's
  own proxy is normally among them), and the ``bg_knn`` = 50 best-scoring other proxies as negatives;
  the loss is ``-1/posK sum_{p in pos} log( exp(s_p) / sum_{k in pos u neg} exp(s_k) )``,
  ``s = m . f / tau``, averaged per camera and summed over cameras (as the reference does).
  Positives and negatives are chosen without gradient (the reference works on detached copies).
  Deviation, named: with fewer cameras than ``posK`` the reference still spreads its soft target
  over ``posK`` slots, so the last slot falls on the hardest *negative*; here ``posK`` is capped at
  the number of cameras that hold proxies.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from unreid.memory.base import Memory, MemoryContext


def camera_proxies(labels: np.ndarray | Tensor, camids: np.ndarray | Tensor
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Split pseudo-identities into camera-aware proxies: one per (pseudo-label, camera) pair seen.

    CAP (Wang et al., AAAI 2021, Sec. 3.2; Terminator8758/CAP-master ``train_cap.py``, the
    "accumulated" proxy labels). The one definition of the proxy numbering in unreid: the proxy
    memory and the proxy sampler (``unreid.data.samplers.ProxySampler``) both use it.

    Args:
        labels: ``(N,) int`` pseudo-labels, ``-1`` = outlier (gets no proxy).
        camids: ``(N,) int`` camera ids, ``>= 0`` (free metadata; never identities).

    Returns:
        ``(sample_proxy, proxy_label, proxy_cam)``: ``(N,) int64`` proxy of each sample (``-1`` for
        outliers), and ``(P,) int64`` pseudo-label and camera of each proxy. Proxies are numbered in
        increasing (label, camera) order.

    Raises:
        ValueError: ``labels`` and ``camids`` not 1-D of equal length.
    """
    labels = np.asarray(labels, dtype=np.int64)
    cams = np.asarray(camids, dtype=np.int64)
    if labels.ndim != 1 or cams.shape != labels.shape:
        raise ValueError(f"labels {labels.shape} and camids {cams.shape} must be 1-D of equal length")
    keep = labels >= 0
    num_cams = int(cams.max()) + 1 if cams.size else 1
    uniq, inv = np.unique(labels[keep] * num_cams + cams[keep], return_inverse=True)
    sample_proxy = np.full(len(labels), -1, dtype=np.int64)
    sample_proxy[keep] = inv.reshape(-1)
    return sample_proxy, uniq // num_cams, uniq % num_cams


class CameraProxyMemory:
    """One memory slot per (pseudo-identity, camera) proxy.

    Args:
        temperature: tau of both losses (CAP: 0.07).
        momentum: per-sample update rate ``m <- mu*m + (1-mu)*f`` then renormalise (CAP: 0.2).
        num_hard_negatives: hard negative proxies of the inter-camera loss (CAP ``bg_knn``: 50).
        inter_weight: weight of the inter-camera loss (CAP: 0.5; O2CAP code: 1).
        device: where the memory lives.
        intra_weight: weight of the intra-camera loss (CAP: 1; the O2CAP code leaves it out: 0).
        online_weight: weight of O2CAP's online association loss (0 = off, CAP; O2CAP code: 1).
        online_balance: ``w`` of the online association score (O2CAP ``balance_w`` 0.15).
        online_positives: ``posK``, positive proxies of the online loss (O2CAP ``posK`` 3), capped
            at the number of cameras.

    Raises:
        ValueError: temperature <= 0, momentum outside [0, 1), a negative weight, ``online_balance``
            outside [0, 1] or ``online_positives`` < 1.
    """

    def __init__(self, temperature: float = 0.07, momentum: float = 0.2, num_hard_negatives: int = 50,
                 inter_weight: float = 0.5, device: torch.device | str = "cpu", intra_weight: float = 1.0,
                 online_weight: float = 0.0, online_balance: float = 0.15, online_positives: int = 3) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        if min(inter_weight, intra_weight, online_weight) < 0:
            raise ValueError(f"loss weights must be >= 0, got intra {intra_weight}, inter {inter_weight}, "
                             f"online {online_weight}")
        if not 0.0 <= online_balance <= 1.0:
            raise ValueError(f"online_balance must be in [0, 1], got {online_balance}")
        if online_positives < 1:
            raise ValueError(f"online_positives must be >= 1, got {online_positives}")
        self.intra_weight = intra_weight
        self.online_weight = online_weight
        self.online_balance = online_balance
        self.online_positives = online_positives
        self.temperature = temperature
        self.momentum = momentum
        self.num_hard_negatives = num_hard_negatives
        self.inter_weight = inter_weight
        self.device = torch.device(device)
        self.memory = torch.zeros(0, 0, device=self.device)
        self.proxy_label = torch.zeros(0, dtype=torch.long, device=self.device)
        self.proxy_cam = torch.zeros(0, dtype=torch.long, device=self.device)
        self.sample_proxy = torch.zeros(0, dtype=torch.long, device=self.device)

    @property
    def num_proxies(self) -> int:
        return int(self.memory.shape[0])

    def build(self, features: Tensor, labels: np.ndarray | Tensor, camids: np.ndarray | Tensor) -> None:
        """Create the proxies of this epoch and initialise them from mean features.

        Args:
            features: ``(N, d) float``; L2-normalised or not (rows are normalised here).
            labels: ``(N,) int`` pseudo-labels, ``-1`` = outlier (gets no proxy).
            camids: ``(N,) int`` camera ids (free metadata; never identities).

        Proxies are ordered by (label, camera) (:func:`camera_proxies`). ``sample_proxy`` maps each
        sample to its proxy (``-1`` for outliers).
        """
        labels, cams = np.asarray(labels), np.asarray(camids)
        feats = F.normalize(torch.as_tensor(features, dtype=torch.float32).cpu(), dim=1)
        if labels.shape[0] != feats.shape[0] or cams.shape[0] != feats.shape[0]:
            raise ValueError(f"features {tuple(feats.shape)}, labels {tuple(labels.shape)} and camids "
                             f"{tuple(cams.shape)} must have the same length")
        sample_proxy, proxy_label, proxy_cam = (torch.from_numpy(a) for a in camera_proxies(labels, cams))
        keep = sample_proxy >= 0
        sums = torch.zeros(len(proxy_label), feats.shape[1]).index_add_(0, sample_proxy[keep], feats[keep])
        self.memory = F.normalize(sums, dim=1).to(self.device)
        self.proxy_label = proxy_label.to(self.device)
        self.proxy_cam = proxy_cam.to(self.device)
        self.sample_proxy = sample_proxy.to(self.device)

    def losses(self, features: Tensor, indices: Tensor, use_inter: bool = True) -> dict[str, Tensor]:
        """Intra- and inter-camera losses of a batch.

        Args:
            features: ``(B, d)`` model outputs (normalised here; gradients flow to them only).
            indices: ``(B,) int64`` dataset indices of the batch (clustered samples only).
            use_inter: add the cross-camera terms, inter-camera and (when ``online_weight`` > 0)
                online association (CAP switches the former on from ``crosscam_epoch``).

        Returns:
            ``{"intra_camera": scalar, "inter_camera": scalar, "online_camera": scalar}``, each
            already weighted (``intra_weight``, ``inter_weight``, ``online_weight``); the last two are
            zero when ``use_inter`` is false.

        Raises:
            ValueError: a batch sample is an outlier (has no proxy).
        """
        proxy = self.sample_proxy[indices.to(self.device)]
        if (proxy < 0).any():
            raise ValueError("a batch holds outliers (no proxy); the sampler must leave them out")
        f = F.normalize(features.float(), dim=1)
        logits = f @ self.memory.t() / self.temperature  # (B, P)
        cam = self.proxy_cam[proxy]
        label = self.proxy_label[proxy]
        # intra-camera: softmax over the proxies of the sample's own camera
        same_cam = self.proxy_cam.unsqueeze(0) == cam.unsqueeze(1)
        intra_each = -(logits[torch.arange(len(f)), proxy] - torch.logsumexp(
            logits.masked_fill(~same_cam, float("-inf")), dim=1))
        intra = self.intra_weight * _per_camera_mean_sum(intra_each, cam)
        inter = logits.new_zeros(())
        online = logits.new_zeros(())
        if use_inter:
            if self.online_weight > 0:
                online = self.online_weight * _per_camera_mean_sum(self._online_each(f, logits, proxy), cam)
            pos = self.proxy_label.unsqueeze(0) == label.unsqueeze(1)  # (B, P)
            neg_logits = logits.masked_fill(pos, float("-inf"))  # -inf entries add exp(-inf) = 0
            k = min(self.num_hard_negatives, int((~pos).sum(1).max()))
            denom_terms = [logits.masked_fill(~pos, float("-inf"))]
            if k > 0:
                hard = neg_logits.detach().topk(k, dim=1).indices
                denom_terms.append(neg_logits.gather(1, hard))
            lse = torch.logsumexp(torch.cat(denom_terms, dim=1), dim=1)
            pos_mean = (logits * pos).sum(1) / pos.sum(1)
            inter = self.inter_weight * _per_camera_mean_sum(lse - pos_mean, cam)
        return {"intra_camera": intra, "inter_camera": inter, "online_camera": online}

    def _online_each(self, f: Tensor, logits: Tensor, proxy: Tensor) -> Tensor:
        """O2CAP's online association loss of each sample ``(B,)`` (see the module docstring)."""
        with torch.no_grad():
            mem = self.memory
            score = (self.online_balance * (f.detach() @ mem.t())
                     + (1.0 - self.online_balance) * (mem[proxy] @ mem.t()))  # (B, P)
            cams = torch.unique(self.proxy_cam)
            cam_masks = self.proxy_cam.unsqueeze(0) == cams.unsqueeze(1)  # (C, P)
            per_cam = score.unsqueeze(1).masked_fill(~cam_masks.unsqueeze(0), float("-inf"))  # (B, C, P)
            cam_best_score, cam_best = per_cam.max(dim=2)  # (B, C): best proxy of every camera
            n_pos = min(self.online_positives, len(cams))
            pos = cam_best.gather(1, cam_best_score.topk(n_pos, dim=1).indices)  # (B, n_pos)
            neg_score = score.scatter(1, pos, float("-inf"))
            n_neg = min(self.num_hard_negatives, self.num_proxies - n_pos)
            neg = neg_score.topk(n_neg, dim=1).indices if n_neg > 0 else pos[:, :0]
        pos_logits = logits.gather(1, pos)
        lse = torch.logsumexp(torch.cat([pos_logits, logits.gather(1, neg)], dim=1), dim=1)
        return lse - pos_logits.mean(1)

    @torch.no_grad()
    def update(self, features: Tensor, indices: Tensor) -> None:
        """Per-sample momentum update in batch order (CAP ``ExemplarMemory.backward``), vectorised
        across proxies: ``m_y <- mu*m_y + (1-mu)*f``, ``m_y <- m_y/||m_y||``."""
        from unreid.memory.cluster import sequential_momentum_update

        proxy = self.sample_proxy[indices.to(self.device)]
        f = F.normalize(features.detach().float().to(self.device), dim=1)
        sequential_momentum_update(self.memory, f, proxy, self.momentum)

    def report(self) -> dict[str, Any]:
        """Proxy counts for the epoch's pseudo-label report."""
        if self.num_proxies == 0:
            return {"num_proxies": 0}
        per_cluster = torch.bincount(self.proxy_label)
        per_cluster = per_cluster[per_cluster > 0]
        return {"num_proxies": self.num_proxies,
                "proxies_per_cluster": round(float(per_cluster.float().mean()), 3),
                "proxies_per_camera": {int(c): int(n) for c, n in
                                       zip(*torch.unique(self.proxy_cam, return_counts=True), strict=True)}}

    def state_dict(self) -> dict[str, Tensor]:
        return {"memory": self.memory.cpu(), "proxy_label": self.proxy_label.cpu(),
                "proxy_cam": self.proxy_cam.cpu(), "sample_proxy": self.sample_proxy.cpu()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        for k in ("memory", "proxy_label", "proxy_cam", "sample_proxy"):
            setattr(self, k, state[k].to(self.device))


def _per_camera_mean_sum(values: Tensor, cams: Tensor) -> Tensor:
    """Mean of ``values`` within each camera present, summed over cameras (CAP's reduction)."""
    uniq, inv = torch.unique(cams, return_inverse=True)
    sums = values.new_zeros(len(uniq)).index_add(0, inv, values)
    counts = torch.bincount(inv, minlength=len(uniq)).to(values.dtype)
    return (sums / counts).sum()


class CameraProxyBank(Memory):
    """The camera-aware proxies as an engine memory: usable by any method (``method.camera.proxies``).

    Wraps :class:`CameraProxyMemory` (CAP, Wang et al. AAAI 2021; O2CAP's online association as an
    option). Built every epoch from the ``"global"`` features, the pseudo-labels and the camera ids
    (:meth:`CameraProxyMemory.build`); its losses (:meth:`CameraProxyMemory.losses` with the batch's
    ``outputs["features"]`` ``(B, d)`` and ``batch["index"]``) are **added to the method's loss**
    (:attr:`auxiliary`), the method's own loss weighted by ``method_loss_weight``; the cross-camera terms
    start at ``inter_start_epoch`` (CAP ``crosscam_epoch``). Updated after the optimiser step with the
    same features.

    Args:
        cam: the ``method.camera`` config (``unreid.config.CameraConfig``).
        device: where the proxies live.
    """

    auxiliary = True

    def __init__(self, cam: Any, device: torch.device | str = "cpu") -> None:
        self.cam = cam
        self.own_loss_weight = float(cam.method_loss_weight)
        self.proxies = CameraProxyMemory(cam.proxy_temperature, cam.proxy_momentum, cam.hard_negatives,
                                         cam.inter_weight, device=device, intra_weight=cam.intra_weight,
                                         online_weight=cam.online_weight, online_balance=cam.online_balance,
                                         online_positives=cam.online_positives)

    def build(self, features: dict[str, Tensor], labels: Any, ctx: MemoryContext) -> None:
        self.proxies.build(features["global"], labels.labels, ctx.camids)

    def losses(self, outputs: dict[str, Tensor], batch: dict[str, Tensor], epoch: int) -> dict[str, Tensor]:
        return self.proxies.losses(outputs["features"], batch["index"], use_inter=epoch >= self.cam.inter_start_epoch)

    @torch.no_grad()
    def update(self, outputs: dict[str, Tensor], batch: dict[str, Tensor]) -> None:
        self.proxies.update(outputs["features"].detach(), batch["index"])

    def report(self) -> dict[str, Any]:
        return self.proxies.report()

    def state_dict(self) -> dict[str, Tensor]:
        return self.proxies.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.proxies.load_state_dict(state)
