"""The label pipeline (unreid/pseudo_labels/pipeline.py) composed from config.

The reference for equivalence is the if-chain ``Method.pseudo_label`` had before the pipeline,
written out below (with the union-find merge of ``cross_camera_labels`` as it was), so that the
tests stay independent of both once that method is gone.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from unreid.config import Config, ConfigError, load_config
from unreid.pseudo_labels import NoClustersError, PseudoLabeler
from unreid.pseudo_labels.base import PseudoLabels
from unreid.pseudo_labels.ca_jaccard import CameraAwareJaccardLabeler
from unreid.pseudo_labels.camera import camera_standardize
from unreid.pseudo_labels.colour import append_colour
from unreid.pseudo_labels.jaccard import jaccard_backend
from unreid.pseudo_labels.matching import bilateral_cluster_matching, centroid_cost
from unreid.pseudo_labels.pipeline import LabelPipeline, build_label_pipeline

SMALL = ["pseudo_labels.k1=8", "pseudo_labels.k2=3", "pseudo_labels.eps=0.5", "pseudo_labels.min_samples=3",
         "method.camera.ca_k1_intra=3", "method.camera.ca_k1_inter=6", "method.camera.ca_k2_intra=2",
         "method.camera.ca_k2_inter=2"]


# ------------------------------------------------------------------------------------ the former chain
def _former_cross_camera_labels(features, camids, cfg, mode="one_to_one"):
    """``cross_camera_labels`` before the pipeline: per-camera PseudoLabeler, centroids, union-find."""
    feats = torch.as_tensor(features, dtype=torch.float32)
    labels = np.full(len(camids), -1, dtype=np.int64)
    offset, per_cam, per_cam_eps, groups = 0, {}, {}, []
    for c in np.unique(camids):
        idx = np.flatnonzero(camids == c)
        if len(idx) < 2:
            continue
        try:
            pl = PseudoLabeler(cfg).fit(feats[idx], camids=camids[idx])
        except NoClustersError:
            per_cam[int(c)] = 0
            continue
        keep = pl.labels >= 0
        sums = torch.zeros(pl.num_clusters, feats.shape[1]).index_add_(
            0, torch.as_tensor(pl.labels[keep]), feats[idx[keep]])
        labels[idx[keep]] = pl.labels[keep] + offset
        groups.append((np.arange(offset, offset + pl.num_clusters), F.normalize(sums, dim=1)))
        per_cam[int(c)], per_cam_eps[int(c)] = pl.num_clusters, pl.eps
        offset += pl.num_clusters
    if offset == 0:
        raise NoClustersError("no camera produced a cluster")
    parent = list(range(offset))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    pairs = 0
    for i in range(len(groups)):
        for j in range(i + 1, len(groups)):
            if mode == "one_to_one":
                mask = np.zeros((len(groups[i][0]), len(groups[j][0])), dtype=bool)
                mask[linear_sum_assignment(centroid_cost(groups[i][1], groups[j][1]))] = True
            else:
                mask = bilateral_cluster_matching(groups[i][1], groups[j][1], relax=mode == "relaxed")
            for r, c in zip(*np.nonzero(mask)):
                parent[find(int(groups[i][0][r]))] = find(int(groups[j][0][c]))
                pairs += 1
    _, merged = np.unique([find(x) for x in range(offset)], return_inverse=True)
    out = labels.copy()
    out[labels >= 0] = merged[labels[labels >= 0]]
    report = {"per_camera_clusters": per_cam, "matched_pairs": pairs, "per_camera_eps": per_cam_eps}
    return PseudoLabels(out, int(merged.max()) + 1, report=report, eps=cfg.eps if cfg.rho is None else None)


def former_chain(cfg: Config, features, camids, colour):
    """The body of ``Method.pseudo_label`` before the pipeline (supervised branch left out)."""
    cam = cfg.method.camera
    if cam.neighbourhood == "standardize":
        features = camera_standardize(features, camids)
    if cfg.pseudo_labels.colour_weight > 0:
        features = append_colour(features, colour, camids, cfg.pseudo_labels.colour_weight)
    if cam.neighbourhood == "ca_jaccard":
        return CameraAwareJaccardLabeler(cfg.pseudo_labels, cam.ca_k1_intra, cam.ca_k1_inter,
                                         cam.ca_k2_intra, cam.ca_k2_inter).fit(features, camids=camids)
    if cam.matching:
        return _former_cross_camera_labels(features, camids, cfg.pseudo_labels)
    return PseudoLabeler(cfg.pseudo_labels).fit(features, camids=camids)


# ------------------------------------------------------------------------------------ data
def camera_set(seed: int = 0, ids: int = 15, cams: int = 3, per_cam: tuple[int, ...] = (3, 3, 4), d: int = 32):
    """Clustered features of ``ids`` identities seen by ``cams`` cameras, each camera shifting every
    identity the same way; returns ``(features (N, d) float32 normalised, camids, identities, colour)``
    with ``colour`` ``(N, 12)`` fake descriptors that know the identity a little."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(ids, d))
    shift = rng.normal(size=(cams, d)) * 1.5  # the camera gap: plain clustering splits by camera
    tint = rng.normal(size=(ids, 12))
    feats, camids, pids, colour = [], [], [], []
    for pid in range(ids):
        for c in range(cams):
            for _ in range(per_cam[c % len(per_cam)]):
                feats.append(centers[pid] + shift[c] + 0.7 * rng.normal(size=d))
                camids.append(c)
                pids.append(pid)
                colour.append(tint[pid] + rng.normal(size=12))
    f = F.normalize(torch.tensor(np.array(feats), dtype=torch.float32), dim=1)
    return f, np.array(camids, dtype=np.int64), np.array(pids), torch.tensor(np.array(colour), dtype=torch.float32)


