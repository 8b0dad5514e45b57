"""The diffusion maths of the paper, one function per equation.

Conventions: ``alpha_bar[t]`` for network timesteps t = 0..T-1 (linear beta, T = 1000); an image
"at t = 0" is the clean input (alpha_bar[0] = 1 - beta_0 ~ 0.9999), as in the reference code.
A *grid* is the list of network timesteps a run visits, ``[0, t_1, ..., t_K = N]``; the networks
always receive these true timesteps, never the index k (the reference code's respacing trap).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from monai.networks.schedulers import DDPMScheduler

from .config import GRID_POWERS, GUIDANCE_STEPS, ScheduleConfig

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
GradFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def alpha_bar_schedule(cfg: ScheduleConfig = ScheduleConfig()) -> torch.Tensor:
    """(T,) float64 cumulative products of alpha = 1 - beta, from MONAI's linear-beta DDPM."""
    sched = DDPMScheduler(
        num_train_timesteps=cfg.num_timesteps,
        schedule="linear_beta",
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
    )
    return torch.cumprod(1.0 - sched.betas.double(), dim=0)


def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor, alpha_bar: torch.Tensor) -> torch.Tensor:
    """Eq. 2: x_t = sqrt(a_t) x_0 + sqrt(1 - a_t) eps, t: (B,) long."""
    a = _per_sample(alpha_bar[t], x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def diffusion_loss(eps_model: EpsFn, x0: torch.Tensor, alpha_bar: torch.Tensor, generator=None) -> torch.Tensor:
    """Simple DDPM loss ||eps - eps_theta(x_t, t)||^2 with t uniform in 0..T-1."""
    t = torch.randint(0, alpha_bar.numel(), (x0.shape[0],), device=x0.device, generator=generator)
    noise = torch.randn(x0.shape, device=x0.device, generator=generator, dtype=x0.dtype)
    x_t = q_sample(x0, t, noise, alpha_bar.to(x0.device))
    return torch.mean((noise - eps_model(x_t, t)) ** 2)


def step_grid(noise_level: int, steps: int, power: float = 1.0) -> list[int]:
    """Timesteps ``[0, t_1, ..., t_K = N]`` reaching noise level N in K steps, t_k = N (k / K)^power.

    K = N visits every timestep (the paper-exact run); K < N skips, still on the 1000-step scale.
    power = 1 spaces the steps evenly (the paper); power > 1 puts more of them at low t, where the
    classifier's gradient is sharpest and a coarse step misses most of the guidance. The grid stays
    strictly increasing (t_k >= k, and K - k steps below N).
    """
    if not 1 <= steps <= noise_level:
        raise ValueError(f"need 1 <= steps <= noise_level, got steps={steps}, noise_level={noise_level}")
    if not GRID_POWERS[0] <= power <= GRID_POWERS[1]:
        raise ValueError(f"grid power must be in [{GRID_POWERS[0]:g}, {GRID_POWERS[1]:g}], got {power}")
    grid = [0]
    for k in range(1, steps + 1):
        t = round(noise_level * (k / steps) ** power)
        grid.append(min(max(t, grid[-1] + 1), noise_level - (steps - k)))
    return grid


def predict_x0(x_t: torch.Tensor, eps: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
    """Invert eq. 2 for x_0 given a noise estimate."""
    return (x_t - (1 - a_t).sqrt() * eps) / a_t.sqrt()


def ddim_move(x_t: torch.Tensor, eps: torch.Tensor, a_from: torch.Tensor, a_to: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM move between two noise levels (eq. 13 with sigma = 0, and eq. 14).

    Decoding (a_to > a_from) and encoding (a_to < a_from) are the same formula: predict x_0, then
    re-noise it to the target level along the same eps.
    """
    x0 = predict_x0(x_t, eps, a_from)
    return a_to.sqrt() * x0 + (1 - a_to).sqrt() * eps


def guided_eps(eps: torch.Tensor, grad_log_healthy: torch.Tensor, a_t: torch.Tensor, scale: float) -> torch.Tensor:
    """Algorithm 1, line 7: eps' = eps - S sqrt(1 - a_t) grad_x log p(healthy | x_t, t)."""
    return eps - scale * (1 - a_t).sqrt() * grad_log_healthy


def integrated_weight(a_from: torch.Tensor, a_to: torch.Tensor, x0_space: bool = False) -> torch.Tensor:
    """Guidance weight of one decode step with the gradient held fixed over it (``guidance_step``
    "integrated"): the paper's sqrt(1 - a_t) integrated exactly over the step, per unit of
    sigma = sqrt((1 - a) / a), the variable a DDIM step is linear in. Algorithm 1 takes
    sqrt(1 - a_from), the step's largest value, which a coarse step near t = 0 overweights; both
    agree as the step shrinks (K -> N). With ``x0_space`` (guidance on x0_hat, weight sigma) the
    integral is the trapezoid (sigma_from + sigma_to) / 2.
    """
    s_from, s_to = _sigma(a_from), _sigma(a_to)
    if x0_space:
        return (s_from + s_to) / 2
    return (a_from.rsqrt() - a_to.rsqrt()) / (s_from - s_to)


def x0_guided_eps(
    eps: torch.Tensor, grad_log_healthy_x0: torch.Tensor, a_t: torch.Tensor, scale: float
) -> torch.Tensor:
    """Guidance by a *clean* classifier on the predicted x_0 (our addition to Algorithm 1).

    The classifier sees x0_hat = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t), where it is strongest (it was
    trained at t = 0), and its gradient is carried to x_t with d x0_hat / d x_t ~ 1 / sqrt(a_t) (the
    UNet's own Jacobian is left out: one classifier pass, no backward through the UNet):
    eps' = eps - S sqrt(1 - a_t) / sqrt(a_t) grad_{x0} log p(healthy | x0_hat).
    """
    return guided_eps(eps, grad_log_healthy_x0 / a_t.sqrt(), a_t, scale)


def dpm2m_move(
    x_t: torch.Tensor,
    x0: torch.Tensor,
    prev_x0: torch.Tensor | None,
    a_from: torch.Tensor,
    a_to: torch.Tensor,
    h_prev: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One DPM-Solver++(2M) move (Lu et al. 2022), the second-order multistep form of DDIM.

    With lambda = log(sqrt(a) / sqrt(1 - a)) and h = lambda_to - lambda_from, DDIM is
    x_to = (sigma_to / sigma_from) x_t - sqrt(a_to) (exp(-h) - 1) x0; 2M replaces x0 by the
    extrapolation D = (1 + 1 / 2r) x0 - (1 / 2r) prev_x0, r = h_prev / h, which costs no extra
    network pass. Without a previous x0 it is exactly DDIM. Works in both directions (h < 0 encodes).

    Returns:
        (x_to, h) so the caller can pass h as the next ``h_prev``.
    """
    lam_from = 0.5 * torch.log(a_from / (1 - a_from))
    lam_to = 0.5 * torch.log(a_to / (1 - a_to))
    h = lam_to - lam_from
    d = x0
    if prev_x0 is not None and h_prev is not None:
        r = h_prev / h
        d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * prev_x0
    x_to = ((1 - a_to) / (1 - a_from)).sqrt() * x_t - a_to.sqrt() * torch.expm1(-h) * d
    return x_to, h


def _walk(
    x: torch.Tensor,
    timesteps: list[int],
    eps_at: Callable[[torch.Tensor, int, torch.Tensor, torch.Tensor], torch.Tensor],
    alpha_bar: torch.Tensor,
    solver: str,
) -> torch.Tensor:
    """Deterministic path through ``timesteps`` (increasing: encode; decreasing: decode) with DDIM or
    DPM-Solver++(2M); ``eps_at(x, t, a_t)`` gives the (possibly guided) noise estimate."""
    if solver not in ("ddim", "dpm2m"):
        raise ValueError(f"solver must be ddim or dpm2m, got {solver!r}")
    prev_x0, h_prev = None, None
    for t_from, t_to in zip(timesteps[:-1], timesteps[1:]):
        a_from, a_to = _level(alpha_bar, t_from, x), _level(alpha_bar, t_to, x)
        eps = eps_at(x, t_from, a_from, a_to)
        if solver == "ddim":
            x = ddim_move(x, eps, a_from, a_to)
            continue
        x0 = predict_x0(x, eps, a_from)
        x, h_prev = dpm2m_move(x, x0, prev_x0, a_from, a_to, h_prev)
        prev_x0 = x0
    return x


def ddim_encode(
    x0: torch.Tensor, eps_model: EpsFn, grid: list[int], alpha_bar: torch.Tensor, solver: str = "ddim"
) -> torch.Tensor:
    """Eq. 14 along the grid: clean slice (at grid[0] = 0) to its deterministic noise at grid[-1]."""
    return _walk(x0, list(grid), lambda x, t, a, a_to: eps_model(x, _timesteps(t, x)), alpha_bar, solver)


def ddim_decode(
    x_n: torch.Tensor,
    eps_model: EpsFn,
    grid: list[int],
    alpha_bar: torch.Tensor,
    grad_fn: GradFn | None = None,
    scale: float = 0.0,
    guidance: str = "noisy",
    solver: str = "ddim",
    guidance_step: str = "paper",
) -> torch.Tensor:
    """Algorithm 1, lines 6-9: guided deterministic decoding from grid[-1] back to grid[0].

    ``guidance``: "noisy" asks ``grad_fn(x_t, t)`` (the paper); "x0" asks ``grad_fn(x0_hat, 0)``
    on the predicted clean slice (``x0_guided_eps``). ``solver``: "ddim" (the paper) or "dpm2m".
    ``guidance_step``: how a step weighs the gradient. "paper" (Algorithm 1, line 7);
    "integrated" (``integrated_weight``); "extrapolated" also moves the gradient to the step's
    midpoint in sigma, linearly from the previous step's gradient (no extra pass). The last two
    differ from "paper" only by step-size error: they bring a few-step map closer to the K = N run.
    """
    if guidance not in ("noisy", "x0"):
        raise ValueError(f"guidance must be noisy or x0, got {guidance!r}")
    if guidance_step not in GUIDANCE_STEPS:
        raise ValueError(f"guidance_step must be one of {', '.join(GUIDANCE_STEPS)}, got {guidance_step!r}")
    previous: list = []  # (gradient, sigma step) of the last guided step, for "extrapolated"

    def eps_at(x: torch.Tensor, t_from: int, a_from: torch.Tensor, a_to: torch.Tensor) -> torch.Tensor:
        t = _timesteps(t_from, x)
        eps = eps_model(x, t)
        if grad_fn is None or scale == 0.0:
            return eps
        if guidance == "x0":
            grad = grad_fn(predict_x0(x, eps, a_from), _timesteps(0, x))
        else:
            grad = grad_fn(x, t)
        if guidance_step == "paper":
            return x0_guided_eps(eps, grad, a_from, scale) if guidance == "x0" else guided_eps(eps, grad, a_from, scale)
        step = _sigma(a_from) - _sigma(a_to)
        used = grad
        if guidance_step == "extrapolated" and previous:
            prev_grad, prev_step = previous[0]
            used = grad + step / (2 * prev_step) * (grad - prev_grad)
        previous[:] = [(grad, step)]
        return eps - scale * integrated_weight(a_from, a_to, x0_space=guidance == "x0") * used

    return _walk(x_n, list(reversed(grid)), eps_at, alpha_bar, solver)


def _sigma(a: torch.Tensor) -> torch.Tensor:
    """sqrt((1 - a) / a): the noise-to-signal ratio a DDIM step is linear in."""
    return ((1 - a) / a).sqrt()


def _timesteps(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), int(t), dtype=torch.long, device=x.device)


def _level(alpha_bar: torch.Tensor, t: int, x: torch.Tensor) -> torch.Tensor:
    return alpha_bar[t].to(device=x.device, dtype=x.dtype)


def _per_sample(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.to(dtype=like.dtype, device=like.device).reshape(-1, *([1] * (like.dim() - 1)))
