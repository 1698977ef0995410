"""Networks: time embeddings against numpy formulas, shapes, parameter counts from architecture
formulas written here, the registry's errors, and get_score_fn against the parameterization
conversions and the Gaussian-mixture oracle."""

import math
import re
from unittest import mock

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _compiles import count_compilations

import models
import sde_lib
from models import layers
from models import unet as unet_module

KEY = jax.random.PRNGKey(0)


def num_params(tree):
    return sum(math.prod(a.shape) for a in jax.tree.leaves(tree))


def init(model, x, t):
    return model.init(KEY, x, t)["params"]


# ----- time embeddings -----------------------------------------------------------------------

def test_sinusoidal_embedding_matches_ddpm_formula():
    # Ho et al. 2020 (diffusion_utils get_timestep_embedding), written out in numpy.
    t = np.array([0.0, 1.0, 17.5, 999.0])
    dim = 10
    half = dim // 2
    freqs = np.exp(-np.log(10_000.0) * np.arange(half) / (half - 1))
    ref = np.concatenate([np.sin(t[:, None] * freqs), np.cos(t[:, None] * freqs)], axis=1)
    chex.assert_trees_all_close(jax.jit(models.sinusoidal_embedding, static_argnums=1)(t, dim),
                                ref, rtol=1e-12, atol=1e-12)
    odd = models.sinusoidal_embedding(t, dim + 1)
    chex.assert_shape(odd, (4, dim + 1))
    np.testing.assert_array_equal(odd[:, -1], 0.0)


def test_time_embedding_scales_and_fourier_frequencies_are_fixed():
    t = jnp.array([0.1, 0.7])
    cfg = models.TimeEmbeddingConfig()  # sinusoidal, time_scale 999 (score_sde, continuous VP)
    chex.assert_trees_all_close(cfg.embed(t, 8), models.sinusoidal_embedding(999.0 * t, 8))
    # diffusers / score_sde DDPM ports: the index i itself at t_i = (i + 1) / N
    port = models.TimeEmbeddingConfig(time_scale=1000.0, time_shift=-1.0)
    i = jnp.array([0, 17, 999])
    chex.assert_trees_all_close(port.embed((i + 1) / 1000, 8),
                                models.sinusoidal_embedding(i.astype(jnp.float64), 8), atol=1e-12)
    four = models.TimeEmbeddingConfig(kind="fourier", fourier_scale=16.0, seed=3)
    w = np.asarray(models.fourier_frequencies(8, 16.0, 3), np.float64)
    arg = 2 * np.pi * np.asarray(t)[:, None] * w[None, :]
    chex.assert_trees_all_close(four.embed(t, 8), np.concatenate([np.sin(arg), np.cos(arg)], 1),
                                rtol=1e-6, atol=1e-6)
    # The frequencies are a function of the seed only: not parameters of any network.
    np.testing.assert_array_equal(models.fourier_frequencies(8, 16.0, 3), w.astype(np.float32))
    assert not np.allclose(models.fourier_frequencies(8, 16.0, 4), w)
    m = models.get_model("mlp", hidden=8, num_blocks=1, time_embedding="fourier")
    params = init(m, jnp.ones((2, 3)), t)
    assert set(params["time"]) == {"Dense_0", "Dense_1"}


def test_time_embedding_rejects_bad_values():
    with pytest.raises(ValueError, match="kind must be one of"):
        models.TimeEmbeddingConfig(kind="learned")
    with pytest.raises(ValueError, match="time_scale"):
        models.TimeEmbeddingConfig(time_scale=-1.0)
    with pytest.raises(ValueError, match="unknown time_embedding keys"):
        models.MLPConfig(time_embedding={"kind": "fourier", "scale": 3})


# ----- residual MLP --------------------------------------------------------------------------

def mlp_param_count(d, H, L):
    time = 2 * (H * H + H)                       # Dense(H) o silu o Dense(H) on embed(t, H)
    inp = d * H + H
    block = 2 * H + (H * H + H) + H * H + (H * H + H)   # LayerNorm, dense0, time (no bias), dense1
    out = 2 * H + H * d + d
    return time + inp + L * block + out


@pytest.mark.parametrize("shape,H,L", [pytest.param((5, 3), 16, 2, marks=pytest.mark.slow),
                                       pytest.param((4, 2, 3), 8, 0, marks=pytest.mark.slow),
                                       ((3, 7), 32, 3)])