def without_timings(report: dict) -> dict:
    return {k: v for k, v in report.items() if not k.startswith("time_")}


COMBOS = [(nb, matching, colour) for nb in ("none", "standardize", "ca_jaccard") for matching in (False, True)
          for colour in (False, True) if not (nb == "ca_jaccard" and matching)]


# ------------------------------------------------------------------------------------ equivalence
@pytest.mark.parametrize("neighbourhood,matching,colour", COMBOS)
def test_pipeline_equals_the_former_chain(neighbourhood, matching, colour):
    f, cams, pids, desc = camera_set()
    cfg = load_config(None, SMALL + [f"method.camera.neighbourhood={neighbourhood}",
                                     f"method.camera.matching={str(matching).lower()}",
                                     f"pseudo_labels.colour_weight={0.7 if colour else 0.0}",
                                     "pseudo_labels.merge_check=none"])  # the former chain had no check
    expected = former_chain(cfg, f.clone(), cams, desc)
    got = build_label_pipeline(cfg, cams, np.zeros_like(cams), descriptors=lambda: desc.clone())(f.clone())
    assert expected.num_clusters > 3  # a real clustering, not a degenerate one
    np.testing.assert_array_equal(got.labels, expected.labels)
    assert got.num_clusters == expected.num_clusters
    assert got.eps == expected.eps
    got_report = without_timings(got.report)
    assert got_report.pop("matches_rejected", 0) == 0  # no check here
    assert got_report == without_timings(expected.report)
    assert got.source == "clustering" and got.num_singletons == 0
    if matching:
        np.testing.assert_array_equal(got.groups, cams)
    else:
        assert got.groups is None
    assert got.group_of_cluster is None and got.matches is None


def test_the_combinations_differ():
    """The equivalence above means something only if each step changes the labels on this set."""
    f, cams, _, desc = camera_set()
    seen = []
    for nb, matching, colour in COMBOS:
        cfg = load_config(None, SMALL + [f"method.camera.neighbourhood={nb}",
                                         f"method.camera.matching={str(matching).lower()}",
                                         f"pseudo_labels.colour_weight={0.7 if colour else 0.0}"])
        seen.append(tuple(former_chain(cfg, f.clone(), cams, desc).labels))
    assert len(set(seen)) == len(COMBOS)


