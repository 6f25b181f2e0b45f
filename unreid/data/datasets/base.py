"""The sample record and the train / query / gallery container every dataset family returns."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

#: modality codes (``Sample.modality``): visible (RGB) and infrared / thermal
VISIBLE, INFRARED = 0, 1


@dataclass(frozen=True)
class Sample:
    """One image.

    Attributes:
        path: image file path (str).
        pid: identity; ``-1`` when unknown (unlabeled folders, hidden training labels);
            ``0`` is Market-1501's distractor identity, kept in galleries.
        camid: 0-based camera index (Market ``c1`` -> 0).
        modality: :data:`VISIBLE` (0) or :data:`INFRARED` (1).
    """

    path: str
    pid: int
    camid: int
    modality: int = VISIBLE


@dataclass
class ReIDData:
    """A dataset split into train, query and gallery lists of :class:`Sample`.

    ``train`` identities are relabelled 0..P-1 (they are only ever used to *report*
    pseudo-label quality, or for the supervised reference); query/gallery keep the file's ids.
    """

    name: str
    train: list[Sample]
    query: list[Sample] = field(default_factory=list)
    gallery: list[Sample] = field(default_factory=list)
    #: free-form notes (protocol, version, skipped files)
    info: dict = field(default_factory=dict)

    @staticmethod
    def _stats(samples: Sequence[Sample]) -> tuple[int, int, int]:
        return (
            len({s.pid for s in samples}),
            len(samples),
            len({s.camid for s in samples}),
        )

    def summary(self) -> str:
        """A torchreid-style table of ids / images / cameras per split."""
        rows = [("train", *self._stats(self.train))]
        if self.query:
            rows.append(("query", *self._stats(self.query)))
        if self.gallery:
            rows.append(("gallery", *self._stats(self.gallery)))
        lines = [f"=> {self.name}", "  subset   | # ids | # images | # cameras", "  ---------+-------+----------+----------"]
        lines += [f"  {n:<8} | {a:5d} | {b:8d} | {c:9d}" for n, a, b, c in rows]
        return "\n".join(lines)
