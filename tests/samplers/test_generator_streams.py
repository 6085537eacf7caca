"""``noise.randn_like`` with one generator per equal chunk of the batch axis: chunk j is exactly the draw of
generator j alone (torch.randn with that generator), so ensemble members keep their own seeded streams in a batch."""

import pytest
import torch

from nnugen.diffusion.noise import randn_like


@pytest.mark.parametrize("shape", [(6, 2, 3, 4), (4, 1, 2, 3, 5)])
def test_each_chunk_is_its_generators_own_draw(shape):
    generators = [torch.Generator().manual_seed(seed) for seed in (10, 11)]
    drawn = randn_like(torch.empty(shape), generators)
    # two draws in a row: each generator's stream advances on its own
    again = randn_like(torch.empty(shape), generators)
    for j, seed in enumerate((10, 11)):
        reference = torch.Generator().manual_seed(seed)
        chunk = (shape[0] // 2, *shape[1:])
        assert torch.equal(drawn[j * chunk[0]:(j + 1) * chunk[0]], torch.randn(chunk, generator=reference))
        assert torch.equal(again[j * chunk[0]:(j + 1) * chunk[0]], torch.randn(chunk, generator=reference))


def test_a_list_of_one_generator_is_that_generator():
    assert torch.equal(randn_like(torch.empty(3, 2), [torch.Generator().manual_seed(5)]),
                       randn_like(torch.empty(3, 2), torch.Generator().manual_seed(5)))


@pytest.mark.parametrize("count", [0, 4])
def test_generators_that_do_not_split_the_batch_are_refused(count):
    with pytest.raises(ValueError, match="equal chunk"):
        randn_like(torch.empty(6, 2), [torch.Generator() for _ in range(count)])
