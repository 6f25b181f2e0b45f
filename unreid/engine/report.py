"""The run report (``report.html``) and TensorBoard scalars, written by two hooks (issue 35).

:class:`ReportHook` writes ``<output_dir>/report.html``: one self-contained page (figures inlined as
base64 PNG, no script, no external file), readable offline in any browser, built from the run folder
alone (:func:`build_report`), so that it is right for resumed runs too:

* the run's config (``config.yaml``) and environment (python, torch, torchvision, unreid version and git
  commit, device, CPU count);
* per-epoch curves drawn with matplotlib (Agg canvas, no pyplot state): test (and validation) mAP and
  Rank-1, the loss terms, the number of clusters, the outlier ratio, and the pseudo-label NMI / ARI when
  the training identities are known (report only);
* the cluster-size histogram of the last labelling (exact sizes when the trainer's labels are at hand,
  else the record's ``size_histogram`` buckets);
* rank lists: every ``*.png`` in ``<output_dir>/ranklists/`` (the contract with rank-list drawing,
  ``unreid.evaluation.visualize``: whatever writes PNGs there appears in the next report).

:class:`TensorBoardHook` writes the same curves as TensorBoard scalars under ``<output_dir>/tensorboard``
(``torch.utils.tensorboard.SummaryWriter``) when the ``tensorboard`` package is installed
(``pip install "unreid[tensorboard]"``).

Neither hook may break or slow training: every failure is logged as a warning and training goes on;
the report is rewritten at most every :attr:`ReportHook.min_interval_s` seconds during training (the
figures take about a second) and always once at the end. The config keys are ``report`` (true/false)
and ``tensorboard`` (auto/true/false), :class:`unreid.config.Config`.

Rebuild a run's report by hand: ``python -m unreid.engine.report RUN_DIR``.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import os
import platform
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from unreid.engine.hooks import Hook

if TYPE_CHECKING:
    from unreid.engine.trainer import Trainer

log = logging.getLogger("unreid")

REPORT = "report.html"
#: the folder of a run whose PNGs the report shows as rank lists (written by rank-list drawing)
RANKLISTS = "ranklists"
TENSORBOARD = "tensorboard"
#: the rank lists shown at most (the first ones by name)
MAX_RANKLISTS = 12


# ---------------------------------------------------------------------------------------------- reading
def read_records(path: str | Path) -> list[dict[str, Any]]:
    """The records of a ``metrics.jsonl`` file, one per epoch (epoch ``-1``: before training).

    A record repeated for the same epoch (a run resumed from an older checkpoint rewrites the lines it
    repeats) keeps its last version; a line that is not JSON (a write cut short) is skipped with a
    warning. Records are returned in epoch order. A missing file gives ``[]``.
    """
    path = Path(path)
    if not path.exists():
        return []
    by_epoch: dict[int, dict[str, Any]] = {}
    for i, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            log.warning("%s line %d is not JSON; left out of the report", path, i)
            continue
        if isinstance(rec, dict) and isinstance(rec.get("epoch"), int):
            by_epoch[rec["epoch"]] = rec
    return [by_epoch[e] for e in sorted(by_epoch)]


def curves(records: Sequence[dict[str, Any]]) -> dict[str, dict[str, tuple[list[int], list[float]]]]:
    """The per-epoch series of a run: ``{panel: {series: (epochs, values)}}``.

    Panels (present only when some record has them): ``"retrieval"`` (``test mAP``, ``test Rank-1``, and
    ``val mAP`` / ``val Rank-1``; percentages; epoch ``-1`` = before training), ``"losses"`` (every term of
    ``record["losses"]``, epoch means), ``"clusters"`` (``clusters``), ``"outliers"`` (``outlier ratio``
    in [0, 1]), ``"quality"`` (``NMI``, ``ARI``: pseudo-labels against the true training identities,
    report only). A value that is missing or ``None`` in a record leaves a gap (the series skips it).
    """
    out: dict[str, dict[str, tuple[list[int], list[float]]]] = {}

    def add(panel: str, name: str, epoch: int, value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
            return
        xs, ys = out.setdefault(panel, {}).setdefault(name, ([], []))
        xs.append(epoch)
        ys.append(float(value))

    for r in records:
        e = r["epoch"]
        for split in ("test", "val"):
            m = r.get(split) or {}
            add("retrieval", f"{split} mAP", e, m.get("mAP"))
            add("retrieval", f"{split} Rank-1", e, m.get("rank1"))
        for k, v in (r.get("losses") or {}).items():
            add("losses", k, e, v)
        pl = r.get("pseudo_labels") or {}
        add("clusters", "clusters", e, pl.get("num_clusters"))
        add("outliers", "outlier ratio", e, pl.get("outlier_ratio"))
        add("quality", "NMI", e, pl.get("nmi"))
        add("quality", "ARI", e, pl.get("ari"))
    return out


PANEL_TITLES = {
    "retrieval": ("Retrieval (test set; epoch -1 = before training)", "%"),
    "losses": ("Loss terms (epoch means)", "loss"),
    "clusters": ("Number of clusters", "clusters"),
    "outliers": ("Outlier ratio (samples left out of every cluster)", "ratio"),
    "quality": ("Pseudo-labels vs true training identities (report only)", "score"),
}


# ---------------------------------------------------------------------------------------------- drawing
def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return buf.getvalue()


def curve_png(title: str, ylabel: str, series: dict[str, tuple[list[int], list[float]]]) -> bytes:
    """A line plot (PNG bytes, 640x320 px) of ``series`` (name -> (epochs, values)) against the epoch.

    Drawn on a matplotlib ``Figure`` with the Agg canvas: no pyplot, no global backend change, so it
    is safe inside any program (a notebook keeps its backend).
    """
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 3.2))
    ax = fig.add_subplot()
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    for name, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", markersize=3, label=name)
    xs_all = [x for xs, _ in series.values() for x in xs]
    if xs_all:  # whole epochs, with room for a single point (else matplotlib draws +-0.05 ticks)
        ax.set_xlim(min(xs_all) - 0.5, max(xs_all) + 0.5)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("epoch")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def cluster_sizes(labels: np.ndarray) -> np.ndarray:
    """``(C,) int64``: the number of members of each cluster of ``labels`` (``(N,) int``, ``-1`` = outlier,
    left out)."""
    labels = np.asarray(labels)
    _, counts = np.unique(labels[labels >= 0], return_counts=True)
    return counts.astype(np.int64)


def histogram_png(title: str, sizes: np.ndarray | None = None, buckets: dict[str, int] | None = None) -> bytes:
    """Bar chart (PNG bytes) of the cluster sizes: with ``sizes`` (``(C,) int``) one bar per size (how many
    clusters have that many members); else one bar per bucket of ``buckets`` (name -> clusters, the
    record's ``size_histogram``, :data:`unreid.pseudo_labels.quality.SIZE_BUCKETS`)."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(6.4, 3.2))
    ax = fig.add_subplot()
    ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    if sizes is not None:
        values, counts = np.unique(np.asarray(sizes, dtype=np.int64), return_counts=True)
        ax.bar(values, counts, width=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
        ax.set_xlabel("cluster size (members)")
    else:
        names = list((buckets or {}).keys())
        ax.bar(range(len(names)), [buckets[n] for n in names] if buckets else [], width=0.8)
        ax.set_xticks(range(len(names)), names)
        ax.set_xlabel("cluster size (members, buckets)")
    ax.set_ylabel("clusters")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    return _png(fig)


# ---------------------------------------------------------------------------------------------- environment
def git_commit(path: str | Path) -> str | None:
    """The git commit (``HEAD``, with ``-dirty`` when there are uncommitted changes) of the checkout holding
    ``path``, or ``None`` outside a git checkout / without git. Takes at most a few seconds."""
    try:
        cwd = Path(path).resolve().parent if Path(path).is_file() else Path(path).resolve()
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        if head.returncode != 0:
            return None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5)
        return head.stdout.strip() + ("-dirty" if dirty.returncode == 0 and dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return None


def environment(device: Any = None) -> dict[str, str]:
    """What the run ran on: python, platform, torch, torchvision, unreid (version, git commit of its
    source when it is a checkout), CUDA / the device, and the CPU count (``os.cpu_count`` and, where the
    process is pinned to fewer, ``sched_getaffinity``)."""
    import torch
    import torchvision

    import unreid

    try:
        from importlib.metadata import version

        unreid_version = version("unreid")
    except Exception:  # not installed (PYTHONPATH checkout)
        unreid_version = "not installed"
    env = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "unreid": unreid_version,
        "unreid source": str(Path(unreid.__file__).parent),
        "unreid git commit": git_commit(Path(unreid.__file__).parent) or "unknown (not a git checkout)",
        "device": str(device) if device is not None else "unknown",
        "CUDA": (f"{torch.version.cuda}, {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
                 else "not available"),
        "CPU count": str(os.cpu_count()),
    }
    if hasattr(os, "sched_getaffinity"):
        env["CPU count"] += f" ({len(os.sched_getaffinity(0))} usable by this process)"
    return env


# ---------------------------------------------------------------------------------------------- the page
_CSS = """
body { font-family: sans-serif; max-width: 70em; margin: 1em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; border-bottom: 1px solid #ccc; margin-top: 1.5em; }
table { border-collapse: collapse; } td, th { border: 1px solid #ccc; padding: 2px 8px; text-align: left; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { background: #f6f6f6; padding: 0.5em; overflow-x: auto; font-size: 0.85em; }
.banner { background: #fde2e1; border: 1px solid #c00; padding: 0.5em; font-weight: bold; }
figure { display: inline-block; margin: 0.5em; } figcaption { font-size: 0.85em; color: #555; }
img.figure { max-width: 100%; }
"""


def _img(png: bytes, alt: str, cls: str = "figure") -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img class="{cls}" alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3f}" if abs(v) < 10 else f"{v:.1f}"
    return html.escape(str(v))


