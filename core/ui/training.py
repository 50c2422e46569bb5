"""The Training page's sections: the folder check, the recipe form (showing a running job's recipe), the
start, and the job panel with its progress, ETA and how the last training ended.

Each function draws with Streamlit and returns only what the page needs next.
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from core.config import PRESETS, preset
from core.data.paths import confined_data_folder
from core.evaluation.summary import headline_figures, percent_with_ci
from core.runs import jobs
from core.runs.artifacts import MODEL_FILE_NAME, read_metrics
from core.settings import allowed_data_roots, keras_home
from core.ui import cached, figures, navigation

# The widths the Training page offers: those with ImageNet weights up to the paper's 1.0.
ALPHAS = (0.35, 0.5, 0.75, 1.0)


def dataset_check(folder: str) -> dict | None:
    """Scan a dataset folder (cached) and show its layout, class counts, skipped files, duplicates and warnings.

    Returns the scan report, or None (with the error shown) when the folder cannot be used, including when
    its split is impossible (so Start stays disabled instead of failing after it).
    """
    if st.button("Re-check the folder", key="rescan"):
        cached.scan_folder.clear()
    scan = cached.scan_folder(str(Path(folder).expanduser()))
    if scan.get("error"):
        st.error(scan["error"])
        return None
    st.write(f"Layout: **{scan['layout']}**, {scan['n_files_usable']} usable films, "
             f"patient ids: {'yes' if scan['has_patient_ids'] else 'no'}")
    st.dataframe({"Class": list(scan["class_counts"]), "Films": list(scan["class_counts"].values())},
                 hide_index=True)
    if scan["skipped"]:
        with st.expander(f"{len(scan['skipped'])} files skipped"):
            st.dataframe(scan["skipped"], hide_index=True)
    if scan["duplicates"]:
        with st.expander(f"{len(scan['duplicates'])} groups of identical files (kept in one subset)"):
            st.write(scan["duplicates"])
    for warning in scan.get("warnings", []):
        st.warning(warning)
    if scan.get("split_problem"):
        st.error(f"This folder cannot be split for training: {scan['split_problem']}")
        return None
    return scan


def recipe_form(preset_name: str, can_start: bool) -> dict | None:
    """The recipe form of one preset; returns its overrides when "Start training" was pressed, else None."""
    base = preset(preset_name)
    with st.form(f"recipe-{preset_name}"):
        columns = st.columns(4)
        epochs = columns[0].number_input("Epochs", 1, 500, base.epochs, key=f"epochs-{preset_name}")
        alpha = columns[1].selectbox("Width (alpha)", ALPHAS, index=ALPHAS.index(base.alpha),
                                     key=f"alpha-{preset_name}")
        batch_size = columns[2].number_input("Batch size", 1, 1024, base.batch_size, key=f"batch-{preset_name}")
        learning_rate = columns[3].number_input("Learning rate", 1e-7, 1.0, base.learning_rate, format="%.6f",
                                                step=1e-5, key=f"lr-{preset_name}")
        columns = st.columns(4)
        fine_tune_layers = columns[0].number_input(
            "Fine-tuned layers", 0, 200, base.fine_tune_layers, key=f"finetune-{preset_name}",
            disabled=base.head_on_features,
            help="This preset keeps the backbone as ImageNet trained it and trains the head only; choose the "
                 "paper preset to fine-tune backbone layers." if base.head_on_features else
                 "How many of the backbone's last layers learn (BatchNormalization layers stay frozen).")
        seed = columns[1].number_input("Seed", 0, 2**31 - 1, base.seed, key=f"seed-{preset_name}")
        image_size = columns[2].number_input("Image size (px)", 32, 512, base.image_size, step=32,
                                             key=f"size-{preset_name}")
        weights = columns[3].selectbox(
            "Backbone weights", ["imagenet", "none", *weight_files()], key=f"weights-{preset_name}",
            format_func=lambda value: Path(value).name if value not in ("imagenet", "none") else value,
            help="imagenet: Keras's ImageNet weights (downloaded, or found under KERAS_HOME/models). Offline, put "
                 "a MobileNetV2 no-top .h5 file (mobilenet_v2_weights_tf_dim_ordering_tf_kernels_<alpha>_224_no_top"
                 f".h5) under the data root or in {keras_home() / 'models'}: it is offered here. none: random start.")
        start = st.form_submit_button("Start training", type="primary", disabled=not can_start)
    if not start:
        return None
    return dict(epochs=int(epochs), alpha=float(alpha), batch_size=int(batch_size),
                learning_rate=float(learning_rate), fine_tune_layers=int(fine_tune_layers), seed=int(seed),
                image_size=int(image_size), weights=weights)


def weight_files() -> list[str]:
    """MobileNetV2 weight files (.h5) in KERAS_HOME/models and at most two folders deep under the data roots,
    so an offline machine can train from a file it holds without typing a path."""
    found = []
    for folder, patterns in ((keras_home() / "models", ("*.h5",)),
                             *((root, ("*.h5", "*/*.h5")) for root in allowed_data_roots())):
        for pattern in patterns:
            found += sorted(str(path) for path in Path(folder).glob(pattern)
                            if "mobilenet_v2" in path.name and path.name.endswith("no_top.h5"))
    return list(dict.fromkeys(found))


# The recipe form's widgets (key prefix -> TrainConfig field), so a running job's recipe can be shown in them.
FORM_FIELDS = {"epochs": "epochs", "alpha": "alpha", "batch": "batch_size", "lr": "learning_rate",
               "finetune": "fine_tune_layers", "seed": "seed", "size": "image_size", "weights": "weights"}


def running_job_notice(models_dir: Path) -> bool:
    """While a training runs: its dataset and recipe are put in the form (once per job and session, so a
    reload shows what runs, not the defaults) and said; returns whether one runs (Start is then disabled)."""
    status = jobs.read_job_status(models_dir)
    if not status.running:
        return False
    data_dir, config = jobs.running_recipe(status)
    run_id = (status.lock or {}).get("run_id", "?")
    name = config.get("preset")
    if st.session_state.get("form_shows_job") != run_id and config:
        st.session_state.form_shows_job = run_id
        if data_dir:
            st.session_state.train_folder_typed = data_dir
        if name in PRESETS:
            st.session_state.train_preset = name
            for key, field in FORM_FIELDS.items():
                if field in config:
                    st.session_state[f"{key}-{name}"] = config[field]
    recipe = (f"the {name} recipe ({config.get('epochs')} epochs, alpha {config.get('alpha')}, batch "
              f"{config.get('batch_size')}, {config.get('image_size')} px, weights {config.get('weights')})"
              if config else "a recipe it has not written yet")
    st.info(f"Training **{run_id}** is running on `{data_dir or '?'}` with {recipe}; the form below shows it. "
            "Start is disabled until it ends (see 3. Progress).")
    return True


def start_training(folder: str, models_dir: Path, preset_name: str, overrides: dict) -> None:
    """Write the recipe and start the training process, saying whether it started, is busy or is invalid."""
    try:
        config_path = jobs.write_job_config(models_dir, preset_name, overrides)
        with st.spinner("Starting the training process…"):
            jobs.start_job(str(confined_data_folder(folder)), config_path, models_dir)
        st.session_state.job_was_running = True
        st.success("Training started.")
    except jobs.TrainingBusyError as error:
        st.warning(f"Training is busy: {error}")
    except ValueError as error:
        st.error(str(error))


def progress_summary(progress: dict | None) -> tuple[float, str]:
    """(fraction done in [0, 1], one line: phase, epoch x/y, batch a/b, ETA) of a progress.json."""
    fraction = jobs.progress_fraction(progress)
    if not progress:
        return fraction, "Starting…"
    phase = progress.get("phase", "?")
    if phase == "checking":
        return fraction, f"Checking films: {progress.get('files_done', 0)}/{progress.get('files_total') or 0}"
    if phase == "features":
        done, total = progress.get("features_done"), progress.get("features_total")
        counts = f": {done}/{total} films" if total else ""
        return fraction, (f"Computing the backbone's features of the training and validation films (once)"
                          f"{counts}{eta_text(progress)}")
    if phase == "heatmaps":
        step = progress.get("heatmaps_step")
        return fraction, f"Checking the heatmaps (faithfulness report){': ' + step if step else ''}…"
    if phase in ("evaluating", "done"):
        return fraction, "Evaluating the best epoch on the test split…" if phase == "evaluating" else "Done"
    epochs, batches = progress.get("epochs") or 1, progress.get("batches") or 1
    return fraction, (f"Phase {phase}: epoch {progress.get('epoch', 0)}/{epochs}, "
                      f"batch {progress.get('batch', 0)}/{batches}{eta_text(progress)}")


def eta_text(progress: dict) -> str:
    """', about 42 s left' from what the run has measured, ', estimating the time left…' until it has enough
    (progress.json's eta_seconds is None), ', at least … left' before a validation has been timed."""
    eta = progress.get("eta_seconds")
    if not isinstance(eta, (int, float)):
        return ", estimating the time left…"
    if progress.get("eta_is_lower_bound"):
        return f", at least {duration_text(eta)} left (validation not timed yet)"
    return f", about {duration_text(eta)} left"


def finished_job(last: dict, models_dir: Path) -> None:
    """The last finished training: its test figures with their intervals, and links to use and read it."""
    run_dir = Path(last.get("run_dir") or Path(models_dir) / str(last.get("run_id")))
    try:
        metrics = read_metrics(run_dir) or {}
    except ValueError:
        metrics = {}
    figures_text = "; ".join(f"{item['short_name']} {percent_with_ci(item['value'], item['ci95'])}"
                             for item in headline_figures(metrics)[:2] if item["value"] is not None)
    st.success(f"Last training finished: **{last.get('run_id')}** (ended {last.get('ended', '?')})."
               + (f" On {metrics.get('n')} test films: {figures_text}." if figures_text else ""))
    if not (run_dir / MODEL_FILE_NAME).is_file():
        return
    use_column, open_column = st.columns(2)
    if use_column.button("Use this model", key="use_trained_model"):
        st.session_state.run_path = str(run_dir)
        st.rerun(scope="app")
    if open_column.button("Open evaluation", key="open_trained_evaluation"):
        st.session_state.run_path = str(run_dir)
        st.switch_page(navigation.EVALUATION.script)


def duration_text(seconds: float) -> str:
    """'3 min 5 s' or '42 s'."""
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60} s" if seconds >= 60 else f"{seconds} s"


