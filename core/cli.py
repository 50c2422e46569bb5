"""Command line: `python -m core train|evaluate|predict|pacs|split|export|explain-check|pack-review ...`
(see `python -m core --help`).

`main(argv)` runs one command in this process and returns its exit status (0 done, 2 refused or failed,
argparse's own status for bad arguments), so tests and other Python callers need no child process.
Every argument's allowed values are read from the module that owns them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from core.config import DISTRIBUTE_CHOICES, PRESETS, TrainConfig, preset
from core.data.materialise import materialise_run_split
from core.evaluation.evaluate import ENGINES as EVALUATE_ENGINES
from core.evaluation.evaluate import LITE_WORTH_FILMS, evaluate_folder
from core.evaluation.summary import (class_figure_text, headline_text, macro_note, overlap_warning,
                                     perceptual_check_note)
from core.explain.faithfulness import DEFAULT_FILMS, check_run
from core.explain.methods import DEFAULT_METHOD, METHOD_LABELS, METHODS
from core.explain.overlay import overlay
from core.hospital.dicomweb import connect as connect_pacs
from core.hospital.pacs import classify_study, find_study_uids
from core.imaging.loader import SUPPORTED_EXTENSIONS
from core.runs.artifacts import REVIEW_FILMS_DIR_NAME
from core.runs.context import model_context
from core.runs.jobs import TrainingBusyError
from core.runs.registry import explain_check_path, load_run, load_run_model
from core.runs.review_films import DEFAULT_CORRECT, DEFAULT_MAX_SIDE, pack_review_films
from core.serving.export import (
    DEFAULT_VARIANT,
    PARITY_MAX_DIFFERENCE,
    PARITY_MIN_TOP1,
    VARIANTS,
    export_tflite,
    parity_report,
    run_films,
)
from core.serving.predict import ONE_SHOT_ENGINES as PREDICT_ENGINES
from core.serving.predict import Predictor
from core.serving.results import answer_text, is_refused, result_json
from core.settings import configure_keras_home
from core.training.run import TrainingCancelled, train_run


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Paru: chest X-ray MobileNetV2 pipeline.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train a model on a dataset folder and register the run")
    train.add_argument("--data", required=True, help="dataset folder (class folders, or train/val/test of them)")
    train.add_argument("--out", help="run folder to create (default: models/<run_id>)")
    train.add_argument("--preset", choices=tuple(PRESETS), help="start from a named recipe")
    train.add_argument("--config", help="JSON config file (fields of core.config.TrainConfig)")
    train.add_argument("--epochs", type=int)
    train.add_argument("--alpha", type=float)
    train.add_argument("--weights", help="imagenet | none | PATH of a MobileNetV2 no-top .h5 file")
    train.add_argument("--seed", type=int)
    train.add_argument("--image-size", type=int)
    train.add_argument("--batch-size", type=int)
    train.add_argument("--distribute", choices=DISTRIBUTE_CHOICES,
                       help="tf.distribute strategy: every GPU of this host (mirrored) or several hosts "
                            "(multiworker, with TF_CONFIG set on each)")
    train.add_argument("--models-dir", help="where runs and the training lock live (default: models/)")

    evaluate = _run_command(commands, "evaluate", "evaluate a run on a whole external dataset folder")
    evaluate.add_argument("--data", required=True, help="dataset folder with class folders")
    evaluate.add_argument("--json", help="write the metrics (metrics.json schema) to this file")
    _engine_argument(evaluate, EVALUATE_ENGINES, "what runs the model: 'lite' is TensorFlow Lite (same probabilities "
                     "within 1e-5, faster, after a one-off conversion); 'auto' (default) uses it for "
                     f"{LITE_WORTH_FILMS:,} films or more or when a converted copy is cached")

    predict = _run_command(commands, "predict", "classify films")
    predict.add_argument("files", nargs="+",
                         help="films (PNG, JPEG, BMP, TIFF, DICOM), or folders: every film in them, streamed")
    predict.add_argument("--json", action="store_true", help="one JSON object per input line")
    predict.add_argument("--cam-dir", help="write a Grad-CAM overlay PNG per film into this folder, and beside it "
                         "<stem>_cam.npy: the map of the predicted class, float32 in [0, 1] on the model's input "
                         "grid (S x S), to check the maps independently")
    _engine_argument(predict, PREDICT_ENGINES, "what runs the model: 'lite' converts it to TensorFlow Lite first "
                     "(once per model and machine, then faster per film), 'cached' (default) uses a converted "
                     "copy when one exists, 'keras' never converts")
    _pacs_arguments(commands)
    _explain_check_arguments(commands)
    _pack_review_arguments(commands)
    split = commands.add_parser("split", help="lay out a run's train/val/test split as folders, as the paper did")
    split.add_argument("--model", required=True, help="run folder whose split.csv is laid out")
    split.add_argument("--out", required=True, help="folder to create: OUT/{train,val,test}/<class>/<film>")
    split.add_argument("--copy", action="store_true", help="copy the films (default: symbolic links)")
    split.add_argument("--data", help="where the run's dataset is now, when it has moved")
    export = _run_command(commands, "export", "export a run's model for mobile (TensorFlow Lite)")
    export.add_argument("--tflite", required=True, help="output .tflite file")
    export.add_argument("--variant", choices=VARIANTS, default=DEFAULT_VARIANT,
                        help="float16 weights (default, half size), dynamic-range int8 weights (quarter size) or float32 (exact)")
    export.add_argument("--data", help="where the run's dataset is now, for the parity check (when it has moved)")
    export.add_argument("--no-check", action="store_true", help="skip the parity check against the Keras model")
    export.add_argument("--parity-json", help="also write the parity check's figures to this JSON file")
    return parser


def _run_command(commands, name: str, help: str) -> argparse.ArgumentParser:
    """A subcommand that works on one run folder, given as --model."""
    command = commands.add_parser(name, help=help)
    command.add_argument("--model", required=True, help="run folder")
    return command


def _engine_argument(command: argparse.ArgumentParser, choices: tuple[str, ...], help: str) -> None:
    """--engine, its default the first of the owner's choices."""
    command.add_argument("--engine", choices=choices, default=choices[0], help=help)


