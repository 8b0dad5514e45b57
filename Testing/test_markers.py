"""Marker files and distances: LPS/RAS honoured in every format, distances physical on oblique grids."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from pancdiff.errors import InputError
from pancdiff.markers import ImageGrid, Marker, distances_to_mask, read_markers, score_markers, values_at


def _markers(points) -> list[Marker]:
    return [Marker(f"p{n}", tuple(float(v) for v in p)) for n, p in enumerate(points)]


def _oblique_grid() -> tuple[ImageGrid, sitk.Image]:
    image = sitk.Image(20, 16, 9, sitk.sitkUInt8)
    image.SetSpacing((0.8, 1.3, 3.0))
    image.SetOrigin((-40.0, 25.0, 310.0))
    a, b = np.deg2rad(25), np.deg2rad(-10)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    image.SetDirection(tuple((rz @ rx @ np.diag([-1, 1, 1])).ravel()))
    return ImageGrid.from_image(image), image


def test_grid_maps_indices_like_itk_on_an_oblique_image():
    grid, image = _oblique_grid()
    ijk = np.array([[0, 0, 0], [3.5, 7.25, 2.0], [19, 15, 8]])
    expected = [image.TransformContinuousIndexToPhysicalPoint(tuple(map(float, p))) for p in ijk]
    np.testing.assert_allclose(grid.index_to_lps(ijk), expected, atol=1e-9)
    np.testing.assert_allclose(grid.lps_to_index(expected), ijk, atol=1e-9)


def test_distance_is_physical_on_an_oblique_anisotropic_grid():
    grid, image = _oblique_grid()
    mask = np.zeros((9, 16, 20), dtype=bool)
    mask[4, 8, 10] = True
    voxel = np.array(image.TransformIndexToPhysicalPoint((10, 8, 4)))
    direction = np.array([0.3, -0.5, 0.81])
    direction /= np.linalg.norm(direction)
    points = np.stack([voxel, voxel + 7.0 * direction, voxel + 40.0 * direction, voxel + [0.2, -0.2, 0.3]])
    got = distances_to_mask(points, mask, grid)
    # A point inside the candidate voxel counts as on it; others measure to the voxel center.
    np.testing.assert_allclose(got, [0.0, 7.0, 40.0, 0.0], atol=1e-9)


def test_distance_to_an_empty_mask_is_infinite_and_a_miss():
    grid, _ = _oblique_grid()
    result = score_markers(_markers([(0.0, 0.0, 0.0)]), np.zeros((9, 16, 20)), np.zeros((9, 16, 20), bool), grid)
    assert result["points"][0]["distance_to_candidate_mm"] is None and result["points"][0]["hit"] is False


def test_hit_means_within_tolerance():
    grid, image = _oblique_grid()
    mask = np.zeros((9, 16, 20), dtype=bool)
    mask[4, 8, 10] = True
    heat = np.zeros(mask.shape)
    heat[4, 8, 10] = 0.9
    voxel = np.array(image.TransformIndexToPhysicalPoint((10, 8, 4)))
    markers = _markers([voxel, voxel + [0, 0, 9.5], voxel + [0, 0, 10.5]])
    result = score_markers(markers, heat, mask, grid, tolerance_mm=10.0)
    assert [p["hit"] for p in result["points"]] == [True, True, False]
    assert result["hits"] == 2 and result["n"] == 3
    assert result["points"][0]["heatmap_value"] == 0.9
    assert np.isnan(values_at(np.array([[1e4, 0, 0]]), heat, grid)[0])


def test_chance_level_is_brute_force_fraction_of_pancreas_near_a_candidate_on_an_oblique_grid():
    grid, image = _oblique_grid()
    pancreas = np.zeros((9, 16, 20), dtype=bool)
    pancreas[3:6, 4:12, 5:15] = True
    cand = np.zeros_like(pancreas)
    cand[4, 6, 7] = cand[5, 10, 13] = True
    voxel = np.array(image.TransformIndexToPhysicalPoint((7, 6, 4)))
    result = score_markers(_markers([voxel]), np.zeros(pancreas.shape), cand, grid, 4.0, pancreas=pancreas)
    world = lambda kji: np.array([image.TransformIndexToPhysicalPoint([int(v) for v in idx[::-1]]) for idx in kji])  # noqa: E731
    near = np.linalg.norm(world(np.argwhere(pancreas))[:, None] - world(np.argwhere(cand))[None], axis=2).min(axis=1)
    assert result["chance_level"] == pytest.approx(np.mean(near <= 4.0 + 1e-6), abs=1e-4)
    assert 0 < result["chance_level"] < 0.5
    assert result["points"][0]["hit"] and result["points"][0]["result"].startswith("hit (")
    everywhere = score_markers(_markers([voxel]), np.zeros(pancreas.shape), pancreas, grid, 4.0, pancreas=pancreas)
    assert everywhere["chance_level"] == 1.0 and "uninformative" in everywhere["points"][0]["result"]
    assert "chance_level" not in score_markers(_markers([voxel]), np.zeros(pancreas.shape), cand, grid, 4.0)


def _mrk(system: str, position) -> dict:
    return {
        "markups": [
            {
                "type": "Fiducial",
                "coordinateSystem": system,
                "controlPoints": [
                    {"label": "tumor", "position": list(position), "positionStatus": "defined"},
                    {"label": "unplaced", "position": [0, 0, 0], "positionStatus": "undefined"},
                ],
            }
        ]
    }


def test_slicer_markups_json_in_lps_and_ras_give_the_same_point(tmp_path):
    lps = (12.5, -30.0, 88.0)
    (tmp_path / "lps.mrk.json").write_text(json.dumps(_mrk("LPS", lps)))
    (tmp_path / "ras.mrk.json").write_text(json.dumps(_mrk("RAS", (-12.5, 30.0, 88.0))))
    for name in ("lps.mrk.json", "ras.mrk.json"):
        markers = read_markers(tmp_path / name)
        assert len(markers) == 1  # the undefined point is skipped
        assert markers[0].label == "tumor" and markers[0].position_lps == lps
        assert markers[0].position_ras == (-12.5, 30.0, 88.0)


def test_csv_points_state_their_system_by_column_or_default(tmp_path):
    (tmp_path / "xyz.csv").write_text("label,x,y,z\na,1,2,3\n")
    (tmp_path / "ras.csv").write_text("r,a,s\n1,2,3\n")
    (tmp_path / "mixed.csv").write_text("x,y,z,coordinate_system\n1,2,3,RAS\n1,2,3,LPS\n")
    assert read_markers(tmp_path / "xyz.csv")[0].position_lps == (1.0, 2.0, 3.0)
    assert read_markers(tmp_path / "xyz.csv", default_system="RAS")[0].position_lps == (-1.0, -2.0, 3.0)
    assert read_markers(tmp_path / "ras.csv", default_system="LPS")[0].position_lps == (-1.0, -2.0, 3.0)
    assert [m.position_lps for m in read_markers(tmp_path / "mixed.csv")] == [(-1.0, -2.0, 3.0), (1.0, 2.0, 3.0)]


def test_fcsv_header_sets_the_system(tmp_path):
    (tmp_path / "old.fcsv").write_text(
        "# Markups fiducial file version = 4.11\n# CoordinateSystem = LPS\n"
        "# columns = id,x,y,z,ow,ox,oy,oz,vis,sel,lock,label,desc,associatedNodeID\n"
        "vtkMRMLMarkupsFiducialNode_0,5,6,7,0,0,0,1,1,1,0,F-1,,\n"
    )
    (tmp_path / "ras.fcsv").write_text("# CoordinateSystem = 0\nid0,5,6,7,0,0,0,1,1,1,0,F-1,,\n")
    assert read_markers(tmp_path / "old.fcsv")[0].position_lps == (5.0, 6.0, 7.0)
    assert read_markers(tmp_path / "ras.fcsv")[0].position_lps == (-5.0, -6.0, 7.0)


@pytest.mark.parametrize(
    "name, text, words",
    [
        ("bad.mrk.json", "{not json", "not valid JSON"),
        ("other.mrk.json", '{"nodes": []}', "not a Slicer markups file"),
        ("empty.csv", "x,y,z\n", "no defined points"),
        ("text.csv", "x,y,z\na,b,c\n", "non-numeric"),
    ],
)
def test_bad_marker_files_are_input_errors(tmp_path, name, text, words):
    (tmp_path / name).write_text(text)
    with pytest.raises(InputError, match=words):
        read_markers(tmp_path / name)
