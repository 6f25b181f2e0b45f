"""Within a camera or across cameras: where does a model's retrieval fail?

For each image of a feature file, is its nearest neighbour in the *same* camera the same identity,
and is its nearest neighbour in the *other* cameras? A model that has learnt identities only within
each camera scores high on the first and low on the second; the Market-1501 protocol measures only
the second (every match is cross-camera). Features come from ``unreid extract`` (any split; the
gallery split gives test identities no model has trained on). Ground-truth identities are used for
this report only. Usage::

    unreid extract CONFIG --checkpoint runs/x/checkpoint_last.pth --split gallery --out x_gallery.npz
    python benchmarks/camera_nn.py x_gallery.npz y_gallery.npz ...
    python benchmarks/camera_nn.py x_train.npz --colour 128x64   # also with the colour prior appended
    python benchmarks/camera_nn.py x_train.npz --colour 128x64 --descriptor lomo   # LOMO as the prior

``--colour HxW`` adds a row per file for the features the pseudo-labeller sees with
``pseudo_labels.colour_weight=1``: the hand-crafted descriptors of the images (read from the paths
in the file, resized to H x W; ``--descriptor`` as ``pseudo_labels.colour_descriptor``: colour-stripe
histograms or LOMO) appended by :func:`unreid.pseudo_labels.colour.append_colour`.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch


def main(argv: list[str] | None = None) -> None:
    from unreid.pseudo_labels import nearest_neighbour_hits
    from unreid.pseudo_labels.camera import camera_standardize
    from unreid.pseudo_labels.colour import DESCRIPTORS

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("features", nargs="+", help=".npz files written by `unreid extract` (features, pids, camids)")
    ap.add_argument("--colour", metavar="HxW", default=None,
                    help="also report the features with the colour prior appended (images resized to HxW)")
    ap.add_argument("--descriptor", choices=DESCRIPTORS, default="stripes",
                    help="the prior's descriptor, as pseudo_labels.colour_descriptor (default: stripes)")
    args = ap.parse_args(argv)
    size = None
    if args.colour:
        try:
            size = tuple(int(v) for v in args.colour.lower().split("x"))
        except ValueError:
            size = ()
        if len(size) != 2 or min(size) < 1:
            raise SystemExit(f"--colour expects HxW in pixels, e.g. 128x64, got {args.colour!r}")
    print("| features | images | cameras | same-camera NN same identity % | other-camera NN same identity % "
          "| other-camera, standardised % |")
    print("|---|---|---|---|---|---|")
    for path in args.features:
        data = np.load(path)
        feats = torch.as_tensor(data["features"], dtype=torch.float32)
        cams, pids = np.asarray(data["camids"]), np.asarray(data["pids"])
        if (pids < 0).any():
            raise SystemExit(f"{path}: has images without an identity (pid < 0); this report needs labelled "
                             "features, e.g. `unreid extract ... --split gallery`")
        same, other = nearest_neighbour_hits(feats, cams, pids)
        _, other_std = nearest_neighbour_hits(camera_standardize(
            torch.nn.functional.normalize(feats, dim=1), cams), cams, pids)
        print(f"| {path} | {len(feats)} | {len(np.unique(cams))} | {100 * same:.1f} | {100 * other:.1f} "
              f"| {100 * other_std:.1f} |")
        if size is not None:
            from unreid.pseudo_labels.colour import append_colour, load_descriptors

            colour = load_descriptors([str(p) for p in data["paths"]], size, args.descriptor)
            with_colour = append_colour(feats, colour, cams, 1.0)
            same, other = nearest_neighbour_hits(with_colour, cams, pids)
            print(f"| {path} + {args.descriptor} prior | {len(feats)} | {len(np.unique(cams))} | {100 * same:.1f} "
                  f"| {100 * other:.1f} | – |")


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()
