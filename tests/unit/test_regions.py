"""core.explain.regions.cam_regions: the shares of a CAM's mass in the centre, the border band and the corners."""

from __future__ import annotations

import numpy as np
import pytest

from core.explain.regions import cam_regions, cam_regions_path, load_cam_regions
from core.settings import PROJECT_ROOT


def test_cam_regions_of_a_uniform_cam_are_the_area_shares():
    regions = cam_regions(np.ones((100, 100)), border_fraction=0.15)
    assert regions["central"] == pytest.approx(0.49)
    assert regions["border"] == pytest.approx(0.51)
    assert regions["corners"] == pytest.approx(4 * 0.15 * 0.15)


def test_cam_regions_detect_a_border_heavy_cam():
    cam = np.zeros((96, 96), np.float32)
    cam[:10, :10] = 1.0  # a label in the top-left corner
    cam[40:50, 40:50] = 0.1  # faint attention on the lungs
    regions = cam_regions(cam)
    assert regions["central"] + regions["border"] == pytest.approx(1.0)
    assert regions["border"] > 0.9 and regions["corners"] > 0.9
    assert regions["corners"] <= regions["border"] + 1e-12


def test_cam_regions_of_a_central_cam_and_of_an_all_zero_cam():
    cam = np.zeros((96, 96), np.float32)
    cam[30:66, 30:66] = 1.0
    assert cam_regions(cam) == {"central": 1.0, "border": 0.0, "corners": 0.0}
    assert cam_regions(np.zeros((96, 96))) == {"central": 0.0, "border": 0.0, "corners": 0.0}


@pytest.mark.parametrize("border_fraction", [0.0, 0.5, -0.1])
def test_cam_regions_rejects_a_bad_border_fraction(border_fraction):
    with pytest.raises(ValueError, match=r"must be in \(0, 0.5\)"):
        cam_regions(np.ones((10, 10)), border_fraction=border_fraction)


def test_a_shipped_run_reads_its_own_analysis_until_one_is_computed_here(tmp_path, monkeypatch):
    monkeypatch.setenv("PARU_USER_DIR", str(tmp_path))
    demo = PROJECT_ROOT / "models" / "demo-nih-cxr4"
    assert cam_regions_path(demo) == tmp_path / "cam_regions" / f"{demo.name}.json"
    shipped = load_cam_regions(demo)
    assert shipped is not None and shipped["films"]  # the analysis it was shipped with
    (tmp_path / "cam_regions").mkdir()
    cam_regions_path(demo).write_text('{"films": [], "run_id": "demo-nih-cxr4"}')
    assert load_cam_regions(demo)["films"] == []  # the one computed here wins
