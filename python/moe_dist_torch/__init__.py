"""PyTorch version of the moe-dist recurrent Mixture-of-Experts model, built from a `moe-dist export`
directory (config.json + model.safetensors; docs/export-format.md)."""
from .model import MoEDistModel, load_export, read_token_file, evaluate_tokens, generate

__all__ = ["MoEDistModel", "load_export", "read_token_file", "evaluate_tokens", "generate"]
