import pytest
import torch

from nnugen.networks import TimestepEmbedding, sinusoidal_embedding


def test_sinusoids_distinguish_a_five_step_schedule():
    emb = sinusoidal_embedding(torch.arange(5), 32)
    assert emb.shape == (5, 32)
    distances = torch.cdist(emb, emb) + torch.eye(5) * 1e3
    assert distances.min() > 0.5


def test_sinusoids_match_vaswani_formula():
    t = torch.tensor([0.0, 3.0, 250.0])
    emb = sinusoidal_embedding(t, 8)
    freqs = 10000.0 ** (-torch.arange(4) / 4)
    torch.testing.assert_close(emb, torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], 1))


def test_odd_width_and_integer_timesteps():
    emb = sinusoidal_embedding(torch.tensor([1, 2], dtype=torch.long), 7)
    assert emb.shape == (2, 7) and emb.dtype == torch.float32
    assert torch.all(emb[:, -1] == 0)


def test_timestep_embedding_mlp_and_bad_shape():
    module = TimestepEmbedding(8, 16)
    assert module(torch.tensor([0.0, 1.0])).shape == (2, 16)
    with pytest.raises(ValueError, match="shape"):
        module(torch.zeros(2, 1))
