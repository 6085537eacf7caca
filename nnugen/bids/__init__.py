"""BIDS dataset -> nnU-Net raw dataset (``nnugen_convert_bids``). Needs the optional extra ``nnugen[bids]`` (pybids),
imported only when a conversion runs."""

from nnugen.bids.bids_cases import BidsConversionError, LabelSource
from nnugen.bids.bids_conversion import BidsRequest, ConversionReport, convert_bids

__all__ = ["BidsConversionError", "BidsRequest", "ConversionReport", "LabelSource", "convert_bids"]
