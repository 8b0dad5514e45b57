"""The diffusion maths against independent transcriptions and closed-form cases.

The analytic model: for x_0 ~ N(mu, s^2 I), x_t ~ N(sqrt(a) mu, (a s^2 + 1 - a) I) and the optimal
noise predictor is E[eps | x_t] = sqrt(1 - a) (x_t - sqrt(a) mu) / (a s^2 + 1 - a). With it, DDIM
encoding followed by unguided decoding must return the input, up to a discretisation error.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from pancdiff.config import MAP_KINDS, DetectConfig
from pancdiff.detection import Detector, evaluations_per_slice, map_from
from pancdiff.diffusion import (
    alpha_bar_schedule,
    ddim_decode,
    ddim_encode,
    ddim_move,
    guided_eps,
    integrated_weight,
    step_grid,
)
from pancdiff.networks import HEALTHY, TUMOR
from pancdiff.weights import ModelBundle, init_bundle
from torch import nn

MU, SIGMA = 0.4, 0.15


def numpy_alpha_bar() -> np.ndarray:
    """Independent transcription: linear beta 1e-4..0.02 over 1000 steps, cumulative product."""
    return np.cumprod(1.0 - np.linspace(1e-4, 0.02, 1000))


class AnalyticEps(nn.Module):
    """Bayes-optimal eps for Gaussian data; records the timesteps it receives."""

    def __init__(self, alpha_bar: torch.Tensor, mu: float = MU, sigma: float = SIGMA) -> None:
        super().__init__()
        self.register_buffer("alpha_bar", alpha_bar.float())
        self.mu, self.sigma, self.seen = mu, sigma, []
        self.anchor = nn.Parameter(torch.zeros(1))  # so .parameters() / .to() behave like a network

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.seen.append(t.clone())
        a = self.alpha_bar[t].reshape(-1, 1, 1, 1).to(x.dtype)
        return (1 - a).sqrt() * (x - a.sqrt() * self.mu) / (a * self.sigma**2 + 1 - a)


class RegionClassifier(nn.Module):
    """Logits [healthy, tumor]: a dark region (mean below ``level``) means tumor."""

    def __init__(self, region: tuple[slice, slice], level: float = MU, weight: float = 40.0) -> None:
        super().__init__()
        self.region, self.level, self.weight, self.seen, self.zones = region, level, weight, [], []
        self.anchor = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, t: torch.Tensor, zone: torch.Tensor | None = None) -> torch.Tensor:
        self.seen.append(t.clone())
        self.zones.append(zone)
        mean = x[:, 0, self.region[0], self.region[1]].mean(dim=(1, 2))
        tumor = self.weight * (self.level - mean)
        logits = torch.zeros(x.shape[0], 2, dtype=x.dtype, device=x.device)
        return logits.index_put((torch.arange(x.shape[0]), torch.full((x.shape[0],), TUMOR)), tumor)


def test_schedule_matches_an_independent_numpy_transcription():
    # MONAI builds betas in float32: agreement to float32 precision, not better.
    np.testing.assert_allclose(alpha_bar_schedule().numpy(), numpy_alpha_bar(), rtol=1e-5)


def test_step_grid_ends_at_the_noise_level_on_the_1000_step_scale():
    assert step_grid(300, 300) == list(range(301))
    assert step_grid(300, 15) == list(range(0, 301, 20))
    assert step_grid(250, 4)[-1] == 250
    with pytest.raises(ValueError):
        step_grid(10, 11)


def test_power_grids_put_steps_at_low_t_and_stay_strictly_increasing():
    assert step_grid(100, 5, 1.0) == step_grid(100, 5)
    assert step_grid(100, 4, 2.0) == [0, 6, 25, 56, 100]
    for noise_level, steps, power in [(100, 100, 2.0), (100, 60, 3.0), (7, 7, 4.0), (300, 10, 1.5)]:
        grid = step_grid(noise_level, steps, power)
        assert len(grid) == steps + 1 and grid[0] == 0 and grid[-1] == noise_level
        assert all(b > a for a, b in zip(grid[:-1], grid[1:]))
    with pytest.raises(ValueError):
        step_grid(100, 5, 0.5)


def _constant_gradient_decode(grid: list[int], guidance_step: str, guidance: str = "noisy") -> torch.Tensor:
    """Decode with eps = 0 and a constant classifier gradient: only the guidance moves x."""
    ab = alpha_bar_schedule()
    zero_eps = lambda x, t: torch.zeros_like(x)  # noqa: E731
    grad = lambda x, t: torch.ones_like(x)  # noqa: E731
    x_n = torch.zeros(1, 1, 2, 2)
    return ddim_decode(x_n, zero_eps, grid, ab, grad, 5.0, guidance, guidance_step=guidance_step)


@pytest.mark.parametrize("guidance", ["noisy", "x0"])
def test_integrated_guidance_weight_is_exact_for_a_fixed_gradient_and_tends_to_algorithm_1(guidance):
    # With eps = 0, x / sqrt(a) moves by S * w * grad * d(sigma) per step; the integrated weight makes
    # the sum telescope, so any grid lands where the K = N run does, while Algorithm 1's weight
    # (sqrt(1 - a_from), the step's largest) overshoots on coarse steps near t = 0.
    exact = _constant_gradient_decode(step_grid(100, 100), "integrated", guidance)
    coarse = _constant_gradient_decode(step_grid(100, 3), "integrated", guidance)
    torch.testing.assert_close(coarse, exact, rtol=1e-4, atol=1e-6)
    paper_fine = _constant_gradient_decode(step_grid(100, 100), "paper", guidance)
    paper_coarse = _constant_gradient_decode(step_grid(100, 3), "paper", guidance)
    assert abs(paper_fine.mean() / exact.mean() - 1) < 0.03  # the K = N runs agree
    assert abs(paper_coarse.mean() / exact.mean() - 1) > 0.1  # Algorithm 1's coarse steps do not
    # the extrapolated step equals the integrated one when the gradient does not change
    torch.testing.assert_close(_constant_gradient_decode(step_grid(100, 3), "extrapolated", guidance), coarse)


def test_integrated_weight_matches_a_numerical_integral_of_sqrt_one_minus_a():
    ab = alpha_bar_schedule().double()
    a_from, a_to = ab[60], ab[20]
    sigma = torch.linspace(
        ((1 - a_to) / a_to).sqrt().item(), ((1 - a_from) / a_from).sqrt().item(), 20001, dtype=torch.float64
    )
    w_paper = sigma / (1 + sigma**2).sqrt()  # sqrt(1 - a) as a function of sigma
    numeric = torch.trapezoid(w_paper, sigma) / (sigma[-1] - sigma[0])
    torch.testing.assert_close(integrated_weight(a_from, a_to), numeric, rtol=1e-6, atol=0)
    assert (1 - a_to).sqrt() < integrated_weight(a_from, a_to) < (1 - a_from).sqrt()


def test_one_ddim_decoding_and_encoding_step_match_numpy_eqs_13_14():
    rng = np.random.default_rng(0)
    ab = numpy_alpha_bar()
    x_t, eps = rng.normal(size=(2, 1, 4, 4)), rng.normal(size=(2, 1, 4, 4))
    t, t_prev = 200, 180
    # eq. 13 with sigma = 0: x_{t-1} = sqrt(a_{t-1}) (x_t - sqrt(1-a_t) eps) / sqrt(a_t) + sqrt(1-a_{t-1}) eps
    want_dec = np.sqrt(ab[t_prev]) * (x_t - np.sqrt(1 - ab[t]) * eps) / np.sqrt(ab[t]) + np.sqrt(1 - ab[t_prev]) * eps
    # eq. 14: x_{t+1} = x_t + sqrt(a_{t+1}) [ (sqrt(1/a_t) - sqrt(1/a_{t+1})) x_t
    #                                         + (sqrt(1/a_{t+1} - 1) - sqrt(1/a_t - 1)) eps ]
    a0, a1 = ab[t_prev], ab[t]
    want_enc = x_t + np.sqrt(a1) * (
        (np.sqrt(1 / a0) - np.sqrt(1 / a1)) * x_t + (np.sqrt(1 / a1 - 1) - np.sqrt(1 / a0 - 1)) * eps
    )
    tensor = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    got_dec = ddim_move(tensor(x_t), tensor(eps), tensor(ab[t]), tensor(ab[t_prev])).numpy()
    got_enc = ddim_move(tensor(x_t), tensor(eps), tensor(a0), tensor(a1)).numpy()
    np.testing.assert_allclose(got_dec, want_dec, rtol=1e-10)
    np.testing.assert_allclose(got_enc, want_enc, rtol=1e-10)


def test_one_guided_step_matches_numpy_algorithm_1():
    rng = np.random.default_rng(1)
    ab = numpy_alpha_bar()
    x_t, eps, grad = (rng.normal(size=(1, 1, 3, 3)) for _ in range(3))
    t, t_prev, scale = 300, 280, 7.0
    eps_prime = eps - scale * np.sqrt(1 - ab[t]) * grad  # line 7
    want = (
        np.sqrt(ab[t_prev]) * (x_t - np.sqrt(1 - ab[t]) * eps_prime) / np.sqrt(ab[t])
        + np.sqrt(1 - ab[t_prev]) * eps_prime
    )  # line 8
    a_t, a_prev = torch.tensor(ab[t]), torch.tensor(ab[t_prev])
    got = ddim_move(torch.tensor(x_t), guided_eps(torch.tensor(eps), torch.tensor(grad), a_t, scale), a_t, a_prev)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-10)


def _round_trip_error(noise_level: int, steps: int, solver: str = "ddim") -> float:
    """Max |x_hat - x0| after encoding and unguided decoding Gaussian slices with the exact eps."""
    ab = alpha_bar_schedule()
    model = AnalyticEps(ab).double()
    x0 = MU + SIGMA * torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    grid = step_grid(noise_level, steps)
    x_hat = ddim_decode(ddim_encode(x0, model, grid, ab, solver), model, grid, ab, solver=solver)
    return float((x_hat - x0).abs().max())


@pytest.mark.parametrize("noise_level", [200, 300])
def test_analytic_encode_decode_returns_the_input_and_error_shrinks_with_steps(noise_level):
    errors = {steps: _round_trip_error(noise_level, steps) for steps in (5, 20, noise_level)}  # skipped and full
    # DDIM is a first-order ODE solver: the error falls roughly as 1/K (measured: 0.23, 0.07, 0.008).
    assert errors[noise_level] < 0.02, errors
    assert errors[noise_level] < errors[20] / 4 < errors[5] / 8, errors
    assert errors[5] > 1e-6, "a coarse grid cannot be exact; the test would not notice a broken encoder"


@pytest.mark.parametrize("noise_level", [200, 300])
def test_second_order_solver_beats_ddim_at_the_same_and_at_half_the_passes(noise_level):
    errors = {
        (solver, k): _round_trip_error(noise_level, k, solver) for solver in ("ddim", "dpm2m") for k in (5, 10, 20)
    }
    for steps in (5, 10, 20):
        assert errors["dpm2m", steps] < errors["ddim", steps] / 2, errors
    # measured at N = 200: DDIM 0.23 / 0.13 / 0.071, 2M 0.042 / 0.020 / 0.014 at K = 5 / 10 / 20
    assert errors["dpm2m", 10] < errors["ddim", 20] / 3, "2M at half the passes beats DDIM clearly"


def test_second_order_solver_is_ddim_on_its_first_step():
    ab = alpha_bar_schedule()
    model = AnalyticEps(ab).double()
    x = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    grid = step_grid(50, 1)
    assert torch.allclose(ddim_encode(x, model, grid, ab, "dpm2m"), ddim_encode(x, model, grid, ab, "ddim"))


def _analytic_bundle(region) -> ModelBundle:
    bundle = init_bundle(seed=0)
    bundle.unet = AnalyticEps(alpha_bar_schedule(bundle.schedule))
    bundle.classifier = RegionClassifier(region)
    return bundle


def test_guidance_moves_a_dark_region_toward_healthy_and_scale_zero_does_not():
    region = (slice(3, 7), slice(3, 7))
    x = np.full((1, 10, 10), MU, dtype=np.float32)
    x[0, region[0], region[1]] = MU - 0.15  # a darker "lesion": the classifier calls it tumor
    means = {}
    for scale in (0.0, 10.0):
        cfg = DetectConfig(scale=scale, noise_level=300, steps=100, smooth_sigma_px=0.0, device="cpu")
        result = Detector(_analytic_bundle(region), cfg).detect(x)
        means[scale] = float(result.reconstruction[0, region[0], region[1]].mean())
    lesion = float(x[0, region[0], region[1]].mean())
    assert abs(means[0.0] - lesion) < 0.01, "unguided reconstruction must keep the lesion"
    assert means[10.0] > lesion + 0.05, f"guidance toward healthy must brighten the dark region: {means}"


def test_signed_maps_keep_only_what_the_guided_decode_brightened():
    x = np.array([[0.5, 0.5, 0.5]], np.float32)
    plain = np.array([[0.5, 0.6, 0.5]], np.float32)
    guided = np.array([[0.7, 0.4, 0.5]], np.float32)  # brightened, darkened, unchanged
    np.testing.assert_allclose(map_from("input", x, plain, guided), [[0.2, 0.1, 0.0]], atol=1e-6)
    np.testing.assert_allclose(map_from("input_signed", x, plain, guided), [[0.2, 0.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(map_from("guidance", x, plain, guided), [[0.2, 0.2, 0.0]], atol=1e-6)
    np.testing.assert_allclose(map_from("guidance_signed", x, plain, guided), [[0.2, 0.0, 0.0]], atol=1e-6)

    region = (slice(3, 7), slice(3, 7))
    dark = np.full((1, 10, 10), MU, dtype=np.float32)
    dark[0, region[0], region[1]] = MU - 0.15
    cfg = DetectConfig(scale=10.0, noise_level=300, steps=15, smooth_sigma_px=0.0, device="cpu")
    grid = Detector(_analytic_bundle(region), cfg).map_grid(dark, None, [0.0, 10.0], kinds=MAP_KINDS)
    rec, plain = grid["reconstruction"][("noisy", 10.0)], grid["reconstruction"][("noisy", 0.0)]
    for kind, reference in (("input", dark), ("guidance", plain)):
        unsigned, signed = grid["anomaly"][("noisy", kind, 10.0)], grid["anomaly"][("noisy", kind + "_signed", 10.0)]
        np.testing.assert_allclose(signed, np.maximum(rec - reference, 0), atol=1e-6)
        assert (signed <= unsigned + 1e-7).all() and signed[0, region[0], region[1]].mean() > 0.05
    for kind in ("input", "guidance"):  # a signed map costs what its unsigned map costs
        signed_cfg, unsigned_cfg = (dataclasses.replace(cfg, map_kind=k) for k in (kind + "_signed", kind))
        assert evaluations_per_slice(signed_cfg) == evaluations_per_slice(unsigned_cfg)


def test_healthy_is_logit_zero_and_guidance_targets_it():
    assert (HEALTHY, TUMOR) == (0, 1)
    region = (slice(0, 4), slice(0, 4))
    clf = RegionClassifier(region)
    dark = torch.full((1, 1, 4, 4), MU - 0.2)
    assert torch.softmax(clf(dark, torch.zeros(1, dtype=torch.long)), 1)[0, TUMOR] > 0.9


def test_both_networks_receive_true_timesteps_on_a_skipped_grid():
    bundle = _analytic_bundle((slice(0, 4), slice(0, 4)))
    cfg = DetectConfig(scale=5.0, noise_level=300, steps=15, device="cpu")
    Detector(bundle, cfg).detect(np.full((2, 8, 8), MU, dtype=np.float32))
    unet_t = sorted({int(t[0]) for t in bundle.unet.seen})
    clf_t = sorted({int(t[0]) for t in bundle.classifier.seen})
    assert unet_t == list(range(0, 301, 20))  # encoding 0..280, decoding 300..20
    assert clf_t == [0] + list(range(20, 301, 20))  # confidence at t=0, guidance at the true t
    assert len(bundle.unet.seen) == 2 * 15
    assert evaluations_per_slice(cfg) == 2 * 15 + 15 + 1


def test_decodes_of_one_latent_share_their_first_pass_and_give_the_same_numbers():
    region = (slice(2, 6), slice(2, 6))
    x = np.full((2, 8, 8), MU, dtype=np.float32)
    x[:, region[0], region[1]] = MU - 0.15
    cfg = DetectConfig(scale=5.0, noise_level=300, steps=15, map_kind="guidance", device="cpu")
    bundle = _analytic_bundle(region)
    detector = Detector(bundle, cfg)
    grid = detector.map_grid(x, None, [0.0, 5.0, 10.0], guidances=("noisy", "x0"), kinds=("guidance",))
    decodes = 1 + 2 * 2  # the plain one, then 2 scales x 2 guidance kinds
    assert len(bundle.unet.seen) == 15 + decodes * 15 - (decodes - 1)  # one batch: one call per pass
    latents = torch.from_numpy(grid["latents"])
    for guidance, scale in (("noisy", 5.0), ("x0", 10.0), ("noisy", 0.0)):
        alone = detector.decode(latents, scale, guidance=guidance)[:, 0].numpy()
        assert np.array_equal(grid["reconstruction"][(guidance, scale)], alone), (guidance, scale)
    single = _analytic_bundle(region)
    Detector(single, cfg).detect(x)
    assert len(single.unet.seen) + 15 + 1 == evaluations_per_slice(cfg) == 2 * 15 + 15 + 14 + 1


@pytest.mark.parametrize("guidance", ["noisy", "x0"])
def test_every_classifier_call_gets_its_canvases_pancreas_zone(guidance):
    """Confidence and guidance both see the zone of the very canvases in the batch (batch 2 of 3)."""
    bundle = _analytic_bundle((slice(0, 4), slice(0, 4)))
    zone = np.zeros((3, 8, 8), dtype=bool)
    for i in range(3):
        zone[i, i : i + 3, 2:6] = True  # a different zone per canvas
    cfg = DetectConfig(scale=5.0, noise_level=100, steps=4, device="cpu", batch_size=2, guidance=guidance)
    Detector(bundle, cfg).detect(np.full((3, 8, 8), MU, dtype=np.float32), zone=zone)
    seen = bundle.classifier.zones
    assert len(seen) == 2 * (1 + 4)  # per batch: one confidence pass, K guidance gradients
    for call, z in enumerate(seen):
        first = 0 if call < 5 else 2
        assert z is not None and z.dtype == torch.bool and z.shape[1] == 1
        assert np.array_equal(z[:, 0].numpy(), zone[first : first + len(z)])
    with pytest.raises(ValueError, match="zones"):
        Detector(bundle, cfg).detect(np.full((3, 8, 8), MU, dtype=np.float32), zone=zone[:2])


def _random_canvases(n: int, size: int = 64) -> np.ndarray:
    rng = np.random.default_rng(3)
    return rng.uniform(0.2, 0.6, size=(n, size, size)).astype(np.float32)


def test_batched_results_equal_one_by_one_and_cpu_runs_repeat_bitwise():
    torch.set_num_threads(1)
    x = _random_canvases(3)
    cfg = DetectConfig(scale=5.0, noise_level=40, steps=2, batch_size=3, device="cpu")
    batched = Detector(init_bundle(seed=0), cfg).detect(x)
    again = Detector(init_bundle(seed=0), cfg).detect(x)
    single_cfg = DetectConfig(scale=5.0, noise_level=40, steps=2, batch_size=1, device="cpu")
    single = Detector(init_bundle(seed=0), single_cfg).detect(x)
    assert np.array_equal(batched.reconstruction, again.reconstruction)
    assert np.array_equal(batched.tumor_probability, again.tumor_probability)
    np.testing.assert_allclose(batched.reconstruction, single.reconstruction, atol=1e-5)
    np.testing.assert_allclose(batched.tumor_probability, single.tumor_probability, atol=1e-6)


def test_maps_are_zero_outside_the_support_and_normalized_per_slice():
    x = _random_canvases(2)
    valid = np.zeros_like(x, dtype=bool)
    valid[:, 16:48, 16:48] = True
    cfg = DetectConfig(scale=2.0, noise_level=40, steps=2, threshold=0.5, device="cpu")
    result = Detector(init_bundle(seed=1), cfg).detect(x, valid)
    assert not result.anomaly[~valid].any() and not result.normalized[~valid].any()
    np.testing.assert_allclose(result.normalized.reshape(2, -1).max(axis=1), 1.0, atol=1e-6)
    assert np.array_equal(result.candidates, result.normalized >= 0.5)


def test_asking_for_cuda_without_it_is_a_clear_error():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from pancdiff.errors import DependencyError

    with pytest.raises(DependencyError, match="cuda"):
        Detector(init_bundle(), DetectConfig(device="cuda"))


def test_k_equal_n_is_the_paper_exact_run_whatever_the_fast_setting():
    from pancdiff.pipeline import resolve_config

    fast = DetectConfig(scale=5.0, noise_level=100, steps=4, grid_power=1.5, guidance_step="extrapolated")
    assert resolve_config(fast, scale=10.0) == DetectConfig(
        scale=10.0, noise_level=100, steps=4, grid_power=1.5, guidance_step="extrapolated"
    )
    exact = resolve_config(fast, steps=100)
    assert (exact.grid_power, exact.guidance_step) == (1.0, "paper")
    assert Detector(init_bundle(seed=0), exact).grid == list(range(101))
    assert resolve_config(fast, noise_level=200).steps == 8  # the model's step size, not its K
    assert resolve_config(fast, noise_level=250, steps=5).steps == 5
    assert resolve_config(fast, noise_level=3).steps == 1
    assert resolve_config(fast, noise_level=3, steps=3).guidance_step == "paper"  # K = N again
