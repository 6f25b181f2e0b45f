"""The pseudo-label quality report: values by hand and against brute-force pair counting."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from unreid.pseudo_labels import cluster_report


def test_report_values_by_hand():
    labels = np.array([0, 0, 0, 1, 1, -1])
    gt = np.array([0, 0, 1, 1, 1, 2])
    cams = np.array([0, 1, 0, 0, 0, 1])
    r = cluster_report(labels, cams, gt)
    assert (r["num_samples"], r["num_clusters"], r["num_outliers"]) == (6, 2, 1)
    assert r["outlier_ratio"] == pytest.approx(1 / 6) and r["mean_size"] == 2.5
    assert r["size_histogram"] == {"1": 0, "2": 1, "3-4": 1, "5-8": 0, "9-16": 0, "17-32": 0, ">32": 0}
    assert r["cross_camera_ratio"] == 0.5  # cluster 0 spans cameras 0 and 1, cluster 1 only camera 0
    # predicted pairs: C(3,2) + C(2,2) = 4; true pairs: C(2,2) + C(3,2) = 4; shared: (0,1), (3,4)
    assert r["pairwise_precision"] == 0.5 and r["pairwise_recall"] == 0.5 and r["pairwise_f"] == 0.5
    # outlier 5 as its own singleton cluster: prediction {0,1,2}, {3,4}, {5}
    assert r["ari"] == pytest.approx(adjusted_rand_score(gt, [0, 0, 0, 1, 1, 2]))
    assert r["nmi"] == pytest.approx(normalized_mutual_info_score(gt, [0, 0, 0, 1, 1, 2]))
    assert r["ari_clustered"] == pytest.approx(adjusted_rand_score(gt[:5], labels[:5]))
    json.dumps(r)
    assert all(type(v) in (int, float, dict) for v in r.values())


def test_pairwise_against_brute_force_and_outliers_as_singletons():
    rng = np.random.default_rng(0)
    labels = rng.integers(-1, 6, 60)
    labels[labels == 3] = 40  # non-contiguous ids are fine
    gt = rng.integers(0, 8, 60)
    r = cluster_report(labels, gt=gt)
    same_pred = same_gt = both = 0
    for i, j in itertools.combinations(range(60), 2):
        p = labels[i] >= 0 and labels[i] == labels[j]
        t = gt[i] == gt[j]
        same_pred += p
        same_gt += t
        both += p and t
    assert r["pairwise_precision"] == pytest.approx(both / same_pred)
    assert r["pairwise_recall"] == pytest.approx(both / same_gt)
    singletons = labels.copy()
    singletons[labels < 0] = 100 + np.arange((labels < 0).sum())
    assert r["ari"] == pytest.approx(adjusted_rand_score(gt, singletons))
    assert r["nmi"] == pytest.approx(normalized_mutual_info_score(gt, singletons))
    assert r["num_clusters"] == 6 and r["cross_camera_ratio"] is None


def test_histogram_buckets_and_all_outliers():
    sizes = [1, 2, 3, 4, 5, 8, 9, 16, 17, 32, 33, 100]
    labels = np.concatenate([np.full(s, i) for i, s in enumerate(sizes)])
    h = cluster_report(labels)["size_histogram"]
    assert h == {"1": 1, "2": 1, "3-4": 2, "5-8": 2, "9-16": 2, "17-32": 2, ">32": 2}
    r = cluster_report(np.full(5, -1), camids=np.arange(5), gt=np.zeros(5, int))
    assert r["num_clusters"] == 0 and r["outlier_ratio"] == 1.0 and r["mean_size"] == 0.0
    assert r["cross_camera_ratio"] is None and r["ari_clustered"] is None
    assert r["pairwise_precision"] == 0.0 and r["pairwise_recall"] == 0.0
    json.dumps(r)


def test_bad_inputs():
    with pytest.raises(ValueError, match="gt has shape"):
        cluster_report(np.zeros(4, int), gt=np.zeros(3, int))
    with pytest.raises(ValueError, match="camids has shape"):
        cluster_report(np.zeros(4, int), camids=np.zeros(5, int))
    with pytest.raises(ValueError, match="1 are negative"):
        cluster_report(np.zeros(4, int), gt=np.array([0, 1, -1, 2]))


def test_nearest_neighbour_hits_by_hand():
    from unreid.pseudo_labels import nearest_neighbour_hits

    # camera 0: images 0, 1 (identity 0) and 2 (identity 1); camera 1: 3 (identity 0), 4 (identity 1).
    feats = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9], [1.0, 0.05]])
    cams = np.array([0, 0, 0, 1, 1])
    gt = np.array([0, 0, 1, 0, 1])
    same, other = nearest_neighbour_hits(feats, cams, gt, block=2)  # blocks cross the rows
    # same camera: 0 -> 1 hit, 1 -> 0 hit, 2 -> 1 (identity 0) miss, 3 -> 4 miss, 4 -> 3 miss
    assert same == pytest.approx(2 / 5)
    # other camera: 0 -> 4 miss, 1 -> 4 miss, 2 -> 3 miss, 3 -> 2 miss, 4 -> 0 miss
    assert other == 0.0
    # one more camera-1 image (5) of identity 0 right beside image 0: 0 -> 5 and 5 -> 0 become hits;
    # 1 stays nearer to 4 (cosine 0.998 against 0.995), 2 -> 3, 3 -> 2, 4 -> 0 still miss
    feats2 = np.vstack([feats, [[0.99, 0.01]]])
    _, other2 = nearest_neighbour_hits(feats2, np.append(cams, 1), np.append(gt, 0))
    assert other2 == pytest.approx(2 / 6)
    # an image alone in its camera has no same-camera neighbour and counts for neither rate there
    s3, _ = nearest_neighbour_hits(feats[:4], np.array([0, 0, 0, 1]), gt[:4])
    assert s3 == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="one row per image"):
        nearest_neighbour_hits(feats, cams[:4], gt)


def test_matching_precision_by_hand():
    from unreid.pseudo_labels.quality import matching_precision

    # clusters: 0 = ids {7, 7, 8} (majority 7), 1 = {7}, 2 = {9, 9}, 3 = {8, 9, 9} (majority 9)
    labels = np.array([0, 0, 0, 1, 2, 2, 3, 3, 3, -1])
    gt = np.array([7, 7, 8, 7, 9, 9, 8, 9, 9, 5])
    r = matching_precision(labels, np.array([[0, 1], [0, 2], [2, 3]]), gt)
    assert r == {"matched_pairs": 3, "match_precision": 2 / 3}  # (0, 1) and (2, 3) hold one person each
    assert matching_precision(labels, np.zeros((0, 2)), gt)["match_precision"] is None
    with pytest.raises(ValueError, match="no member"):
        matching_precision(labels, np.array([[0, 4]]), gt)