def test_mlp_shape_and_parameter_count(shape, H, L):
    model = models.get_model("mlp", hidden=H, num_blocks=L)
    x, t = jnp.ones(shape), jnp.full(shape[:1], 0.5)
    params = init(model, x, t)
    assert num_params(params) == mlp_param_count(math.prod(shape[1:]), H, L)
    chex.assert_shape(model.apply({"params": params}, x, t), shape)


# ----- Transformer ---------------------------------------------------------------------------

def transformer_param_count(num_tokens, token_size, E, L, r):
    time = 2 * (E * E + E)
    embed = token_size * E + E + num_tokens * E            # token projection + positions
    block = (E * 6 * E + 6 * E                             # adaLN modulation
             + 4 * (E * E + E)                             # q, k, v, out projections
             + E * r * E + r * E + r * E * E + E)          # MLP
    final = E * 2 * E + 2 * E + E * token_size + token_size
    return time + embed + L * block + final


@pytest.mark.slow
@pytest.mark.parametrize("shape,patch,tokens,token_size", [
    ((3, 6), 2, 6, 1),               # coordinates as tokens
    ((2, 4, 6, 3), 2, 6, 12),        # 2x2 patches of a non-square RGB image
])
def test_transformer_shape_and_parameter_count(shape, patch, tokens, token_size):
    E, L, r = 16, 2, 2
    model = models.get_model("transformer", dim=E, depth=L, num_heads=4, mlp_ratio=r,
                             patch_size=patch)
    x = jax.random.normal(KEY, shape)
    t = jnp.linspace(0.1, 0.9, shape[0])
    params = init(model, x, t)
    assert num_params(params) == transformer_param_count(tokens, token_size, E, L, r)
    apply = jax.jit(model.apply)
    out = apply({"params": params}, x, t)
    chex.assert_shape(out, shape)
    # adaLN-Zero: every modulation starts at zero, so the initial output ignores t ...
    chex.assert_trees_all_close(apply({"params": params}, x, 1.0 - t), out, atol=1e-12)
    # ... and depends on t as soon as the modulations move.
    moved = jax.tree.map(lambda p: p + 0.1 * jax.random.normal(KEY, p.shape, p.dtype), params)
    diff = apply({"params": moved}, x, 1.0 - t) - apply({"params": moved}, x, t)
    assert float(jnp.max(jnp.abs(diff))) > 1e-3


def test_transformer_patches_round_trip():
    # Token 1 of an image of width 6 with 2x2 patches is the patch at rows 0:2, columns 2:4.
    model = models.TransformerDenoiser(models.TransformerConfig(patch_size=2))
    x = jax.random.normal(KEY, (2, 4, 6, 3))
    tokens = model._tokenize(x)
    chex.assert_shape(tokens, (2, 6, 12))
    np.testing.assert_array_equal(tokens[0, 1], np.asarray(x[0, 0:2, 2:4, :]).reshape(-1))
    np.testing.assert_array_equal(model._untokenize(tokens, x.shape), x)


# ----- U-Net ---------------------------------------------------------------------------------

def unet_counts(cfg, C, res):
    """(parameters, conv kernels) of the DDPM U-Net from its description in Ho et al. 2020."""
    ch = cfg.ch
    conv = lambda i, o, k: k * k * i * o + o
    dense = lambda i, o: i * o + o
    gn = lambda c: 2 * c
    n, kernels = dense(ch, 4 * ch) + dense(4 * ch, 4 * ch), 0

    def resblock(i, o):
        nonlocal n, kernels
        n += gn(i) + conv(i, o, 3) + dense(4 * ch, o) + gn(o) + conv(o, o, 3)
        kernels += 2
        if i != o:
            n += conv(i, o, 1)
            kernels += 1

    def attn(c, r):
        nonlocal n
        if r in cfg.attn_resolutions:
            n += gn(c) + 4 * dense(c, c)

    n += conv(C, ch, 3)
    kernels += 1
    skips, c, r = [ch], ch, res
    for lvl, m in enumerate(cfg.ch_mult):
        for _ in range(cfg.num_res_blocks):
            resblock(c, m * ch)
            c = m * ch
            attn(c, r)
            skips.append(c)
        if lvl < len(cfg.ch_mult) - 1:
            n += conv(c, c, 3)
            kernels += 1
            r //= 2
            skips.append(c)
    resblock(c, c)
    n += gn(c) + 4 * dense(c, c)
    resblock(c, c)
    for lvl in reversed(range(len(cfg.ch_mult))):
        for _ in range(cfg.num_res_blocks + 1):
            resblock(c + skips.pop(), cfg.ch_mult[lvl] * ch)
            c = cfg.ch_mult[lvl] * ch
            attn(c, r)
        if lvl > 0:
            n += conv(c, c, 3)
            kernels += 1
            r *= 2
    n += gn(c) + conv(c, C, 3)
    kernels += 1
    assert not skips
    return n, kernels


