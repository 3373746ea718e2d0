"""cupymla: paged MLA (Multi-head Latent Attention) decode for NVIDIA GPUs, FlashMLA-compatible.

Kernels are CUDA C++ sources (``cuda_src/``) compiled at run time by NVRTC; importing this
package needs no GPU. ``cupymla.reference`` is a NumPy oracle of everything the kernels compute.
"""

from . import reference, scheduler
from .api import MLAMetadata, flash_mla_with_kvcache, get_mla_metadata

__version__ = "0.1.0"
__all__ = ["MLAMetadata", "flash_mla_with_kvcache", "get_mla_metadata", "reference", "scheduler", "__version__"]
