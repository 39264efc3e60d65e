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

    The pairs live in fixed (history, n) buffers, one pair per row, written in turn; `order` lists their rows oldest
    first, and only the small m-vectors and m x m matrices are put in that order, never the buffers. (Formulas write
    S and Y as n x m, one pair per column, so the buffers are S^T and Y^T.)

    With bands, the buffers hold the variables sorted by band, so that each band is one slice of a row. Y^T H0 Y is
    then the sum over bands of scale_b Y_b^T Y_b, from one m x m matrix per band updated as each pair arrives,
    instead of a pass over Y at every step: with 50 pairs on 2 CPU cores the diagonal costs about 5 ms (256 px) and
    12 ms (512 px) a step more than gamma I that way, and cost 12 and 60 ms more computed afresh.
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
        self.banded = bands is not None
        self.band_scales: Tensor | None = None  # H0's scale per band (banded, once a pair is remembered)
        band_sizes = torch.bincount(bands) if bands is not None else torch.empty(0, dtype=torch.long)
        # position i of the band-sorted order holds variable _sorting[i]; band b is the slice _band_slices[b] of it
        self._sorting = torch.argsort(bands, stable=True) if bands is not None else torch.empty(0, dtype=torch.long)
        starts = (band_sizes.cumsum(0) - band_sizes).tolist()
        self._band_slices = [
            slice(start, start + size) for start, size in zip(starts, band_sizes.tolist(), strict=True)
        ]
        self._band_sizes = band_sizes
        self._sorted_diagonal = torch.empty(0)  # band_scales repeated for each variable, in band order
        self._steps = self._changes = torch.empty(0)  # S^T, Y^T: (history, n) once the first pair arrives
        self._step_dot_change = self._change_dot_change = torch.empty(0)  # s_i.y_j, y_i.y_j: (history, history)
        self._band_change_dot_change = torch.empty(0)  # y_i.y_j within each band: (bands, history, history)

    def __len__(self) -> int:
        return len(self.order)

    @property
    def diagonal(self) -> Tensor | None:
        """H0's diagonal in the variables' own order and dtype (None without bands, or before the first pair)."""
        if self.bands is None or self.band_scales is None:
            return None
        return self.band_scales[self.bands].to(self._steps.dtype)

    def add(self, step: Tensor, change: Tensor) -> bool:
        """Remember a pair if its curvature s.y is above 1e-10 (torch's test); returns whether it was."""
        if self.bands is not None and step.shape != self.bands.shape:
            raise ValueError(f"a step of {step.numel()} variables for bands of {self.bands.numel()}")
        curvature = float(step @ change)
        if curvature <= 1e-10:
            return False
        if self.banded:
            step, change = step[self._sorting], change[self._sorting]
        if not self.order:
            # Rows are read only once written (`used` below): empty, not zeroed, spares writing 2 x history rows.
            self._steps = step.new_empty((self.history, step.numel()))
            self._changes = torch.empty_like(self._steps)
            square = dict(dtype=torch.float64, device=step.device)
            self._step_dot_change = torch.zeros((self.history, self.history), **square)
            self._change_dot_change = torch.zeros((self.history, self.history), **square)
            self._band_change_dot_change = torch.zeros((len(self._band_slices), self.history, self.history), **square)
        row = self.order.pop(0) if len(self.order) == self.history else len(self.order)
        self.order.append(row)
        self._steps[row], self._changes[row] = step, change
        used = max(self.order) + 1  # rows 0..used-1 hold pairs
        steps, changes = self._steps[:used], self._changes[:used]
        self._step_dot_change[:used, row] = (steps @ change).double()
        if self.banded:  # y_i.s and y_i.y within each band, in one pass over Y (its products are memory-bound)
            newest_pair = torch.stack([step, change])
            band_products = [changes[:, band] @ newest_pair[:, band].T for band in self._band_slices]
            changes_dot_newest_by_band = torch.stack(band_products).double()  # (bands, used, 2)
            changes_dot_newest = changes_dot_newest_by_band.sum(0)
            self._band_change_dot_change[:, :used, row] = changes_dot_newest_by_band[..., 1]
            self._band_change_dot_change[:, row, :used] = changes_dot_newest_by_band[..., 1]
            newest_by_band = changes_dot_newest_by_band[:, row]  # the newest pair's s.y and y.y within each band
        else:  # as separate products, whose rounding the textbook baseline's figures were measured with
            changes_dot_newest = torch.stack([changes @ step, changes @ change], dim=1).double()
        self._step_dot_change[row, :used] = changes_dot_newest[:, 0]
        self._change_dot_change[:used, row] = changes_dot_newest[:, 1]
        self._change_dot_change[row, :used] = changes_dot_newest[:, 1]
        self.gamma = curvature / float(changes_dot_newest[row, 1])
        if self.banded:
            self._update_band_scales(step_dot_change=newest_by_band[:, 0], change_dot_change=newest_by_band[:, 1])
        return True

    # Each band's scale stays within this factor of gamma: a band whose step barely moved has a meaningless ratio.
    BAND_SCALE_LIMIT = 10.0

    def _update_band_scales(self, *, step_dot_change: Tensor, change_dot_change: Tensor) -> None:
        """H0's scales from the newest pair's s.y and y.y within each band: their ratio (gamma where a band has no
        positive curvature, or no variables), averaged half and half with the previous scales (one pair's ratio in a
        small band is noisy), then kept within BAND_SCALE_LIMIT of gamma."""
        ratios = step_dot_change / change_dot_change.clamp_min(1e-30)
        newest = torch.where(step_dot_change > 0, ratios, torch.full_like(ratios, self.gamma))
        averaged = newest if self.band_scales is None else 0.5 * (self.band_scales + newest)
        self.band_scales = averaged.clamp(self.gamma / self.BAND_SCALE_LIMIT, self.gamma * self.BAND_SCALE_LIMIT)
        self._sorted_diagonal = self.band_scales.to(self._steps.dtype).repeat_interleave(
            self._band_sizes, output_size=self._steps.shape[1]
        )  # output_size: no device synchronisation on a GPU

    def times(self, gradient: Tensor) -> Tensor:
        """H g for a flat gradient (g itself while nothing is remembered)."""
        if not self.order:
            return gradient.clone()
        if self.banded:
            gradient = gradient[self._sorting]
        used = max(self.order) + 1
        steps, changes = self._steps[:used], self._changes[:used]
        order = torch.tensor(self.order, device=gradient.device)
        step_dot_change = self._step_dot_change[order][:, order]
        upper = torch.triu(step_dot_change)
        steps_g = (steps @ gradient).double()[order, None]
        q = torch.linalg.solve_triangular(upper, steps_g, upper=True)
        if self.band_scales is None:  # H0 = gamma I
            initial: float | Tensor = self.gamma
            scaled_gradient = self.gamma * gradient
            changes_scaled_g = self.gamma * (changes @ gradient).double()[order, None]
            changes_scaled_changes = self.gamma * self._change_dot_change[order][:, order]
        else:  # H0 = diag(scale_b), so Y^T H0 Y = sum over bands of scale_b Y_b^T Y_b
            initial = self._sorted_diagonal
            scaled_gradient = self._sorted_diagonal * gradient
            changes_scaled_g = (changes @ scaled_gradient).double()[order, None]
            by_band = self._band_change_dot_change[:, :used, :used]
            changes_scaled_changes = torch.einsum("b,bij->ij", self.band_scales, by_band)[order][:, order]
        curvature = torch.diag(torch.diagonal(step_dot_change)) + changes_scaled_changes
        top = torch.linalg.solve_triangular(upper.T, curvature @ q - changes_scaled_g, upper=False)
        # back to buffer rows, so the products run over the buffers as they are
        top_rows = torch.zeros(used, dtype=gradient.dtype, device=gradient.device).index_copy_(
            0, order, top[:, 0].to(gradient.dtype)
        )
        q_rows = torch.zeros_like(top_rows).index_copy_(0, order, q[:, 0].to(gradient.dtype))
        product = scaled_gradient + top_rows @ steps - initial * (q_rows @ changes)
        if not self.banded:
            return product
        return torch.empty_like(product).index_copy_(0, self._sorting, product)


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