def count_kernels(params):
    return sum(1 for a in jax.tree.leaves(params) if a.ndim == 4)


@pytest.mark.slow
@pytest.mark.parametrize("name,overrides,shape", [
    ("unet_digits", dict(ch=8), (2, 8, 8, 1)),
    ("unet_mnist", dict(ch=8), (1, 28, 28, 1)),
])
def test_unet_shape_and_counts(name, overrides, shape):
    model = models.get_model(name, **overrides)
    x = jax.random.normal(KEY, shape)
    t = jnp.full(shape[:1], 0.3)
    params = init(model, x, t)
    n, kernels = unet_counts(model.config, shape[-1], shape[1])
    assert num_params(params) == n
    assert count_kernels(params) == kernels
    chex.assert_shape(model.apply({"params": params}, x, t), shape)


def test_unet_cifar10_config_has_ddpm_parameter_count():
    # Ho et al. 2020, Appendix B: "Our CIFAR10 model has 35.7 million parameters".
    model = models.get_model("unet_cifar10")
    shapes = jax.eval_shape(lambda: model.init(KEY, jnp.ones((1, 32, 32, 3)), jnp.ones(1)))
    n = num_params(shapes["params"])
    assert (n, count_kernels(shapes["params"])) == unet_counts(model.config, 3, 32)
    assert round(n / 1e5) == 357


@pytest.mark.slow
def test_unet_dropout_only_in_training():
    model = models.get_model("unet_digits", ch=8, dropout=0.5)
    x, t = jax.random.normal(KEY, (2, 8, 8, 1)), jnp.array([0.2, 0.8])
    params = init(model, x, t)
    f_eval = models.get_model_fn(model, params)
    chex.assert_trees_all_close(f_eval(x, t), f_eval(x, t))
    f_train = lambda rng: models.get_model_fn(model, params, train=True, rng=rng)(x, t)
    a, b = f_train(jax.random.PRNGKey(1)), f_train(jax.random.PRNGKey(2))
    assert float(jnp.max(jnp.abs(a - b))) > 1e-4
    with pytest.raises(ValueError, match="rng"):
        models.get_model_fn(model, params, train=True)


def test_unet_rejects_indivisible_image_size():
    model = models.get_model("unet_digits", ch=8, ch_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="divisible by"):
        model.init(KEY, jnp.ones((1, 6, 6, 1)), jnp.ones(1))


# ----- registry ------------------------------------------------------------------------------

def test_registry_errors_list_valid_choices():
    with pytest.raises(ValueError, match=r"model name must be one of \['mlp'"):
        models.get_model("resnet")
    with pytest.raises(ValueError, match="unknown fields \\['width'\\].*valid fields"):
        models.get_model("mlp", width=3)
    with pytest.raises(ValueError, match="dropout"):
        models.get_model("unet", dropout=1.5)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        models.get_model("transformer", dim=10, num_heads=4)
    with pytest.raises(ValueError, match="t must have shape"):
        m = models.get_model("mlp", hidden=8)
        m.init(KEY, jnp.ones((3, 2)), jnp.ones((2,)))


def test_registry_accepts_config_objects():
    cfg = models.get_model_config("unet_digits", ch=16)
    assert isinstance(cfg, models.UNetConfig) and cfg.ch == 16 and cfg.ch_mult == (1, 2)
    assert models.get_model(cfg) == models.UNet(cfg)
    with pytest.raises(ValueError, match="overrides must be empty"):
        models.get_model(cfg, ch=8)


# ----- get_score_fn --------------------------------------------------------------------------

