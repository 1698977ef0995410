"""This project against the PyTorch tools a user would pick instead, on CPU, side by side.

Each row times ours and the peer interleaved in one process (``--rounds`` rounds: ours, the peer
at each ``--threads`` count, ours, ...); ``ours / peer`` is taken per round (below 1: we are
faster) and its median and range are printed, with each side's median time, the range, and the
CPU time (``time.process_time``) over the wall time, which says how many cores a side kept busy.
JAX runs with its default thread pool (every core); torch with ``torch.set_num_threads(n)``.
On a machine whose other cores are busy, torch's OpenMP threads spin waiting for them: run with
``OMP_WAIT_POLICY=PASSIVE`` to time torch rather than that contention (benchmarks/README.md).

Rows (``--rows``):

* ``mlp_sampling``: the residual MLP (4 blocks of width 256, d = 16, batch 1024) ported layer for
  layer to torch with the Flax weights copied (outputs checked equal before timing); our
  ``ddpm_ancestral`` against diffusers' ``DDPMScheduler`` loop (one ``scheduler.step`` per step,
  ``clip_sample=False`` as ours), our ``pf_ode_euler`` against diffusers'
  ``EulerDiscreteScheduler`` loop (diffusers' port of k-diffusion's ``sample_euler``; k-diffusion
  itself does not install beside numpy 2, see setup.cfg); time per sample-step.
* ``unet_sampling``: ``unet_digits`` (8x8) and ``unet_mnist`` (28x28) against diffusers'
  ``UNet2DModel`` with the same channels, blocks, attention levels and group count (single-head
  attention; parameter counts printed), ``ddpm_ancestral`` against the ``DDPMScheduler`` loop.
* ``likelihood``: the probability-flow log-likelihood of 64 points of ``gaussian_pair(d)``
  (d = 16, 64) under its exact score (ours in JAX, the same closed form in torch):
  ``sde_lib.log_likelihood`` (Tsit5, compiled) against score_sde_pytorch's way (scipy
  ``solve_ivp`` RK45 on the flattened float64 state, the drift and a Hutchinson divergence by
  ``torch.autograd.grad`` per evaluation, the same Rademacher probe), both rtol = atol = 1e-5.
* ``mlp_train``: our pmapped train step built through the trainer (``gmm_mlp`` config, batch
  1024; with clipping and the EMA) against a plain torch loop (the same MLP, Adam, eps loss);
  time per example.
* ``unet_train``: the same for ``digits_unet`` and ``mnist`` (batch 128, dropout 0.1) against
  diffusers' ``UNet2DModel`` (dropout 0.1) in a plain torch loop.
* ``ancestral``: MLP, d = 784, batch 64: ``sampler wall / (NFE x one score call)`` for ours and
  for diffusers' loop (one call: the mean of separately timed calls of the network), the
  overhead each sampler adds around its network.

Run (a separate venv with the ``peers`` extra; torch never enters the project's own):
``python -m benchmarks.peers [--rows ...] [--rounds 3] [--threads 1 2] [--out peers.csv]``;
results go in benchmarks/README.md with the command and the load average.
"""

from __future__ import annotations

import argparse
import csv
import functools
import math
import os
import time

import diffusers
import jax
import jax.numpy as jnp
import numpy as np
import scipy.integrate
import torch
from flax import jax_utils

import models
import sde_lib
import trainer
from experiments.configs import digits_unet, gmm_mlp, mnist

ROWS = ("mlp_sampling", "unet_sampling", "likelihood", "mlp_train", "unet_train", "ancestral")
N = 1000  # the DDPM chain's length, ours and diffusers' default


# ----- timing --------------------------------------------------------------------------------

