"""The one place where a model name becomes a network: ``get_model(name, **overrides)``.

Each name maps to a frozen config dataclass instance (its defaults); overrides replace fields,
and ``config.build()`` gives the Flax module. A config section of an experiment enters here as
``get_model(**config.model)`` with ``name`` among its keys, or as ``get_model(name, **fields)``.
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn

from models.mlp import MLPConfig
from models.transformer import TransformerConfig
from models.unet import UNetConfig
from sde_lib._validation import closest

ModelConfig = MLPConfig | TransformerConfig | UNetConfig

MODELS: dict[str, ModelConfig] = {
    "mlp": MLPConfig(),
    "transformer": TransformerConfig(),
    # DDPM's CIFAR-10 model (Ho et al. 2020, Appendix B): 35.7M parameters; for accelerators.
    "unet": UNetConfig(),
    "unet_cifar10": UNetConfig(),
    # Tiny U-Nets that train on a CPU: 8x8 digits (levels 8, 4) and 28x28 MNIST (28, 14, 7).
    "unet_digits": UNetConfig(ch=32, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
                              dropout=0.1),
    # A Transformer on the 16 2x2 patches of the 8x8 digits, about as many parameters as
    # unet_digits.
    "transformer_digits": TransformerConfig(dim=96, depth=4, num_heads=4, patch_size=2),
    "unet_mnist": UNetConfig(ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(7,),
                             dropout=0.1),
}


def get_model_config(name: str, **overrides) -> ModelConfig:
    """The config of the model called ``name`` with ``overrides`` applied.

    Raises:
      ValueError: an unknown name (the valid names are listed), an unknown field (the valid
        fields are listed) or an invalid field value.
    """
    try:
        base = MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(f"model name must be one of {sorted(MODELS)}, got {name!r}"
                         f"{closest(name, MODELS)}") from None
    fields = {f.name for f in dataclasses.fields(base)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise ValueError(f"unknown fields {unknown} for model {name!r}; valid fields are "
                         f"{sorted(fields)}")
    return dataclasses.replace(base, **overrides)


def get_model(name: str | ModelConfig, **overrides) -> nn.Module:
    """The Flax module ``(x (B, *D), t (B,), train=False) -> (B, *D)`` for a name or a config.

    Args:
      name: a key of ``MODELS`` or a config dataclass (then ``overrides`` must be empty).
      **overrides: config fields to change, e.g. ``hidden=128`` or
        ``time_embedding={"kind": "fourier"}``.
    """
    if dataclasses.is_dataclass(name) and not isinstance(name, type):
        if overrides:
            raise ValueError("overrides must be empty when get_model is given a config, got "
                             f"{sorted(overrides)}")
        return name.build()
    return get_model_config(name, **overrides).build()
