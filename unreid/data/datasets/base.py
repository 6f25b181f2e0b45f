"""The sample record, the evaluation trial and the train / query / gallery container every dataset family
returns."""

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
class Trial:
    """One query / gallery split of a data set evaluated over several splits.

    Protocols with random or alternative splits report the mean and spread over them: VehicleID draws one
    gallery image per test identity 10 times per test size (groups ``test_800``, ...), VERI-Wild has three
    test sizes (``small`` / ``medium`` / ``large``), RegDB two directions (``visible_to_thermal`` /
    ``thermal_to_visible``). :func:`unreid.evaluation.trials.evaluate_trials` evaluates every trial and
    aggregates per ``group``.

    Attributes:
        group: name of the set of trials this one is averaged with (e.g. ``"test_800"``, ``"small"``).
        index: position of the trial in its group (VehicleID: the draw's seed).
        query: query samples (file ids kept).
        gallery: gallery samples.
    """

    group: str
    index: int
    query: list[Sample]
    gallery: list[Sample]


@dataclass
class ReIDData:
    """A dataset split into train, query and gallery lists of :class:`Sample`.

    ``train`` identities are relabelled 0..P-1 (they are only ever used to *report*
    pseudo-label quality, or for the supervised reference); query/gallery keep the file's ids.

    ``trials`` (default empty) lists the splits of a multi-trial protocol (:class:`Trial`); when it is
    not empty, ``query`` / ``gallery`` are those of the first trial (the default split, what code that
    reads only them evaluates) and the evaluation reports every group (:mod:`unreid.evaluation.trials`).
    """

    name: str
    train: list[Sample]
    query: list[Sample] = field(default_factory=list)
    gallery: list[Sample] = field(default_factory=list)
    #: free-form notes (protocol, version, skipped files)
    info: dict = field(default_factory=dict)
    #: the splits of a multi-trial protocol; empty = the single ``query`` / ``gallery`` split
    trials: list[Trial] = field(default_factory=list)

    def groups(self) -> dict[str, list[Trial]]:
        """``trials`` by group, in order of first appearance (empty when there are no trials)."""
        out: dict[str, list[Trial]] = {}
        for t in self.trials:
            out.setdefault(t.group, []).append(t)
        return out

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
        for group, trials in self.groups().items():
            q, g = trials[0].query, trials[0].gallery
            lines.append(f"  trials {group}: {len(trials)} x (query {len(q)} images of {len({s.pid for s in q})} ids, "
                         f"gallery {len(g)} images of {len({s.pid for s in g})} ids; first trial shown)")
        return "\n".join(lines)
