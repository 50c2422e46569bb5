"""The model card written into every run folder: what the model is, what it saw, how good it is, what
it must not be used for, and the failure modes a person found in review.

The card is written by training once the run has been evaluated (core.training.run), and rewritten by
`refresh_model_card` from the run's own files whenever the review tags (review_tags.json), the Grad-CAM
region analysis (cam_regions.json) or the heatmap faithfulness report (explain_check.json) of the run change. It reads files only, so it depends on nothing that
computes them."""

from __future__ import annotations

from pathlib import Path

from core.config import TrainConfig
from core.evaluation.calibration import ECE_DEFINITION
from core.evaluation.summary import class_figure_text, headline_markdown, macro_note
from core.runs.artifacts import (
    CAM_REGIONS_FILE_NAME,
    CONFIG_FILE_NAME,
    MODEL_CARD_FILE_NAME,
    TAGS_FILE_NAME,
    read_data_report,
    read_explain_check,
    read_json,
    read_metrics,
)

KNOWN_SOURCES = {
    "nih-cxr4": "NIH ChestX-ray14 adult films (subset of 231; NLP-mined labels). Acknowledge the NIH Clinical "
                "Center; cite Wang et al., ChestX-ray8, IEEE CVPR 2017.",
    "pediatric-pneumonia": "Guangzhou paediatric films (Kermany et al., Cell 172(5), 2018, CC BY 4.0).",
    "samples": "256x256 subset of NIH ChestX-ray14 (10 films per class).",
}


def _pct(value) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else "n/a"


