"""Training batches made in loader worker processes are the batches the training thread makes."""
import torch

from pipeline.data.loader import BatchLoader


def make(it):
    torch.manual_seed(it)              # like torchvision's random transforms: the global RNG
    return {"it": it, "x": torch.rand(3)}


def test_workers_give_the_same_batches_and_leave_the_trainers_rng_alone():
    runs = {}
    for workers in (0, 2):
        torch.manual_seed(7)
        load = BatchLoader(make, max_iter=6, workers=workers)
        runs[workers] = ([load(it) for it in range(6)], torch.rand(1))
    (a, ra), (b, rb) = runs[0], runs[2]
    assert [x["it"] for x in b] == list(range(6))
    assert all(torch.equal(x["x"], y["x"]) for x, y in zip(a, b))
    assert torch.equal(ra, rb)         # make() did not advance the trainer's RNG either way


def test_a_resume_starts_the_workers_at_the_resumed_iteration():
    load = BatchLoader(make, max_iter=10, workers=2)
    assert load(0)["it"] == 0
    assert load(7)["it"] == 7          # a jump (resume) restarts the loader there
    assert load(8)["it"] == 8
    assert torch.equal(load(9)["x"], make(9)["x"])
