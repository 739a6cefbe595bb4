"""Renderings of an eval report: Markdown, config snippets of thresholds, the confusion PNG."""

from __future__ import annotations

import importlib.util
import io
import json

import numpy as np

from monitor.errors import ConfigError
from monitor.offline.results import THRESHOLD_DIGITS, EvalReport, ModeReport

INSTALL_EVAL = "pip install 'audio-monitor[eval]'"
NEVER_DETECTED = 1.0  # the threshold written for a label that never reached the precision


def _fmt(value: float | None, digits: int = 3) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


def markdown(report: EvalReport) -> str:
    """report.md: the run's settings, summary, per-class table, thresholds and failed clips."""
    ds = report.dataset
    labels = ds.classes
    modes = list(report.modes)
    results = list(report.modes.values())
    target = report.target_precision
    folds = ", ".join(str(f) for f in ds.folds) if ds.folds else "all"
    background = report.background
    lines = [
        f"# Zero-shot evaluation on {_md(ds.name)}",
        "",
        f"- Dataset: `{ds.source}` ({ds.kind}), folds: {folds}"
        + (f", first {ds.limit} clips by filename" if ds.limit else ""),
        f"- Clips: {ds.clips_evaluated} evaluated, {ds.clips_failed} could not be read, "
        f"{len(labels)} classes",
        f"- Model: `{report.model.name}`",
        "- Prompt template(s): " + ", ".join(f"`{t}`" for t in report.templates),
        "- Background labels: "
        + (
            ", ".join(f"`{b}`" for b in background) + " (used by both modes, never predicted)"
            if background
            else "none"
        ),
        f"- Clip score: {report.aggregate} over {report.window_seconds:g} s windows "
        f"(hop {report.hop_seconds:g} s), {report.windows} windows",
        "",
        "## Summary",
        "",
        "| | " + " | ".join(modes) + " |",
        "|---|" + "---:|" * len(modes),
    ]
    k = results[0].top5_k
    reached = [sum(t is not None for t in r.thresholds.values()) for r in results]
    lines += [
        "| top-1 accuracy | " + " | ".join(_fmt(r.top1) for r in results) + " |",
        f"| top-{k} accuracy | " + " | ".join(_fmt(r.top5) for r in results) + " |",
        "| mAP (macro AP) | " + " | ".join(_fmt(r.mAP) for r in results) + " |",
        f"| classes reaching precision {target:g} | "
        + " | ".join(f"{n}/{len(labels)}" for n in reached)
        + " |",
        "",
        "Top-1/top-k accuracy and the confusion matrix depend only on how the labels rank for "
        "each clip. Within one window both modes rank the labels alike, so these can differ "
        "only when a clip's windows are pooled. The modes differ in how well one fixed "
        "threshold per label separates its clips from the rest: AP and the thresholds below. "
        "A tie between the true class and another counts as a miss.",
        "",
        "## Per class",
        "",
        "| class | clips | "
        + " | ".join(f"top-1 acc ({m})" for m in modes)
        + " | "
        + " | ".join(f"AP ({m})" for m in modes)
        + " |",
        "|---|---:|" + "---:|" * (2 * len(modes)),
    ]
    for label in labels:
        accs = [_fmt(r.per_class_accuracy[label]) for r in results]
        aps = [_fmt(r.average_precision[label]) for r in results]
        support = results[0].support[label]
        lines.append(f"| {_md(label)} | {support} | " + " | ".join(accs + aps) + " |")
    lines += [
        "",
        f"## Suggested thresholds (precision >= {target:g})",
        "",
        "The lowest score at which a label reaches the target precision one-vs-rest over these "
        "clips (detected = score >= threshold), with the recall it gives; `-` = not reached. "
        "As config snippets: "
        + ", ".join(f"`thresholds-{m}.yaml`" for m in modes)
        + " next to this report.",
        "",
        "| class | " + " | ".join(f"{m} threshold | precision | recall" for m in modes) + " |",
        "|---|" + "---:|" * (3 * len(modes)),
    ]
    for label in labels:
        cells = []
        for r in results:
            point = r.thresholds[label]
            if point is None:
                cells += ["-", "-", "-"]
            else:
                cells += [
                    f"{point.config_threshold:.{THRESHOLD_DIGITS}g}",
                    _fmt(point.precision),
                    _fmt(point.recall),
                ]
        lines.append(f"| {_md(label)} | " + " | ".join(cells) + " |")
    lines += ["", "## Confusion matrix", "", "![Confusion matrix](confusion_matrix.png)", ""]
    if report.failed_clips:
        lines += ["## Clips that could not be read", ""]
        lines += [f"- `{f.filename}`: {_md(f.reason)}" for f in report.failed_clips]
        lines.append("")
    return "\n".join(lines)


