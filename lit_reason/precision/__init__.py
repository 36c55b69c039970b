"""FP4 fully quantized training: fake quantization, the FP4 linear and the Lightning plugin.

Imports only torch and lightning; the CUDA path (kernels.py) compiles lazily and never imports
Triton on CPU.
"""

from lit_reason.precision.formats import FORMATS, FP4Blocks, decode, encode
from lit_reason.precision.fp4_linear import FP4Linear, FP4LinearFunction, FP4Settings
from lit_reason.precision.plugin import FP4FSDPPrecision, FP4Precision
from lit_reason.precision.quantize import quantize

__all__ = [
    "FORMATS", "FP4Blocks", "FP4FSDPPrecision", "FP4Linear", "FP4LinearFunction", "FP4Precision", "FP4Settings",
    "decode", "encode", "quantize",
]
