"""L-BFGS without line search, with the inverse-Hessian product in compact form.

One evaluation and one update per step, as `torch.optim.LBFGS(max_iter=1)` does when it is stepped repeatedly with
lr=1 after the first step. torch computes the product H g with the two-loop recursion: four vector operations per
remembered pair, and in torch's code one host-device synchronisation per pair. On a GPU those dominate a step (an
H100 spent 8 of 14 ms per Gatys step at 512 px there). The compact form of Byrd, Nocedal and Schnabel (1994; Nocedal
and Wright, Numerical Optimization, eq. 7.24) gives the same product from a few matrix-vector products and two
triangular solves with the m x m matrices of the history:

    H g = gamma g + S top - gamma Y q,   q = R^-1 (S^T g),   top = R^-T ((D + gamma Y^T Y) q - gamma Y^T g)

with S, Y the last m steps and gradient changes (oldest first), R the upper triangle of S^T Y, D its diagonal and
gamma = s.y / y.y of the newest pair (H0 = gamma I, as in torch).

Optionally H0 is a diagonal instead (`bands`): the variables fall into groups (for a picture in Fourier space,
bands of spatial frequency) and each group gets the secant scale s.y / y.y of the newest pair restricted to it,
averaged with the previous step's and kept within 10x of gamma, so groups with flatter curvature take longer
steps. The same formula holds with gamma I replaced by that diagonal.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class CompactInverseHessian:
    """The L-BFGS inverse-Hessian approximation from the last `history` (step, gradient change) pairs.

    The pairs live in fixed (history, n) buffers, written in turn; `order` lists their rows oldest first, and only
    the small m-vectors and m x m matrices are put in that order, never the buffers.
    """

    def __init__(self, history: int, bands: Tensor | None = None) -> None:
        """bands: optional group number (0, 1, ...) of each variable, flat; then H0 is a diagonal with one scale per
        group (see the module's docstring), else gamma I."""
        if history < 1:
            raise ValueError(f"history must be at least 1, got {history}")
        self.history = history
        self.order: list[int] = []
        self.gamma = 1.0
        self.bands = bands
        self.band_count = int(bands.max()) + 1 if bands is not None else 0
        self.diagonal: Tensor | None = None  # H0 when bands are given, once a pair is remembered
        self._steps = self._changes = torch.empty(0)  # S, Y: (history, n) once the first pair arrives
        self._step_dot_change = self._change_dot_change = torch.empty(0)  # S Y^T, Y Y^T: (history, history)

    def __len__(self) -> int:
        return len(self.order)

    def add(self, step: Tensor, change: Tensor) -> bool:
        """Remember a pair if its curvature s.y is above 1e-10 (torch's test); returns whether it was."""
        curvature = float(step @ change)
        if curvature <= 1e-10:
            return False
        if not self.order:
            self._steps = step.new_zeros((self.history, step.numel()))
            self._changes = torch.zeros_like(self._steps)
            square = dict(dtype=torch.float64, device=step.device)
            self._step_dot_change = torch.zeros((self.history, self.history), **square)
            self._change_dot_change = torch.zeros((self.history, self.history), **square)
        row = self.order.pop(0) if len(self.order) == self.history else len(self.order)
        self.order.append(row)
        self._steps[row], self._changes[row] = step, change
        used = max(self.order) + 1  # rows 0..used-1 hold pairs
        steps, changes = self._steps[:used], self._changes[:used]
        self._step_dot_change[:used, row] = (steps @ change).double()
        self._step_dot_change[row, :used] = (changes @ step).double()
        change_dot_change = (changes @ change).double()
        self._change_dot_change[:used, row] = change_dot_change
        self._change_dot_change[row, :used] = change_dot_change
        self.gamma = curvature / float(change_dot_change[row])
        if self.bands is not None:
            self._update_diagonal(step, change)
        return True

    # Each band's scale stays within this factor of gamma: a band whose step barely moved has a meaningless ratio.
    BAND_SCALE_LIMIT = 10.0

    def _update_diagonal(self, step: Tensor, change: Tensor) -> None:
        """H0's diagonal: the newest pair's s.y / y.y band by band (gamma where a band has no positive curvature),
        averaged half and half with the previous diagonal (one pair's ratio in a small band is noisy), then kept
        within BAND_SCALE_LIMIT of gamma."""
        assert self.bands is not None
        zeros = step.new_zeros(self.band_count)
        step_dot_change = zeros.index_add(0, self.bands, step * change)
        change_dot_change = zeros.index_add(0, self.bands, change * change)
        ratios = step_dot_change / change_dot_change.clamp_min(1e-30)
        newest = torch.where(step_dot_change > 0, ratios, torch.full_like(zeros, self.gamma))[self.bands]
        averaged = newest if self.diagonal is None else 0.5 * (self.diagonal + newest)
        self.diagonal = averaged.clamp(self.gamma / self.BAND_SCALE_LIMIT, self.gamma * self.BAND_SCALE_LIMIT)

    def times(self, gradient: Tensor) -> Tensor:
        """H g for a flat gradient (g itself while nothing is remembered)."""
        if not self.order:
            return gradient.clone()
        used = max(self.order) + 1
        steps, changes = self._steps[:used], self._changes[:used]
        order = torch.tensor(self.order, device=gradient.device)
        step_dot_change = self._step_dot_change[order][:, order]
        upper = torch.triu(step_dot_change)
        steps_g = (steps @ gradient).double()[order, None]
        q = torch.linalg.solve_triangular(upper, steps_g, upper=True)
        scale = self.gamma if self.diagonal is None else self.diagonal  # H0 = scale I or diag(scale)
        scaled_gradient = scale * gradient
        if self.diagonal is None:
            changes_scaled_g = self.gamma * (changes @ gradient).double()[order, None]
            changes_scaled_changes = self.gamma * self._change_dot_change[order][:, order]
        else:  # Y^T H0 Y changes with H0, so it is computed afresh
            changes_scaled_g = (changes @ scaled_gradient).double()[order, None]
            changes_scaled_changes = ((changes * self.diagonal) @ changes.T).double()[order][:, order]
        curvature = torch.diag(torch.diagonal(step_dot_change)) + changes_scaled_changes
        top = torch.linalg.solve_triangular(upper.T, curvature @ q - changes_scaled_g, upper=False)
        # back to buffer rows, so the products run over the buffers as they are
        top_rows = torch.zeros(used, dtype=gradient.dtype, device=gradient.device).index_copy_(
            0, order, top[:, 0].to(gradient.dtype)
        )
        q_rows = torch.zeros_like(top_rows).index_copy_(0, order, q[:, 0].to(gradient.dtype))
        return scaled_gradient + top_rows @ steps - scale * (q_rows @ changes)


def minimize_lbfgs(
    parameter: Tensor,
    evaluate: Callable[[], object],
    *,
    steps: int,
    first_step: float = 0.0,
    history: int = 50,
    bands: Tensor | None = None,
) -> None:
    """Update `parameter` in place with `steps` evaluations of L-BFGS without line search.

    `evaluate()` must leave the loss's gradient in `parameter.grad` (it may raise to stop early). The first update
    has root-mean-square size `first_step`; with 0 it is torch's rule, -g min(1, 1/|g|_1). Later updates are the
    full quasi-Newton step -H g. bands: each variable's group for a diagonal H0 (`CompactInverseHessian`); None
    for torch's gamma I.
    """
    if bands is not None and bands.shape != (parameter.numel(),):
        raise ValueError(f"bands must hold one group per variable ({parameter.numel()}), got {tuple(bands.shape)}")
    previous_gradient: Tensor | None = None
    previous_update: Tensor | None = None
    inverse_hessian = CompactInverseHessian(history, bands)
    for _ in range(steps):
        evaluate()
        if parameter.grad is None:
            raise RuntimeError("evaluate() left no gradient on the parameter")
        with torch.no_grad():
            gradient = parameter.grad.detach().flatten()
            if previous_gradient is None or previous_update is None:
                if first_step > 0.0:
                    scale = first_step / max(float(gradient.square().mean().sqrt()), 1e-12)
                else:
                    scale = min(1.0, 1.0 / max(float(gradient.abs().sum()), 1e-12))
                update = -scale * gradient
            else:
                inverse_hessian.add(previous_update, gradient - previous_gradient)
                update = -inverse_hessian.times(gradient)
            parameter.add_(update.view_as(parameter))
            previous_gradient, previous_update = gradient.clone(), update
