"""The check of one image file for what SimpleITK reads without a word: NaN / Inf voxels and cut-off or corrupt files.

SimpleITK 2.5 (nnU-Net's reader for ``.nii.gz``) reads NaN and +-Inf voxels of a NIfTI file as 0 and a truncated
``.nii.gz`` as zeros, both without an error. Here NIfTI files are read byte by byte: the header is parsed with
nibabel's header classes, the gzip stream is decompressed to its end (which also checks its CRC and length), and the
voxel data are scanned in chunks of bounded size, so memory stays small for any image size. Other formats are read
with SimpleITK. ``nnugen_check`` (a raw dataset) and ``nnugen_predict`` / ``nnugen_sample --labels-from`` (their
inputs) share it. Torch-free.

Example::

    >>> for problem in check_image_file(Path("imagesTs/case_0000.nii.gz")):  # doctest: +SKIP
    ...     print(problem)
"""

import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

_CHUNK = 1 << 22  # bytes of voxel data scanned at a time (4 MiB)
_GZIP_MAGIC = b"\x1f\x8b"
_RE_EXPORT = "re-export or re-copy it"


@dataclass(frozen=True)
class ImageProblem:
    """One problem with one file: ``problem`` is a single line that ends with what to do about it."""

    path: Path
    problem: str

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


def check_image_file(path: Path) -> list[ImageProblem]:
    """Problems of one image or label file: NaN / +-Inf voxels, truncation, corruption, unreadable; [] if none."""
    path = Path(path)
    name = path.name.lower()
    try:
        if name.endswith(".nii") or name.endswith(".nii.gz"):
            problems = _check_nifti(path, gzipped=name.endswith(".gz"))
        else:
            problems = _check_with_simpleitk(path)
    except OSError as error:
        problems = [f"cannot be opened ({error.strerror or error}); check that it exists and is readable"]
    return [ImageProblem(path, " ".join(p.split())) for p in problems]


def check_image_files(paths: Iterable[Path]) -> list[ImageProblem]:
    """The problems of every file in ``paths``, one after the other, sorted by path; [] if none."""
    return sorted((p for path in paths for p in check_image_file(path)), key=lambda p: str(p.path))


def _check_nifti(path: Path, gzipped: bool) -> list[str]:
    """Stream a .nii / .nii.gz file: header, then the voxel data in chunks, then the rest of the gzip stream."""
    with open(path, "rb") as raw:
        stream = _ByteStream(_gunzip(raw) if gzipped else iter(partial(raw.read, _CHUNK), b""))
        try:
            return _check_nifti_stream(stream)
        except EOFError:
            return [_truncation_message(stream, gzipped)]
        except zlib.error as error:
            if "header check" in str(error):
                return [f"not a gzip file although its name ends in .gz ({error}); re-export it as .nii.gz"]
            return [f"corrupt gzip stream ({error}); {_RE_EXPORT}"]


def _check_nifti_stream(stream: "_ByteStream") -> list[str]:
    """The problems of a NIfTI file read from ``stream`` (header, scaling, NaN / Inf voxels); EOFError if cut off."""
    block = stream.read(544)  # the larger (NIfTI-2) header and its 4 extension bytes
    parsed = _nifti_header(block)
    if isinstance(parsed, str):
        return [parsed]
    header, header_size, dtype, n_voxels = parsed
    stream.data_offset = max(int(header["vox_offset"]), header_size + 4)
    stream.expected_data = n_voxels * dtype.itemsize
    problems, slope, inter = _scaling(header)
    counts = _non_finite_voxels(stream, block, dtype, slope, inter)
    if counts.any():
        found_text = ", ".join(f"{n} {kind}" for n, kind in zip(counts, ("NaN", "+Inf", "-Inf")) if n)
        problems.append(f"{found_text} voxel(s) out of {n_voxels} (SimpleITK reads them as 0, so nnU-Net does not "
                        f"notice); replace them with a real value (e.g. the background intensity) and re-save")
    while stream.read(_CHUNK):  # the rest of the gzip stream, so that its CRC and length are checked
        pass
    return problems


