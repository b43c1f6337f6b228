import pytest

from annotation.protocol import box_result, labeling_config, point_result, results_to_instances


def test_config_has_box_and_point_labels():
    xml = labeling_config(["cat", "dog"])
    assert '<RectangleLabels name="box"' in xml and '<Label value="cat"/>' in xml
    assert '<KeyPointLabels name="point"' in xml and 'value="background"' in xml


def test_percent_round_trip_and_assignment_to_smallest_box():
    w, h = 200, 100
    res = [box_result([10, 10, 100, 80], w, h, "object", "a"),
           box_result([20, 20, 30, 30], w, h, "object", "b"),
           point_result(25.7, 25.2, w, h, True, "p1"),     # in both: goes to the small box
           point_result(90.0, 60.0, w, h, False, "p2"),    # only in the big box
           point_result(150.0, 5.0, w, h, True, "p3")]     # in no box
    inst, warnings = results_to_instances(res, w, h, {"object": 1})
    big, small = inst
    assert small["point_coords"] == [[25, 25]] and small["point_labels"] == [1]
    assert big["point_coords"] == [[90, 60]] and big["point_labels"] == [0]
    assert big["bbox"] == pytest.approx([10, 10, 100, 80])
    assert len(warnings) == 1 and "no box" in warnings[0]


def test_point_outside_image_is_dropped():
    res = [box_result([0, 0, 50, 50], 50, 50, "object", "a"),
           {"type": "keypointlabels", "value": {"x": 120.0, "y": 10.0,
                                                "keypointlabels": ["object"]},
            "original_width": 50, "original_height": 50}]
    inst, warnings = results_to_instances(res, 50, 50, {"object": 1})
    assert inst[0]["point_coords"] == [] and "outside" in warnings[0]