def test_group_by_camera_is_the_former_matching_and_keeps_merge_mode():
    f, cams, _, _ = camera_set(seed=1)
    old = load_config(None, SMALL + ["method.camera.matching=true"])
    for mode in ("one_to_one", "bilateral", "relaxed"):
        cfg = load_config(None, SMALL + ["pseudo_labels.group_by=camera", f"pseudo_labels.merge_mode={mode}",
                                         "pseudo_labels.merge_check=none"])  # the former matching had no check
        pipe = build_label_pipeline(cfg, cams, None)
        got, expected = pipe(f), _former_cross_camera_labels(f, cams, old.pseudo_labels, mode=mode)
        np.testing.assert_array_equal(got.labels, expected.labels)
        report = dict(got.report)
        assert report.pop("matches_rejected") == 0
        assert (got.num_clusters, report) == (expected.num_clusters, expected.report)
        assert f"merge matched clusters ({mode})" in pipe.describe()


def test_a_lone_sample_and_a_clusterless_camera_as_before():
    """A camera with one image is left out (not in the report); one whose images form no cluster
    reports 0 clusters; both leave their samples outliers, as the former per-camera merge did."""
    f, cams, _, _ = camera_set(seed=3)
    rng = np.random.default_rng(0)
    extra = F.normalize(torch.tensor(rng.normal(size=(3, f.shape[1])), dtype=torch.float32), dim=1)
    f, cams = torch.cat([f, extra]), np.concatenate([cams, [7, 8, 8]])
    cfg = load_config(None, SMALL + ["method.camera.matching=true", "pseudo_labels.merge_check=none"])
    got, expected = build_label_pipeline(cfg, cams)(f), _former_cross_camera_labels(f, cams, cfg.pseudo_labels)
    np.testing.assert_array_equal(got.labels, expected.labels)
    assert {k: v for k, v in got.report.items() if k != "matches_rejected"} == expected.report
    assert 7 not in got.report["per_camera_clusters"] and got.report["per_camera_clusters"][8] == 0
    assert (got.labels[-3:] == -1).all()


def test_rho_gives_each_group_its_eps_and_no_single_eps():
    f, cams, _, _ = camera_set(seed=2)
    cfg = load_config(None, SMALL + ["method.camera.matching=true", "pseudo_labels.rho=0.02",
                                     "pseudo_labels.merge_check=none"])
    got = build_label_pipeline(cfg, cams)(f)
    expected = _former_cross_camera_labels(f, cams, cfg.pseudo_labels)
    assert got.eps is None and got.report["per_camera_eps"] == expected.report["per_camera_eps"]
    np.testing.assert_array_equal(got.labels, expected.labels)


# ------------------------------------------------------------------------------------ matches (MBCCM)
def two_modalities(seed: int = 0, n: int = 10):
    """Modality 0: clusters A0 ~ e1, A1 ~ e2. Modality 1: B0 ~ e1, B1 ~ e1 + 0.5 e3, B2 ~ e1 + 0.5 e2 + 0.5 e4.

    Squared distances of the normalised centroids (A rows, B columns; 2 - 2 cos):
    A0 (0, 0.211, 0.367), A1 (2, 2, 1.184).
    * Hungarian on the rows: A0-B0 + A1-B2 (1.184) beats A1 taking B0 or B1 (2). Relaxed: A0 gets every
      column with cost <= 0 (B0 only), A1 every column <= 1.184 (B2 only).
    * Rows repeated k = 3 // 2 + 1 = 2 times, every column gets one row: A0, A0, A1 for (B0, B1, B2)
      costs 1.578, the best (A1 on B0: 2.578, on B1: 2.367). Relaxed: B0 gets every row <= 0 (A0),
      B1 every row <= 0.211 (A0), B2 every row <= 1.184: A1 **and A0** (0.367).
    Matches: A0-B0, A0-B1, A0-B2, A1-B2 (without relaxation A0-B2 is missing); partners A0 3, A1 1,
    B0 1, B1 1, B2 2: mean 8 / 5.
    """
    rng = np.random.default_rng(seed)
    e = np.eye(8)
    centres = {("A", 0): e[0], ("A", 1): e[1], ("B", 0): e[0], ("B", 1): e[0] + 0.5 * e[2],
               ("B", 2): e[0] + 0.5 * e[1] + 0.5 * e[3]}
    feats, mods, truth = [], [], []
    for (side, k), c in centres.items():
        for _ in range(n):
            feats.append(c / np.linalg.norm(c) + 0.01 * rng.normal(size=8))
            mods.append(0 if side == "A" else 1)
            truth.append(f"{side}{k}")
    order = rng.permutation(len(feats))  # samples interleaved, so ids cannot follow the input order
    f = F.normalize(torch.tensor(np.array(feats)[order], dtype=torch.float32), dim=1)
    return f, np.array(mods, dtype=np.int64)[order], np.array(truth)[order]


