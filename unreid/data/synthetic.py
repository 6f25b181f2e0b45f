"""Procedural re-ID data for tests and the demo.

Identities are drawn from a few appearance attributes - body build, skin and hair colour, upper and
lower clothing colours, a clothing pattern (plain, stripes, checks), a bag (none, left, right) -
and each is seen by a random subset (at least two) of cameras. Cameras differ the way real ones
do, strongly enough that generic (ImageNet) features group images **by camera first**:

* background colour and texture (a gradient plus stripes or noise),
* illumination colour cast and brightness,
* viewpoint: front (pattern visible), back (pattern hidden, bag side mirrored) or side (narrower
  body, bag always visible),
* scale and vertical position of the person, blur.

Each image adds small pose / position / scale jitter and sensor noise. Everything is deterministic
from ``seed``. Output is the Market-1501 layout (``bounding_box_train/``, ``query/``,
``bounding_box_test/``; ``PPPP_cCs1_FFFFFF_00.jpg``) so the Market loader reads it; the query holds
the first image of each test identity in each camera, the gallery the rest (every query has
cross-camera matches).
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

VIEWS = ("front", "back", "side")


@dataclass
class _Identity:
    skin: np.ndarray
    hair: np.ndarray
    upper: np.ndarray
    lower: np.ndarray
    pattern: int  # 0 plain, 1 stripes, 2 checks
    pattern_colour: np.ndarray
    bag: int  # 0 none, 1 left, 2 right
    bag_colour: np.ndarray
    build: float  # torso width factor
    height: float  # body height factor


@dataclass
class _Camera:
    bg: np.ndarray
    bg2: np.ndarray
    texture: int  # 0 gradient, 1 stripes, 2 noise
    cast: np.ndarray  # multiplicative RGB
    view: str
    scale: float
    offset: float  # vertical offset, fraction of height
    blur: float


def _colour(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(0, 255, 3)


def _identity(rng: np.random.Generator) -> _Identity:
    return _Identity(
        skin=np.array([224, 172, 105]) * rng.uniform(0.5, 1.1),
        hair=_colour(rng) * rng.uniform(0.2, 0.6),
        upper=_colour(rng), lower=_colour(rng), pattern=int(rng.integers(3)), pattern_colour=_colour(rng),
        bag=int(rng.integers(3)), bag_colour=_colour(rng),
        build=rng.uniform(0.8, 1.2), height=rng.uniform(0.9, 1.05),
    )


def _camera(rng: np.random.Generator, index: int) -> _Camera:
    return _Camera(
        bg=_colour(rng), bg2=_colour(rng), texture=int(rng.integers(3)),
        cast=rng.uniform(0.55, 1.35, 3), view=VIEWS[index % 3],
        scale=rng.uniform(0.75, 1.0), offset=rng.uniform(-0.08, 0.08), blur=rng.uniform(0.0, 1.2),
    )


def _background(cam: _Camera, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    t = np.linspace(0, 1, h)[:, None, None]
    img = cam.bg * (1 - t) + cam.bg2 * t
    img = np.broadcast_to(img, (h, w, 3)).copy()
    if cam.texture == 1:
        img[:, (np.arange(w) // 4) % 2 == 0] *= 0.7
    elif cam.texture == 2:
        img += rng.normal(0, 25, (h, w, 3))
    return img


def _rect(img: np.ndarray, y0: float, y1: float, x0: float, x1: float, colour: np.ndarray) -> tuple:
    h, w = img.shape[:2]
    a, b = int(np.clip(round(y0), 0, h)), int(np.clip(round(y1), 0, h))
    c, d = int(np.clip(round(x0), 0, w)), int(np.clip(round(x1), 0, w))
    img[a:b, c:d] = colour
    return a, b, c, d


def _draw(person: _Identity, cam: _Camera, h: int, w: int, rng: np.random.Generator) -> np.ndarray:
    img = _background(cam, h, w, rng)
    s = cam.scale * rng.uniform(0.95, 1.05) * person.height
    ph = h * 0.9 * s  # person height in pixels
    top = h * (0.05 + cam.offset) + (h * 0.9 - ph) + rng.uniform(-2, 2)
    cx = w / 2 + rng.uniform(-3, 3)
    side = cam.view == "side"
    tw = w * 0.42 * person.build * s * (0.7 if side else 1.0)  # torso width
    # head + hair
    head_h = ph * 0.14
    _rect(img, top, top + head_h, cx - tw * 0.28, cx + tw * 0.28, person.skin)
    hair_h = head_h * (1.0 if cam.view == "back" else 0.35)
    _rect(img, top, top + hair_h, cx - tw * 0.3, cx + tw * 0.3, person.hair)
    # torso (upper clothing) with pattern
    y0, y1 = top + head_h, top + ph * 0.55
    a, b, c, d = _rect(img, y0, y1, cx - tw / 2, cx + tw / 2, person.upper)
    if person.pattern and cam.view != "back" and b > a and d > c:
        region = img[a:b, c:d]
        yy, xx = np.mgrid[0:b - a, 0:d - c]
        if person.pattern == 1:
            mask = (yy // 3) % 2 == 0
        else:
            mask = ((yy // 4) + (xx // 4)) % 2 == 0
        region[mask] = person.pattern_colour
    # arms
    arm_w = tw * 0.18
    for sgn in (-1, 1):
        if side and sgn == -1:
            continue
        _rect(img, y0, y1 - ph * 0.05, cx + sgn * (tw / 2) - (arm_w if sgn < 0 else 0),
              cx + sgn * (tw / 2) + (arm_w if sgn > 0 else 0), person.upper * 0.85)
    # legs (lower clothing)
    leg_gap = tw * 0.06
    _rect(img, y1, top + ph, cx - tw * 0.45, cx - leg_gap, person.lower)
    _rect(img, y1, top + ph, cx + leg_gap, cx + tw * 0.45, person.lower)
    # bag: mirrored from the back; always visible from the side
    if person.bag:
        left = person.bag == 1
        if cam.view == "back":
            left = not left
        if side:
            left = False
        bx0 = cx - tw / 2 - tw * 0.3 if left else cx + tw / 2
        _rect(img, y0 + ph * 0.12, y0 + ph * 0.32, bx0, bx0 + tw * 0.3, person.bag_colour)
    img = img * cam.cast * rng.uniform(0.9, 1.1)
    img += rng.normal(0, 4, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def generate(
    root: str | Path,
    num_ids: int = 60,
    num_test_ids: int = 30,
    num_cameras: int = 4,
    images_per_id_cam: int = 4,
    height: int = 128,
    width: int = 64,
    seed: int = 0,
) -> Path:
    """Write a synthetic data set in Market-1501 layout under ``root`` and return ``root``.

    Args:
        root: output folder; must not already hold a data set (nothing is overwritten). Written
            atomically: into a temporary sibling, then renamed.
        num_ids / num_test_ids: training and test identities (disjoint; test pids follow train pids).
        num_cameras: cameras (>= 2).
        images_per_id_cam: images of an identity in each camera that sees it.
        height / width: image size in pixels.
        seed: everything is a deterministic function of the arguments.

    Raises:
        ValueError: fewer than 2 cameras or no identities; FileExistsError: ``root`` is not empty.
    """
    if num_cameras < 2 or num_ids < 1 or num_test_ids < 1 or images_per_id_cam < 1:
        raise ValueError("synthetic data needs num_cameras >= 2 and at least one identity and image")
    root = Path(root)
    if root.exists() and any(root.iterdir()):
        raise FileExistsError(f"{root} is not empty; synthetic data is never written over existing files")
    rng = np.random.default_rng(seed)
    cams = [_camera(rng, c) for c in range(num_cameras)]
    people = [_identity(rng) for _ in range(num_ids + num_test_ids)]
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        for sub in ("bounding_box_train", "query", "bounding_box_test"):
            (tmp / sub).mkdir()
        frame = 0
        for idx, person in enumerate(people):
            pid = idx + 1
            n_cams = int(rng.integers(2, num_cameras + 1))
            seen = sorted(rng.choice(num_cameras, size=n_cams, replace=False).tolist())
            for c in seen:
                for k in range(images_per_id_cam):
                    frame += 1
                    arr = _draw(person, cams[c], height, width, rng)
                    im = Image.fromarray(arr)
                    if cams[c].blur > 0.05:
                        im = im.filter(ImageFilter.GaussianBlur(cams[c].blur))
                    if idx < num_ids:
                        sub = "bounding_box_train"
                    else:
                        sub = "query" if k == 0 else "bounding_box_test"
                    im.save(tmp / sub / f"{pid:04d}_c{c + 1}s1_{frame:06d}_00.jpg", quality=90)
        if root.exists():
            root.rmdir()  # empty (checked above)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