def _timed(fn) -> tuple[float, float]:
    """``(wall, cpu)`` seconds of ``fn()``, which must block until its work is done."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def _on_threads(n, fn):
    def run():
        torch.set_num_threads(n)
        return fn()
    return run


def interleave(ours, peers: dict, rounds: int, scale: float = 1.0):
    """Times ``ours`` and each peer in turn, ``rounds`` times; each time divided by ``scale``.

    Returns ``(ours_times, {peer: times}, ours_cpu, {peer: cpu})`` (lists per round)."""
    ours(), [p() for p in peers.values()]  # warm-up (compiles, allocator)
    t_ours, c_ours = [], []
    t_peer = {k: [] for k in peers}
    c_peer = {k: [] for k in peers}
    for _ in range(rounds):
        wall, cpu = _timed(ours)
        t_ours.append(wall / scale)
        c_ours.append(cpu / wall)
        for name, peer in peers.items():
            wall, cpu = _timed(peer)
            t_peer[name].append(wall / scale)
            c_peer[name].append(cpu / wall)
    return t_ours, t_peer, c_ours, c_peer


class Table:
    """The results: one markdown line per (case, peer) on stdout, kept for ``--out``."""

    HEAD = ("| row | case | unit | ours, median (range) | peer | torch threads | "
            "peer, median (range) | ours / peer, median | range | CPU / wall: ours, peer |")

    def __init__(self):
        self.records = []
        print(self.HEAD + "\n" + "|---" * 10 + "|", flush=True)

    def add(self, row, case, unit, ours, peer_name, threads, peer, cpu_ours, cpu_peer, fmt):
        ratios = [a / b for a, b in zip(ours, peer, strict=True)]
        rec = dict(row=row, case=case, unit=unit, peer=peer_name, threads=threads,
                   ours=np.median(ours), ours_min=min(ours), ours_max=max(ours),
                   peer_median=np.median(peer), peer_min=min(peer), peer_max=max(peer),
                   ratio=np.median(ratios), ratio_min=min(ratios), ratio_max=max(ratios),
                   cpu_ours=np.median(cpu_ours), cpu_peer=np.median(cpu_peer))
        self.records.append(rec)

        def span(m, lo, hi):
            return f"{m:{fmt}} ({lo:{fmt}}-{hi:{fmt}})"
        print(f"| {row} | {case} | {unit} | {span(rec['ours'], rec['ours_min'], rec['ours_max'])}"
              f" | {peer_name} | {threads} | "
              f"{span(rec['peer_median'], rec['peer_min'], rec['peer_max'])} | "
              f"**{rec['ratio']:.2f}** | {rec['ratio_min']:.2f}-{rec['ratio_max']:.2f} | "
              f"{rec['cpu_ours']:.2f}, {rec['cpu_peer']:.2f} |", flush=True)

    def add_all(self, row, case, unit, timings, threads_of, fmt=".2f"):
        t_ours, t_peer, c_ours, c_peer = timings
        for name in t_peer:
            label, threads = threads_of(name)
            self.add(row, case, unit, t_ours, label, threads, t_peer[name], c_ours,
                     c_peer[name], fmt)

    def write_csv(self, path):
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(self.records[0]))
            writer.writeheader()
            writer.writerows(self.records)


NOTES = []


def note(text):
    """A line printed under the table (parameter counts, agreement checks, NFEs)."""
    NOTES.append(text)


# ----- the residual MLP, ported ----------------------------------------------------------------

class TorchMLP(torch.nn.Module):
    """``models.mlp.ResidualMLP`` layer for layer (LayerNorm eps 1e-6 as Flax's; the sinusoidal
    embedding of ``999 t``); ``forward(x (B, d), t (B,))`` with the continuous time ``t``."""

    def __init__(self, d, hidden, num_blocks, dropout=0.0, time_scale=999.0):
        super().__init__()
        H, nn = hidden, torch.nn
        self.hidden, self.time_scale = H, time_scale
        self.time = nn.ModuleList([nn.Linear(H, H), nn.Linear(H, H)])
        self.input = nn.Linear(d, H)
        self.norm = nn.ModuleList([nn.LayerNorm(H, eps=1e-6) for _ in range(num_blocks)])
        self.dense0 = nn.ModuleList([nn.Linear(H, H) for _ in range(num_blocks)])
        self.temb = nn.ModuleList([nn.Linear(H, H, bias=False) for _ in range(num_blocks)])
        self.dense1 = nn.ModuleList([nn.Linear(H, H) for _ in range(num_blocks)])
        self.dropout = nn.Dropout(dropout)
        self.output_norm = nn.LayerNorm(H, eps=1e-6)
        self.output = nn.Linear(H, d)

    def forward(self, x, t):
        half = self.hidden // 2
        w = torch.exp(-math.log(10_000.0) * torch.arange(half, dtype=x.dtype) / (half - 1))
        arg = (self.time_scale * t)[:, None] * w[None, :]
        emb = torch.cat([torch.sin(arg), torch.cos(arg)], dim=-1)
        temb = self.time[1](torch.nn.functional.silu(self.time[0](emb)))
        h = self.input(x)
        silu = torch.nn.functional.silu
        for norm, dense0, time_dense, dense1 in zip(self.norm, self.dense0, self.temb,
                                                    self.dense1, strict=True):
            y = silu(dense0(norm(h)) + time_dense(temb))
            h = h + dense1(self.dropout(y))
        return self.output(silu(self.output_norm(h)))

    def load_flax(self, params):
        """Copies the Flax ``params`` of a ``ResidualMLP`` (kernels transposed)."""
        def dense(layer, p):
            layer.weight.copy_(torch.from_numpy(np.asarray(p["kernel"]).T.copy()))
            if "bias" in p:
                layer.bias.copy_(torch.from_numpy(np.asarray(p["bias"]).copy()))

        def norm(layer, p):
            layer.weight.copy_(torch.from_numpy(np.asarray(p["scale"]).copy()))
            layer.bias.copy_(torch.from_numpy(np.asarray(p["bias"]).copy()))

        with torch.no_grad():
            # TimeMLP's outer Dense is built first (Dense_0), the inner one is Dense_1
            dense(self.time[0], params["time"]["Dense_1"])
            dense(self.time[1], params["time"]["Dense_0"])
            dense(self.input, params["input"])
            for i in range(len(self.norm)):
                norm(self.norm[i], params[f"block{i}_norm"])
                dense(self.dense0[i], params[f"block{i}_dense0"])
                dense(self.temb[i], params[f"block{i}_time"])
                dense(self.dense1[i], params[f"block{i}_dense1"])
            norm(self.output_norm, params["output_norm"])
            dense(self.output, params["output"])
        return self


def _count(params) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))


def make_mlp(d, batch, num_blocks=4, perturb=0.05):
    """Our MLP, its params and its torch port with the same weights, checked equal."""
    model = models.get_model("mlp", hidden=256, num_blocks=num_blocks)
    x = jax.random.normal(jax.random.key(0), (batch, d), jnp.float32)
    t = jax.random.uniform(jax.random.key(1), (batch,), jnp.float32, 1e-3, 1.0)
    params = jax.jit(lambda k: model.init({"params": k}, x, t)["params"])(jax.random.key(1))
    # a fresh init's output layer is small: perturb every weight so the check sees them all
    leaves, tree = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(5), len(leaves))
    params = jax.tree.unflatten(tree, [p + perturb * jax.random.normal(k, p.shape)
                                       for p, k in zip(leaves, keys, strict=True)])
    net = TorchMLP(d, 256, num_blocks).load_flax(params).eval()
    ours = np.asarray(model.apply({"params": params}, x, t))
    with torch.inference_mode():
        theirs = net(torch.from_numpy(np.array(x)), torch.from_numpy(np.array(t))).numpy()
    err = float(np.max(np.abs(ours - theirs)) / np.max(np.abs(ours)))
    assert err < 1e-5, f"torch port differs from the Flax MLP: max relative error {err:.2e}"
    note(f"MLP d = {d} ({_count(params):,} parameters): torch port's output equals ours to "
         f"{err:.1e} (max abs difference / max abs output, batch {batch})")
    return model, params, net


# ----- samplers --------------------------------------------------------------------------------

def our_sampler(score_fn, shape, method, steps):
    run = jax.jit(lambda k: sde_lib.sample(k, sde_lib.VPSDE(), score_fn, shape, method=method,
                                           num_steps=steps)[0])
    key = jax.random.key(2)
    return lambda: jax.block_until_ready(run(key))


def diffusers_loop(scheduler, eps_fn, shape, steps):
    """diffusers' pipeline loop: ``eps_fn(x, timestep)`` then ``scheduler.step`` per step."""
    def run():
        generator = torch.Generator().manual_seed(0)
        scheduler.set_timesteps(steps)
        x = torch.randn(shape, generator=generator) * scheduler.init_noise_sigma
        with torch.inference_mode():
            for tau in scheduler.timesteps:
                eps = eps_fn(scheduler.scale_model_input(x, tau), tau)
                x = scheduler.step(eps, tau, x, generator=generator).prev_sample
        return x
    return run


