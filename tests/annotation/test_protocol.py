import pytest

from annotation.protocol import box_result, labeling_config, point_result, results_to_instances


def test_config_has_box_and_point_labels():
    xml = labeling_config(["cat", "dog"])
    assert '<RectangleLabels name="box"' in xml and '<Label value="cat" hotkey="b"/>' in xml
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


def test_layout_points_above_boxes_labels_above_image_mnemonic_keys():
    xml = labeling_config(["cat", "dog"])
    assert xml.index("<KeyPointLabels") < xml.index("<RectangleLabels") < xml.index("<Image")
    assert 'value="object" hotkey="o"' in xml and 'value="background" hotkey="x"' in xml
    assert '<Label value="cat" hotkey="b"/>' in xml and '<Label value="dog"/>' in xml
    # colour-blind-safe pair, not green / red
    assert "#0072B2" in xml and "#E69F00" in xml and "#22c55e" not in xml


def test_task_lists_every_point_before_every_box_with_one_point_size():
    from annotation.protocol import point_width
    from annotation.tasks import make_task
    info = {"id": 3, "width": 200, "height": 100, "file_name": "a.png"}
    anns = [{"bbox": [10, 10, 50, 40], "category_id": 1},
            {"bbox": [100, 20, 60, 60], "category_id": 1}]
    res = make_task(info, anns, "/x", 4, 0, {1: "object"}, "v")["predictions"][0]["result"]
    kinds = [r["type"] for r in res]
    assert kinds == ["keypointlabels"] * 8 + ["rectanglelabels"] * 2
    assert {r["value"]["width"] for r in res if r["type"] == "keypointlabels"} == \
        {point_width(200, 100)}


def test_box_with_fewer_points_is_kept_and_flagged_and_deleted_box_points_dropped():
    w, h = 100, 100
    res = [box_result([0, 0, 50, 50], w, h, "object", "b0"),
           point_result(10, 10, w, h, True, "b0p0"),
           point_result(20, 20, w, h, False, "b0p1"),
           point_result(60, 60, w, h, True, "b1p0")]      # box b1 was deleted
    inst, warnings = results_to_instances(res, w, h, {"object": 1}, points_per_box=3)
    assert len(inst) == 1 and inst[0]["point_labels"] == [1, 0] and inst[0]["fewer_points"]
    assert any("belonged to deleted box 'b1'" in x for x in warnings)
    inst, _ = results_to_instances(res, w, h, {"object": 1}, points_per_box=2)
    assert "fewer_points" not in inst[0]


def test_mask_overlay_adds_the_brush_control_only_when_asked():
    from annotation.protocol import labeling_config
    assert "<BrushLabels" not in labeling_config(["object"])
    cfg = labeling_config(["object"], mask_overlay=True)
    assert '<BrushLabels name="mask"' in cfg and cfg.index("<BrushLabels") < cfg.index("<Image")


def test_a_hand_drawn_point_whose_id_ends_in_p_digits_is_not_a_deleted_boxs_point():
    """Label Studio's own region ids are random [A-Za-z0-9_-]: one may end in `_p<digits>`.
    Only ids the pipeline issues tie a point to a box (b<k>p<j>, b<k>_p<j>, <drawn>_a_p<j>)."""
    from annotation.protocol import point_owner
    w, h = 100, 100
    res = [box_result([0, 0, 50, 50], w, h, "object", "kQ3z_x9Lm2"),
           point_result(10, 10, w, h, True, "Zt8_qW_p12"),     # hand-drawn, unlucky id
           point_result(20, 20, w, h, False, "aB-4_p7")]       # likewise
    inst, warnings = results_to_instances(res, w, h, {"object": 1})
    assert inst[0]["point_labels"] == [1, 0] and not warnings
    assert point_owner("Zt8_qW_p12") is None and point_owner("b3p4") == "b3"
    assert point_owner("b3_p4") == "b3" and point_owner("Xk3pq9_a_p2") == "Xk3pq9_a"
