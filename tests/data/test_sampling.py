import numpy as np
import pytest

from pipeline.data.datasets import Split
from pipeline.data.instances import InstanceBank
from pipeline.data.sampling import epoch_index
from pipeline.errors import UserError


def test_each_epoch_is_a_seeded_permutation():
    first = [epoch_index(3, p, 7) for p in range(7)]
    second = [epoch_index(3, p, 7) for p in range(7, 14)]
    assert sorted(first) == sorted(second) == list(range(7))
    assert first != second                                   # a new order every epoch
    assert first == [epoch_index(3, p, 7) for p in range(7)]  # same seed, same draw
    assert first != [epoch_index(4, p, 7) for p in range(7)]


def test_batch_of_unreadable_images_is_an_error_not_a_hang(tmp_path):
    m = np.zeros((8, 8), bool)
    m[2:5, 2:5] = True
    from pipeline.data.coco import make_coco, mask_to_annotation
    coco = make_coco([{"id": 1, "file_name": "gone.png", "height": 8, "width": 8}],
                     [mask_to_annotation(m, 1)])
    bank = InstanceBank(Split("train", tmp_path, coco, True), coco)
    with pytest.raises(UserError, match="no image of split 'train' could be read"):
        bank.batch(0, 2, seed=0)
