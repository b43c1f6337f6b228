import math

import pytest
import torch
import torch.nn.functional as F

from pipeline.models.backbone import ResNetFeatures
from pipeline.models.maskrcnn import build_maskrcnn, point_loss


def test_point_loss_hand_computed():
    # 2x2 logits over the box [0, 0, 4, 4]; pixel centres of the mask cells are at 1 and 3.
    logits = torch.tensor([[[2.0, -1.0], [0.5, 3.0]]])
    box = torch.tensor([[0.0, 0.0, 4.0, 4.0]])
    pts = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [3.0, 1.0], [2.0, 1.0]]])
    lab = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    # cell centres read exactly; (2, 1) is halfway between 2.0 and -1.0 -> 0.5
    vals = torch.tensor([2.0, 3.0, -1.0, 0.5])
    want = F.binary_cross_entropy_with_logits(vals, lab[0])
    assert point_loss(logits, box, pts, lab).item() == pytest.approx(want.item(), rel=1e-6)
    manual = (-math.log(torch.sigmoid(torch.tensor(2.0)).item())
              - math.log(1 - torch.sigmoid(torch.tensor(3.0)).item())
              - math.log(torch.sigmoid(torch.tensor(-1.0)).item())
              - math.log(1 - torch.sigmoid(torch.tensor(0.5)).item())) / 4
    assert point_loss(logits, box, pts, lab).item() == pytest.approx(manual, rel=1e-5)


def test_point_loss_ignores_outside_and_unlabelled():
    logits = torch.zeros(1, 4, 4)
    box = torch.tensor([[10.0, 10.0, 20.0, 20.0]])
    pts = torch.tensor([[[15.0, 15.0], [5.0, 15.0], [15.0, 15.0]]])
    lab = torch.tensor([[1.0, 1.0, -1.0]])
    # mean over all 3 points, the outside and the unlabelled one weighted 0 (detectron2)
    assert point_loss(logits, box, pts, lab).item() == pytest.approx(math.log(2) / 3, rel=1e-6)
    # all outside: zero, with a gradient path
    out = point_loss(logits.requires_grad_(), box, pts[:, 1:2], lab[:, 1:2])
    assert out.item() == 0.0
    out.backward()


def overfit(supervision, steps=30):
    torch.manual_seed(0)
    model = build_maskrcnn(ResNetFeatures("resnet18"), 1, supervision, fpn_channels=32,
                           mask_head_channels=32, box_head_dim=128, box_detections_per_img=5,
                           box_batch_size_per_image=64, rpn_pre_nms_top_n_train=200,
                           rpn_post_nms_top_n_train=100)
    img = torch.full((3, 64, 64), 0.2)
    img[:, 16:48, 12:40] = 0.9
    mask = torch.zeros(1, 64, 64, dtype=torch.uint8)
    mask[0, 16:48, 12:40] = 1
    g = torch.Generator().manual_seed(0)
    xs = torch.randint(8, 44, (1, 16), generator=g).float()
    ys = torch.randint(12, 52, (1, 16), generator=g).float()
    pts = torch.stack([xs, ys], -1) + 0.5
    plab = mask[0, ys.long(), xs.long()].float()
    target = {"boxes": torch.tensor([[12.0, 16.0, 40.0, 48.0]]), "labels": torch.tensor([1]),
              "masks": mask, "points": pts, "point_labels": plab}
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def iou():
        model.eval()
        with torch.no_grad():
            out = model([img])[0]
        model.train()
        if len(out["masks"]) == 0:
            return 0.0
        # the mask of the detection closest to the true box
        b = out["boxes"]
        j = int(((b - target["boxes"]).abs().sum(1)).argmin())
        pred = out["masks"][j, 0] > 0.5
        return float((pred & mask[0].bool()).sum() / (pred | mask[0].bool()).sum())

    model.train()
    for _ in range(steps):
        losses = model([img], [target])
        opt.zero_grad()
        sum(losses.values()).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
    return losses, iou()


def test_points_overfit_one_image():
    losses, iou = overfit("points", steps=40)
    assert "loss_mask" in losses and iou > 0.6


