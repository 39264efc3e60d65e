import math

import pytest
import torch

from studio.ops.interpolation import (
    frame_positions,
    keyframe_path,
    label_path,
    lerp,
    noise_loop,
    sample_path,
    segment_frame_counts,
    slerp,
)


def gaussian(count: int, dim: int, seed: int) -> torch.Tensor:
    return torch.randn(count, dim, generator=torch.Generator().manual_seed(seed))


# --- two-point interpolation ----------------------------------------------------------------------------------------


def test_slerp_endpoints_are_exact_and_norm_moves_linearly():
    a, b = gaussian(2, 100, 0)
    t = torch.linspace(0, 1, 11)
    path = slerp(a, b, t)
    assert path.shape == (11, 100)
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    expected_norms = a.norm() + t * (b.norm() - a.norm())
    torch.testing.assert_close(path.norm(dim=-1), expected_norms, rtol=1e-6, atol=1e-5)
    # Equal angular steps along the great circle.
    unit = path / path.norm(dim=-1, keepdim=True)
    steps = torch.acos((unit[1:] * unit[:-1]).sum(-1).clamp(-1, 1).double())
    assert steps.std() / steps.mean() < 1e-3


def test_lerp_midpoints_lose_norm_slerp_midpoints_do_not():
    """Independent N(0, I) latents are nearly orthogonal: the straight-line midpoint has ~1/sqrt(2) of their norm
    (the washed-out look), the slerp midpoint keeps it."""
    dim, pairs = 512, 64
    a, b = gaussian(pairs, dim, 1), gaussian(pairs, dim, 2)
    typical = math.sqrt(dim)
    lerp_ratio = lerp(a, b, torch.full((pairs,), 0.5)).norm(dim=-1) / typical
    slerp_ratio = slerp(a, b, torch.full((pairs,), 0.5)).norm(dim=-1) / typical
    assert 0.66 < lerp_ratio.mean() < 0.75
    assert 0.97 < slerp_ratio.mean() < 1.03
    torch.testing.assert_close(slerp_ratio * typical, (a.norm(dim=-1) + b.norm(dim=-1)) / 2, rtol=1e-5, atol=1e-5)


def test_lerp_endpoints_exact():
    a, b = gaussian(2, 7, 3)
    path = lerp(a, b, torch.tensor([0.0, 1.0]))
    assert torch.equal(path[0], a) and torch.equal(path[1], b)


@pytest.mark.parametrize("scale", [1.0, 3.0, -1.0, -2.5])
def test_slerp_parallel_and_opposite_vectors_give_no_nan(scale):
    a = gaussian(1, 64, 4)[0]
    b = scale * a
    path = slerp(a, b, torch.linspace(0, 1, 9))
    assert torch.isfinite(path).all()
    assert torch.equal(path[0], a) and torch.equal(path[-1], b)
    torch.testing.assert_close(path.norm(dim=-1), torch.linspace(a.norm(), b.norm().item(), 9), rtol=1e-5, atol=1e-5)
    if scale < 0:  # half a great circle: the midpoint is perpendicular to a
        assert abs(float(path[4] @ a)) < 1e-3 * float(a.norm() * path[4].norm())


def test_slerp_nearly_opposite_and_zero_vectors():
    a = torch.tensor([1.0, 0.0, 0.0])
    b = torch.tensor([-1.0, 1e-8, 0.0])
    assert torch.isfinite(slerp(a, b, torch.linspace(0, 1, 5))).all()
    zero = torch.zeros(3)
    torch.testing.assert_close(slerp(zero, a, 0.25), 0.25 * a)


# --- frame schedule and keyframes -----------------------------------------------------------------------------------


def test_frame_counts_total_and_per_segment():
    assert segment_frame_counts(3, frames=120, loop=True) == [40, 40, 40]
    assert segment_frame_counts(3, frames=120, loop=False) == [60, 59]
    assert sum(segment_frame_counts(4, frames=121, loop=False)) + 1 == 121
    assert segment_frame_counts(3, frames_per_segment=10, loop=False) == [10, 10]
    with pytest.raises(ValueError, match="exactly one"):
        segment_frame_counts(3, frames=10, frames_per_segment=5)
    with pytest.raises(ValueError, match="at least 2 keyframes"):
        segment_frame_counts(1, frames=10)
    with pytest.raises(ValueError, match="at least 4 frames"):
        segment_frame_counts(4, frames=3, loop=True)


