"""Mask Transfiner (Ke et al., "Mask Transfiner for High-Quality Instance Segmentation",
CVPR 2022): a refinement of Mask R-CNN's 28 x 28 masks on incoherent regions only.

incoherence.py  Sec. 3.1-3.2  incoherent-region targets and the detector
quadtree.py     Sec. 3.3      the point quadtree over incoherent nodes (28 / 56 / 112)
nodes.py        Sec. 3.4      node encoder (fine features, coarse mask, position, 3 x 3)
sequence.py     Sec. 3.4      transformer sequence encoder and pixel decoder
losses.py       Sec. 3.5      detection and refinement losses (the coarse loss is Mask R-CNN's)
model.py                      the refiner and Mask R-CNN + refiner by composition
"""