def _nifti_header(block: bytes) -> tuple[Any, int, np.dtype, int] | str:
    """The header at the start of a NIfTI file (``block``, its first bytes) as (nibabel header, header size in bytes,
    voxel dtype, number of voxels), or the problem that ends the check; EOFError when ``block`` ends inside it."""
    from nibabel import Nifti1Header, Nifti2Header
    from nibabel.spatialimages import HeaderDataError

    if len(block) < 4:
        raise EOFError
    sizes = {int.from_bytes(block[:4], order): order for order in ("little", "big")}
    header_size = 348 if 348 in sizes else 540 if 540 in sizes else None
    if header_size is None:
        return "not a NIfTI file (the first 4 bytes are not a NIfTI-1 or NIfTI-2 header size); re-export it"
    if len(block) < header_size:
        raise EOFError
    header_class = Nifti1Header if header_size == 348 else Nifti2Header
    endianness = "<" if sizes[header_size] == "little" else ">"
    try:
        header = header_class(binaryblock=block[:header_size], endianness=endianness, check=False)
        dtype = header.get_data_dtype()
        n_voxels = int(np.prod(header.get_data_shape(), dtype=np.int64))
    except (HeaderDataError, KeyError, ValueError) as error:
        return f"invalid NIfTI header ({error}); re-export it"
    magic = header["magic"].item()[:3]
    if magic not in (b"n+1", b"n+2"):
        return (f"header magic {magic!r} says the voxel data live in a separate .img file; "
                f"convert the pair to a single .nii.gz")
    return header, header_size, dtype, n_voxels


def _scaling(header: Any) -> tuple[list[str], float, float]:
    """The problem of a scaling that SimpleITK and nibabel read differently (if any), then the header's voxel scaling
    (slope, intercept) as SimpleITK applies it: an unusable slope counts as 1, an unusable intercept as 0."""
    problems = []
    slope, inter = float(header["scl_slope"]), float(header["scl_inter"])
    slope_ok, inter_ok = np.isfinite(slope) and slope != 0, np.isfinite(inter)
    if (not np.isfinite(slope) and inter_ok and inter != 0) or (slope_ok and not inter_ok):
        # SimpleITK then applies a slope of 1 (or an intercept of 0), nibabel ignores or rejects the scaling.
        problems.append(f"header scaling scl_slope={slope}, scl_inter={inter} is read differently by SimpleITK and "
                        f"nibabel; set scl_slope=1, scl_inter=0 (or re-save the image)")
    return problems, (slope if slope_ok else 1.0), (inter if inter_ok else 0.0)


def _non_finite_voxels(stream: "_ByteStream", block: bytes, dtype: np.dtype, slope: float, inter: float) -> np.ndarray:
    """Counts of (NaN, +Inf, -Inf) among the scaled voxel values, read past the header extensions (``block``: the
    bytes read so far); zeros for unscaled integers, whose data are read all the same. EOFError where they end early."""
    scaled = slope != 1 or inter != 0
    check_values = dtype.kind in "fc" or (scaled and dtype.kind in "iu")
    if stream.data_offset > len(block):  # skip the header extensions
        if len(stream.read(stream.data_offset - len(block))) < stream.data_offset - len(block):
            raise EOFError
    counts, carry = np.zeros(3, np.int64), b""
    for piece in _voxel_pieces(stream, block[stream.data_offset:], stream.expected_data, dtype.itemsize):
        if check_values:
            data = carry + piece
            usable = len(data) - len(data) % dtype.itemsize
            counts += _count_non_finite(np.frombuffer(data[:usable], dtype), slope, inter, scaled)
            carry = data[usable:]
    return counts


def _voxel_pieces(stream: "_ByteStream", first: bytes, size: int, itemsize: int) -> Iterator[bytes]:
    """The ``size`` bytes of voxel data in pieces of whole voxels (but the last), starting with ``first``; EOFError
    when the stream ends before them."""
    first = first[:size]
    yield first
    remaining = size - len(first)
    while remaining > 0:
        piece = stream.read(min(_CHUNK - _CHUNK % itemsize, remaining))
        if not piece:
            raise EOFError  # a plain .nii file that is cut off; _check_nifti words the message
        remaining -= len(piece)
        yield piece


