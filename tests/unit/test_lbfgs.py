"""L-BFGS in compact form: the same iterates as torch.optim.LBFGS, the first step's size, and its refusals."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from studio.ops.lbfgs import CompactInverseHessian, minimize_lbfgs

GENERATOR = torch.Generator().manual_seed(0)
MATRIX = torch.randn(60, 40, generator=GENERATOR, dtype=torch.float64)
OFFSET = torch.randn(60, generator=GENERATOR, dtype=torch.float64)


def smooth_loss(x: Tensor) -> Tensor:
    """Smooth, non-quadratic and bounded below: the curvature changes from step to step."""
    return torch.log(torch.cosh(MATRIX @ x - OFFSET)).sum() + 0.05 * x.pow(4).sum()


def torch_lbfgs(steps: int, history: int) -> Tensor:
    x = torch.zeros(40, dtype=torch.float64, requires_grad=True)
    optimizer = torch.optim.LBFGS(
        [x], lr=1, max_iter=1, history_size=history, tolerance_grad=0.0, tolerance_change=0.0
    )

    def closure() -> Tensor:
        optimizer.zero_grad()
        loss = smooth_loss(x)
        loss.backward()
        return loss

    for _ in range(steps):
        optimizer.step(closure)
    return x.detach()


def our_lbfgs(steps: int, history: int, first_step: float = 0.0) -> tuple[Tensor, int]:
    x = torch.zeros(40, dtype=torch.float64, requires_grad=True)
    evaluations = []

    def evaluate() -> Tensor:
        x.grad = None
        loss = smooth_loss(x)
        loss.backward()
        evaluations.append(float(loss.detach()))
        return loss

    minimize_lbfgs(x, evaluate, steps=steps, first_step=first_step, history=history)
    return x.detach(), len(evaluations)


@pytest.mark.parametrize(("steps", "history"), [(2, 5), (12, 5), (30, 5), (30, 50), (40, 1)])
def test_same_iterates_as_torchs_lbfgs(steps: int, history: int) -> None:
    # history 5 with 12 or 30 steps wraps the pair buffers around several times
    ours, evaluations = our_lbfgs(steps, history)
    assert evaluations == steps
    reference = torch_lbfgs(steps, history)
    assert torch.allclose(ours, reference, atol=1e-12, rtol=0)
    assert smooth_loss(ours) < smooth_loss(torch.zeros(40, dtype=torch.float64))


def test_compact_form_equals_the_dense_bfgs_recursion() -> None:
    # H = V_k^T ... V_1^T (gamma I) V_1 ... V_k + the rank-one terms, V_i = I - rho_i y_i s_i^T, applied to the
    # last `history` pairs in order; gamma = s.y / y.y of the newest pair.
    generator = torch.Generator().manual_seed(1)
    dimension, history = 7, 4
    basis = torch.randn(dimension, dimension, generator=generator, dtype=torch.float64)
    hessian = basis @ basis.T + torch.eye(dimension, dtype=torch.float64)
    inverse = CompactInverseHessian(history=history)
    pairs = []
    for step in torch.randn(6, dimension, generator=generator, dtype=torch.float64):  # 6 pairs: the buffer wraps
        change = hessian @ step + 0.1 * torch.randn(dimension, generator=generator, dtype=torch.float64)
        if inverse.add(step, change):
            pairs.append((step, change))
    kept = pairs[-history:]
    newest_step, newest_change = kept[-1]
    dense = (
        float(newest_step @ newest_change)
        / float(newest_change @ newest_change)
        * torch.eye(dimension, dtype=torch.float64)
    )
    identity = torch.eye(dimension, dtype=torch.float64)
    for step, change in kept:
        rho = 1.0 / float(step @ change)
        left = identity - rho * torch.outer(step, change)
        dense = left @ dense @ left.T + rho * torch.outer(step, step)
    gradient = torch.randn(dimension, generator=generator, dtype=torch.float64)
    assert len(inverse) == history
    assert torch.allclose(inverse.times(gradient), dense @ gradient, atol=1e-10, rtol=0)
    assert torch.allclose(inverse.times(newest_change), newest_step, atol=1e-10, rtol=0)  # the secant condition


def test_pairs_without_positive_curvature_are_refused() -> None:
    inverse = CompactInverseHessian(history=3)
    step = torch.tensor([1.0, 0.0])
    assert not inverse.add(step, -step)  # s.y < 0: the update would not keep H positive definite
    assert len(inverse) == 0
    gradient = torch.tensor([0.3, -0.2])
    assert torch.equal(inverse.times(gradient), gradient)  # nothing remembered: H = I
    with pytest.raises(ValueError, match="history"):
        CompactInverseHessian(history=0)


def test_first_step_has_the_asked_size_without_an_extra_evaluation() -> None:
    target = torch.randn(1000, generator=torch.Generator().manual_seed(0))

    def first_update(first_step: float) -> tuple[Tensor, int]:
        parameter = torch.zeros(1000, requires_grad=True)
        calls = []

        def evaluate() -> Tensor:
            parameter.grad = None
            loss = 0.5 * (parameter - target).pow(2).sum()
            loss.backward()
            calls.append(1)
            return loss

        minimize_lbfgs(parameter, evaluate, steps=1, first_step=first_step)
        return parameter.detach(), len(calls)

    moved, evaluations = first_update(0.01)
    assert evaluations == 1
    assert float(moved.pow(2).mean().sqrt()) == pytest.approx(0.01, rel=1e-4)
    assert torch.nn.functional.cosine_similarity(moved, target, dim=0) > 0.9999  # along the negative gradient
    torch_rule, _ = first_update(0.0)  # torch's rule: the gradient divided by its L1 norm
    assert torch.allclose(torch_rule, target / target.abs().sum(), atol=1e-7)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_compact_form_with_a_banded_diagonal_start_equals_the_dense_recursion(dtype: torch.dtype) -> None:
    # The same recursion as above with H0 = diag(inverse.diagonal) in place of gamma I. The bands interleave, as
    # frequency bands do in a flattened spectrum (the pairs are stored sorted by band); band 3 has no variables, as
    # some of the 256 px frequency bands have none; one pair has negative curvature and is refused; the history
    # wraps around.
    generator = torch.Generator().manual_seed(2)
    dimension, history = 9, 4
    bands = torch.tensor([2, 0, 1, 0, 4, 1, 1, 0, 2])
    basis = torch.randn(dimension, dimension, generator=generator, dtype=torch.float64)
    curvatures = torch.tensor([1.0, 10.0, 100.0, 0.0, 30.0], dtype=torch.float64)[bands]
    hessian = basis @ basis.T + torch.diag(curvatures)
    inverse = CompactInverseHessian(history=history, bands=bands)
    pairs = []
    for index, step in enumerate(torch.randn(7, dimension, generator=generator, dtype=torch.float64)):
        change = -step if index == 3 else hessian @ step
        if inverse.add(step.to(dtype), change.to(dtype)):
            pairs.append((step, change))
    assert len(pairs) == 6 and len(inverse) == history  # the refused pair is not among them
    assert inverse.diagonal is not None and inverse.diagonal.dtype == dtype
    assert len(set(inverse.diagonal.tolist())) == 4  # one scale per band that has variables
    dense = torch.diag(inverse.diagonal.double())
    identity = torch.eye(dimension, dtype=torch.float64)
    for step, change in pairs[-history:]:
        rho = 1.0 / float(step @ change)
        left = identity - rho * torch.outer(step, change)
        dense = left @ dense @ left.T + rho * torch.outer(step, step)
    gradient = torch.randn(dimension, generator=generator, dtype=torch.float64)
    tolerance = 1e-10 if dtype == torch.float64 else 1e-4
    expected = dense @ gradient
    product = inverse.times(gradient.to(dtype)).double()
    assert torch.allclose(product, expected, atol=tolerance * float(expected.abs().max()), rtol=0)
    newest_step, newest_change = pairs[-1]
    secant = inverse.times(newest_change.to(dtype)).double()
    assert torch.allclose(secant, newest_step, atol=tolerance * float(newest_step.abs().max()), rtol=0)
    assert float(gradient @ product) > 0  # a descent direction


def test_a_pair_must_have_one_value_per_band_entry() -> None:
    inverse = CompactInverseHessian(history=3, bands=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="4 variables for bands of 2"):
        inverse.add(torch.ones(4), torch.ones(4))


def test_each_band_starts_from_its_own_curvature() -> None:
    # A quadratic with curvature 1 on the first band and 4 on the second: the first pair's secant scales are 1/1 and
    # 1/4, where gamma I would give both the same blend.
    curvature = torch.tensor([1.0, 1.0, 4.0, 4.0], dtype=torch.float64)
    inverse = CompactInverseHessian(history=5, bands=torch.tensor([0, 0, 1, 1]))
    step = torch.tensor([0.3, -0.2, 0.1, 0.4], dtype=torch.float64)
    assert inverse.add(step, curvature * step)
    assert inverse.diagonal is not None
    assert torch.allclose(inverse.diagonal, 1.0 / curvature)
    assert 0.25 < inverse.gamma < 1.0


def test_banded_lbfgs_still_minimises_and_checks_its_bands() -> None:
    x = torch.zeros(40, dtype=torch.float64, requires_grad=True)

    def evaluate() -> None:
        x.grad = None
        smooth_loss(x).backward()

    minimize_lbfgs(x, evaluate, steps=30, bands=torch.arange(40) // 10)
    reference, _ = our_lbfgs(30, 50)
    assert float(smooth_loss(x.detach())) < float(smooth_loss(torch.zeros(40, dtype=torch.float64))) * 0.5
    assert float(smooth_loss(x.detach())) <= float(smooth_loss(reference)) * 1.05
    with pytest.raises(ValueError, match="one group per variable"):
        minimize_lbfgs(x, evaluate, steps=1, bands=torch.zeros(39, dtype=torch.long))


def test_band_scales_are_averaged_over_pairs_and_stay_within_ten_times_gamma() -> None:
    inverse = CompactInverseHessian(history=5, bands=torch.tensor([0, 0, 1, 1]))
    step = torch.tensor([0.3, -0.2, 0.1, 0.4], dtype=torch.float64)
    assert inverse.add(step, torch.tensor([1.0, 1.0, 4.0, 4.0], dtype=torch.float64) * step)
    assert inverse.add(step, torch.tensor([2.0, 2.0, 2.0, 2.0], dtype=torch.float64) * step)
    assert inverse.diagonal is not None
    expected = torch.tensor([(1.0 + 0.5) / 2] * 2 + [(0.25 + 0.5) / 2] * 2, dtype=torch.float64)
    assert torch.allclose(inverse.diagonal, expected)  # half the newest pair's 1/2, half the previous diagonal
    # the curvature jumps 1000-fold: gamma follows at once, and the averaged diagonal is held within 10x of it
    assert inverse.add(step, 1000.0 * step)
    assert inverse.gamma == pytest.approx(1e-3)
    assert float(inverse.diagonal.max()) <= 10 * inverse.gamma * (1 + 1e-12)
