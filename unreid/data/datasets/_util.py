"""Helpers shared by the dataset families: folder checks with layout-aware errors, relabelling."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from unreid.data.datasets.base import Sample

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def resolve_root(root: str | Path, marker: str, candidates: Iterable[str]) -> Path:
    """``root`` itself when it holds ``marker``, else the first ``root/<candidate>`` that does.

    Lets users pass either the data set folder or its parent (``data/`` holding
    ``Market-1501-v15.09.15/``). Returns ``root`` unchanged when nothing matches (the caller's check
    then names what is missing).
    """
    root = Path(root).expanduser()
    if (root / marker).exists():
        return root
    for c in candidates:
        if (root / c / marker).exists():
            return root / c
    return root


def require(root: Path, names: Iterable[str], dataset: str, layout: str) -> None:
    """Raise ``FileNotFoundError`` naming every missing entry and showing the expected layout."""
    missing = [n for n in names if not (root / n).exists()]
    if not root.is_dir():
        missing = [str(root)]
    if missing:
        raise FileNotFoundError(
            f"{dataset}: {', '.join(missing)} not found under {root}.\nExpected layout:\n{layout.rstrip()}\n"
            f"(set data.root to the folder that holds it; `unreid datasets` lists every layout)")


def list_images(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS)


def relabel(samples: list[Sample]) -> list[Sample]:
    """Training identities mapped to ``0..P-1`` in sorted order."""
    mapping = {pid: i for i, pid in enumerate(sorted({s.pid for s in samples}))}
    return [Sample(s.path, mapping[s.pid], s.camid, s.modality) for s in samples]