def write_model_card(run_dir: Path, config: TrainConfig, metrics: dict, data_report: dict) -> Path:
    """Write run_dir/model_card.md from the run's config, metrics and data report."""
    classes = metrics["classes"]
    source_name = Path(data_report.get("root", "")).name
    counts = data_report.get("subsets", {})
    n_total = data_report.get("n_files_usable", "?")
    training = metrics.get("training", {})
    calibration = metrics.get("calibration", {})
    # Cards are written in the hidden staging folder (".<run_id>.partial") before it is renamed.
    run_id = run_dir.name.removeprefix(".").removesuffix(".partial")
    demonstration = (
        [f"**Demonstration model trained on only {n_total} films.** It shows how Paru works; its accuracy "
         "is far from what a model trained on thousands of films reaches.", ""]
        if isinstance(n_total, int) and n_total < 2000 else []
    )
    lines = [
        f"# Model card: {run_id}",
        "",
        "**Research and teaching tool. Not for clinical diagnosis.** This model has not been validated for "
        "patient care and must not be used to make or change a clinical decision.",
        "",
        *demonstration,
        "## Model",
        f"MobileNetV2 (alpha {config.alpha}, weights: {config.weights}) "
        + ("kept as it is (not fine-tuned), " if config.head_on_features else
           f"with its last {config.fine_tune_layers} layers fine-tuned (BatchNormalization frozen), ")
        + "head GlobalAveragePooling -> BatchNormalization -> "
        f"Dropout({config.dropout}) -> Dense softmax over {len(classes)} classes: {', '.join(classes)}. "
        f"Input {config.image_size}x{config.image_size} grayscale, scaled to "
        f"{'[0, 1]' if config.scaling == 'unit' else '[-1, 1]'} inside the model. Preset: `{config.preset}`.",
        "",
        "## Training data",
        f"Folder `{source_name}` ({data_report.get('layout', '?')} layout): {n_total} usable films; "
        f"{len(data_report.get('skipped', []))} files skipped (listed in data_report.json); "
        f"{len(data_report.get('duplicates', []))} groups of identical files kept together.",
        KNOWN_SOURCES.get(source_name, "Source: as provided by the user."),
        "",
        "| subset | " + " | ".join(classes) + " | total |",
        "|---|" + "---|" * (len(classes) + 1),
    ]
    for subset in ("train", "val", "test"):
        row = counts.get(subset, {})
        lines.append(f"| {subset} | " + " | ".join(str(row.get(c, 0)) for c in classes)
                     + f" | {sum(row.get(c, 0) for c in classes)} |")
    lines += [
        "",
        f"Split {'/'.join(f'{f:.0%}' for f in config.split)} stratified by class, seed {config.seed}; "
        + ("patient-aware (no patient in two subsets, from labels.csv)."
           if data_report.get("has_patient_ids") else "no patient ids were available, so films of one patient "
           "may sit in different subsets."),
        "",
        "## Recipe",
        (f"Head only, on pooled features computed once (BatchNormalization fixed to the training features' "
         f"mean and variance, L2 {config.head_l2:g} on the Dense weights): Adam, batch {config.batch_size}, up "
         f"to {config.epochs} epochs at {config.learning_rate:g} (decay {config.lr_decay} per epoch), early stopping "
         if config.head_on_features else
         f"Adam, batch {config.batch_size}, {config.warmup_epochs} head warm-up epochs + up to {config.epochs} "
         f"fine-tuning epochs at {config.learning_rate:g} (decay {config.lr_decay} per epoch), early stopping ")
        + f"patience {config.early_stopping_patience}, label smoothing {config.label_smoothing}, class weights "
        f"{config.class_weight}; augmentation (training only): rotation ±{config.rotation_degrees:g}°, "
        f"horizontal flip {config.horizontal_flip}, zoom {config.zoom:.0%}, brightness {config.brightness:.0%}. "
        f"Best epoch by validation loss: {training.get('best_epoch', '?')} of {training.get('epochs_run', '?')} "
        f"run; wall time {training.get('wall_time_seconds', '?')} s.",
        "",
        f"## Test metrics ({metrics['n']} films)",
        *headline_markdown(metrics),
        *([f"- {macro_note(metrics)}"] if macro_note(metrics) else []),
        "",
        "| class | precision | recall | F1 | one-vs-rest accuracy | ROC AUC | support |",
        "|---|---|---|---|---|---|---|",
    ]
    for name in classes:
        item = metrics["per_class"][name]
        precision, recall, f1 = (class_figure_text(item, key, _pct) for key in ("precision", "recall", "f1"))
        auc_text = class_figure_text(item, "roc_auc", lambda value: "n/a" if value is None else f"{value:.3f}")
        lines.append(f"| {name} | {precision} | {recall} | {f1} | {_pct(item['ovr_accuracy'])} | {auc_text} | "
                     f"{item['support']} |")
    bar = metrics.get("clinical_bar", {})
    lines += [
        "",
        f"Clinical bar (every metric ≥ {bar.get('threshold', 0.9):.0%}): "
        f"{'met' if bar.get('all_passed') else 'NOT met'}.",
        "",
        "## Calibration",
        f"Temperature scaling fitted on the validation split: T = {calibration.get('temperature', float('nan')):.3f}; "
        f"expected calibration error ({ECE_DEFINITION}) on test "
        f"{calibration.get('ece_test_before', float('nan')):.3f} before, "
        f"{calibration.get('ece_test_after', float('nan')):.3f} after.",
        "",
        "## Known limitations",
        f"- Small test set ({metrics['n']} films): the intervals above are wide; differences inside them are noise.",
        "- Labels of public chest X-ray sets are often mined from reports by NLP and are noisy (Pneumonia most).",
        "- Trained on one source; accuracy on films from another hospital, scanner or population is unknown "
        "until evaluated there (use the Evaluation page's external validation).",
        "- A frontal-film classifier: lateral views, other body parts and photographs are out of scope.",
        "",
        *review_section(run_dir),
        *explanation_section(run_dir),
    ]
    path = run_dir / MODEL_CARD_FILE_NAME
    path.write_text("\n".join(lines))
    return path


