"""CIFAR-10 32x32 (tfds, prepared beforehand) with DDPM's 35.7M-parameter U-Net; accelerators."""

from experiments.configs import base, digits_unet


def get_config(arg: str | None = None):
    config = digits_unet.get_config()
    config.data.name = "cifar10"
    config.data.dequantize = True
    config.model.name = "unet_cifar10"
    config.optim.warmup_steps = 5_000
    config.training.num_train_steps = 800_000
    config.training.log_every = 500
    config.training.eval_every = 10_000
    config.training.sample_every = 50_000
    config.training.checkpoint_every = 10_000
    config.eval.likelihood_examples = 256
    return base.apply_shortcuts(config, arg)