def mlp_eps(net, batch):
    """The ported MLP as diffusers calls it: timestep ``tau`` is our time ``(tau + 1) / N``."""
    return lambda x, tau: net(x, torch.full((batch,), (float(tau) + 1) / N))


def _peers(make, threads, name):
    return {(name, n): _on_threads(n, make()) for n in threads}


def _label(key):
    return key


def row_mlp_sampling(table, args):
    d, B, K = args.mlp_dim, args.batch, args.steps
    model, params, net = make_mlp(d, B)
    score_fn = models.get_score_fn(sde_lib.VPSDE(), model, params, "eps")
    pairs = (("ddpm_ancestral", "diffusers DDPMScheduler",
              lambda: diffusers.DDPMScheduler(clip_sample=False)),
             ("pf_ode_euler", "diffusers EulerDiscreteScheduler",
              lambda: diffusers.EulerDiscreteScheduler()))
    for method, peer, scheduler in pairs:
        peers = _peers(lambda s=scheduler: diffusers_loop(s(), mlp_eps(net, B), (B, d), K),
                       args.threads, peer)
        timings = interleave(our_sampler(score_fn, (B, d), method, K), peers, args.rounds,
                             scale=B * K / 1e6)
        table.add_all("mlp_sampling", f"MLP d = {d}, batch {B}, {K} steps, {method}",
                      "us / sample-step", timings, _label)


