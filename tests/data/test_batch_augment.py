"""MoCo v2 colour augmentation on a batch, each sample with its own parameters."""
import torch
from torchvision.transforms.v2 import functional as TF

from pipeline.data.batch_augment import crop_views, photometric, photometric_params


def identity(b):
    return {"brightness": torch.ones(b), "contrast": torch.ones(b), "saturation": torch.ones(b),
            "hue": torch.zeros(b), "order": torch.arange(4), "gray": torch.zeros(b, dtype=bool),
            "sigma": torch.zeros(b)}


def test_each_sample_gets_only_its_own_operations():
    x = torch.rand(3, 3, 24, 24)
    p = identity(3)
    p["gray"][1] = True
    p["brightness"][2] = 0.5
    y = photometric(x, p)
    assert torch.equal(y[0], x[0])
    assert torch.allclose(y[1, 0], y[1, 1]) and torch.allclose(y[1, 1], y[1, 2])
    assert torch.allclose(y[2], x[2] * 0.5)


def test_colour_ops_match_torchvision_per_sample():
    x = torch.rand(2, 3, 16, 16)
    for key, ref in [("contrast", TF.adjust_contrast), ("saturation", TF.adjust_saturation)]:
        p = identity(2)
        p[key] = torch.tensor([0.7, 1.3])
        y = photometric(x, p)
        for i, f in enumerate([0.7, 1.3]):
            assert torch.allclose(y[i], ref(x[i], f), atol=1e-5), key
    p = identity(2)
    p["hue"] = torch.tensor([0.08, -0.05])
    y = photometric(x, p)
    for i, h in enumerate([0.08, -0.05]):
        assert torch.allclose(y[i], TF.adjust_hue(x[i], h), atol=1e-4)


def test_blur_follows_each_samples_sigma():
    x = torch.zeros(2, 3, 31, 31)
    x[:, :, 15, 15] = 1.0
    p = identity(2)
    p["sigma"] = torch.tensor([0.0, 2.0])
    y = photometric(x, p)
    assert torch.equal(y[0], x[0])                       # sigma 0: no blur
    ref = TF.gaussian_blur(x[1], [7, 7], [2.0, 2.0])
    assert torch.allclose(y[1, :, 12:19, 12:19], ref[:, 12:19, 12:19], atol=2e-3)
    assert abs(float(y[1].sum()) - 3.0) < 1e-3            # a normalised kernel


def test_views_are_a_pure_function_of_the_generator_seed():
    imgs = [torch.randint(0, 255, (3, 40, 60), dtype=torch.uint8) for _ in range(3)]
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    a, pa = crop_views(imgs, 32, (0.2, 1.0), g1), photometric_params(3, g1)
    torch.manual_seed(99)                                # the global RNG plays no part
    b, pb = crop_views(imgs, 32, (0.2, 1.0), g2), photometric_params(3, g2)
    assert a.shape == (3, 3, 32, 32) and a.dtype == torch.uint8
    assert torch.equal(a, b) and all(torch.equal(pa[k], pb[k]) for k in pa)