def _export(args) -> int:
    try:
        model = load_run_model(load_run(args.model))  # Loaded once, for the conversion and the parity check.
        path = export_tflite(args.model, args.tflite, args.variant, model=model)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{path} ({path.stat().st_size / 1e6:.2f} MB, {args.variant})")
    if args.no_check:
        return 0
    try:
        images = run_films(args.model, args.data)
    except ValueError as error:
        print(f"parity not checked: {error}", file=sys.stderr)
        return 0
    report = parity_report(args.model, path, images, model=model)
    print(f"parity with the Keras model on {report['n']} of the run's films: top-1 agreement "
          f"{report['top1_agreement']:.1%}, largest probability difference {report['max_abs_difference']:.4f}, "
          f"{report['latency_ms_per_film']:.1f} ms per film")
    if not report["meets_bar"]:
        print(f"WARNING: below the parity bar (top-1 >= {PARITY_MIN_TOP1:.0%}, difference <= "
              f"{PARITY_MAX_DIFFERENCE}): this export's answers differ from the model's; use float16 or float32 "
              "where the answers matter.", file=sys.stderr)
    if args.parity_json:
        Path(args.parity_json).write_text(json.dumps(report, indent=2) + "\n")
    return 0


def _config_from_args(args):
    config = TrainConfig.from_file(args.config) if args.config else preset(args.preset or "paper")
    if args.config and args.preset:
        config = preset(args.preset, **{k: v for k, v in config.to_dict().items() if k != "preset"})
    overrides = {name: getattr(args, name) for name in ("epochs", "alpha", "weights", "seed", "image_size",
                                                        "batch_size", "distribute")
                 if getattr(args, name, None) is not None}
    return config.replace(**overrides) if overrides else config