def test_matches_keep_labels_apart_and_return_the_bilateral_pairs():
    f, mods, truth = two_modalities()
    cams = mods.copy()  # one camera per modality (RegDB-like)
    cfg = load_config(None, ["pseudo_labels.k1=10", "pseudo_labels.k2=3", "pseudo_labels.min_samples=3",
                             "pseudo_labels.group_by=modality"])
    pipe = build_label_pipeline(cfg, cams, mods)
    pl = pipe(f)
    assert pl.num_clusters == 5 and pl.num_outliers == 0  # nothing merged
    name = {}
    for c in range(5):  # each cluster is exactly one true cluster
        members = set(truth[pl.labels == c])
        assert len(members) == 1
        name[c] = members.pop()
    assert sorted(name.values()) == ["A0", "A1", "B0", "B1", "B2"]
    ids = {v: k for k, v in name.items()}
    assert {ids["A0"], ids["A1"]} == {0, 1}  # modality 0's clusters first, modality 1's offset by 2
    np.testing.assert_array_equal(pl.groups, mods)
    np.testing.assert_array_equal(pl.group_of_cluster, [0 if name[c][0] == "A" else 1 for c in range(5)])
    assert pl.matches.dtype == np.int64 and pl.matches.shape == (4, 2)
    assert {(name[a], name[b]) for a, b in pl.matches} == {("A0", "B0"), ("A0", "B1"), ("A0", "B2"), ("A1", "B2")}
    assert pl.report["mean_partners"] == pytest.approx(8 / 5)
    assert pl.report["matched_pairs"] == 4 and pl.report["per_modality_clusters"] == {0: 2, 1: 3}
    assert pl.report["num_clusters"] == 5
    assert "group by modality" in pipe.describe() and "keep bilateral matches" in pipe.describe()


def test_matches_with_singletons_keep_groups():
    f, mods, _ = two_modalities(seed=3)
    f = torch.cat([f, -f[:1]])  # far from everything: in nobody's k-reciprocal set
    mods = np.append(mods, 1)
    # k2=1: no query expansion, which would lend the odd sample its neighbours' encodings
    cfg = load_config(None, ["pseudo_labels.k1=10", "pseudo_labels.k2=1", "pseudo_labels.min_samples=3",
                             "pseudo_labels.group_by=modality", "pseudo_labels.association=matches"])
    pl = build_label_pipeline(cfg, mods, mods)(f)
    assert pl.labels[-1] == -1  # the odd sample is an outlier
    s = pl.with_singletons()
    assert s.num_clusters == 6 and s.labels[-1] == 5
    np.testing.assert_array_equal(s.groups, mods)
    np.testing.assert_array_equal(s.group_of_cluster, np.append(pl.group_of_cluster, 1))
    np.testing.assert_array_equal(s.matches, pl.matches)


# ------------------------------------------------------------------------------------ descriptors
def test_descriptors_are_computed_once_and_only_when_needed():
    f, cams, _, desc = camera_set()
    calls = []

    def descriptors():
        calls.append(1)
        return desc

    cfg = load_config(None, SMALL + ["pseudo_labels.colour_weight=0.5"])
    pipe = build_label_pipeline(cfg, cams, descriptors=descriptors)
    assert calls == []  # lazily: building the pipeline computes nothing
    first = pipe(f)
    second = pipe(f.clone())
    pipe(f[torch.randperm(len(f), generator=torch.Generator().manual_seed(0))].contiguous())
    assert calls == [1]
    np.testing.assert_array_equal(first.labels, second.labels)
    assert "append stripes (weight 0.5" in pipe.describe()
    with pytest.raises(ValueError, match="descriptors"):
        build_label_pipeline(cfg, cams)