@pytest.mark.parametrize("easing", ["linear", "ease-in-out", "spline"])
@pytest.mark.parametrize("method", ["slerp", "lerp"])
@pytest.mark.parametrize("loop", [False, True])
def test_keyframes_are_hit_exactly(easing, method, loop):
    keys = gaussian(4, 32, 5)
    frames = 37
    path = keyframe_path(keys, frames=frames, loop=loop, easing=easing, method=method)
    assert path.shape == (frames, 32) and path.dtype == keys.dtype
    assert torch.isfinite(path).all()
    counts = segment_frame_counts(4, frames=frames, loop=loop)
    starts = [sum(counts[:j]) for j in range(len(counts))]
    for key_index, frame_index in enumerate(starts):
        assert torch.equal(path[frame_index], keys[key_index])
    if not loop:
        assert torch.equal(path[-1], keys[-1])


@pytest.mark.parametrize("easing", ["linear", "ease-in-out", "spline"])
def test_loop_closes_frame_after_last_equals_first(easing):
    keys = gaussian(3, 16, 6)
    frames = 30
    path = keyframe_path(keys, frames=frames, loop=True, easing=easing)
    positions = frame_positions(3, frames=frames, loop=True)
    step = positions[-1] - positions[-2]
    next_frame = sample_path(keys, (positions[-1] + step).reshape(1), loop=True, easing=easing)[0]
    torch.testing.assert_close(next_frame, path[0], rtol=0, atol=1e-5)
    # No frame is repeated at the seam: the last frame is one step before frame 0, not frame 0 itself.
    assert (path[-1] - path[0]).norm() > 0.05 * keys.norm(dim=-1).mean()


def test_open_path_ends_on_last_keyframe_and_loop_does_not():
    keys = gaussian(3, 16, 7)
    assert torch.equal(keyframe_path(keys, frames=11, loop=False)[-1], keys[-1])
    looped = keyframe_path(keys, frames=12, loop=True)
    assert not torch.equal(looped[-1], keys[0])


def _kink(path: torch.Tensor, index: int) -> float:
    """Relative jump of the finite-difference velocity at frame `index`."""
    before = path[index] - path[index - 1]
    after = path[index + 1] - path[index]
    return float((after - before).norm() / before.norm())


def _keyframe_kinks(keys: torch.Tensor, per_segment: int, easing: str, method: str) -> list[float]:
    """Velocity jumps at every keyframe of a loop, the seam (frame 0) included."""
    path = keyframe_path(keys, frames_per_segment=per_segment, loop=True, easing=easing, method=method)
    extended = torch.cat([path[-1:], path, path[:1]])
    return [_kink(extended, key * per_segment + 1) for key in range(keys.shape[0])]


@pytest.mark.parametrize("method", ["slerp", "lerp"])
def test_spline_velocity_is_continuous_at_keyframes(method):
    """Finite differences: for a C1 path the jump in velocity across a keyframe shrinks in proportion to the
    frame spacing (4x more frames, ~4x smaller jump); a corner keeps the same jump however fine the sampling."""
    keys = gaussian(4, 64, 8).double()
    coarse = _keyframe_kinks(keys, 100, "spline", method)
    fine = _keyframe_kinks(keys, 400, "spline", method)
    for key, (jump_coarse, jump_fine) in enumerate(zip(coarse, fine, strict=True)):
        assert jump_fine < 0.03, f"spline kink at keyframe {key}"
        assert jump_coarse / jump_fine > 3.5, f"velocity jump at keyframe {key} does not vanish with finer frames"
    corners_coarse = _keyframe_kinks(keys, 100, "linear", method)
    corners_fine = _keyframe_kinks(keys, 400, "linear", method)
    for jump_coarse, jump_fine in zip(corners_coarse, corners_fine, strict=True):
        assert jump_fine > 0.3 and jump_coarse / jump_fine < 1.1