def _train(args) -> int:
    configure_keras_home()
    config = _config_from_args(args)
    try:
        run_dir = train_run(args.data, config, out_dir=args.out, models_dir=args.models_dir,
                            log=lambda line: print(line, flush=True))
    except (ValueError, TrainingBusyError, TrainingCancelled) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except OSError as error:
        # A disk that fills up mid-run: the staging folder is marked failed and no run is registered.
        print(f"error: could not write the run ({error.strerror or error}: {error.filename or ''}). Free disk "
              "space or choose another folder with --out; earlier runs are untouched.", file=sys.stderr)
        return 2
    if run_dir is not None:  # None: a worker other than the chief of a cluster, which registers no run.
        print(run_dir)
    return 0


def _evaluate(args) -> int:
    try:
        metrics = evaluate_folder(args.model, args.data, engine=args.engine)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    overlap = metrics["overlap"]
    print(f"{metrics['n']} films, {len(metrics['skipped'])} skipped (model run on {metrics['engine']})")
    warning = overlap_warning(overlap)
    if warning:
        print(f"WARNING: {warning}")
    print(perceptual_check_note(overlap))
    for match in (overlap.get("perceptual") or {}).get("matches", [])[:5]:
        print(f"  {match['file']} ~ {match['seen_file']} (distance {match['distance']})")
    for line in headline_text(metrics):
        print(line)
    if macro_note(metrics):
        print(macro_note(metrics))
    for name, item in metrics["per_class"].items():
        precision, recall, f1 = (class_figure_text(item, key, lambda value: f"{value:.3f}")
                                 for key in ("precision", "recall", "f1"))
        print(f"  {name:14s} precision {precision} recall {recall} f1 {f1} support {item['support']}")
    if args.json:
        Path(args.json).write_text(json.dumps(metrics, indent=2))
        print(f"wrote {args.json}")
    return 0


def _predict(args) -> int:
    try:
        predictor = Predictor(load_run(args.model), engine=args.engine, warm=False)
    except ValueError as error:  # A damaged run, or a model that Keras safe mode refuses.
        print(f"error: {error}", file=sys.stderr)
        return 2
    cam_dir = Path(args.cam_dir) if args.cam_dir else None
    if cam_dir:
        cam_dir.mkdir(parents=True, exist_ok=True)
    context = model_context(predictor.run)
    if not args.json:
        print(f"model: {context.run_id}, trained on {context.population()}; {context.figures()}")
        if context.warning():
            print(f"warning: {context.warning()}")
    failed = False
    for file in _expand_films(args.files):
        result = predictor.predict(file, name=file, with_cam=cam_dir is not None, display=cam_dir is not None)
        failed |= result.error is not None
        if cam_dir and result.error is None:
            out = cam_dir / f"{Path(file).stem}_gradcam.png"
            Image.fromarray(overlay(result.gray, result.cam)).save(out)
            np.save(cam_dir / f"{Path(file).stem}_cam.npy", np.asarray(result.cam, np.float32))
        if args.json:
            print(json.dumps(result_json(result, context)), flush=True)
        elif result.error:
            print(f"{file}: error: {result.error}")
        elif is_refused(result):
            print(f"{file}: no diagnosis shown: {result.gate.reason}")
        else:
            print(f"{file}: {answer_text(result)} ({result.label} {result.confidence:.1%})")
    return 2 if failed else 0


def _expand_films(arguments: list[str]):
    """Files as given; a folder yields every supported film under it, in sorted order, one at a time."""
    for argument in arguments:
        path = Path(argument)
        if not path.is_dir():
            yield argument
            continue
        for folder, subfolders, names in os.walk(path):
            subfolders.sort()
            for name in sorted(names):
                if Path(name).suffix.lower() in SUPPORTED_EXTENSIONS and not name.startswith("."):
                    yield str(Path(folder) / name)


