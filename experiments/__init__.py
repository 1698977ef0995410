"""The studies (one module each, run as ``python -m experiments.<study>``), their configs
(``experiments/configs/``) and the helpers they share (``experiments.common``)."""
