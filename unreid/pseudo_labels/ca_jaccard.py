"""CA-Jaccard: the camera-aware k-reciprocal Jaccard distance, sparse.

Chen et al., "CA-Jaccard: Camera-aware Jaccard Distance for Person Re-identification", CVPR 2024
(Sec. 3.2 CKRNNs, Sec. 3.3 CLQE); behaviour of the reference code chenyiyuu/CA-Jaccard @2600558
``caj/utils/caj_rerank.py`` (``compute_jaccard_distance`` with ``ckrnns`` and ``clqe`` on) and the
defaults of its ``train_caj.py`` (read to learn; reproduced, not copied):

1. Two ranking lists per sample, on ``d = 2 - 2 cos``: the **intra-camera** list (samples of its
   own camera, itself first) and the **inter-camera** list (samples of every other camera).
2. Camera-aware k-reciprocal neighbours (CKRNNs):
   ``R(i) = R_intra(i, k1_intra) U R_inter(i, k1_inter)``, where ``R_x(i, k)`` holds the ``j``
   among the first ``k + 1`` entries of ``i``'s ``x`` list that have ``i`` among the first ``k + 1``
   entries of their own ``x`` list (the reference's ``k_reciprocal_neigh``; ``R_intra`` contains
   ``i``). There is **no** 2/3 expansion step (the reference skips it when CKRNNs are on).
3. ``V[i, j] = softmax_j(-d_ij)`` over ``j in R(i)`` (as the plain encoding).
4. Camera-aware local query expansion (CLQE): ``V_i <- mean of V_j`` over the first ``k2_intra``
   entries of the intra list (``i`` itself first) and the first ``k2_inter`` of the inter list.
5. ``d_J(i, j) = 1 - S_ij / (2 - S_ij)`` with ``S_ij = sum_k min(V_ik, V_jk)`` (the shared Jaccard
   step, :func:`unreid.pseudo_labels.jaccard.jaccard_upper_blocks`).

Defaults (``train_caj.py``): ``k1_intra`` 5, ``k1_inter`` 20, ``k2_intra`` 3, ``k2_inter`` 3, DBSCAN
eps 0.6 and ``min_samples`` 4 as Cluster Contrast. The reference's ``caj_rerank.py`` switches CLQE to
3 / 3 at epoch 0 (a warm-up); with the ``train_caj.py`` defaults that is the same setting, so no
epoch switch is kept here.

Deviations, all at the edges the reference does not handle explicitly: its camera masks add 999 to
the distance of masked samples, so a camera with fewer than ``k + 1`` samples would borrow the
nearest samples of the wrong kind; here such lists are simply shorter (the mean of CLQE is then over
the entries present). A single camera has no inter-camera list: :class:`CameraAwareJaccardLabeler`
raises instead of silently computing the plain distance. The reference gates query expansion on the
global ``k2 != 1`` (Cluster Contrast's ``k2`` is 6, so it is on); here CLQE is always applied.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor

from unreid.pseudo_labels import PseudoLabeler, PseudoLabels


def _topk_rect(q: Tensor, db: Tensor, k: int, block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """``k`` largest inner products of every row of ``q`` ``(M, d)`` against ``db`` ``(L, d)``.

    Blocked on both sides (memory ``O(block^2 + M k)``). Returns ``(idx (M, k) int64, sim (M, k)
    float32)`` sorted by decreasing similarity, the smaller index first among equal ones.
    """
    from unreid.pseudo_labels.knn import _merge, _order_ties

    m, n = q.shape[0], db.shape[0]
    k = min(k, n)
    vals = torch.full((m, k), float("-inf"), device=q.device)
    idx = torch.full((m, k), -1, dtype=torch.long, device=q.device)
    for s0 in range(0, m, block):
        rows = slice(s0, min(m, s0 + block))
        for s1 in range(0, n, block):
            sim = q[rows] @ db[s1:s1 + block].T
            v, i = sim.topk(min(k, sim.shape[1]), dim=1)
            _merge(vals, idx, rows, v, i + s1, k)
    return _order_ties(idx.cpu().numpy(), vals.cpu().numpy())


def camera_rank_lists(features: Tensor, camids: np.ndarray, k_intra: int, k_inter: int,
                      block: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """The intra- and inter-camera ranking lists of step 1, truncated to ``k_intra`` / ``k_inter``.

    Args:
        features: ``(N, d) float32`` L2-normalised features.
        camids: ``(N,) int`` camera ids.
        k_intra: entries of the intra-camera list, the sample itself first.
        k_inter: entries of the inter-camera list.
        block: rows per block of the searches.

    Returns:
        ``(intra, inter)``: two ``(N, k) int64`` tables of global indices, ``-1`` where a camera has
        fewer samples than requested (the table is then padded at the end).
    """
    from unreid.pseudo_labels.knn import knn

    f = torch.as_tensor(features).float()
    cams = np.asarray(camids)
    n = f.shape[0]
    intra = np.full((n, k_intra), -1, dtype=np.int64)
    inter = np.full((n, k_inter), -1, dtype=np.int64)
    for c in np.unique(cams):
        own = np.flatnonzero(cams == c)
        other = np.flatnonzero(cams != c)
        kk = min(k_intra, len(own))
        local, _ = knn(f[own], kk, "exact", block)  # self first, ties by index
        intra[own, :kk] = own[local]
        if len(other) and k_inter > 0:
            ko = min(k_inter, len(other))
            rows = torch.from_numpy(own).to(f.device)
            cols = torch.from_numpy(other).to(f.device)
            local, _ = _topk_rect(f.index_select(0, rows), f.index_select(0, cols), ko, block)
            inter[own, :ko] = other[local]
    return intra, inter


def ca_jaccard_encoding(features: Tensor | np.ndarray, camids: np.ndarray, k1_intra: int = 5, k1_inter: int = 20,
                        k2_intra: int = 3, k2_inter: int = 3, block: int = 4096) -> sp.csr_matrix:
    """The CA-Jaccard encoding ``V`` after CLQE (steps 1-4 of the module doc).

    Args:
        features: ``(N, d) float32`` L2-normalised features.
        camids: ``(N,) int`` camera ids (at least two cameras).
        k1_intra, k1_inter: CKRNN sizes (CA-Jaccard ``train_caj.py``: 5 and 20), ``>= 1`` / ``>= 0``.
        k2_intra, k2_inter: CLQE sizes (3 and 3), ``k2_intra >= 1``, ``k2_inter >= 0``.
        block: rows per block of the searches.

    Returns:
        ``(N, N) csr_matrix float32`` with sorted indices; every row sums to 1 (float32 rounding).

    Raises:
        ValueError: sizes out of range, ``camids`` of the wrong length, or a single camera.
    """
    from unreid.pseudo_labels.jaccard import _pair_dots, _reciprocal

    f = torch.as_tensor(features).float()
    cams = np.asarray(camids)
    n = f.shape[0]
    if cams.shape != (n,):
        raise ValueError(f"camids has shape {cams.shape} for {n} feature rows")
    if len(np.unique(cams)) < 2:
        raise ValueError("CA-Jaccard needs at least two cameras (its inter-camera lists would be empty); "
                         "use method.camera.neighbourhood=none or standardize for single-camera data")
    if k1_intra < 1 or k1_inter < 0 or k2_intra < 1 or k2_inter < 0:
        raise ValueError(f"need k1_intra >= 1, k1_inter >= 0, k2_intra >= 1, k2_inter >= 0; got "
                         f"{k1_intra}, {k1_inter}, {k2_intra}, {k2_inter}")
    intra, inter = camera_rank_lists(f, cams, max(k1_intra + 1, k2_intra), max(k1_inter + 1, k2_inter), block)
    r = (_reciprocal(intra, k1_intra + 1) + _reciprocal(inter, k1_inter + 1)).tocsr()
    r.sort_indices()  # intra and inter sets are disjoint (different cameras): no entry summed twice
    rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(r.indptr))
    dots = _pair_dots(f, rows, r.indices.astype(np.int64))
    w = np.exp(2.0 * dots.astype(np.float64) - 2.0)  # exp(-d), d = 2 - 2 cos
    w /= np.bincount(rows, weights=w, minlength=n)[rows]
    v = sp.csr_matrix((w.astype(np.float32), r.indices, r.indptr), shape=(n, n))
    # CLQE: mean of the encodings of the first k2_intra intra- and k2_inter inter-camera entries
    qe = np.concatenate([intra[:, :k2_intra], inter[:, :k2_inter]], axis=1)
    ok = qe >= 0
    counts = ok.sum(1)
    qrows = np.repeat(np.arange(n, dtype=np.int64), qe.shape[1])[ok.ravel()]
    q = sp.csr_matrix(((1.0 / counts[qrows]).astype(np.float32), (qrows, qe[ok])), shape=(n, n))
    v = (q @ v).tocsr()
    v.sort_indices()
    return v


class CameraAwareJaccardLabeler(PseudoLabeler):
    """:class:`PseudoLabeler` with the CA-Jaccard distance in place of the plain Jaccard distance.

    DBSCAN (``cfg.eps``, ``cfg.min_samples``, or ``cfg.rho``) and the report are the base class's;
    only the neighbour search and the encoding change. ``cfg.cluster`` must be ``"dbscan"``.

    Args:
        cfg: :class:`unreid.config.PseudoLabelConfig`.
        k1_intra, k1_inter, k2_intra, k2_inter: see :func:`ca_jaccard_encoding`.
    """

    def __init__(self, cfg=None, k1_intra: int = 5, k1_inter: int = 20, k2_intra: int = 3,
                 k2_inter: int = 3) -> None:
        super().__init__(cfg)
        if self.cfg.cluster != "dbscan":
            raise ValueError(f"CA-Jaccard feeds DBSCAN; pseudo_labels.cluster is {self.cfg.cluster!r}")
        self.sizes = (k1_intra, k1_inter, k2_intra, k2_inter)
        self._camids: np.ndarray | None = None

    def fit(self, features: Tensor | np.ndarray, camids: np.ndarray | None = None,
            gt: np.ndarray | None = None) -> PseudoLabels:
        """As :meth:`PseudoLabeler.fit`; ``camids`` ``(N,) int`` is required (ValueError without it)."""
        if camids is None:
            raise ValueError("CA-Jaccard needs the camera id of every sample (camids)")
        self._camids = np.asarray(camids)
        try:
            return super().fit(features, camids=camids, gt=gt)
        finally:
            self._camids = None

    def neighbours(self, f: Tensor) -> tuple[np.ndarray, np.ndarray]:
        """Not used: the encoding searches its own camera-aware lists. Returns empty tables."""
        return np.zeros((f.shape[0], 0), np.int64), np.zeros((f.shape[0], 0), np.float32)

    def encoding(self, f: Tensor, neighbours: tuple[np.ndarray, np.ndarray]) -> sp.csr_matrix:
        """The ``(N, N)`` CA-Jaccard encoding of :func:`ca_jaccard_encoding` (``neighbours`` unused)."""
        return ca_jaccard_encoding(f, self._camids, *self.sizes, block=self.cfg.knn_block)