def _pacs_arguments(commands) -> None:
    pacs = _run_command(commands, "pacs", "classify a PACS study's frontal films over DICOMweb (and store the "
                        "results back as DICOM SR and Secondary Capture)")
    pacs.add_argument("--url", help="DICOMweb root of the PACS (default: $PARU_DICOMWEB_URL); credentials come "
                                    "from $PARU_DICOMWEB_USER/$PARU_DICOMWEB_PASSWORD or $PARU_DICOMWEB_TOKEN")
    which = pacs.add_mutually_exclusive_group(required=True)
    which.add_argument("--study", help="Study Instance UID")
    which.add_argument("--accession", help="accession number (every matching study)")
    which.add_argument("--patient", help="patient ID (every study of the patient)")
    pacs.add_argument("--store", action="store_true",
                      help="store a structured report and a Grad-CAM secondary capture per film back (STOW-RS)")
    pacs.add_argument("--json", action="store_true", help="one JSON object per object of the study, as predict's")
    _engine_argument(pacs, PREDICT_ENGINES, "what runs the model, as for predict")


def _pacs(args) -> int:
    """Films are named by SOP Instance UID; patient identifiers are never printed."""
    import requests

    try:
        run = load_run(args.model)
        client = connect_pacs(args.url)
        studies = find_study_uids(client, study=args.study, accession=args.accession, patient=args.patient)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except requests.RequestException as error:
        # The request's URL would carry the patient ID or accession of the query: name the failure only.
        status = getattr(error.response, "status_code", None)
        print(f"error: the PACS did not answer the search ({type(error).__name__}"
              f"{f', HTTP {status}' if status else ''}). Check --url and the credentials.", file=sys.stderr)
        return 2
    if not studies:
        print("error: no study in the PACS matches.", file=sys.stderr)
        return 2
    try:
        predictor = Predictor(run, engine=args.engine, warm=False)
    except ValueError as error:  # A damaged run, or a model that Keras safe mode refuses.
        print(f"error: {error}", file=sys.stderr)
        return 2
    failed = False
    for study_uid in studies:
        for out, _, _ in classify_study(predictor, client, study_uid, store=args.store):
            failed |= "error" in out
            if args.json:
                print(json.dumps(out), flush=True)
            elif "skipped" in out:
                print(f"{out['file']}: skipped: {out['skipped']}")
            elif "error" in out:
                print(f"{out['file']}: error: {out['error']}")
            elif out.get("gate") and not out["gate"]["passed"]:
                print(f"{out['file']}: no diagnosis shown: {out['gate']['reason']}")
            else:
                stored = f" (stored SR {out['stored']['sr']}, SC {out['stored']['sc']})" if "stored" in out else ""
                print(f"{out['file']}: {out['label']} ({out['confidence']:.1%}){stored}")
    return 2 if failed else 0


def _split(args) -> int:
    try:
        report = materialise_run_split(args.model, args.out, mode="copy" if args.copy else "link", data_dir=args.data)
    except (ValueError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for subset in ("train", "val", "test"):
        counts = report["counts"].get(subset, {})
        print(f"{subset}: {sum(counts.values())} films ({', '.join(f'{k} {v}' for k, v in sorted(counts.items()))})")
    if report["missing"]:
        print(f"{len(report['missing'])} films of the split are missing from the dataset folder, for example "
              f"{report['missing'][0]}; the rest were laid out.", file=sys.stderr)
    print(report["out_dir"])
    return 2 if report["missing"] else 0


def _explain_check_arguments(commands) -> None:
    check = _run_command(commands, "explain-check", "check whether a run's heatmaps are faithful to its model")
    check.add_argument("--data", help="where the run's dataset is now, when it has moved")
    check.add_argument("--films", type=int, default=DEFAULT_FILMS,
                       help=f"test films to check (default {DEFAULT_FILMS}; all when the test set is smaller)")
    check.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD,
                       help="; ".join(f"{name}: {label}" for name, label in METHOD_LABELS.items()))
    check.add_argument("--json", help="write the report to this file instead of the run folder's explain_check.json "
                                      "(a shipped run's goes to the user data dir, leaving the run as shipped)")