def _count_non_finite(raw: np.ndarray, slope: float, inter: float, scaled: bool) -> np.ndarray:
    """Counts of (NaN, +Inf, -Inf) among the voxel values after scaling."""
    if not raw.dtype.isnative:
        raw = raw.astype(raw.dtype.newbyteorder("="))
    values = raw
    if scaled:
        with np.errstate(over="ignore", invalid="ignore"):
            values = raw.astype(np.float32 if raw.dtype.itemsize <= 4 else np.float64) * slope + inter
    if values.dtype.kind == "c":
        values = np.concatenate([values.real, values.imag])
    finite = np.isfinite(values)
    if finite.all():
        return np.zeros(3, np.int64)
    bad = values[~finite]
    return np.array([np.isnan(bad).sum(), (bad == np.inf).sum(), (bad == -np.inf).sum()], np.int64)


def _truncation_message(stream: "_ByteStream", gzipped: bool) -> str:
    kind = "truncated gzip stream: file" if gzipped else "file"
    if stream.expected_data is None:
        return f"{kind} is cut off inside the NIfTI header ({stream.total} bytes); {_RE_EXPORT}"
    found = min(max(stream.total - stream.data_offset, 0), stream.expected_data)
    if found == stream.expected_data:
        return f"{kind} is cut off after the voxel data (the gzip end marker is missing); {_RE_EXPORT}"
    return f"{kind} is cut off (expected {stream.expected_data} bytes of voxel data, found {found}); {_RE_EXPORT}"


def _check_with_simpleitk(path: Path) -> list[str]:
    import SimpleITK as sitk

    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as error:
        reason = str(error).strip().splitlines()[-1] if str(error).strip() else "no reason given"
        return [f"SimpleITK cannot read it ({reason}); re-export it or convert it to .nii.gz"]
    values = sitk.GetArrayViewFromImage(image)
    if values.dtype.kind not in "fc" or np.isfinite(values).all():
        return []
    n_nan, n_inf = int(np.isnan(values).sum()), int(np.isinf(values).sum())
    return [f"{n_nan} NaN and {n_inf} Inf voxel(s) out of {values.size}; replace them with a real value "
            f"(e.g. the background intensity) and re-save"]


class _ByteStream:
    """``read(n)`` over an iterator of byte pieces; ``total`` counts the bytes the iterator has produced."""

    def __init__(self, pieces: Iterator[bytes]):
        self._pieces = pieces
        self._buffer = bytearray()
        self.total = 0
        self.data_offset = 0
        self.expected_data: int | None = None

    def read(self, size: int) -> bytes:
        while len(self._buffer) < size:
            piece = next(self._pieces, None)
            if piece is None:
                break
            self.total += len(piece)
            self._buffer += piece
        out = bytes(self._buffer[:size])
        del self._buffer[:size]
        return out


def _gunzip(raw: BinaryIO) -> Iterator[bytes]:
    """Decompressed pieces (at most ``_CHUNK`` bytes each) of a gzip file, members concatenated.

    zlib checks each member's CRC and length (``zlib.error``); a stream that ends before its end marker raises
    ``EOFError`` after its last piece. Bytes after the last member that do not start another member (padding) are
    ignored, as zlib's own gzip reader does.
    """
    decompressor = zlib.decompressobj(wbits=31)  # 31: gzip wrapper
    pending = b""
    while True:
        data = pending or raw.read(_CHUNK)
        if decompressor.eof and len(data) == 1:
            data += raw.read(_CHUNK)  # a member's magic may straddle two reads
        if not data:
            while not decompressor.eof and (piece := decompressor.decompress(b"", _CHUNK)):
                yield piece  # output zlib still holds after the last input
            if not decompressor.eof:
                raise EOFError("compressed file ended before the end-of-stream marker was reached")
            return
        if decompressor.eof:
            if not data.startswith(_GZIP_MAGIC):
                return
            decompressor = zlib.decompressobj(wbits=31)
        piece = decompressor.decompress(data, _CHUNK)
        if piece:
            yield piece
        pending = decompressor.unused_data if decompressor.eof else decompressor.unconsumed_tail
