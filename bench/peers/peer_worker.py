"""What the PySpark peer's Python workers run: one ONNX Runtime session per worker process, created on
first use and kept (the seed's per-worker cache), 1 intra-op thread, batch 1."""
import base64
import os

from reference import Preset

_PRESET = None
_SESSION = None


def classify_base64(data: str) -> int:
    """Top-1 class index of one base64 image."""
    global _PRESET, _SESSION
    if _SESSION is None:
        _PRESET = Preset(os.environ.get("FVISION_PEER_MODEL", "efficientnet-lite0"))
        _SESSION = _PRESET.session(1)
    return _PRESET.top1(_SESSION, _PRESET.preprocess(base64.b64decode(data)))[0]