def test_fine_tuning_init_keeps_what_fits_and_refuses_another_model(tmp_path):
    """maskrcnn.train.init: a model of 5 classes starts a 1-class model (the class-specific
    predictors stay fresh, as detectron2 fine-tunes); a checkpoint of another model is an error."""
    import pytest
    import torch
    from pipeline.errors import UserError
    from pipeline.models.students import MaskRCNNStudent
    from pipeline.stages.student import load_init
    from tests.conftest import make_cfg
    cfg = make_cfg(tmp_path, "backbone.weights=null")
    torch.manual_seed(0)
    five = MaskRCNNStudent(cfg, 5).model
    torch.save(five.state_dict(), tmp_path / "five.pt")
    torch.manual_seed(1)
    one = MaskRCNNStudent(cfg, 1).model
    fresh = one.roi_heads.box_predictor.cls_score.weight.clone()
    load_init(one, tmp_path / "five.pt", "cpu")
    key = "backbone.body.conv1.weight"
    assert torch.equal(one.state_dict()[key], five.state_dict()[key])
    assert torch.equal(one.roi_heads.box_predictor.cls_score.weight, fresh)
    torch.save({"other.weight": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a checkpoint of this model"):
        load_init(one, tmp_path / "other.pt", "cpu")
    with pytest.raises(UserError, match="not found"):
        load_init(one, tmp_path / "absent.pt", "cpu")


def test_drop_loss_leaves_out_rois_on_no_pseudo_label():
    """CutLER's DropLoss: RoIs whose predicted box overlaps no target box by more than the
    threshold do not count in the classifier's cross-entropy (the mean over all RoIs)."""
    torch.manual_seed(0)
    model = build_maskrcnn(ResNetFeatures("resnet18"), 1, fpn_channels=16,
                           mask_head_channels=16, box_head_dim=32, drop_loss_iou=0.01)
    heads = model.roi_heads
    props = [torch.tensor([[0.0, 0, 10, 10], [50, 50, 60, 60], [5, 0, 15, 10]])]
    labels = [torch.tensor([1, 0, 0])]
    heads._samples = (props, None, labels, None)
    logits = torch.tensor([[0.2, 1.0], [2.0, -1.0], [0.5, 0.5]])
    deltas = torch.zeros(3, 8)                       # predicted boxes = the proposals
    targets = [{"boxes": torch.tensor([[0.0, 0, 10, 10]])}]
    ce = F.cross_entropy(logits, labels[0], reduction="none")
    got = heads._drop_loss_classifier(logits, deltas, targets)
    assert got.item() == pytest.approx(((ce[0] + ce[2]) / 3).item(), rel=1e-6)
    # an image without pseudo-labels drops nothing
    empty = [{"boxes": torch.zeros(0, 4)}]
    assert heads._drop_loss_classifier(logits, deltas, empty).item() == pytest.approx(
        ce.mean().item(), rel=1e-6)
    # and a training step runs through it
    model.train()
    img = torch.rand(3, 64, 64)
    losses = model([img], [{"boxes": torch.tensor([[12.0, 16.0, 40.0, 48.0]]),
                            "labels": torch.tensor([1]),
                            "masks": torch.ones(1, 64, 64, dtype=torch.uint8)}])
    assert torch.isfinite(losses["loss_classifier"])


def test_the_mask_head_is_trained_by_the_supervision_object_it_is_given():
    """Mask R-CNN asks its supervision for the mask loss (pipeline/supervision.py): under full
    masks the same value as torchvision's own per-pixel path, under points PointSup's."""
    from torchvision.models.detection.roi_heads import RoIHeads
    from pipeline.supervision import FullMasks, Points
    img = torch.full((3, 64, 64), 0.2)
    img[:, 16:48, 12:40] = 0.9
    mask = torch.zeros(1, 64, 64, dtype=torch.uint8)
    mask[0, 16:48, 12:40] = 1
    target = {"boxes": torch.tensor([[12.0, 16.0, 40.0, 48.0]]), "labels": torch.tensor([1]),
              "masks": mask, "points": torch.tensor([[[20.5, 30.5], [2.5, 2.5]]]),
              "point_labels": torch.tensor([[1.0, 0.0]])}

    def loss(supervision, torchvision_path=False):
        torch.manual_seed(0)
        model = build_maskrcnn(ResNetFeatures("resnet18"), 1, supervision, fpn_channels=16,
                               mask_head_channels=16, box_head_dim=32).train()
        if torchvision_path:
            model.roi_heads._forward = lambda *a: RoIHeads.forward(model.roi_heads, *a)
        torch.manual_seed(1)
        return model([img], [target])["loss_mask"]

    ours = loss(FullMasks())
    assert ours.item() == pytest.approx(loss("full", torchvision_path=True).item(), rel=1e-6)
    assert loss(Points()).item() != pytest.approx(ours.item(), rel=1e-3)
