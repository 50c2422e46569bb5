"""core.runs.card: the model card's figures read as the app's (one ECE, undefined figures said as such)."""

from __future__ import annotations

from core.config import preset
from core.evaluation.calibration import ECE_DEFINITION
from core.evaluation.metrics import classification_report
from core.runs.card import write_model_card


def test_the_card_states_the_one_ece_and_never_reads_zero_for_a_class_without_films(tmp_path):
    metrics = classification_report([0, 0, 1, 1], [0, 1, 1, 1], ["Normal", "Pneumonia", "Cardiomegaly"],
                                    n_bootstrap=0)
    metrics["calibration"] = {"temperature": 1.2, "ece_test_before": 0.123, "ece_test_after": 0.121}
    card = write_model_card(tmp_path, preset("paper"), metrics, {"root": "/data/pediatric", "subsets": {}})
    text = card.read_text()
    assert f"expected calibration error ({ECE_DEFINITION}) on test 0.123 before, 0.121 after" in text
    assert "| Cardiomegaly | —, no films | —, no films | —, no films | 100.0% | —, no films | 0 |" in text
    assert "Macro averages are over Normal and Pneumonia only" in text