def reference_score(out, x, alpha, sigma, kind):
    """Score implied by a network output, written out per parameterization (numpy)."""
    a, s = alpha[:, None], sigma[:, None]
    if kind == "eps":
        return -out / s
    if kind == "score":
        return out
    if kind == "x0":
        return -(x - a * out) / s**2
    eps = (s * x + a * out) / (a**2 + s**2)   # v = alpha eps - sigma x0 (Salimans & Ho 2022)
    return -eps / s


@pytest.mark.parametrize("kind", ["eps", "x0", "v", "score"])
@pytest.mark.parametrize("sde", [sde_lib.VPSDE(), sde_lib.VESDE(), sde_lib.subVPSDE()],
                         ids=["vp", "ve", "subvp"])
def test_score_fn_matches_parameterization_formulas(kind, sde):
    model = models.get_model("mlp", hidden=16, num_blocks=1)
    x = jax.random.normal(KEY, (6, 3))
    t = jnp.linspace(0.05, 0.95, 6)
    params = init(model, x, t)
    out = np.asarray(model.apply({"params": params}, x, t))
    mean, std = sde.marginal_prob(jnp.ones_like(x), t)   # mean = alpha_t * 1
    alpha = np.asarray(mean[:, 0])
    score = jax.jit(models.get_score_fn(sde, model, params, kind))(x, t)
    chex.assert_trees_all_close(score, reference_score(out, np.asarray(x), alpha,
                                                       np.asarray(std), kind),
                                rtol=1e-10, atol=1e-10)


class OracleNet(nn.Module):
    """The exact optimal network of each parameterization for a Gaussian mixture."""

    gmm: sde_lib.GaussianMixture
    sde: object
    kind: str

    @nn.compact
    def __call__(self, x, t, train=False):
        alpha, sigma = self.sde.marginal_coeffs(t)
        score = self.gmm.score_fn(self.sde)(x, t)
        a, s = alpha[:, None], sigma[:, None]
        eps = -s * score
        x0 = (x + s**2 * score) / a                         # Tweedie
        return {"eps": eps, "score": score, "x0": x0, "v": a * eps - s * x0}[self.kind]


@pytest.mark.parametrize("kind", ["eps", "x0", "v", "score"])
def test_score_fn_of_oracle_networks_is_the_exact_score(kind):
    gmm = sde_lib.asymmetric_mixture_2d()
    sde = sde_lib.VPSDE()
    net = OracleNet(gmm, sde, kind)
    x = jax.random.normal(KEY, (5, 2)) * 2.0
    t = jnp.array([0.01, 0.1, 0.3, 0.6, 1.0])
    score = models.get_score_fn(sde, net, {}, kind)(x, t)
    chex.assert_trees_all_close(score, gmm.score_fn(sde)(x, t), rtol=1e-9, atol=1e-9)


def test_score_fn_rejects_unknown_parameterization():
    with pytest.raises(ValueError, match="parameterization must be one of"):
        models.get_score_fn(sde_lib.VPSDE(), models.get_model("mlp"), {}, "noise")


def test_score_fn_names_params_of_another_model_and_the_wrong_kinds():
    """Another model's params gave a 30-frame flax ScopeParamShapeError when the score was
    called; now one ValueError names the first leaf that differs, eager or traced, and an sde or
    rng of the wrong kind is a TypeError naming it."""
    sde, x, t = sde_lib.VPSDE(), jnp.ones((3, 2)), jnp.full((3,), 0.5)

    def zeros_like_init(model):  # the params' structure without running init op by op
        shapes = jax.eval_shape(model.init, KEY, x, t)["params"]
        return jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)

    model = models.get_model("mlp", hidden=16, num_blocks=1)
    other = zeros_like_init(models.get_model("mlp", hidden=8, num_blocks=1))
    score_fn = models.get_score_fn(sde, model, other)
    match = (r"params do not fit the model ResidualMLP for x of shape \(3, 2\): shape mismatch "
             r"of leaf \S+: params have \([\d, ]+\), the model expects \([\d, ]+\)")
    with pytest.raises(ValueError, match=match):
        score_fn(x, t)
    with pytest.raises(ValueError, match=match):
        jax.jit(score_fn)(x, t)
    with pytest.raises(ValueError, match="pass variables\\['params'\\], not the whole"):
        models.get_score_fn(sde, model, {"params": zeros_like_init(model)})(x, t)
    with pytest.raises(TypeError, match="sde must be an SDE of sde_lib .* got None"):
        models.get_score_fn(None, model, other)
    with pytest.raises(TypeError, match="rng must be a jax PRNG key .* got int"):
        models.get_model_fn(model, other, train=True, rng=0)


