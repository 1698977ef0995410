"""The residual MLP on Gaussian-mixture data at the experiment modules' budget.

The model behind ``compare_samplers``, ``compare_losses``, ``tweedie`` and ``inverse_problems``
(each changes the data, or the loss, and adds its ``experiment`` section): the eps loss, 4,000
steps of batch 512, 100 steps per compiled call, 100,000 training points (about 20 passes), one
checkpoint at the end and a light final evaluation (the modules measure the model themselves).
"""

from experiments.configs import base, gmm_mlp


def get_config(arg: str | None = None):
    config = gmm_mlp.get_config()
    config.data.dim = 2
    config.data.num_train = 100_000
    config.model.hidden = 128
    config.loss.name = "eps"
    config.optim.lr = 2e-3
    config.optim.warmup_steps = 200
    config.training.batch_size = 512
    config.training.num_train_steps = 4_000
    config.training.steps_per_call = 100
    steps = config.training.get_ref("num_train_steps")  # evaluate and checkpoint at the end
    config.training.eval_every = steps
    config.training.sample_every = steps
    config.training.checkpoint_every = steps
    config.eval.num_batches = 1
    config.eval.likelihood = False
    config.eval.num_samples = 512
    config.sampling.num_steps = 100
    return base.apply_shortcuts(config, arg)
