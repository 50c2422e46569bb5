"""Audit log: every prediction the app made (time, SHA-256 of the input, run, output, gate), never the image."""

import streamlit as st

from core.runs import audit
from core.settings import audit_file_names
from core.ui import frame, navigation

navigation.require_shell()

st.title("🧾 Audit log")
st.caption(frame.DISCLAIMER)
st.info("Each prediction made in this app adds one line to the log, once per film per session: the time, the "
        "SHA-256 fingerprint of the uploaded bytes, the run, the engine, the gate's verdict, the error when the "
        "film could not be used, and only for films the gate passed the label, its confidence and the "
        "probabilities. A film the gate refused has no label in the log. **Images are never stored**, neither in "
        "the log nor anywhere else; the fingerprint only lets you check later whether a given file was the one "
        "classified. File names "
        + ("**are stored** (PARU_AUDIT_FILE_NAMES is set)." if audit_file_names() else
           "are not stored (they often carry patient identifiers; set PARU_AUDIT_FILE_NAMES=1 to store them)."),
        icon="🔒")

models_dir = frame.models_dir()
filter_column, limit_column = st.columns([2, 1])
limit = limit_column.number_input("Latest lines shown", min_value=10, max_value=10_000, value=200, step=50,
                                  key="audit_limit")
view = audit.read_view(models_dir, int(limit))  # Only the log's tail is read, whatever its size.
if view.unreadable:
    st.warning(f"{view.unreadable} of the last {int(limit)} lines of `{view.path}` are not readable audit entries "
               "(not a JSON object, or not UTF-8 text) and are left out.")
if not view.entries:
    if not view.unreadable:
        st.warning(f"No prediction recorded yet in `{view.path}`. Classify a film on the Predict page.")
    st.stop()

chosen_run = filter_column.selectbox("Run", ["All runs", *audit.run_ids(view.entries)], key="audit_run")
run_filter = None if chosen_run == "All runs" else chosen_run
rows = audit.table_rows(view.entries, run_filter)
older = len(audit.rotated_logs(models_dir))
st.caption(f"{len(rows)} predictions shown, newest first, from the last {len(view.entries) + view.unreadable} of "
           f"{view.total_lines} lines in `{view.path}`"
           + (f"; {older} older log files beside it (audit-*.jsonl)." if older else "."))
st.dataframe(rows, hide_index=True,
             column_config={"confidence": st.column_config.NumberColumn("confidence", format="%.3f")})


def chosen_entries() -> list[dict]:
    """Every readable entry of the current log for the chosen run (read only when a download is clicked)."""
    entries = audit.read(models_dir)
    return entries if run_filter is None else [entry for entry in entries if entry.get("run_id") == run_filter]


suffix = "all-runs" if run_filter is None else run_filter
left, right = st.columns(2)
left.download_button("Download JSONL", lambda: audit.to_jsonl(chosen_entries()), file_name=f"audit-{suffix}.jsonl",
                     mime="application/jsonl", key="audit_jsonl")
right.download_button("Download CSV", lambda: audit.to_csv(audit.table_rows(chosen_entries())),
                      file_name=f"audit-{suffix}.csv", mime="text/csv", key="audit_csv")
