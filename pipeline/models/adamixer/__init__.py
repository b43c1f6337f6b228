"""AdaMixer (Gao et al., "AdaMixer: A Fast-Converging Query-Based Object Detector", CVPR 2022),
with a mask head on its final boxes so it serves as an instance-segmentation student.

One module per part of the paper:
  boxes.py          Sec. 3.1  the query's positional vector (x, y, z, r) and box refinement
  feature_space.py  Sec. 3.2  backbone levels linearly projected into one 3D feature space
  sampling.py       Sec. 3.2  adaptive 3D feature sampling (offsets in x, y, z per group)
  mixing.py         Sec. 3.3  adaptive mixing: channel mixing then spatial mixing
  attention.py      Sec. 3.4  query self-attention with sinusoidal position and IoF bias
  stage.py          Sec. 3.4  one decoder stage (attention, sampling + mixing, FFN, heads)
  set_loss.py       Sec. 3.4  Hungarian matching and the set loss (focal, L1, GIoU)
  mask_head.py      (ours)    RoIAlign on the level the box's z selects + a small FCN;
                              full masks or PointSup's point loss
  model.py                    the detector: initial queries, 6 stages, mask head, inference
"""
from pipeline.models.adamixer.model import AdaMixer, AdaMixerLoss, InferenceParams

__all__ = ["AdaMixer", "AdaMixerLoss", "InferenceParams"]