@st.fragment(run_every=1.0)
def job_panel(models_dir: Path) -> None:
    """The training job, read from disk every second (so it survives a browser reload): progress, live
    curves and a cancel button while it runs, how the last one ended otherwise, and the log's tail.
    Reruns the whole page once when the job has just ended, so the new run appears in the selector."""
    status = jobs.read_job_status(models_dir)
    was_running = st.session_state.get("job_was_running", False)
    st.session_state.job_was_running = status.running
    if status.running:
        fraction, text = progress_summary(status.progress)
        st.progress(fraction, text=f"{status.lock.get('run_id', '')} — {text}")
        history = (status.progress or {}).get("history") or []
        if history:
            for column, figure in zip(st.columns(2), figures.live_curves(history)):
                column.plotly_chart(figure, key=f"live-{figure.layout.title.text}")
        if st.button("Cancel training", key="cancel_training"):
            jobs.request_stop(models_dir)
            st.info("Cancel requested; the training stops after its current batch.")
    else:
        last = status.last
        if not last:
            st.info("No training has run yet.")
        elif last.get("state") == "finished":
            finished_job(last, models_dir)
        elif last.get("state") == "cancelled":
            st.warning(f"Last training was cancelled: {last.get('run_id')}. {last.get('error') or ''}")
        else:
            st.error(f"Last training failed: {last.get('run_id')}. {last.get('error') or ''}")
    if status.log_tail:
        with st.expander("Log", expanded=status.running):
            st.code(status.log_tail, language=None)
    if was_running and not status.running:
        st.rerun()
