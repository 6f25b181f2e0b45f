"""Helpers shared by the dataset families: root resolution, folder checks with layout-aware errors,
image listing and relabelling (after torchreid ``torchreid/data/datasets/dataset.py``,
``check_before_run`` / ``relabel``)."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from unreid.data.datasets.base import Sample

log = logging.getLogger("unreid")

#: image file extensions every family accepts (case-insensitive)
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def resolve_root(root: str | Path, marker: str, candidates: Iterable[str]) -> Path:
    """The data set folder: ``root`` itself when it holds ``marker``, else the first ``root/<candidate>``
    that does.

    Lets users pass either the data set folder or its parent (``data/`` holding
    ``Market-1501-v15.09.15/``). Returns ``root`` unchanged when nothing matches, so that the caller's
    :func:`require` names what is missing there.

    Args:
        root: folder given by the user (``~`` expanded).
        marker: a file or folder name that only the data set folder holds (e.g. ``bounding_box_train``).
        candidates: the family's usual folder names, tried in order.
    """
    root = Path(root).expanduser()
    if (root / marker).exists():
        return root
    for c in candidates:
        if (root / c / marker).exists():
            return root / c
    return root


def require(root: Path, names: Iterable[str], dataset: str, layout: str) -> None:
    """Check the data set folder before loading (torchreid ``check_before_run``).

    Raises:
        FileNotFoundError: ``root`` is not a folder, or some of ``names`` (relative paths) are missing
            under it; the message, one line, names every missing entry and gives the expected ``layout``
            (:func:`one_line`).
    """
    if not root.is_dir():
        missing = [str(root)]
    else:
        missing = [n for n in names if not (root / n).exists()]
    if missing:
        raise FileNotFoundError(
            f"{dataset}: {', '.join(missing)} not found under {root}. Expected layout: {one_line(layout)}. Set "
            "data.root to the data set folder or its parent (`unreid datasets` draws every layout)"
        )


def one_line(layout: str) -> str:
    """A multi-line layout text on one line: each line's runs of spaces collapsed, lines joined by `` | ``."""
    return " | ".join(" ".join(line.split()) for line in layout.strip().splitlines())


def list_images(folder: Path) -> list[Path]:
    """Image files (:data:`IMAGE_EXTS`) directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)


def report_unmatched(dataset: str, folder: Path, names: list[str], expected: str, shown: int = 3) -> int:
    """Log one warning when image files of ``folder`` were ignored because their names do not match the
    family's pattern (how many, and the first ``shown`` names); returns ``len(names)``."""
    if names:
        more = ", ..." if len(names) > shown else ""
        log.warning("%s: %d image file(s) in %s ignored: their names do not match %s (e.g. %s%s)",
                    dataset, len(names), folder, expected, ", ".join(names[:shown]), more)
    return len(names)


def relabel(samples: list[Sample]) -> list[Sample]:
    """Training identities mapped to ``0..P-1`` in sorted order of the original ids (sample order kept)."""
    mapping = {pid: i for i, pid in enumerate(sorted({s.pid for s in samples}))}
    return [Sample(s.path, mapping[s.pid], s.camid, s.modality) for s in samples]


def check_options(name: str, loader: Callable, options: dict) -> None:
    """Raise ``ValueError`` listing the accepted options when ``options`` holds a key ``loader`` lacks."""
    params = inspect.signature(loader).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items()
                if n != "root" and p.kind is not inspect.Parameter.VAR_POSITIONAL]
    unknown = sorted(set(options) - set(accepted))
    if unknown:
        raise ValueError(
            f"{name}: unknown data.options {unknown}; accepted: {accepted or 'none'} (see `unreid datasets`)"
        )


def parse_test_sizes(value: int | str | Sequence[int | str], choices: Sequence[int], dataset: str,
                     names: dict[str, int] | None = None) -> list[int]:
    """Test sizes from ``value``: an int, a comma string (``"800,1600"``) or a list; names of ``names``
    (e.g. ``"small" -> 3000``) are accepted too. Order kept.

    Raises:
        ValueError: an empty value, a size not in ``choices``, or a size given twice.
    """
    names = names or {}
    items = value.split(",") if isinstance(value, str) else ([value] if isinstance(value, int) else list(value))
    out = []
    for item in items:
        text = str(item).strip().lower()
        size = names.get(text, int(text) if text.isdigit() else None)
        if size not in choices:
            known = ", ".join([*map(str, choices), *names])
            raise ValueError(f"{dataset}: data.options.test_sizes: {item!r} is not a test size; choose from {known}")
        if size in out:
            raise ValueError(f"{dataset}: data.options.test_sizes names {size} twice")
        out.append(size)
    if not out:
        raise ValueError(f"{dataset}: data.options.test_sizes is empty; give e.g. \"{choices[0]}\"")
    return out