def test_describe_lists_the_steps_in_order():
    _, cams, _, desc = camera_set()
    cfg = load_config(None, SMALL + ["method.camera.neighbourhood=standardize", "method.camera.matching=true",
                                     "pseudo_labels.colour_weight=1", "pseudo_labels.colour_descriptor=lomo"])
    text = build_label_pipeline(cfg, cams, descriptors=lambda: desc).describe()
    kernel = jaccard_backend("auto")  # numba where installed (the test extras), else numpy
    assert text == ("per-camera standardisation -> append lomo (weight 1, standardised per camera; its Gram blocks computed"
                    f" once) -> group by camera -> k-reciprocal Jaccard (k1 8, k2 3; {kernel} kernel) + DBSCAN (eps 0.5,"
                    " min_samples 3) per camera -> merge matched clusters (one_to_one; ratio test 0.8 with > 2 groups)")
    cfg = load_config(None, SMALL + ["method.camera.neighbourhood=ca_jaccard"])
    assert build_label_pipeline(cfg, cams).describe() == f"CA-Jaccard (k1 3/6, k2 2/2; {kernel} kernel) + DBSCAN"
    cfg = load_config(None, SMALL + ["pseudo_labels.jaccard_backend=numpy"])
    assert "k-reciprocal Jaccard (k1 8, k2 3; numpy kernel)" in build_label_pipeline(cfg, cams).describe()


# ------------------------------------------------------------------------------------ errors
def test_nothing_clusters_raises_no_clusters_error():
    rng = np.random.default_rng(0)
    f = F.normalize(torch.tensor(rng.normal(size=(40, 64)), dtype=torch.float32), dim=1)  # no structure
    cams = np.arange(40) % 2
    for extra in ([], ["method.camera.matching=true"], ["pseudo_labels.group_by=modality"]):
        cfg = load_config(None, ["pseudo_labels.k1=6", "pseudo_labels.k2=2", "pseudo_labels.eps=0.05",
                                 "pseudo_labels.min_samples=4"] + extra)
        with pytest.raises(NoClustersError):
            build_label_pipeline(cfg, cams, cams)(f)


def test_build_errors_name_what_is_missing():
    _, cams, _, _ = camera_set()
    cfg = load_config(None, ["pseudo_labels.group_by=modality"])
    with pytest.raises(ValueError, match="modalities"):
        build_label_pipeline(cfg, cams, None)
    with pytest.raises(ValueError, match="modalities has shape"):
        build_label_pipeline(cfg, cams, cams[:-1])
    with pytest.raises(ValueError, match="feature rows"):
        build_label_pipeline(load_config(None, []), cams)(torch.ones(3, 4))
    with pytest.raises(ValueError, match="association"):
        LabelPipeline(PseudoLabeler(), cams, groups=cams)


# ------------------------------------------------------------------------------------ PseudoLabels state
def test_state_dict_round_trips_through_weights_only_load(tmp_path):
    pl = PseudoLabels(np.array([0, 1, -1, 2, 2, 1]), 3, report={"num_clusters": np.int64(3), "mean": np.float32(1.5),
                                                                 "per_camera_eps": {np.int64(0): 0.6}},
                      eps=0.6, groups=np.array([0, 0, 1, 1, 1, 0]), group_of_cluster=np.array([0, 0, 1]),
                      matches=np.array([[0, 2], [1, 2]]))
    for obj in (pl, pl.with_singletons()):
        torch.save(obj.state_dict(), tmp_path / "s.pt")
        back = PseudoLabels.from_state_dict(torch.load(tmp_path / "s.pt", weights_only=True))
        for key in ("labels", "groups", "group_of_cluster", "matches"):
            np.testing.assert_array_equal(getattr(back, key), getattr(obj, key))
            assert getattr(back, key).dtype == np.int64
        assert (back.num_clusters, back.num_singletons, back.eps, back.source) == \
            (obj.num_clusters, obj.num_singletons, obj.eps, obj.source)
        assert back.report == obj.report
    state = pl.state_dict()
    assert isinstance(state["labels"], torch.Tensor) and state["labels"].dtype == torch.int64
    none = PseudoLabels.from_state_dict(PseudoLabels(np.array([0, 0]), 1).state_dict())
    assert none.groups is None and none.group_of_cluster is None and none.matches is None and none.eps is None