def review_section(run_dir: Path) -> list[str]:
    """Markdown lines of "Failure modes seen in review", from the run's review_tags.json and cam_regions.json.

    Counts per tag (with the mix-ups behind each tag), every note a reviewer wrote, and where Grad-CAM put
    its mass for right and wrong answers. Returns [] when the run has neither file.
    """
    tags = read_json(Path(run_dir) / TAGS_FILE_NAME, {}) or {}
    regions = read_json(Path(run_dir) / CAM_REGIONS_FILE_NAME) or {}
    tagged = {file: entry for file, entry in tags.items()
              if isinstance(entry, dict) and (entry.get("tag", "untagged") != "untagged" or entry.get("note"))}
    if not tagged and not regions.get("summary"):
        return []
    lines = ["## Failure modes seen in review", ""]
    if tagged:
        lines += [f"{len(tagged)} misclassified test films reviewed by a person (tags in review_tags.json).", "",
                  "| tag | films | mix-ups (true -> predicted) |", "|---|---|---|"]
        by_tag: dict[str, list[dict]] = {}
        for entry in tagged.values():
            by_tag.setdefault(entry.get("tag", "untagged"), []).append(entry)
        for tag, entries in sorted(by_tag.items(), key=lambda item: (-len(item[1]), item[0])):
            mixups: dict[str, int] = {}
            for entry in entries:
                name = f"{entry.get('label', '?')} -> {entry.get('predicted', '?')}"
                mixups[name] = mixups.get(name, 0) + 1
            lines.append(f"| {tag} | {len(entries)} | "
                         + ", ".join(f"{name} ({count})" for name, count in sorted(mixups.items())) + " |")
        notes = [(file, entry) for file, entry in sorted(tagged.items()) if str(entry.get("note", "")).strip()]
        if notes:
            lines += ["", "Reviewers' notes:"]
            lines += [f"- `{file}` ({entry.get('tag', 'untagged')}): "
                      + " ".join(str(entry["note"]).split()) for file, entry in notes]
        lines.append("")
    else:
        lines += ["No misclassified test film has been tagged by a reviewer yet (Review page).", ""]
    summary = regions.get("summary") or {}
    if summary:
        def share(group: str, key: str) -> str:
            value = (summary.get(group) or {}).get(key)
            return "n/a" if value is None else f"{value:.0%}"

        lines += [
            f"Grad-CAM mass on the image border and corners ({regions.get('n', '?')} test films; the border "
            f"band is {regions.get('uniform', {}).get('border', 0):.0%} of the image area): right answers "
            f"{share('correct', 'mean_border')} border / {share('correct', 'mean_corners')} corners, wrong "
            f"answers {share('wrong', 'mean_border')} border / {share('wrong', 'mean_corners')} corners; "
            f"{summary.get('n_flagged', 0)} films with more than {regions.get('flag_share', 0.7):.0%} of their "
            "mass outside the central lung fields (cam_regions.json).",
            "",
        ]
    return lines


def explanation_section(run_dir: Path) -> list[str]:
    """Markdown lines of "Are the heatmaps faithful?", from the run's explain_check.json; [] when never checked.

    The verdict in words, deletion and insertion AUC in map order against random order, the Spearman of the
    trained and the randomised model's maps at each step of the cascade, and the class sensitivity."""
    report = read_explain_check(run_dir)
    if report is None:
        return []

    def number(value) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    steps = ", ".join(f"{step.get('step')} {number(step.get('spearman'))}" for step in report.get("randomisation", []))
    lines = [
        "## Are the heatmaps faithful?",
        "",
        f"{report.get('method_label', report.get('method'))} at `{report.get('layer')}`, checked on "
        f"{report.get('n_films')} test films ({report.get('computed', '?')}): {report['verdict'].get('text', '')}",
        *[f"- {warning}" for warning in report["verdict"].get("warnings", [])],
        "",
        "| check | map order | random order |",
        "|---|---|---|",
    ]
    for name, better in (("deletion", "lower"), ("insertion", "higher")):
        part = report.get(name) or {}
        lines.append(f"| {name} AUC ({better} is better) | {number(part.get('map_auc'))} | "
                     f"{number(part.get('random_auc'))} |")
    lines += [
        "",
        f"{report.get('grid')} x {report.get('grid')} cells, {report.get('replacement_text', '')}; "
        f"{report.get('random_orders')} random orders per film. Cascading randomisation (Spearman of the trained "
        f"and the randomised model's maps; near 0 is right): {steps}. Class sensitivity (Spearman of the "
        f"predicted and the runner-up class's maps): {number((report.get('class_sensitivity') or {}).get('spearman'))}.",
        "",
    ]
    return lines


def refresh_model_card(run_dir: str | Path) -> Path | None:
    """Rewrite run_dir/model_card.md from the run's own files (config.json, metrics.json, data_report.json,
    review_tags.json, cam_regions.json, explain_check.json). Returns the path, or None when config.json or metrics.json is
    missing (the card is then left as it is)."""
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    if not (run_dir / CONFIG_FILE_NAME).is_file() or metrics is None or "classes" not in metrics:
        return None
    config = TrainConfig.from_file(run_dir / CONFIG_FILE_NAME)
    return write_model_card(run_dir, config, metrics, read_data_report(run_dir) or {})


def refresh_model_card_quietly(run_dir: str | Path) -> None:
    """`refresh_model_card` after a review change; a card that cannot be written is left as it is, since
    the review files it summarises were saved already."""
    try:
        refresh_model_card(run_dir)
    except (OSError, ValueError):
        pass
