"""Audit log: every prediction the app made (time, SHA-256 of the input, run, output, gate), never the image."""

import streamlit as st

from core.runs import audit
from core.ui import frame, navigation

navigation.require_shell()

st.title("🧾 Audit log")
st.caption(frame.DISCLAIMER)
st.info("Each prediction made in this app adds one line to the log: the time, the SHA-256 fingerprint of the "
        "uploaded bytes, the run, the output and the gate result. **Images are never stored**, neither in the "
        "log nor anywhere else; the fingerprint only lets you check later whether a given file was the one "
        "classified.", icon="🔒")

log_path = audit.audit_path(frame.models_dir())
entries = audit.read(frame.models_dir())
if not entries:
    st.warning(f"No prediction recorded yet in `{log_path}`. Classify a film on the Predict page.")
    st.stop()

filter_column, limit_column = st.columns([2, 1])
runs = audit.run_ids(entries)
chosen_run = filter_column.selectbox("Run", ["All runs", *runs], key="audit_run")
limit = limit_column.number_input("Latest lines shown", min_value=10, max_value=10_000, value=200, step=50,
                                  key="audit_limit")
rows = audit.table_rows(entries, None if chosen_run == "All runs" else chosen_run)
st.caption(f"{len(rows)} of {len(entries)} predictions in `{log_path}`, newest first.")
st.dataframe(rows[:int(limit)], hide_index=True,
             column_config={"confidence": st.column_config.NumberColumn("confidence", format="%.3f")})

chosen_entries = entries if chosen_run == "All runs" else [e for e in entries if e.get("run_id") == chosen_run]
suffix = "all-runs" if chosen_run == "All runs" else chosen_run
left, right = st.columns(2)
left.download_button("Download JSONL", audit.to_jsonl(chosen_entries), file_name=f"audit-{suffix}.jsonl",
                     mime="application/jsonl", key="audit_jsonl")
right.download_button("Download CSV", audit.to_csv(rows), file_name=f"audit-{suffix}.csv", mime="text/csv",
                      key="audit_csv")