@pytest.mark.slow
def test_new_score_fn_closures_do_not_recompile():
    """``get_score_fn`` returns a pytree whose leaves are the parameters: three score functions
    of the same network (other parameter values) compile ``log_likelihood``, the ELBO and a
    jitted sampler in the first round only (XLA compilations counted through jax.monitoring),
    and give the values of the plain closure over the same params."""
    sde = sde_lib.VPSDE(N=40, T=0.987)  # an SDE no other test uses: the first round compiles
    model = models.get_model("mlp", hidden=8, num_blocks=1)
    params = init(model, jnp.zeros((1, 2)), jnp.zeros(1))
    x, key = jnp.ones((3, 2)), jax.random.PRNGKey(1)
    sampler = jax.jit(lambda k, score_fn: sde_lib.sample(k, sde, score_fn, (3, 2), "ddim",
                                                         num_steps=5)[0])
    results, per_round = [], []
    for k in range(3):
        with count_compilations() as compiles:
            p = jax.tree.map(lambda a, k=k: a * (1.0 + 0.1 * k), params)
            score_fn = models.get_score_fn(sde, model, p, "eps")
            results.append((p, sde_lib.ddpm_negative_elbo(key, sde, score_fn, x,
                                                          decoder="gaussian").total,
                            sampler(key, score_fn)))
            sde_lib.log_likelihood(key, sde, score_fn, x, divergence="exact", rtol=1e-3,
                                   atol=1e-3)
        per_round.append(len(compiles))
    assert per_round[0] >= 3 and per_round[1:] == [0, 0], per_round
    for p, elbo, samples in results:  # the plain closures (compiled once per closure object)
        closure = sde_lib.losses.get_model_score_fn(models.get_model_fn(model, p), sde,
                                                    sde_lib.get_parameterization("eps"))
        chex.assert_trees_all_close(
            elbo, sde_lib.ddpm_negative_elbo(key, sde, closure, x, decoder="gaussian").total,
            rtol=1e-12)
        chex.assert_trees_all_close(samples, sde_lib.sample(key, sde, closure, (3, 2), "ddim",
                                                            num_steps=5)[0], rtol=1e-12)


# models.layers: the U-Net's faster formulations against the Flax layers they replace (issue 30)


LAYER_TOL = {jnp.float64: 1e-10, jnp.float32: 2e-5}


def assert_layer_matches(new, old, x, tol):
    """Same params from the same key, same output and same gradients in params and input."""
    p_new = new.init(jax.random.PRNGKey(0), x)["params"]
    p_old = old.init(jax.random.PRNGKey(0), x)["params"]
    chex.assert_trees_all_equal(p_new, p_old)
    params = jax.tree.map(lambda a: a + 0.1 * jax.random.normal(jax.random.PRNGKey(3), a.shape,
                                                                a.dtype), p_old)
    ct = jax.random.normal(jax.random.PRNGKey(4), jax.eval_shape(
        lambda: old.apply({"params": params}, x)).shape, x.dtype)

    def loss(module):
        return jax.jit(jax.value_and_grad(
            lambda p, x: jnp.sum(module.apply({"params": p}, x) * ct), argnums=(0, 1)))

    y_new, y_old = new.apply({"params": params}, x), old.apply({"params": params}, x)
    assert y_new.dtype == y_old.dtype == x.dtype
    scale = float(jnp.max(jnp.abs(y_old)))
    np.testing.assert_allclose(y_new, y_old, rtol=0, atol=tol * scale)
    (v_new, g_new), (v_old, g_old) = loss(new)(params, x), loss(old)(params, x)
    np.testing.assert_allclose(v_new, v_old, rtol=tol, atol=tol * scale)
    for a, b in zip(jax.tree.leaves(g_new), jax.tree.leaves(g_old), strict=True):
        np.testing.assert_allclose(a, b, rtol=0, atol=tol * float(jnp.max(jnp.abs(b))))


# float64 at 1e-10 checks the formulas (fast tier); float32 the dtypes (slow tier, as are the
# cases that repeat a fast one's kind at another size)
DTYPES = [jnp.float64, pytest.param(jnp.float32, marks=pytest.mark.slow)]


