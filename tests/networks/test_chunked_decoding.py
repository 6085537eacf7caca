import pytest
import torch

from nnugen.networks.autoencoder import Autoencoder
from nnugen.networks.chunked_decoding import decode_chunked


def make(strides, kind: str = "kl") -> Autoencoder:
    torch.manual_seed(0)
    features = (4, 8, 8)[: len(strides)]
    return Autoencoder(1, features, strides, latent_channels=3, kind=kind, codebook_size=8).eval()


# latent shapes longer than 2 x latent_margin + 1 along some axes, so that tiles really are cut there
CASES = {
    "2d": (((1, 1), (2, 2), (2, 2)), (36, 30)),
    "3d": (((1, 1, 1), (2, 2, 2)), (20, 4, 17)),
    "3d-anisotropic": (((1, 1, 1), (1, 2, 2), (2, 2, 2)), (20, 3, 18)),
}


CHUNKS = {"int2": 2, "int3": 3, "two-axes": (2, 1, 2), "other-axes": (1, 2, 3), "all-axes": (3, 2, 2)}


@pytest.mark.parametrize(
    "case, chunks",
    [("2d", name) for name in CHUNKS]
    + [(c, name) for c in ("3d", "3d-anisotropic") for name in ("int2", "two-axes")]
    + [("3d", "all-axes")],
)
def test_chunked_equals_whole(case, chunks):
    strides, latent = CASES[case]
    ae = make(strides)
    dim = len(latent)
    chunks = CHUNKS[chunks] if isinstance(CHUNKS[chunks], int) else CHUNKS[chunks][:dim]
    z = torch.randn(1, 3, *latent, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        whole = ae.decode(z)
        chunked = decode_chunked(ae, z, chunks)
    assert chunked.shape == whole.shape == (1, 1, *(n * f for n, f in zip(latent, ae.downsampling)))
    torch.testing.assert_close(chunked, whole, rtol=0, atol=1e-5)


def test_vq_latents_decode_the_same_in_chunks():
    ae = make(CASES["2d"][0], kind="vq")
    quantized = ae.encode(torch.randn(1, 1, 48, 40)).quantized
    with torch.no_grad():
        torch.testing.assert_close(decode_chunked(ae, quantized, (2, 3)), ae.decode(quantized), rtol=0, atol=1e-5)


def test_the_margin_is_the_least_exact_overlap():
    ae = make(CASES["2d"][0])
    margin = ae.latent_margin
    z = torch.randn(1, 3, 4 * margin[0], 4 * margin[1], generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        whole = ae.decode(z)
        exact = decode_chunked(ae, z, (2, 2), overlap=margin)
        short = decode_chunked(ae, z, (2, 2), overlap=tuple(m - 1 for m in margin))
        seams = decode_chunked(ae, z, (2, 2), overlap=0)
    torch.testing.assert_close(exact, whole, rtol=0, atol=1e-5)
    assert (short - whole).abs().max() > 1e-4  # one latent voxel less and the tile borders show
    assert (seams - whole).abs().max() > 1e-2


def test_tiles_stay_the_same_size_as_the_volume_grows():
    """Peak decoder memory follows the largest tile decoded: with chunks growing with the volume it stays flat."""
    ae = make(CASES["2d"][0])
    seen: list[int] = []
    decode = ae.decode

    def recording_decode(z: torch.Tensor) -> torch.Tensor:
        seen.append(z[0, 0].numel())
        return decode(z)

    ae.decode = recording_decode  # type: ignore[method-assign]
    largest = []
    for n in (3, 6):
        seen.clear()
        z = torch.randn(1, 3, 10 * n, 12)
        with torch.no_grad():
            decode_chunked(ae, z, (n, 1))
        largest.append(max(seen))
    margin = ae.latent_margin[0]
    assert largest[0] == largest[1] == (10 + 2 * margin) * 12  # an inner tile and its two halos


def test_out_device_capped_counts_and_bad_arguments():
    ae = make(CASES["2d"][0])
    z = torch.randn(1, 3, 3, 4)
    with torch.no_grad():
        whole = ae.decode(z)
        torch.testing.assert_close(decode_chunked(ae, z, (10, 10), out_device="cpu"), whole, rtol=0, atol=1e-5)
        assert torch.equal(decode_chunked(ae, z, 1), whole)
    with pytest.raises(ValueError, match="chunks"):
        decode_chunked(ae, z, 0)
    with pytest.raises(ValueError, match="one entry per spatial axis"):
        decode_chunked(ae, z, (2, 2, 2))
    with pytest.raises(ValueError, match="overlap"):
        decode_chunked(ae, z, 2, overlap=-1)