def _yaml_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # a JSON string is a YAML double-quoted scalar


def thresholds_yaml(report: EvalReport, mode: str) -> str:
    """A `label_sets:` snippet for a config, with the suggested threshold of each label."""
    result: ModeReport = report.modes[mode]
    target = report.target_precision
    templates = ", ".join(_yaml_str(t) for t in report.templates)
    background = ", ".join(_yaml_str(b) for b in report.background)
    lines = [
        f"# Thresholds suggested by `audio-monitor eval` on {report.dataset.source}",
        f"# ({mode} mode): per label, the lowest score with precision >= {target:g}",
        "# over the evaluated clips.",
        "# Paste into a config (merge with its label_sets) and check them on your own audio.",
        "label_sets:",
        f"  - name: {_yaml_str(report.dataset.name)}",
        f"    mode: {mode}",
        f"    prompt_template: [{templates}]",
        f"    background: [{background}]",
        "    labels:",
    ]
    for label in report.dataset.classes:
        point = result.thresholds[label]
        lines.append(f"      - name: {_yaml_str(label)}")
        if point is None:
            why = "no clip of this class" if result.support[label] == 0 else "not reached"
            lines.append(
                f"        threshold: {NEVER_DETECTED}  # precision {target:g} {why}: "
                "never detected; choose one by hand"
            )
        else:
            lines.append(
                f"        threshold: {point.config_threshold!r}  # precision "
                f"{point.precision:.3f}, recall {point.recall:.3f} "
                f"({point.true_positives}/{point.positives} clips)"
            )
    return "\n".join(lines) + "\n"


def summary_table(report: EvalReport) -> str:
    """The few lines eval prints: top-1, top-k and mAP of each mode."""
    k = min(5, len(report.dataset.classes))
    rows = [("mode", "top-1", f"top-{k}", "mAP")]
    rows += [(mode, _fmt(r.top1), _fmt(r.top5), _fmt(r.mAP)) for mode, r in report.modes.items()]
    return "\n".join(f"{a:<10} {b:>6} {c:>6} {d:>6}" for a, b, c, d in rows)


def require_matplotlib() -> None:
    """ConfigError saying how to install matplotlib, before anything slow happens."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ConfigError(f"eval draws its confusion matrix with matplotlib: {INSTALL_EVAL}")


def confusion_png(report: EvalReport) -> bytes:
    """The confusion matrices (one panel per distinct matrix) as a PNG: counts in cells, rows
    coloured by the fraction of the true class."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ConfigError(
            f"eval draws its confusion matrix with matplotlib: {INSTALL_EVAL}"
        ) from err

    labels = list(report.dataset.classes)
    # Modes rank labels alike within a window, so their matrices usually match: draw it once.
    panels: list[tuple[list[str], np.ndarray]] = []
    for mode, result in report.modes.items():
        matrix = np.array(result.confusion_matrix.counts, dtype=np.int64)
        same = next((p for p in panels if np.array_equal(p[1], matrix)), None)
        if same is None:
            panels.append(([mode], matrix))
        else:
            same[0].append(mode)
    n = len(labels)
    side = max(5.0, 0.5 * n + 2.5)
    font = 10  # the figure grows with the classes, so cells always fit this size
    figure = Figure(figsize=(side * len(panels) + 1.0, side), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (modes, matrix) in zip(axes, panels, strict=True):
        support = matrix.sum(axis=1, keepdims=True)
        fraction = np.divide(matrix, support, out=np.zeros(matrix.shape), where=support > 0)
        image = ax.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=font)
        ax.set_yticks(range(n), labels, fontsize=font)
        ax.set_xlabel("predicted (top-1)")
        ax.set_ylabel("true class")
        name = " and ".join(modes) + (" modes (the same matrix)" if len(modes) > 1 else " mode")
        ax.set_title(name, fontsize=font + 1)
        for i in range(n):
            for j in range(n):
                if matrix[i, j]:
                    colour = "white" if fraction[i, j] > 0.5 else "black"
                    ax.text(
                        j,
                        i,
                        str(matrix[i, j]),
                        ha="center",
                        va="center",
                        color=colour,
                        fontsize=font,
                    )
    figure.colorbar(image, ax=list(axes), shrink=0.8, label="fraction of the true class")
    ds = report.dataset
    figure.suptitle(f"Confusion matrix: {ds.name}, {ds.clips_evaluated} clips")
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=100, format="png")
    return buffer.getvalue()
