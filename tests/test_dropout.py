"""``models.dropout``: masks that belong to examples (drawn from the layer's key and the
example's id), the keep rate and the scaling, and the networks using it."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import models
from models.dropout import Dropout, example_ids

KEY = jax.random.key(0)


def apply(rate, x, ids, key=KEY, train=True):
    layer = Dropout(rate)
    with example_ids(ids):
        return layer.apply({}, x, train, rngs={"dropout": key})


def test_masks_follow_the_example_ids_not_the_batch():
    """Example ``b``'s mask depends on its id only: a permuted batch (ids permuted with it)
    permutes the outputs, and a batch of its last three examples gives their rows; another id
    gives another mask; outside ``example_ids`` one key draws the whole batch (as
    ``nn.Dropout``), which is not the per-example draw."""
    x = jnp.ones((6, 5, 4))
    ids = jnp.array([3, 17, 4, 99, 0, 12])
    out = np.asarray(apply(0.5, x, ids))
    perm = np.array([5, 2, 0, 4, 1, 3])
    np.testing.assert_array_equal(np.asarray(apply(0.5, x[perm], ids[perm])), out[perm])
    np.testing.assert_array_equal(np.asarray(apply(0.5, x[3:], ids[3:])), out[3:])
    assert not np.array_equal(np.asarray(apply(0.5, x, ids + 1)), out)
    assert len({row.tobytes() for row in out}) == 6  # six different masks
    assert not np.array_equal(np.asarray(apply(0.5, x, None)), out)
    # the mask of id i is bernoulli(fold_in(layer key, i)) with the layer's key from flax
    layer_key = Dropout(0.5).apply({}, x, True, rngs={"dropout": KEY},
                                   method=lambda m, x, train: m.make_rng("dropout"))
    want = jax.random.bernoulli(jax.random.fold_in(layer_key, 17), 0.5, (5, 4)) * 2.0
    np.testing.assert_array_equal(out[1], want)


@pytest.mark.parametrize("rate", [0.1, 0.5])
def test_keep_rate_and_scale(rate):
    """Kept entries are ``x / (1 - rate)``, dropped ones 0; the kept fraction of 20,000
    entries is ``1 - rate`` within 4.5 binomial standard errors; the mean of the output is the
    input's (dropout is unbiased) within 4.5 of its standard errors."""
    x = jnp.full((100, 200), 2.0)
    out = np.asarray(apply(rate, x, jnp.arange(100)))
    kept = out != 0
    np.testing.assert_allclose(out[kept], 2.0 / (1.0 - rate), rtol=1e-6)
    n = out.size
    se = math.sqrt(rate * (1 - rate) / n)
    assert abs(kept.mean() - (1 - rate)) <= 4.5 * se, kept.mean()
    se_mean = 2.0 * math.sqrt(rate / (1 - rate) / n)
    assert abs(out.mean() - 2.0) <= 4.5 * se_mean, out.mean()


def test_identity_outside_training_and_at_rate_zero():
    x = jax.random.normal(KEY, (4, 3))
    np.testing.assert_array_equal(apply(0.5, x, jnp.arange(4), train=False), x)
    np.testing.assert_array_equal(apply(0.0, x, jnp.arange(4)), x)


def test_ids_must_match_the_batch():
    with pytest.raises(ValueError, match=r"example_ids has shape \(3,\), the batch \(4,\)"):
        apply(0.5, jnp.ones((4, 2)), jnp.arange(3))


@pytest.mark.slow
def test_networks_draw_per_example_through_get_model_fn():
    """``get_model_fn(..., example_ids=)``: a network's training output for an example does not
    depend on the rest of the batch (the MLP with dropout 0.5), and without ids it does differ
    from the per-example draw."""
    model = models.get_model("mlp", hidden=16, num_blocks=2, dropout=0.5)
    x, t = jax.random.normal(KEY, (6, 3)), jnp.linspace(0.1, 0.9, 6)
    params = model.init(KEY, x, t)["params"]
    rng, ids = jax.random.key(7), jnp.arange(10, 16)

    @jax.jit
    def outputs(x, t):
        whole = models.get_model_fn(model, params, True, rng, example_ids=ids)(x, t)
        part = models.get_model_fn(model, params, True, rng, example_ids=ids[2:5])(x[2:5],
                                                                                   t[2:5])
        return whole, part, models.get_model_fn(model, params, True, rng)(x, t)

    whole, part, plain = outputs(x, t)
    np.testing.assert_allclose(part, whole[2:5], rtol=1e-6)
    assert not np.allclose(plain, whole)