def _epoch_table(records: Sequence[dict[str, Any]]) -> str:
    cols = [("epoch", lambda r: "before" if r["epoch"] < 0 else r["epoch"]),
            ("mAP", lambda r: (r.get("test") or {}).get("mAP")),
            ("Rank-1", lambda r: (r.get("test") or {}).get("rank1")),
            ("loss", lambda r: (r.get("losses") or {}).get("loss")),
            ("clusters", lambda r: (r.get("pseudo_labels") or {}).get("num_clusters")),
            ("outlier ratio", lambda r: (r.get("pseudo_labels") or {}).get("outlier_ratio")),
            ("NMI", lambda r: (r.get("pseudo_labels") or {}).get("nmi")),
            ("ARI", lambda r: (r.get("pseudo_labels") or {}).get("ari")),
            ("time (s)", lambda r: r.get("time_epoch_s"))]
    head = "".join(f"<th>{html.escape(n)}</th>" for n, _ in cols)
    rows = "".join("<tr>" + "".join(f'<td class="num">{_fmt(f(r))}</td>' for _, f in cols) + "</tr>"
                   for r in records)
    return f'<table id="epoch-table"><tr>{head}</tr>{rows}</table>'


def build_report(run_dir: str | Path, env: dict[str, str] | None = None,
                 sizes: np.ndarray | None = None, status: str = "") -> str:
    """The HTML text of a run's report, from its folder (``config.yaml``, ``metrics.jsonl``,
    ``ranklists/*.png``).

    Args:
        run_dir: the run's output folder.
        env: the environment table (:func:`environment`); ``None`` leaves the section out.
        sizes: ``(C,) int`` members of each cluster of the last labelling (:func:`cluster_sizes`); ``None``
            draws the last record's ``size_histogram`` buckets instead.
        status: one line shown under the title (e.g. ``"training: epoch 3 of 8 done"``).

    Returns:
        A complete HTML5 document; every figure is an ``<img>`` with a ``data:image/png;base64`` source
        (class ``figure``) and a ``<figcaption>``; sections have the ids ``config``, ``environment``,
        ``curves``, ``clusters``, ``ranklists``, ``epochs``.
    """
    run_dir = Path(run_dir)
    records = read_records(run_dir / "metrics.jsonl")
    cfg_path = run_dir / "config.yaml"
    cfg_text = cfg_path.read_text() if cfg_path.exists() else "(no config.yaml in the run folder)"
    supervised = any(r.get("mode") == "supervised" for r in records)
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             f"<title>unreid run report: {e(run_dir.name)}</title><style>{_CSS}</style></head><body>",
             f"<h1>unreid run report: {e(run_dir.name)}</h1>",
             f"<p>Folder <code>{e(str(run_dir.resolve()))}</code>; written {time.strftime('%Y-%m-%d %H:%M:%S %Z')}."
             f" {e(status)}</p>"]
    if supervised:
        parts.append('<p class="banner">SUPERVISED REFERENCE: this run trains on GROUND-TRUTH identities '
                     "(upper bound, not unsupervised).</p>")
    last_test = next((r for r in reversed(records) if r.get("test")), None)
    if last_test is not None:
        t = last_test["test"]
        when = "before training" if last_test["epoch"] < 0 else f"epoch {last_test['epoch']}"
        parts.append(f"<p>Last evaluation ({e(when)}): mAP <b>{_fmt(t.get('mAP'))}</b>, "
                     f"Rank-1 <b>{_fmt(t.get('rank1'))}</b>, Rank-5 {_fmt(t.get('rank5'))}, mINP "
                     f"{_fmt(t.get('mINP'))}.</p>")

    parts.append('<h2 id="curves">Curves</h2>')
    series = curves(records)
    if not series:
        parts.append("<p>No epoch recorded yet.</p>")
    for panel, (title, ylabel) in PANEL_TITLES.items():
        if panel in series:
            parts.append(f"<figure>{_img(curve_png(title, ylabel, series[panel]), title)}"
                         f"<figcaption>{e(title)}</figcaption></figure>")

    parts.append('<h2 id="clusters">Cluster sizes of the last labelling</h2>')
    last_pl = next((r for r in reversed(records) if r.get("pseudo_labels")), None)
    if sizes is not None and len(sizes):
        title = f"{len(sizes)} clusters, {int(np.sum(sizes))} clustered samples"
        parts.append(f"<figure>{_img(histogram_png(title, sizes=sizes), title)}<figcaption>{e(title)}"
                     "</figcaption></figure>")
    elif last_pl is not None and last_pl["pseudo_labels"].get("size_histogram"):
        pl = last_pl["pseudo_labels"]
        title = f"epoch {last_pl['epoch']}: {pl.get('num_clusters')} clusters (size buckets of metrics.jsonl)"
        parts.append(f"<figure>{_img(histogram_png(title, buckets=pl['size_histogram']), title)}"
                     f"<figcaption>{e(title)}</figcaption></figure>")
    else:
        parts.append("<p>No labelling recorded yet.</p>")

    # --- rank lists: the contract with rank-list drawing (unreid.evaluation.visualize): PNGs in ranklists/
    parts.append('<h2 id="ranklists">Rank lists</h2>')
    pngs = sorted((run_dir / RANKLISTS).glob("*.png")) if (run_dir / RANKLISTS).is_dir() else []
    if not pngs:
        parts.append(f"<p>None: rank-list images written to <code>{RANKLISTS}/*.png</code> in the run folder "
                     "appear here.</p>")
    for p in pngs[:MAX_RANKLISTS]:
        try:
            parts.append(f"<figure>{_img(p.read_bytes(), p.stem)}<figcaption>{e(p.name)}</figcaption></figure>")
        except OSError as err:
            parts.append(f"<p>{e(p.name)}: not readable ({e(str(err))})</p>")
    if len(pngs) > MAX_RANKLISTS:
        parts.append(f"<p>... and {len(pngs) - MAX_RANKLISTS} more in <code>{RANKLISTS}/</code>.</p>")

    parts.append('<h2 id="epochs">Per epoch</h2>')
    parts.append(_epoch_table(records) if records else "<p>No record yet.</p>")
    parts.append('<h2 id="config">Config</h2>')
    parts.append(f"<pre>{e(cfg_text)}</pre>")
    if env is not None:
        parts.append('<h2 id="environment">Environment</h2><table>')
        parts.extend(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in env.items())
        parts.append("</table>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(run_dir: str | Path, **kwargs: Any) -> Path:
    """Write :func:`build_report` to ``<run_dir>/report.html`` atomically (a reader never sees half a
    page); returns its path. ``kwargs`` go to :func:`build_report`."""
    from unreid.engine.checkpoint import atomic_write_text

    path = Path(run_dir) / REPORT
    return atomic_write_text(path, build_report(run_dir, **kwargs))


# ---------------------------------------------------------------------------------------------- hooks
def _trainer_sizes(trainer: Trainer) -> np.ndarray | None:
    labels = getattr(trainer.method, "labels", None)
    if labels is None:
        return None
    return cluster_sizes(labels.cluster_labels)


class ReportHook(Hook):
    """Writes ``<output_dir>/report.html`` (:func:`write_report`) after an epoch's commit, at most every
    ``min_interval_s`` seconds, and always at the end of training.

    Priority 45: after :class:`~unreid.engine.hooks.CheckpointHook` (40), so the page shows the committed
    epoch. Failures are logged as warnings (training goes on).

    Args:
        min_interval_s: the least time between two reports during training (default 60 s: the figures
            take about a second, under 2 % of a run's time).
    """

    priority = 45

    def __init__(self, min_interval_s: float = 60.0) -> None:
        self.min_interval_s = float(min_interval_s)
        self._last = -float("inf")
        self._env: dict[str, str] | None = None

    def _write(self, trainer: Trainer, status: str) -> None:
        from unreid.engine import dist

        if not dist.is_main():  # under torchrun only rank 0 writes (docs/DISTRIBUTED.md)
            return
        try:
            if self._env is None:
                self._env = environment(trainer.device)
            write_report(trainer.output_dir, env=self._env, sizes=_trainer_sizes(trainer), status=status)
            self._last = time.monotonic()
        except Exception as err:  # the report must never stop training
            log.warning("report.html not written: %s: %s", type(err).__name__, err)

    def _ranklists(self, trainer: Trainer) -> None:
        """``cfg.report_ranklists`` rank lists of the trained model on the data set's query / gallery, into
        ``<output_dir>/ranklists`` (:func:`unreid.evaluation.visualize.draw_rank_lists`; the same names on a
        rerun are replaced, nothing else there is touched). Failures are warnings."""
        try:
            k, data, cfg = int(trainer.cfg.report_ranklists), trainer.data, trainer.cfg
            if k <= 0 or not data.query or not data.gallery:
                return
            from unreid.engine import dist
            from unreid.evaluation.visualize import draw_rank_lists
            from unreid.rng import preserved_rng

            query, gallery = list(data.query), list(data.gallery)
            with preserved_rng(trainer.device):
                feats = trainer.extract(query + gallery)  # every rank: sharded under torchrun
            if not dist.is_main():
                return
            draw_rank_lists(feats[:len(query)], feats[len(query):], query, gallery, k,
                            trainer.output_dir / RANKLISTS, protocol=cfg.eval.protocol, rerank=cfg.eval.rerank,
                            seed=cfg.seed, size=(cfg.data.height, cfg.data.width))
        except Exception as err:  # the report must never stop training
            log.warning("rank lists not drawn: %s: %s", type(err).__name__, err)

    def after_epoch(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if time.monotonic() - self._last >= self.min_interval_s and not trainer.is_last_epoch:
            self._write(trainer, f"Training: {trainer.state.epoch} of {trainer.total_epochs} epochs done.")

    def after_train(self, trainer: Trainer) -> None:
        self._ranklists(trainer)
        self._write(trainer, f"Training finished: {trainer.state.epoch} of {trainer.total_epochs} epochs.")
        log.info("report: %s", trainer.output_dir / REPORT)


def tensorboard_available() -> bool:
    """Whether ``torch.utils.tensorboard`` can be used (the ``tensorboard`` package is installed)."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return False
    return True


def scalars(record: dict[str, Any]) -> dict[str, float]:
    """The TensorBoard scalars of one ``metrics.jsonl`` record: ``test/mAP``, ``test/rank1`` (and the other
    retrieval metrics, ``val/...``), ``loss/<term>``, ``pseudo_labels/num_clusters``,
    ``pseudo_labels/outlier_ratio``, ``pseudo_labels/nmi``, ``pseudo_labels/ari`` (when known), ``lr``."""
    from unreid.engine.hooks import METRIC_KEYS

    out: dict[str, float] = {}

    def put(tag: str, v: Any) -> None:
        if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
            out[tag] = float(v)

    for split in ("test", "val"):
        for k in METRIC_KEYS:
            put(f"{split}/{k}", (record.get(split) or {}).get(k))
    for k, v in (record.get("losses") or {}).items():
        put(f"loss/{k}", v)
    pl = record.get("pseudo_labels") or {}
    for k in ("num_clusters", "outlier_ratio", "nmi", "ari"):
        put(f"pseudo_labels/{k}", pl.get(k))
    put("lr", record.get("lr"))
    return out


class TensorBoardHook(Hook):
    """TensorBoard scalars (:func:`scalars`) of every epoch's record under ``<output_dir>/tensorboard``.

    The step of epoch ``e`` is ``e + 1`` (epochs trained); the evaluation before training is step 0. A
    resumed run appends to the same folder from the epoch it resumes at. Priority 45 (after the commit).
    A failure is logged once as a warning and turns the hook off (training goes on).
    """

    priority = 45

    def __init__(self) -> None:
        self.writer: Any = None

    def before_train(self, trainer: Trainer) -> None:
        from unreid.engine import dist

        if not dist.is_main():  # under torchrun only rank 0 writes (docs/DISTRIBUTED.md)
            return
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(log_dir=str(Path(trainer.output_dir) / TENSORBOARD))
            if trainer.state.epoch == 0:  # the evaluation before training, written by EvaluationHook
                for r in read_records(Path(trainer.output_dir) / "metrics.jsonl"):
                    if r["epoch"] < 0:
                        self._add(r, 0)
        except Exception as err:
            log.warning("TensorBoard scalars off: %s: %s", type(err).__name__, err)
            self.writer = None

    def _add(self, record: dict[str, Any], step: int) -> None:
        for tag, v in scalars(record).items():
            self.writer.add_scalar(tag, v, step)
        self.writer.flush()

    def after_epoch(self, trainer: Trainer, record: dict[str, Any]) -> None:
        if self.writer is None:
            return
        try:
            self._add(record, int(record["epoch"]) + 1)
        except Exception as err:
            log.warning("TensorBoard scalars off: %s: %s", type(err).__name__, err)
            self.close()

    def after_train(self, trainer: Trainer) -> None:
        self.close()

    def close(self) -> None:
        if self.writer is not None:
            try:
                self.writer.close()
            except Exception:  # pragma: no cover
                pass
            self.writer = None


def report_hooks(cfg: Any) -> list[Hook]:
    """The hooks a run gets from its config: :class:`ReportHook` with ``report: true``;
    :class:`TensorBoardHook` with ``tensorboard: true``, or ``auto`` when the package is installed.

    Raises:
        unreid.config.ConfigError: ``tensorboard: true`` without the ``tensorboard`` package.
    """
    from unreid.config import ConfigError

    hooks: list[Hook] = []
    if cfg.report:
        hooks.append(ReportHook())
    tb = str(cfg.tensorboard).lower()
    if tb == "true" and not tensorboard_available():
        raise ConfigError('tensorboard=true but the tensorboard package is not installed: pip install '
                          '"unreid[tensorboard]", or set tensorboard=auto / false')
    if tb == "true" or (tb == "auto" and tensorboard_available()):
        hooks.append(TensorBoardHook())
    return hooks


def main(argv: list[str] | None = None) -> int:
    """``python -m unreid.engine.report RUN_DIR [...]``: (re)write ``report.html`` of each run folder from
    its files (no environment section: it describes the run's machine, known only while training)."""
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m unreid.engine.report RUN_DIR [RUN_DIR ...]", file=sys.stderr)
        return 2
    for a in args:
        if not (Path(a) / "metrics.jsonl").exists():
            print(f"error: {a} holds no metrics.jsonl; give the output folder of a training run", file=sys.stderr)
            return 2
        print(write_report(a, status="Rebuilt from the run folder."))
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
