"""Flax networks mapping (x, t) to an output, and the wrapper that turns one into a score_fn."""

from models.embeddings import (
    EMBEDDINGS,
    TimeEmbeddingConfig,
    TimeMLP,
    fourier_embedding,
    fourier_frequencies,
    sinusoidal_embedding,
)
from models.mlp import MLPConfig, ResidualMLP
from models.registry import MODELS, ModelConfig, get_model, get_model_config
from models.score_fn import get_model_fn, get_score_fn, with_loop_vjp
from models.transformer import TransformerConfig, TransformerDenoiser
from models.unet import UNet, UNetConfig

__all__ = [
    "EMBEDDINGS", "MLPConfig", "MODELS", "ModelConfig", "ResidualMLP", "TimeEmbeddingConfig",
    "TimeMLP", "TransformerConfig", "TransformerDenoiser", "UNet", "UNetConfig",
    "fourier_embedding", "fourier_frequencies", "get_model", "get_model_config", "get_model_fn",
    "get_score_fn", "sinusoidal_embedding", "with_loop_vjp",
]
