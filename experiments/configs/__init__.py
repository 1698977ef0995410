"""ml_collections configs: ``base.py`` and variants that change only what differs.

``python -m trainer.main --config experiments/configs/gmm_mlp.py --workdir DIR``, with
overrides as ``--config.training.num_train_steps=100`` or, for the arguments a file accepts,
``--config experiments/configs/gmm_mlp.py:sde=ve,sampler=pf_ode_heun``.
"""
