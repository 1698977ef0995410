"""Digits: the tiny U-Net and a patch Transformer on scikit-learn's 8x8 digits (1,500 training,
297 test; ``experiments/configs/digits.py``), measured by the image study
(``experiments.images``: bits/dim, sample quality and memorization against NFE for every
sampler, inverse problems).

Run: ``python -m experiments.digits --workdir runs/digits``.
"""

from experiments import images


def main(argv=None):
    images.study_main("digits", argv)


if __name__ == "__main__":
    main()