def test_from_state_dict_reads_the_old_keys():
    old = {"labels": np.array([1, 0, -1, 3, 2]), "num_clusters": 4, "num_singletons": 1}
    pl = PseudoLabels.from_state_dict(old)
    np.testing.assert_array_equal(pl.labels, old["labels"])
    assert (pl.num_clusters, pl.num_singletons, pl.groups, pl.matches) == (4, 1, None, None)
    assert PseudoLabels.from_state_dict({"labels": torch.tensor([0, 0]), "num_clusters": 1}).num_singletons == 0


def test_with_singletons_keeps_groups():
    pl = PseudoLabels(np.array([0, -1, 1, -1]), 2, groups=np.array([3, 4, 3, 5]))
    s = pl.with_singletons()
    np.testing.assert_array_equal(s.labels, [0, 2, 1, 3])
    np.testing.assert_array_equal(s.groups, [3, 4, 3, 5])
    assert s.group_of_cluster is None and s.matches is None
    s = PseudoLabels(np.array([0, -1, 1, -1]), 2, groups=np.array([3, 4, 3, 5]), group_of_cluster=[3, 3]).with_singletons()
    np.testing.assert_array_equal(s.group_of_cluster, [3, 3, 4, 5])


def test_new_fields_are_checked():
    with pytest.raises(ValueError, match="groups must have shape"):
        PseudoLabels(np.array([0, 0]), 1, groups=np.array([1]))
    with pytest.raises(ValueError, match="group_of_cluster"):
        PseudoLabels(np.array([0, 1]), 2, group_of_cluster=np.array([0]))
    with pytest.raises(ValueError, match="matches"):
        PseudoLabels(np.array([0, 1]), 2, matches=np.array([[0, 2]]))


# ------------------------------------------------------------------------------------ config
@pytest.mark.parametrize("overrides,keys", [
    (["pseudo_labels.group_by=cameras"], ["pseudo_labels.group_by"]),
    (["pseudo_labels.association=merged"], ["pseudo_labels.association"]),
    (["pseudo_labels.merge_mode=greedy"], ["pseudo_labels.merge_mode"]),
    (["pseudo_labels.association=matches"], ["pseudo_labels.association", "pseudo_labels.group_by"]),
    (["pseudo_labels.group_by=none", "pseudo_labels.association=merge"],
     ["pseudo_labels.association", "pseudo_labels.group_by"]),
    (["method.camera.neighbourhood=ca_jaccard", "pseudo_labels.group_by=modality"],
     ["method.camera.neighbourhood", "pseudo_labels.group_by"]),
    (["method.camera.neighbourhood=ca_jaccard", "pseudo_labels.group_by=camera"],
     ["method.camera.neighbourhood", "pseudo_labels.group_by"]),
    (["method.camera.matching=true", "pseudo_labels.group_by=modality"],
     ["method.camera.matching", "pseudo_labels.group_by"]),
    (["method.camera.matching=true", "pseudo_labels.association=matches"],
     ["method.camera.matching", "pseudo_labels.association"]),
])
def test_contradictions_name_both_keys(overrides, keys):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    for key in keys:
        assert key in str(err.value)


@pytest.mark.parametrize("overrides,expected", [
    ([], ("none", "none")),
    (["method.camera.matching=true"], ("camera", "merge")),
    (["method.camera.matching=true", "pseudo_labels.group_by=camera", "pseudo_labels.association=merge"],
     ("camera", "merge")),
    (["pseudo_labels.group_by=camera"], ("camera", "merge")),
    (["pseudo_labels.group_by=camera", "pseudo_labels.association=matches"], ("camera", "matches")),
    (["pseudo_labels.group_by=modality"], ("modality", "matches")),
    (["pseudo_labels.group_by=modality", "pseudo_labels.association=merge"], ("modality", "merge")),
    (["pseudo_labels.group_by=none"], ("none", "none")),
])
def test_auto_resolves_to_the_former_recipes(overrides, expected):
    from unreid.config import resolve_grouping

    assert resolve_grouping(load_config(None, overrides)) == expected


