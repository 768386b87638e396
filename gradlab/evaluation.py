"""``gradlab evaluate RUN``: a trained run's network on its own test set or another
dataset's: test loss and accuracy, accuracy per class and the confusion matrix.

The network is the run's ``model.safetensors`` (or ``model-best.safetensors``), evaluated in
float32 on the chosen device, in the batches and with the same code training evaluates with
(:func:`gradlab.train.evaluate`), so that the run's own test set gives its
``final_test_accuracy`` and ``final_test_loss`` (for a run trained in float32). Pixels are
prepared as the run prepared them: in [0, 1], or, with ``data.normalize``, standardized by
the run's own training-set statistics (recomputed from its data for its own dataset; for
another dataset the mean and std ``meta.json`` recorded, to 6 digits).

Results go beside the run, in ``evaluations/`` (``<dataset>-<which>.json``, ``.csv``,
``.png``), each written whole or not at all; nothing training recorded changes.
"""

from __future__ import annotations

import json
import math
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from gradlab.errors import GradlabError, RunFolderError
from gradlab.runlog import read_config, read_meta, write_text_atomically

EVALUATIONS_DIR = "evaluations"
CLASSES = 10


@dataclass
class Evaluation:
    """One evaluation of a run's network on a dataset's test set.

    ``confusion[i][j]``: test examples of class ``i`` predicted as ``j``.
    """

    run: str
    which: str
    dataset: dict[str, Any]
    examples: int
    test_loss: float
    test_accuracy: float
    per_class: list[dict[str, Any]]  # label, count, correct, accuracy (None without examples)
    confusion: list[list[int]]
    weights: dict[str, Any] = field(default_factory=dict)  # file, step, sha256
    evaluated: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def csv_text(self) -> str:
        """One row per class: its count, correct predictions, accuracy, then its row of the
        confusion matrix (``predicted_0`` ... ``predicted_9``)."""
        header = ["class", "count", "correct", "accuracy"]
        header += [f"predicted_{j}" for j in range(CLASSES)]
        lines = [",".join(header)]
        for row, counts in zip(self.per_class, self.confusion, strict=True):
            accuracy = "" if row["accuracy"] is None else format(row["accuracy"], ".7g")
            cells = [row["label"], row["count"], row["correct"], accuracy, *counts]
            lines.append(",".join(map(str, cells)))
        return "\n".join(lines) + "\n"

    @property
    def stem(self) -> str:
        """The files' name in ``evaluations/``: ``<dataset>-<which>``."""
        return f"{self.dataset['name']}-{self.which}"


def evaluate_run(
    run: str | Path,
    data: str | None = None,
    root: str | None = None,
    which: str = "final",
    device: str = "cpu",
    batch_size: int | None = None,
) -> Evaluation:
    """Evaluate the network of the run folder ``run`` on the test set of ``data`` (default:
    the run's own dataset) read from ``root`` (default: the run's ``data.root``).

    Raises:
        RunFolderError: not a run folder, no such weights.
        GradlabError: an unknown dataset name, a device this machine lacks, data that cannot
            be read.
    """
    import hashlib

    import torch

    from gradlab.config import DataConfig
    from gradlab.data import load_dataset
    from gradlab.environment import now_iso, resolve_device
    from gradlab.train import evaluate
    from gradlab.weights import WEIGHT_FILES, load_model

    folder = Path(run)
    model = load_model(folder, which)  # checks the folder, the file and the network
    config, meta = read_config(folder), read_meta(folder)
    own = dict(config.get("data") or {})
    names = typing.get_args(DataConfig.model_fields["name"].annotation)
    if data is not None and data not in names:
        raise GradlabError(f"data {data!r}: unknown dataset; use one of {', '.join(names)}")
    name = data or own.get("name", "mnist")
    same = name == own.get("name") and (root is None or root == own.get("root"))
    given_root = root  # files the user points at are not downloaded
    if root is None:  # the run's, relative to where it trained when not found here
        root = str(own.get("root", "data"))
        trained_in = meta.get("cwd")
        if not Path(root).is_absolute() and not Path(root).exists() and trained_in:
            root = str(Path(trained_in) / root)
    spec = {
        "name": name,
        "root": root,
        "download": bool(own.get("download", True)) and given_root is None,
        "normalize": bool(own.get("normalize")) and same,  # the run's statistics, below
    }
    target = resolve_device(device)
    try:
        dataset = load_dataset(DataConfig.model_validate(spec), target)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise GradlabError(f"cannot read the data: {where}{exc.strerror or exc}") from None
    test_x, test_y = dataset.test_x, dataset.test_y
    if own.get("normalize") and not same:  # another dataset, prepared as the run's was
        stats = (meta.get("dataset") or {}).get("normalize") or {}
        if not {"mean", "std"} <= set(stats):
            raise RunFolderError(f"{folder}/meta.json: no normalize mean and std recorded")
        test_x = (test_x - float(stats["mean"])) / float(stats["std"])
    model = model.to(target)
    size = batch_size or int((config.get("train") or {}).get("eval_batch_size", 10000))
    loss, accuracy = evaluate(model, test_x, test_y, size, None)
    with torch.inference_mode():
        predicted = torch.cat(
            [model(test_x[i : i + size]).argmax(1) for i in range(0, len(test_x), size)]
        )
        pairs = test_y.long() * CLASSES + predicted.long()
        confusion = torch.bincount(pairs.cpu(), minlength=CLASSES * CLASSES)
    matrix = confusion.reshape(CLASSES, CLASSES).tolist()
    per_class = []
    for label, row in enumerate(matrix):
        count, correct = sum(row), row[label]
        per_class.append(
            {
                "label": label,
                "count": count,
                "correct": correct,
                "accuracy": correct / count if count else None,
            }
        )
    weights_file = folder / WEIGHT_FILES[which]
    info = {k: v for k, v in dataset.info.items() if k != "normalize"}
    info.update(name=name, root=spec["root"], prepared=_prepared(own, same, meta))
    return Evaluation(
        run=str(folder),
        which=which,
        dataset=info,
        examples=len(test_y),
        test_loss=loss,
        test_accuracy=accuracy,
        per_class=per_class,
        confusion=matrix,
        weights={
            "file": weights_file.name,
            "sha256": hashlib.sha256(weights_file.read_bytes()).hexdigest(),
        },
        evaluated=now_iso(),
    )