def _slow(*values):
    return pytest.param(*values, marks=pytest.mark.slow)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel, strides, shape", [
    _slow((3, 3), 1, (3, 8, 8, 5)), _slow((3, 3), (2, 2), (3, 8, 8, 5)), ((3, 3), 1, (2, 7, 7, 4)),
    ((3, 3), (2, 2), (2, 7, 7, 4)), ((1, 1), 1, (2, 7, 7, 6)), _slow((1, 1), 1, (3, 4, 4, 8)),
    ((1, 1), (2, 2), (2, 7, 7, 3))])
def test_layers_conv_matches_flax_conv(kernel, strides, shape, dtype):
    x = jax.random.normal(jax.random.PRNGKey(1), shape, dtype)
    assert_layer_matches(layers.Conv(7, kernel, strides=strides),
                         nn.Conv(7, kernel, strides=strides), x, LAYER_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, groups, offset", [
    _slow((3, 8, 8, 32), 8, 0.0), ((2, 7, 7, 64), 16, 0.5), _slow((2, 4, 4, 12), 3, 2.0),
    ((2, 5, 3, 6), 1, -1.0)])
def test_layers_groupnorm_matches_flax_groupnorm(shape, groups, offset, dtype):
    x = offset + jax.random.normal(jax.random.PRNGKey(1), shape, dtype)
    assert_layer_matches(layers.GroupNorm(num_groups=groups), nn.GroupNorm(num_groups=groups),
                         x, LAYER_TOL[dtype])


@pytest.mark.parametrize("kernel, strides, shape", [
    ((3, 3), 1, (2, 7, 7, 4)), ((3, 3), (2, 2), (2, 7, 7, 4)), ((3, 3), (2, 2), (2, 8, 8, 3)),
    ((3, 3), (2, 2), (1, 14, 14, 2)), ((2, 2), 1, (2, 7, 6, 3)), ((4, 5), (2, 3), (2, 9, 11, 2)),
    _slow((3, 3), 1, (1, 28, 28, 2)), _slow((3, 3), (2, 2), (1, 28, 28, 2))])
def test_layers_conv_loop_vjp_matches_flax_conv(kernel, strides, shape):
    """Inside ``layers.loop_vjp()`` the convolution goes through its custom VJP (the jaxpr says
    so) and has nn.Conv's output and gradients in params and input (float64): odd and even
    sizes and kernels, strides 1, 2 and 3 (the 'SAME' padding's uneven splits)."""
    x = jax.random.normal(jax.random.PRNGKey(1), shape, jnp.float64)
    conv = layers.Conv(7, kernel, strides=strides)
    params = conv.init(jax.random.PRNGKey(0), x)["params"]
    def jaxpr():  # a new function each time: JAX's trace caches do not see the context
        return str(jax.make_jaxpr(lambda x: conv.apply({"params": params}, x))(x))
    assert "custom_vjp_call" not in jaxpr()
    with layers.loop_vjp():
        assert "custom_vjp_call" in jaxpr()
        assert_layer_matches(conv, nn.Conv(7, kernel, strides=strides), x,
                             LAYER_TOL[jnp.float64])


def test_loop_vjp_keeps_a_scanned_input_gradient_on_canonical_convolutions():
    """Inside ``lax.scan``, XLA:CPU leaves the transpose rule's convolution with in/out-swapped
    kernel labels (``01oi``, its generic, slow path; outside loops it canonicalizes them); the
    loop-VJP convolution's input gradient compiles to canonical ``01io`` convolutions only."""
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 4), jnp.float32)
    conv = layers.Conv(4, (3, 3))
    params = conv.init(jax.random.PRNGKey(0), x)["params"]

    def labels():
        def body(x, _):
            g = jax.vjp(lambda x: conv.apply({"params": params}, x), x)[1](x)[0]
            return x + 0.1 * g, None
        text = jax.jit(lambda x: jax.lax.scan(body, x, None, 3)[0]).lower(x).compile().as_text()
        return set(re.findall(r"dim_labels=\w+_(\w+)->", text))
    assert "01oi" in labels()
    with layers.loop_vjp():
        assert labels() == {"01io"}