def test_spline_slerp_keeps_latents_on_the_gaussian_shell():
    dim = 128
    keys = gaussian(5, dim, 9)
    norms = keyframe_path(keys, frames=100, loop=True, easing="spline").norm(dim=-1) / math.sqrt(dim)
    assert norms.min() > 0.85 and norms.max() < 1.15
    lerp_norms = keyframe_path(keys, frames=100, loop=True, easing="linear", method="lerp").norm(dim=-1)
    assert lerp_norms.min() / math.sqrt(dim) < 0.8  # the straight path sinks inside the shell


def test_ease_in_out_pauses_on_keyframes():
    keys = gaussian(3, 16, 10)
    path = keyframe_path(keys, frames_per_segment=50, easing="ease-in-out")
    speed = (path[1:] - path[:-1]).norm(dim=-1)
    assert speed[0] < 0.05 * speed[25] and speed[49] < 0.05 * speed[25]


def test_per_segment_easings_and_validation():
    keys = gaussian(3, 8, 11)
    mixed = keyframe_path(keys, frames_per_segment=10, easing=["ease-in-out", "linear"])
    assert torch.equal(mixed[10:], keyframe_path(keys, frames_per_segment=10, easing="linear")[10:])
    with pytest.raises(ValueError, match="one per segment"):
        keyframe_path(keys, frames=10, easing=["linear"])
    with pytest.raises(ValueError, match="easing must be one of"):
        keyframe_path(keys, frames=10, easing="bounce")
    with pytest.raises(ValueError, match="method must be one of"):
        keyframe_path(keys, frames=10, method="cubic")
    with pytest.raises(ValueError, match=r"\(K, D\)"):
        keyframe_path(keys[0], frames=10)


def test_labels_blend_between_one_hot_keyframes_without_overshoot():
    classes = torch.eye(3)[[1, 2, 0]]
    labels = label_path(classes, frames=12, loop=True, easing="spline")
    assert labels.shape == (12, 3)
    for key in range(3):
        assert torch.equal(labels[4 * key], classes[key])
    assert labels.min() >= 0 and labels.max() <= 1
    torch.testing.assert_close(labels.sum(dim=1), torch.ones(12))
    mid = label_path(torch.eye(2), frames=3, easing="linear")[1]
    torch.testing.assert_close(mid, torch.tensor([0.5, 0.5]))


def test_paths_are_deterministic_and_keep_device_and_dtype():
    keys = gaussian(3, 16, 12).double()
    first = keyframe_path(keys, frames=20, loop=True)
    assert first.dtype == torch.float64
    assert torch.equal(first, keyframe_path(keys, frames=20, loop=True))


# --- noise loop -----------------------------------------------------------------------------------------------------


def test_noise_loop_is_seeded_closed_and_gaussian():
    frames, dim = 48, 4096
    path = noise_loop(frames=frames, dim=dim, seed=3)
    assert path.shape == (frames, dim) and path.dtype == torch.float32
    assert torch.equal(path, noise_loop(frames=frames, dim=dim, seed=3))
    assert not torch.equal(path, noise_loop(frames=frames, dim=dim, seed=4))
    # Each frame is N(0, I): per-frame mean ~0, variance ~1 over the 4096 coordinates.
    assert path.mean(dim=1).abs().max() < 0.06
    assert ((path.var(dim=1) - 1).abs() < 0.08).all()
    # Closed: the step from the last frame back to frame 0 is like any other step.
    steps = (torch.roll(path, -1, dims=0) - path).norm(dim=-1)
    assert steps.max() / steps.min() < 1.1


def test_noise_loop_around_a_center():
    center = gaussian(1, 64, 13)[0]
    path = noise_loop(frames=16, dim=64, seed=0, center=center, spread=0.2)
    cosine = (path @ center) / (path.norm(dim=-1) * center.norm())
    assert cosine.min() > 0.9
    with pytest.raises(ValueError, match="spread"):
        noise_loop(frames=16, dim=64, seed=0, spread=0.0)
    with pytest.raises(ValueError, match="center"):
        noise_loop(frames=16, dim=64, seed=0, center=torch.zeros(3))