def diffusers_unet(config: models.unet.UNetConfig, side: int):
    """diffusers' ``UNet2DModel`` shaped as our ``UNetConfig``: the same channels per level,
    blocks per level, attention levels (one head) and GroupNorm groups, dropout."""
    chans = tuple(config.ch * m for m in config.ch_mult)
    sides = [side // 2 ** level for level in range(len(chans))]
    attn = [s in config.attn_resolutions for s in sides]
    groups = math.gcd(*[c // 4 for c in chans], 32)
    return diffusers.UNet2DModel(
        sample_size=side, in_channels=1, out_channels=1, layers_per_block=config.num_res_blocks,
        block_out_channels=chans,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        norm_num_groups=groups, attention_head_dim=max(chans), dropout=config.dropout)


UNETS = {"unet_digits": 8, "unet_mnist": 28}


def row_unet_sampling(table, args):
    B, K = args.unet_batch, args.unet_steps
    for name, side in UNETS.items():
        config = models.get_model_config(name)
        model, shape = config.build(), (B, side, side, 1)
        params = jax.jit(lambda k, m=model, s=shape: m.init(
            {"params": k}, jnp.zeros(s), jnp.ones((B,)))["params"])(jax.random.key(1))
        net = diffusers_unet(config, side).eval()
        n_torch = sum(p.numel() for p in net.parameters())
        note(f"{name}: ours {_count(params):,} parameters, diffusers UNet2DModel {n_torch:,}")
        score_fn = models.get_score_fn(sde_lib.VPSDE(), model, params, "eps")

        def peer(net=net, side=side):
            return diffusers_loop(diffusers.DDPMScheduler(clip_sample=False),
                                  lambda x, tau: net(x, tau).sample, (B, 1, side, side), K)
        peers = _peers(peer, args.threads, "diffusers UNet2DModel + DDPMScheduler")
        timings = interleave(our_sampler(score_fn, shape, "ddpm_ancestral", K), peers,
                             args.rounds, scale=B * K / 1e6)
        table.add_all("unet_sampling", f"{name} {side}x{side}, batch {B}, {K} steps",
                      "us / sample-step", timings, _label, fmt=".1f")


# ----- likelihood ------------------------------------------------------------------------------

def pair_score(gmm, beta_min=0.1, beta_max=20.0):
    """The exact VP score of ``gaussian_pair`` (two equal ``N(mu_k, I)``) in torch: the marginal
    at ``t`` is the pair ``N(alpha_t mu_k, I)``, so ``s = sum_k r_k (alpha_t mu_k - x)`` with
    ``r = softmax_k(-|x - alpha_t mu_k|^2 / 2)``."""
    means = torch.from_numpy(np.array(gmm.means, np.float32))

    def score(x, t):
        alpha = torch.exp(-0.25 * t ** 2 * (beta_max - beta_min) - 0.5 * t * beta_min)
        diff = alpha[:, None, None] * means[None] - x[:, None, :]  # (B, 2, d)
        r = torch.softmax(-0.5 * torch.sum(diff ** 2, dim=-1), dim=1)
        return torch.sum(r[..., None] * diff, dim=1)
    return score


def score_sde_likelihood(score, x, z, rtol, atol, beta_min=0.1, beta_max=20.0, eps=1e-5):
    """score_sde_pytorch's ``likelihood.get_likelihood_fn``, written for this port: RK45 on the
    flattened ``[x, delta_logp]`` state (float64 numpy), the VP probability-flow drift and the
    Hutchinson divergence ``z^T d(z^T f)/dx`` by autograd, a separate forward pass each."""
    B, d = x.shape
    z = torch.from_numpy(np.array(z))

    def drift(x, t):
        beta = beta_min + t * (beta_max - beta_min)
        return -0.5 * beta[:, None] * x - 0.5 * beta[:, None] * score(x, t)

    def ode(t, state):
        x = torch.from_numpy(state[:-B].reshape(B, d)).float()
        t = torch.full((B,), t, dtype=torch.float32)
        with torch.no_grad():
            f = drift(x, t)
        with torch.enable_grad():
            x.requires_grad_(True)
            grad = torch.autograd.grad(torch.sum(drift(x, t) * z), x)[0]
        div = torch.sum(grad * z, dim=1)
        return np.concatenate([f.numpy().reshape(-1), div.numpy()]).astype(np.float64)

    init = np.concatenate([x.reshape(-1), np.zeros(B)]).astype(np.float64)
    sol = scipy.integrate.solve_ivp(ode, (eps, 1.0), init, rtol=rtol, atol=atol, method="RK45")
    x_T, delta = sol.y[:-B, -1].reshape(B, d), sol.y[-B:, -1]
    prior = -0.5 * d * np.log(2 * np.pi) - 0.5 * np.sum(x_T ** 2, axis=1)
    return prior + delta, sol.nfev


def row_likelihood(table, args):
    B = 64
    for d in args.likelihood_dims:
        sde = sde_lib.VPSDE()
        gmm = sde_lib.gaussian_pair(jax.random.key(0), d)
        score_fn = jax.tree.map(lambda a: a.astype(jnp.float32), gmm).score_fn(sde)
        x = gmm.sample(jax.random.key(1), B).astype(jnp.float32)
        key = jax.random.key(2)
        z = np.asarray(jax.random.rademacher(key, x.shape, jnp.float32))
        run = jax.jit(functools.partial(sde_lib.log_likelihood, key, sde, score_fn))
        logp, nfe = jax.block_until_ready(run(x))
        theirs, nfev = score_sde_likelihood(pair_score(gmm), np.asarray(x), z, 1e-5, 1e-5)
        exact = np.asarray(gmm.log_prob(x))
        note(f"likelihood d = {d}: ours {int(nfe)} NFE (Tsit5), score_sde's way {nfev} NFE "
             f"(RK45); max error against the exact log-density (nats/dim, one probe): ours "
             f"{np.max(np.abs(np.asarray(logp) - exact)) / d:.1e}, theirs "
             f"{np.max(np.abs(theirs - exact)) / d:.1e}")
        peer = functools.partial(score_sde_likelihood, pair_score(gmm), np.asarray(x), z,
                                 1e-5, 1e-5)
        peers = _peers(lambda peer=peer: peer, args.threads,
                       "score_sde's way (scipy RK45 + torch autograd)")
        ours = functools.partial(lambda run, x: jax.block_until_ready(run(x)), run, x)
        timings = interleave(ours, peers, args.rounds)
        table.add_all("likelihood", f"exact pair score, d = {d}, {B} points (NFE {int(nfe)} "
                      f"vs {nfev})", "s / solve", timings, _label, fmt=".3f")


# ----- training --------------------------------------------------------------------------------

def our_train_step(config, shape, batch, calls):
    """``calls`` pmapped train steps as ``train_and_evaluate`` runs them (the batch already on
    the devices), as ``benchmarks/train_step.py`` builds them."""
    config.training.batch_size = batch
    cfg = trainer.validate_config(config)
    sde = cfg.sde.build()
    model = models.get_model(cfg.model)
    loss_fn = sde_lib.get_loss_fn(sde, cfg.loss)
    optimizer, schedule = trainer.create_optimizer(cfg.optim)
    state = trainer.create_train_state(jax.random.PRNGKey(0), model, shape, optimizer)
    devices = jax.local_devices()
    D = len(devices)
    step = jax.pmap(trainer.make_train_step(model, loss_fn, optimizer, schedule,
                                            cfg.optim.ema_rate,
                                            rng_block_size=cfg.training.rng_block_size,
                                            ema_warmup=cfg.optim.ema_warmup),
                    trainer.AXIS, devices=devices, donate_argnums=(0,))
    holder = [jax_utils.replicate(state, devices, axis_name=trainer.AXIS)]
    x = np.random.default_rng(0).uniform(-1, 1, (batch, *shape)).astype(np.float32)
    p_batch = jax.pmap(lambda b: b, devices=devices)(
        {"x": x.reshape(D, batch // D, *shape), "index": np.arange(batch).reshape(D, -1)})

    def run():
        s = holder[0]
        for _ in range(calls):
            s = step(s, p_batch)[0]
        holder[0] = jax.block_until_ready(s)
    return run, cfg, _count(state.params)


def torch_train_loop(net, x, lr, calls, eps_fn):
    """A plain torch loop: DDPM's eps loss at ``tau ~ U{0..N-1}``, Adam."""
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    alpha_bar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, N), 0)
    generator = torch.Generator().manual_seed(0)
    net.train()

    def run():
        for _ in range(calls):
            tau = torch.randint(0, N, (x.shape[0],), generator=generator)
            noise = torch.randn(x.shape, generator=generator)
            a = alpha_bar[tau].view(-1, *[1] * (x.ndim - 1))
            x_t = a.sqrt() * x + (1 - a).sqrt() * noise
            loss = torch.nn.functional.mse_loss(eps_fn(net, x_t, tau), noise)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    return run


def row_mlp_train(table, args):
    B, calls, d = args.batch, args.train_calls, 16
    ours, cfg, n = our_train_step(gmm_mlp.get_config(), (d,), B, calls)
    net = TorchMLP(d, cfg.model.hidden, cfg.model.num_blocks)
    note(f"mlp_train: ours {cfg.loss.name} loss, Adam, clip {cfg.optim.grad_clip}, EMA "
         f"{cfg.optim.ema_rate} ({n:,} parameters); torch: eps MSE, Adam, nothing else")
    x = torch.rand(B, d) * 2 - 1

    def eps_fn(net, x_t, tau):
        return net(x_t, (tau.float() + 1) / N)
    peers = _peers(lambda: torch_train_loop(net, x, cfg.optim.lr, calls, eps_fn),
                   args.threads, "torch loop (same MLP, Adam)")
    timings = interleave(ours, peers, args.rounds, scale=B * calls / 1e6)
    table.add_all("mlp_train", f"MLP 3 x 256, d = {d}, batch {B}", "us / example", timings,
                  _label)


def row_unet_train(table, args):
    B, calls = args.unet_train_batch, args.unet_train_calls
    for module, name, side in ((digits_unet, "unet_digits", 8), (mnist, "unet_mnist", 28)):
        config = module.get_config()
        config.model.dropout = 0.1
        ours, cfg, n = our_train_step(config, (side, side, 1), B, calls)
        net = diffusers_unet(models.get_model_config(name, dropout=0.1), side)
        note(f"unet_train {name}: ours {n:,} parameters ({cfg.loss.name}, clip, EMA), "
             f"diffusers UNet2DModel {sum(p.numel() for p in net.parameters()):,}")
        x = torch.rand(B, 1, side, side) * 2 - 1
        peer = functools.partial(torch_train_loop, net, x, cfg.optim.lr, calls,
                                 lambda m, x_t, tau: m(x_t, tau).sample)
        peers = _peers(peer, args.threads, "torch loop (diffusers UNet2DModel, Adam)")
        timings = interleave(ours, peers, args.rounds, scale=B * calls / 1e3)
        table.add_all("unet_train", f"{name} {side}x{side}, batch {B}, dropout 0.1",
                      "ms / example", timings, _label, fmt=".3f")


# ----- sampler overhead ------------------------------------------------------------------------

def row_ancestral(table, args):
    B, d, K, calls = 64, 784, args.steps, 20
    model, params, net = make_mlp(d, B)
    score_fn = models.get_score_fn(sde_lib.VPSDE(), model, params, "eps")
    jitted = jax.jit(score_fn)
    xj, tj = jnp.zeros((B, d)), jnp.full((B,), 0.5)
    xt, tt = torch.zeros(B, d), torch.full((B,), 0.5)
    sampler = our_sampler(score_fn, (B, d), "ddpm_ancestral", K)

    def ours_call():
        for _ in range(calls):
            jax.block_until_ready(jitted(xj, tj))

    def torch_call():
        with torch.inference_mode():
            for _ in range(calls):
                net(xt, tt)
    for n in args.threads:
        torch.set_num_threads(n)
        loop = diffusers_loop(diffusers.DDPMScheduler(clip_sample=False), mlp_eps(net, B),
                              (B, d), K)
        ours_call(), sampler(), torch_call(), loop()
        ours_r, theirs_r, c_o, c_t = [], [], [], []
        for _ in range(args.rounds):
            t_call = _timed(ours_call)[0] / calls
            wall, cpu = _timed(sampler)
            ours_r.append(wall / (K * t_call))
            c_o.append(cpu / wall)
            t_call = _timed(torch_call)[0] / calls
            wall, cpu = _timed(loop)
            theirs_r.append(wall / (K * t_call))
            c_t.append(cpu / wall)
        table.add("ancestral", f"MLP d = {d}, batch {B}, {K} steps, ddpm_ancestral",
                  "wall / (NFE x call)", ours_r, "diffusers DDPMScheduler loop", n, theirs_r,
                  c_o, c_t, ".3f")


RUNNERS = {"mlp_sampling": row_mlp_sampling, "unet_sampling": row_unet_sampling,
           "likelihood": row_likelihood, "mlp_train": row_mlp_train,
           "unet_train": row_unet_train, "ancestral": row_ancestral}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="torch.set_num_threads for the peers (JAX keeps its default)")
    parser.add_argument("--mlp-dim", type=int, default=16, choices=[16, 64])
    parser.add_argument("--batch", type=int, default=1024, help="MLP sampling and training")
    parser.add_argument("--steps", type=int, default=100, help="MLP sampling steps")
    parser.add_argument("--unet-batch", type=int, default=64)
    parser.add_argument("--unet-steps", type=int, default=10)
    parser.add_argument("--likelihood-dims", type=int, nargs="+", default=[16, 64])
    parser.add_argument("--train-calls", type=int, default=20,
                        help="MLP train steps per timed round")
    parser.add_argument("--unet-train-batch", type=int, default=128)
    parser.add_argument("--unet-train-calls", type=int, default=1,
                        help="U-Net train steps per timed round")
    parser.add_argument("--out", default=None, help="also write the table as CSV here")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"jax {jax.__version__} on {jax.devices()}; torch {torch.__version__}, diffusers "
          f"{diffusers.__version__}; {os.cpu_count()} CPUs; load average before "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n", flush=True)
    table = Table()
    for row in args.rows:
        RUNNERS[row](table, args)
    load = os.getloadavg()
    print()
    for line in NOTES:
        print(f"- {line}")
    print(f"\nload average after {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    if args.out:
        table.write_csv(args.out)


if __name__ == "__main__":
    main()