@pytest.mark.slow
def test_with_loop_vjp_is_the_same_score_with_the_same_gradient():
    """``models.with_loop_vjp`` of a U-Net's score: the same score and input gradient (float64),
    a separate compilation (another static function), a clear error under ``jax.jvp`` (forward
    mode of a custom VJP) and for a score that no network makes."""
    sde = sde_lib.VPSDE()
    model = models.get_model("unet_digits", ch=8)
    x = jax.random.normal(jax.random.PRNGKey(1), (2, 8, 8, 1), jnp.float64)
    t = jnp.array([0.3, 0.7])
    score = models.get_score_fn(sde, model, model.init(jax.random.PRNGKey(0), x, t)["params"])
    fast = models.with_loop_vjp(score)
    assert jax.tree.structure(fast) != jax.tree.structure(score)
    ct = jax.random.normal(jax.random.PRNGKey(2), x.shape, jnp.float64)
    (s0, g0), (s1, g1) = ((f(x, t), jax.vjp(lambda x, f=f: f(x, t), x)[1](ct)[0])
                          for f in (score, fast))
    np.testing.assert_allclose(s1, s0, rtol=1e-12, atol=1e-12 * float(jnp.max(jnp.abs(s0))))
    np.testing.assert_allclose(g1, g0, rtol=1e-10, atol=1e-10 * float(jnp.max(jnp.abs(g0))))
    with pytest.raises(TypeError, match="custom_vjp"):
        jax.jvp(lambda x: fast(x, t), (x,), (ct,))
    with pytest.raises(TypeError, match="network's score of models.get_score_fn"):
        models.with_loop_vjp(lambda x, t: x)


def test_layers_groupnorm_rejects_indivisible_channels():
    with pytest.raises(ValueError, match="num_groups 4 does not divide the 6 channels"):
        layers.GroupNorm(num_groups=4).init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 6)))


@pytest.mark.slow
@pytest.mark.parametrize("name, shape", [("unet_digits", (2, 8, 8, 1)),
                                         ("unet_mnist", (1, 28, 28, 1))])
def test_unet_equals_unet_of_flax_layers(name, shape):
    """The U-Net of ``models.layers`` has the params (tree, names, init) of the one built from
    ``nn.Conv`` / ``nn.GroupNorm`` / ``jax.image.resize`` and the same output and gradients
    (float32)."""
    model = models.get_model(name, ch=8)
    x = jax.random.normal(jax.random.PRNGKey(1), shape, jnp.float32)
    t = jnp.linspace(0.2, 0.8, shape[0], dtype=jnp.float32)

    def value_and_grad(params):  # traced anew at each call, under the patch or not
        loss = lambda p: jnp.sum(model.apply({"params": p}, x, t) ** 2)
        return jax.jit(jax.value_and_grad(loss))(params)

    params = model.init(jax.random.PRNGKey(0), x, t)["params"]
    new = value_and_grad(params)
    resize = lambda h: jax.image.resize(
        h, (h.shape[0], 2 * h.shape[1], 2 * h.shape[2], h.shape[3]), method="nearest")
    with mock.patch.object(unet_module, "Conv", nn.Conv), \
            mock.patch.object(unet_module, "GroupNorm", nn.GroupNorm), \
            mock.patch.object(unet_module, "upsample_nearest", resize):
        chex.assert_trees_all_equal(model.init(jax.random.PRNGKey(0), x, t)["params"], params)
        old = value_and_grad(params)
    np.testing.assert_allclose(new[0], old[0], rtol=1e-5)
    scale = max(float(jnp.max(jnp.abs(g))) for g in jax.tree.leaves(old[1]))
    chex.assert_trees_all_close(new[1], old[1], rtol=0, atol=1e-5 * scale)


@pytest.mark.parametrize("shape", [(2, 4, 4, 3), (1, 7, 5, 2)])
def test_upsample_nearest_matches_image_resize(shape):
    x = jax.random.normal(jax.random.PRNGKey(1), shape)
    B, H, W, C = shape
    resize = lambda x: jax.image.resize(x, (B, 2 * H, 2 * W, C), method="nearest")
    np.testing.assert_array_equal(unet_module.upsample_nearest(x), resize(x))
    ct = jax.random.normal(jax.random.PRNGKey(2), (B, 2 * H, 2 * W, C))
    grads = [jax.grad(lambda x, f=f: jnp.sum(f(x) * ct))(x)
             for f in (unet_module.upsample_nearest, resize)]
    np.testing.assert_allclose(grads[0], grads[1], rtol=1e-12, atol=1e-12)