def _explain_check(args) -> int:
    """Deletion and insertion against random order, cascading randomisation, class sensitivity, the verdict."""
    if args.films < 1:
        print(f"error: got --films {args.films}; check at least 1 film.", file=sys.stderr)
        return 2
    try:
        report = check_run(args.model, args.data, films=args.films, method=args.method, out=args.json,
                           log=lambda line: print(line, file=sys.stderr, flush=True))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"{report['method_label']} at {report['layer']}, {report['n_films']} test films, {report['grid']} x "
          f"{report['grid']} cells, {report['replacement_text']}; {report['random_orders']} random orders")
    for name, better in (("deletion", "lower"), ("insertion", "higher")):
        part = report[name]
        print(f"{name} AUC {part['map_auc']:.3f} in map order against {part['random_auc']:.3f} in random order "
              f"({better} is better; map better on {part['films_better']:.0%} of films)")
    steps = ", ".join(f"{step['step']} {step['spearman']:.2f}" if step["spearman"] is not None
                      else f"{step['step']} (blank maps)" for step in report["randomisation"])
    print(f"randomisation, Spearman of trained and randomised maps after: {steps}")
    sensitivity = report["class_sensitivity"]["spearman"]
    print("class sensitivity, Spearman of the predicted and the runner-up class's maps: "
          + (f"{sensitivity:.2f}" if sensitivity is not None else "(blank maps)"))
    for line in [report["verdict"]["text"], *report["verdict"]["warnings"]]:
        print(line)
    print(f"wrote {args.json or explain_check_path(args.model)} in {report['seconds']['total']:.0f} s")
    return 0


def _pack_review_arguments(commands) -> None:
    pack = _run_command(commands, "pack-review", "copy a run's misclassified (and a few correct) test films, "
                        "downsized, into its review_films/ folder, so Review works without the dataset")
    pack.add_argument("--data", help="where the run's dataset is now, when it has moved")
    pack.add_argument("--max-side", type=int, default=DEFAULT_MAX_SIDE,
                      help=f"longest side of a packed film in pixels (default {DEFAULT_MAX_SIDE})")
    pack.add_argument("--correct", type=int, default=DEFAULT_CORRECT,
                      help=f"correctly classified test films to add for contrast (default {DEFAULT_CORRECT})")


def _pack_review(args) -> int:
    try:
        manifest = pack_review_films(args.model, args.data, max_side=args.max_side, correct=args.correct)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    wrong = sum(film["kind"] == "misclassified" for film in manifest["films"])
    print(f"{len(manifest['films'])} review films ({wrong} misclassified, {len(manifest['films']) - wrong} correct), "
          f"{manifest['total_bytes'] / 1e6:.2f} MB, in {Path(args.model) / REVIEW_FILMS_DIR_NAME}")
    for path in manifest["missing"]:
        print(f"not found or not readable, not packed: {path}", file=sys.stderr)
    return 2 if manifest["missing"] else 0


def main(argv: list[str] | None = None) -> int:
    """Run one command (argv without the program name; None reads sys.argv) and return its exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exit_request:  # --help, or arguments argparse refused (it has printed why).
        return exit_request.code if isinstance(exit_request.code, int) else 0 if exit_request.code is None else 2
    commands = {"train": _train, "evaluate": _evaluate, "predict": _predict, "export": _export, "split": _split,
                "pacs": _pacs, "explain-check": _explain_check, "pack-review": _pack_review}
    return commands[args.command](args)


if __name__ == "__main__":
    raise SystemExit(main())
