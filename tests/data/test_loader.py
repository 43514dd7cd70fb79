import math

import pytest
import torch

from deeptrain.data import InMemoryLoader


def make(n=103, **kw):
    images = torch.arange(n, dtype=torch.int64).view(n, 1, 1, 1).to(torch.uint8 if n <= 256 else torch.int64)
    kw.setdefault("batch_size", 10)
    return InMemoryLoader(images, torch.arange(n), **kw)


def epoch_order(loader) -> list[int]:
    return torch.cat([y for _, y in loader]).tolist()


def test_batches_are_slices_of_images_and_labels():
    loader = make(shuffle=True)
    batches = list(loader)
    assert len(batches) == len(loader) == 11
    assert [len(y) for _, y in batches] == [10] * 10 + [3]
    for x, y in batches:
        assert x.shape == (len(y), 1, 1, 1) and x.dtype == torch.uint8 and y.dtype == torch.int64
        assert torch.equal(x.flatten().long(), y)  # image i travels with label i


def test_an_epoch_visits_every_example_once():
    assert sorted(epoch_order(make(shuffle=True))) == list(range(103))


def test_epochs_differ_and_the_seed_reproduces_them():
    a, b, c = make(shuffle=True, seed=1), make(shuffle=True, seed=1), make(shuffle=True, seed=2)
    a0, a1 = epoch_order(a), epoch_order(a)
    assert a0 != a1 and sorted(a1) == list(range(103))
    assert [epoch_order(b), epoch_order(b)] == [a0, a1]
    assert epoch_order(c) != a0


def test_no_shuffle_keeps_the_stored_order_and_yields_views():
    loader = make(shuffle=False)
    assert epoch_order(loader) == list(range(103)) == epoch_order(loader)
    x, _ = next(iter(loader))
    assert x.data_ptr() == loader.images.data_ptr()  # a view, not a gather


def test_drop_last():
    loader = make(shuffle=True, drop_last=True)
    assert len(loader) == 10 and len(epoch_order(loader)) == 100


@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_shards_cover_everything_with_equal_batch_counts(world_size):
    shards = [make(shuffle=True, seed=5, rank=r, world_size=world_size, batch_size=8) for r in range(world_size)]
    orders = [epoch_order(s) for s in shards]
    per_rank = math.ceil(103 / world_size)
    assert {len(s) for s in shards} == {math.ceil(per_rank / 8)}
    assert all(len(o) == per_rank for o in orders)
    flat = sum(orders, [])
    assert set(flat) == set(range(103))
    assert len(flat) - len(set(flat)) == per_rank * world_size - 103  # only the padding repeats


def test_iter_without_next_does_not_start_an_epoch():
    # Lightning calls iter() on a loader just to check it is iterable
    a, b = make(shuffle=True), make(shuffle=True)
    iter(a), iter(a)
    assert epoch_order(a) == epoch_order(b)


def test_set_epoch_selects_the_permutation():
    a, b = make(shuffle=True), make(shuffle=True)
    epoch_order(a)
    e1 = epoch_order(a)
    b.set_epoch(1)
    assert epoch_order(b) == e1 and b.epoch == 1


def test_state_dict_mid_epoch_resumes_at_the_next_batch():
    full = make(shuffle=True, seed=3)
    epoch0, epoch1, epoch2 = epoch_order(full), epoch_order(full), epoch_order(full)

    run = make(shuffle=True, seed=3)
    epoch_order(run)
    it = iter(run)
    seen = [next(it)[1] for _ in range(4)]
    state = run.state_dict()
    assert state == {"epoch": 1, "batches_yielded": 4, "seed": 3}

    resumed = make(shuffle=True, seed=3)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    rest = epoch_order(resumed)
    assert torch.cat(seen).tolist() + rest == epoch1
    assert epoch_order(resumed) == epoch2 and epoch0 != epoch1


def test_state_dict_at_the_end_of_an_epoch_resumes_with_the_next_epoch():
    run = make(shuffle=True, seed=3)
    epoch_order(run)
    resumed = make(shuffle=True, seed=3)
    resumed.load_state_dict(run.state_dict())
    assert epoch_order(resumed) == epoch_order(run)


def test_checkpoint_seed_wins():
    run = make(shuffle=True, seed=3)
    state = run.state_dict()
    other = make(shuffle=True, seed=4)
    with pytest.warns(UserWarning, match="seed 3"):
        other.load_state_dict(state)
    assert epoch_order(other) == epoch_order(run)


def test_to_moves_once_and_keeps_position():
    loader = make(shuffle=True)
    assert loader.to("cpu") is loader
    if torch.cuda.is_available():
        moved = loader.to("cuda")
        assert moved is loader.to("cuda") and moved.images.is_cuda
        x, y = next(iter(moved))
        assert x.is_cuda and y.is_cuda and torch.equal(x.flatten().long(), y)
        assert sorted(epoch_order(moved)) == list(range(103))


def test_rejects_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        make(batch_size=0)
    with pytest.raises(ValueError, match="rank"):
        make(rank=2, world_size=2)
    with pytest.raises(ValueError, match="differ in length"):
        InMemoryLoader(torch.zeros(3, 1, 1, 1), torch.zeros(2), batch_size=1)