def _prepared(own: dict[str, Any], same: bool, meta: dict[str, Any]) -> str:
    if not own.get("normalize"):
        return "pixels / 255"
    if same:
        return "standardized by the run's training-set mean and std"
    stats = (meta.get("dataset") or {}).get("normalize") or {}
    return f"standardized by the run's recorded mean {stats.get('mean')} and std {stats.get('std')}"


def write_evaluation(result: Evaluation, plot: str | Path | None = None) -> list[Path]:
    """Write ``result`` into its run's ``evaluations/`` folder (``<stem>.json``, ``.csv``,
    ``.png``) and, with ``plot``, its confusion-matrix figure there too (PNG, PDF or SVG by
    its suffix); returns the files written.

    Raises:
        OSError: a file cannot be written (what was written before it stays whole).
    """
    from gradlab.study.figures import check_plot_path, save_figure

    if plot is not None:
        check_plot_path(plot)  # before anything is written
    folder = Path(result.run) / EVALUATIONS_DIR
    folder.mkdir(exist_ok=True)
    stem = folder / result.stem
    json_file, csv_file = stem.with_suffix(".json"), stem.with_suffix(".csv")
    data = result.to_dict()
    write_text_atomically(json_file, json.dumps(data, indent=2, default=_json_default) + "\n")
    write_text_atomically(csv_file, result.csv_text())
    written = [json_file, csv_file, save_figure(confusion_figure(result), stem.with_suffix(".png"))]
    if plot is not None:
        written.append(save_figure(confusion_figure(result), plot))
    return written


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def confusion_figure(result: Evaluation):
    """The confusion matrix as a figure: rows the true class, columns the predicted one,
    each cell the share of its row (the count written in it), per-class accuracy beside."""
    from gradlab.study.figures import new_figure

    fig = new_figure(6.2, 5.4)
    ax = fig.add_subplot()
    counts = result.confusion
    shares = [[c / sum(row) if sum(row) else 0.0 for c in row] for row in counts]
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    for i, row in enumerate(counts):
        for j, count in enumerate(row):
            if count:
                colour = "white" if shares[i][j] > 0.5 else "black"
                ax.text(j, i, str(count), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(CLASSES))
    ax.set_yticks(range(CLASSES))
    labels = [
        f"{r['label']} ({r['accuracy']:.0%})" if r["accuracy"] is not None else f"{r['label']}"
        for r in result.per_class
    ]
    ax.set_yticklabels(labels)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class (its accuracy)")
    ax.set_title(
        f"{Path(result.run).name} ({result.which}) on {result.dataset['name']}: "
        f"accuracy {result.test_accuracy:.4f}",
        fontsize=9,
    )
    fig.colorbar(image, ax=ax, label="share of the true class")
    return fig