def test_build_checks_an_unvalidated_config():
    cfg = Config()
    cfg.pseudo_labels.group_by = "none"
    cfg.pseudo_labels.association = "matches"
    with pytest.raises(ConfigError, match="pseudo_labels.association"):
        build_label_pipeline(cfg, np.zeros(4, dtype=np.int64))


# ------------------------------------------------------------------------------------ many cameras
def few_views_set(seed: int = 0, ids: int = 30, cams: int = 6, views: int = 2, per_cam: int = 5, d: int = 32):
    """Each identity seen by ``views`` of ``cams`` cameras (drawn per identity), ``per_cam`` images in each;
    returns ``(features (N, d) float32 normalised, camids, identities)``."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(ids, d))
    shift = rng.normal(size=(cams, d)) * 0.5
    feats, camids, pids = [], [], []
    for pid in range(ids):
        for c in rng.choice(cams, views, replace=False):
            for _ in range(per_cam):
                feats.append(centers[pid] + shift[c] + 0.4 * rng.normal(size=d))
                camids.append(int(c))
                pids.append(pid)
    f = F.normalize(torch.tensor(np.array(feats), dtype=torch.float32), dim=1)
    return f, np.array(camids, dtype=np.int64), np.array(pids)


def _pairwise_precision_recall(labels: np.ndarray, pids: np.ndarray) -> tuple[float, float]:
    """Over the clustered samples, by counting every pair (the reference: a plain double loop)."""
    keep = np.flatnonzero(labels >= 0)
    tp = same_label = same_pid = 0
    for a in range(len(keep)):
        for b in range(a + 1, len(keep)):
            sl = labels[keep[a]] == labels[keep[b]]
            sp = pids[keep[a]] == pids[keep[b]]
            tp += sl and sp
            same_label += sl
            same_pid += sp
    return tp / max(same_label, 1), tp / max(same_pid, 1)


def test_merge_check_stops_the_many_camera_chain():
    """Six cameras, each identity in two: the one-to-one assignment gives every cluster a partner in
    every other camera, and without the check the union chains identities together; with the
    ratio check (the default with more than two cameras) the merged clusters stay pure and still
    join each identity's two cameras."""
    f, cams, pids = few_views_set(d=64)
    out = {}
    for check in ("none", "auto"):
        cfg = load_config(None, SMALL + ["method.camera.matching=true", f"pseudo_labels.merge_check={check}"])
        pipe = build_label_pipeline(cfg, cams, np.zeros_like(cams))
        out[check] = pipe(f.clone())
    per_cam = sum(out["auto"].report["per_camera_clusters"].values())
    assert per_cam >= 50  # each identity's two cameras clustered apart first
    p_none, _ = _pairwise_precision_recall(out["none"].labels, pids)
    p_auto, r_auto = _pairwise_precision_recall(out["auto"].labels, pids)
    assert out["none"].num_clusters < 15 and p_none < 0.3  # chained: several identities per cluster
    assert p_auto > 0.97 and r_auto > 0.9  # one cluster per identity, across its two cameras
    assert out["auto"].report["matches_rejected"] > 0 == out["none"].report["matches_rejected"]


def test_merge_check_auto_leaves_two_cameras_unchanged():
    f, cams, _, _ = camera_set(cams=2, per_cam=(3, 4))
    labels = {}
    for check in ("none", "auto"):
        cfg = load_config(None, SMALL + ["method.camera.matching=true", f"pseudo_labels.merge_check={check}"])
        labels[check] = build_label_pipeline(cfg, cams, np.zeros_like(cams))(f.clone()).labels
    np.testing.assert_array_equal(labels["auto"], labels["none"])
    with pytest.raises(ConfigError, match="merge_check"):
        load_config(None, ["pseudo_labels.merge_check=closest"])
