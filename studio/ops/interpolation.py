"""Latent walks: lerp, slerp, keyframe paths with easing or a spherical spline, seamless loops and noise loops.

Pure functions over tensors. Latents drawn from N(0, I) in D dimensions live near the sphere of radius sqrt(D);
a straight line between two of them cuts through the inside (the midpoint of two independent latents has norm
~sqrt(D/2), about 0.71 of a typical latent) and the generator renders those as greyed-out, washed-out images.
So walks default to `slerp`: the direction moves along the great circle and the norm moves linearly between the
two endpoint norms.

Frame bookkeeping. K keyframes make K - 1 segments, or K in a loop (the last one flows back into the first).
Every segment gets a whole number of frames, so every keyframe lands exactly on a frame; a segment's frames are
its start keyframe and the in-betweens (never its end keyframe, which is the next segment's first frame). A path
is sampled at *positions* measured in segments: position p = j + t is the point at local time t in [0, 1] of
segment j. A loop of F frames covers positions [0, K) and frame F (position K) would equal frame 0, so it is not
emitted; an open path of F frames covers [0, K - 1] and ends on the last keyframe.

Computation happens on CPU in float64 (paths are tiny); results come back on the keyframes' device and dtype,
with keyframes copied bit-exactly.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

Easing = Literal["linear", "ease-in-out", "spline"]
Method = Literal["slerp", "lerp"]
EASINGS: tuple[str, ...] = ("linear", "ease-in-out", "spline")
METHODS: tuple[str, ...] = ("slerp", "lerp")

# Below this sine of the angle between two directions the great circle through them is ill-defined (parallel or
# opposite vectors); a deterministic perpendicular direction is used instead (computed in float64).
_DEGENERATE_SINE = 1e-9


# --- two-point interpolation ----------------------------------------------------------------------------------------


def lerp(a: Tensor, b: Tensor, t: Tensor | float) -> Tensor:
    """Straight-line interpolation a + t (b - a).

    a, b: (..., D) broadcastable. t: a float or a tensor of shape (...) broadcastable against the leading dims
    (a (D,) pair with t (T,) gives (T, D)). t = 0 gives a, t = 1 gives b exactly.
    """
    t = _as_time(t, a)
    out = a + t * (b - a)
    return torch.where(t == 1, b, out)


def slerp(a: Tensor, b: Tensor, t: Tensor | float) -> Tensor:
    """Spherical interpolation: the direction follows the great circle from a to b at constant angular speed and
    the norm goes linearly from |a| to |b|.

    Shapes as `lerp`. Endpoints are returned exactly (t = 0 -> a, t = 1 -> b). Parallel vectors interpolate their
    norms; opposite vectors turn through a deterministic perpendicular direction (any half great circle is a
    valid answer); zero vectors fall back to lerp. Never NaN for finite input.
    """
    t_work = _as_time(t, a).to("cpu", torch.float64)
    a64, b64 = a.detach().to("cpu", torch.float64), b.detach().to("cpu", torch.float64)
    out = _slerp64(a64, b64, t_work).to(device=a.device, dtype=torch.result_type(a, b))
    t_here = t_work.to(a.device)
    out = torch.where(t_here == 0, a.to(out.dtype), out)
    return torch.where(t_here == 1, b.to(out.dtype), out)


def _as_time(t: Tensor | float, like: Tensor) -> Tensor:
    """t as a tensor with a trailing singleton dim so it broadcasts against (..., D)."""
    t = torch.as_tensor(t, dtype=like.dtype if like.is_floating_point() else torch.float32, device=like.device)
    return t.unsqueeze(-1)


def _slerp64(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """float64 slerp with norm lerp; t has a trailing singleton dim."""
    norm_a = a.norm(dim=-1, keepdim=True)
    norm_b = b.norm(dim=-1, keepdim=True)
    if a.shape[-1] < 2:
        return a + t * (b - a)
    unit_a = a / norm_a.clamp_min(torch.finfo(torch.float64).tiny)
    unit_b = b / norm_b.clamp_min(torch.finfo(torch.float64).tiny)
    direction = _rotate_towards(unit_a, unit_b, t)
    out = direction * (norm_a + t * (norm_b - norm_a))
    degenerate = (norm_a == 0) | (norm_b == 0)
    return torch.where(degenerate, a + t * (b - a), out)


def _angle_and_axis(unit_a: Tensor, unit_b: Tensor) -> tuple[Tensor, Tensor]:
    """Angle (..., 1) in [0, pi] between unit vectors and the unit vector w orthogonal to a in the plane (a, b), so
    that b = cos(angle) a + sin(angle) w. For (anti)parallel pairs w is a fixed perpendicular of a."""
    unit_a, unit_b = torch.broadcast_tensors(unit_a, unit_b)
    # 2 atan2(|a - b|, |a + b|) is accurate near 0 and near pi, unlike acos(a . b).
    angle = 2 * torch.atan2((unit_a - unit_b).norm(dim=-1, keepdim=True), (unit_a + unit_b).norm(dim=-1, keepdim=True))
    ortho = _reject(unit_b, unit_a)
    ortho = _reject(ortho, unit_a)  # a second Gram-Schmidt pass keeps w orthogonal to a in floating point
    ortho_norm = ortho.norm(dim=-1, keepdim=True)
    axis = torch.where(ortho_norm > _DEGENERATE_SINE, ortho / ortho_norm.clamp_min(1e-300), _perpendicular(unit_a))
    return angle, axis


def _rotate_towards(unit_a: Tensor, unit_b: Tensor, t: Tensor) -> Tensor:
    angle, axis = _angle_and_axis(unit_a, unit_b)
    return torch.cos(t * angle) * unit_a + torch.sin(t * angle) * axis


def _reject(v: Tensor, unit: Tensor) -> Tensor:
    """v minus its component along `unit`."""
    return v - (v * unit).sum(dim=-1, keepdim=True) * unit


def _perpendicular(unit: Tensor) -> Tensor:
    """A deterministic unit vector orthogonal to `unit`: the coordinate axis least aligned with it, made orthogonal."""
    axis = torch.zeros_like(unit)
    axis.scatter_(-1, unit.abs().argmin(dim=-1, keepdim=True), 1.0)
    ortho = _reject(axis, unit)
    return ortho / ortho.norm(dim=-1, keepdim=True).clamp_min(1e-300)


def sphere_log(base: Tensor, target: Tensor) -> Tensor:
    """Tangent vector at unit `base` pointing along the great circle to unit `target`, with length = the angle."""
    angle, axis = _angle_and_axis(base, target)
    return angle * axis


def sphere_exp(base: Tensor, tangent: Tensor) -> Tensor:
    """Walk from unit `base` along the great circle in direction `tangent` for an angle |tangent|."""
    length = tangent.norm(dim=-1, keepdim=True)
    direction = tangent / length.clamp_min(1e-300)
    return torch.cos(length) * base + torch.sin(length) * direction


# --- easing ---------------------------------------------------------------------------------------------------------


def ease(t: Tensor, easing: str) -> Tensor:
    """Timing curve on [0, 1] with ease(0) = 0 and ease(1) = 1 exactly. "ease-in-out" is smoothstep 3t^2 - 2t^3
    (zero velocity at both ends: the walk pauses softly on each keyframe); "linear" and "spline" leave t as is
    (the spline shapes the path instead of the timing)."""
    check_easing(easing)
    if easing == "ease-in-out":
        return t * t * (3 - 2 * t)
    return t


def check_easing(easing: str) -> None:
    """ValueError unless `easing` is one of EASINGS."""
    if easing not in EASINGS:
        raise ValueError(f"easing must be one of {EASINGS}, got {easing!r}")


def _check_method(method: str) -> None:
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")


# --- frame schedule -------------------------------------------------------------------------------------------------


def segment_frame_counts(
    num_keyframes: int, *, frames: int | None = None, frames_per_segment: int | None = None, loop: bool = False
) -> list[int]:
    """Frames given to each segment (its start keyframe plus in-betweens). Give exactly one of `frames` (total
    frames in the output; the remainder goes to the first segments, one extra frame each) or `frames_per_segment`.
    Totals: a loop has sum(counts) frames; an open path has sum(counts) + 1 (the last keyframe)."""
    if num_keyframes < 2:
        raise ValueError(f"a walk needs at least 2 keyframes, got {num_keyframes}")
    segments = num_keyframes if loop else num_keyframes - 1
    if (frames is None) == (frames_per_segment is None):
        raise ValueError("give exactly one of frames (total frames) or frames_per_segment")
    if frames_per_segment is not None:
        if frames_per_segment < 1:
            raise ValueError(f"frames_per_segment must be at least 1, got {frames_per_segment}")
        return [int(frames_per_segment)] * segments
    assert frames is not None
    between = frames if loop else frames - 1  # frames that start a segment
    if between < segments:
        needed = segments if loop else segments + 1
        raise ValueError(
            f"{frames} frames cannot show {num_keyframes} keyframes{' in a loop' if loop else ''}; "
            f"use at least {needed} frames or fewer keyframes"
        )
    base, extra = divmod(between, segments)
    return [base + (1 if j < extra else 0) for j in range(segments)]


def frame_positions(
    num_keyframes: int, *, frames: int | None = None, frames_per_segment: int | None = None, loop: bool = False
) -> Tensor:
    """(F,) float64 positions (segment index + local time) of every output frame; keyframe k sits at position k."""
    counts = segment_frame_counts(num_keyframes, frames=frames, frames_per_segment=frames_per_segment, loop=loop)
    parts = [j + torch.arange(n, dtype=torch.float64) / n for j, n in enumerate(counts)]
    if not loop:
        parts.append(torch.tensor([float(len(counts))], dtype=torch.float64))
    return torch.cat(parts)


def _split_positions(positions: Tensor, segments: int) -> tuple[Tensor, Tensor]:
    positions = torch.as_tensor(positions, dtype=torch.float64).reshape(-1).cpu()
    if positions.numel() and (positions.min() < 0 or positions.max() > segments or positions.isnan().any()):
        raise ValueError(f"positions must lie in [0, {segments}] (segments of this path)")
    segment = positions.floor().long().clamp(max=segments - 1)
    return segment, positions - segment


def _eased(segment: Tensor, local: Tensor, easings: Sequence[str]) -> Tensor:
    """Local times (P,) with each point's segment's easing applied."""
    eased = local.clone()
    for j, name in enumerate(easings):
        mask = segment == j
        eased[mask] = ease(local[mask], name)
    return eased


def _per_segment_easings(easing: str | Sequence[str], segments: int) -> list[str]:
    if isinstance(easing, str):
        check_easing(easing)
        return [easing] * segments
    easings = list(easing)
    if len(easings) != segments:
        raise ValueError(f"got {len(easings)} easings for {segments} segments; give one per segment or a single one")
    for name in easings:
        check_easing(name)
    return easings


# --- paths through keyframes ----------------------------------------------------------------------------------------


def sample_path(
    keyframes: Tensor,
    positions: Tensor,
    *,
    loop: bool = False,
    easing: str | Sequence[str] = "spline",
    method: str = "slerp",
) -> Tensor:
    """The walk through `keyframes` (K, D) evaluated at `positions` (P,) in [0, S] (S = K segments in a loop,
    K - 1 otherwise): returns (P, D) on the keyframes' device and dtype.

    easing: one name for every segment or one per segment. "linear" and "ease-in-out" interpolate each segment on
    its own (kinks at keyframes for "linear", pauses for "ease-in-out"); "spline" is a Catmull-Rom spline through
    the keyframes, so velocity is continuous across a keyframe when both neighbouring segments use it. With
    method "slerp" the spline is built on the sphere of directions (spherical Bezier segments whose control points
    come from Catmull-Rom tangents, evaluated by de Casteljau with slerp) times a cubic Hermite spline of the
    norms; with "lerp" it is the Euclidean Catmull-Rom spline.
    """
    _check_method(method)
    if keyframes.dim() != 2:
        raise ValueError(f"keyframes must be a (K, D) tensor, got shape {tuple(keyframes.shape)}")
    num_keys = keyframes.shape[0]
    if num_keys < 2:
        raise ValueError(f"a walk needs at least 2 keyframes, got {num_keys}")
    segments = num_keys if loop else num_keys - 1
    easings = _per_segment_easings(easing, segments)
    segment, local = _split_positions(positions, segments)
    keys = keyframes.detach().to("cpu", torch.float64)
    start = segment
    end = (segment + 1) % num_keys
    spline_segments = torch.tensor([name == "spline" for name in easings], dtype=torch.bool)
    eased = _eased(segment, local, easings)

    if method == "lerp":
        out = keys[start] + eased[:, None] * (keys[end] - keys[start])
    else:
        out = _slerp64(keys[start], keys[end], eased[:, None])
    uses_spline = spline_segments[segment]
    if uses_spline.any():
        spline = _spline_slerp if method == "slerp" else _spline_lerp
        out[uses_spline] = spline(keys, segment[uses_spline], local[uses_spline], loop=loop)

    result = out.to(device=keyframes.device, dtype=keyframes.dtype)
    # Keyframes land bit-exactly on their positions.
    at_start = (local == 0).to(keyframes.device)
    at_end = (local == 1).to(keyframes.device)
    result = torch.where(at_start[:, None], keyframes[start.to(keyframes.device)], result)
    return torch.where(at_end[:, None], keyframes[end.to(keyframes.device)], result)


def _neighbours(num_keys: int, loop: bool) -> tuple[Tensor, Tensor]:
    """Indices of each keyframe's previous and next keyframe; open paths repeat the end keyframes (phantom points),
    which gives the usual Catmull-Rom end tangents."""
    index = torch.arange(num_keys)
    if loop:
        return (index - 1) % num_keys, (index + 1) % num_keys
    return (index - 1).clamp(min=0), (index + 1).clamp(max=num_keys - 1)


def _spline_lerp(keys: Tensor, segment: Tensor, t: Tensor, *, loop: bool) -> Tensor:
    """Euclidean Catmull-Rom (cubic Hermite with tangents (k[j+1] - k[j-1]) / 2)."""
    prev, nxt = _neighbours(keys.shape[0], loop)
    tangents = 0.5 * (keys[nxt] - keys[prev])
    end = (segment + 1) % keys.shape[0]
    return _hermite(keys[segment], keys[end], tangents[segment], tangents[end], t[:, None])


def _hermite(p0: Tensor, p1: Tensor, m0: Tensor, m1: Tensor, t: Tensor) -> Tensor:
    t2, t3 = t * t, t * t * t
    return (2 * t3 - 3 * t2 + 1) * p0 + (t3 - 2 * t2 + t) * m0 + (-2 * t3 + 3 * t2) * p1 + (t3 - t2) * m1


def _spline_slerp(keys: Tensor, segment: Tensor, t: Tensor, *, loop: bool) -> Tensor:
    """Spherical Catmull-Rom for directions times a Hermite spline for norms (float64, CPU)."""
    num_keys = keys.shape[0]
    norms = keys.norm(dim=-1, keepdim=True)
    if (norms == 0).any():
        raise ValueError("a keyframe is all zeros; a spherical spline needs non-zero latents (use method='lerp')")
    units = keys / norms
    prev, nxt = _neighbours(num_keys, loop)
    # Catmull-Rom tangent on the sphere: half the difference of the log maps towards the neighbours.
    tangents = 0.5 * (sphere_log(units, units[nxt]) - sphere_log(units, units[prev]))
    end = (segment + 1) % num_keys
    p0, p3 = units[segment], units[end]
    p1 = sphere_exp(p0, tangents[segment] / 3)
    p2 = sphere_exp(p3, -tangents[end] / 3)
    tt = t[:, None]
    # de Casteljau with slerp: the spherical cubic Bezier has end velocities 3 log(p0 -> p1) and 3 log(p2 -> p3).
    q0, q1, q2 = _rotate_towards(p0, p1, tt), _rotate_towards(p1, p2, tt), _rotate_towards(p2, p3, tt)
    r0, r1 = _rotate_towards(q0, q1, tt), _rotate_towards(q1, q2, tt)
    direction = _rotate_towards(r0, r1, tt)
    norm_tangents = 0.5 * (norms[nxt] - norms[prev])
    radius = _hermite(norms[segment], norms[end], norm_tangents[segment], norm_tangents[end], tt)
    return direction * radius


def keyframe_path(
    keyframes: Tensor,
    *,
    frames: int | None = None,
    frames_per_segment: int | None = None,
    loop: bool = False,
    easing: str | Sequence[str] = "spline",
    method: str = "slerp",
) -> Tensor:
    """Latents (F, D) for a walk through `keyframes` (K, D), on their device and dtype.

    Give `frames` (total frames in the output file) or `frames_per_segment`. Keyframes land exactly on frames at
    segment boundaries. With `loop`, the last keyframe flows back into the first and frame F (which would equal
    frame 0) is not emitted, so the file loops seamlessly. See `sample_path` for easing and method.
    """
    if keyframes.dim() != 2:
        raise ValueError(f"keyframes must be a (K, D) tensor, got shape {tuple(keyframes.shape)}")
    positions = frame_positions(keyframes.shape[0], frames=frames, frames_per_segment=frames_per_segment, loop=loop)
    return sample_path(keyframes, positions, loop=loop, easing=easing, method=method)


def label_path(
    labels: Tensor,
    *,
    frames: int | None = None,
    frames_per_segment: int | None = None,
    loop: bool = False,
    easing: str | Sequence[str] = "spline",
) -> Tensor:
    """Class vectors (F, C) for a conditional walk: keyframe labels (K, C) (one-hot or soft) lerped per segment
    with the same frame schedule as `keyframe_path`.

    Labels never leave the convex hull of the keyframe labels (a generator trained on one-hot vectors behaves badly
    on negative class weights), so "spline" segments blend labels with the smooth "ease-in-out" curve instead of an
    overshooting Catmull-Rom; their motion is still free of kinks.
    """
    if labels.dim() != 2:
        raise ValueError(f"labels must be a (K, C) tensor, got shape {tuple(labels.shape)}")
    segments = labels.shape[0] if loop else labels.shape[0] - 1
    easings = _easings_without_overshoot(easing, segments)
    positions = frame_positions(labels.shape[0], frames=frames, frames_per_segment=frames_per_segment, loop=loop)
    return sample_path(labels, positions, loop=loop, easing=easings, method="lerp")


def keyframe_blends(
    num_keyframes: int, *, frames: int, loop: bool = False, easing: str | Sequence[str] = "spline"
) -> tuple[Tensor, Tensor, Tensor]:
    """For each frame of `keyframe_path`'s schedule, its segment's start and end keyframe (indices, (F,) long) and how
    far along (F,) float64 in [0, 1] it is, eased as `label_path` eases (ease-in-out for spline segments): what a
    quantity that is not a latent (a generator's injected noise) blends by, keyframes landing on weight 0 (and the
    last frame of an open path on weight 1 of the last segment)."""
    segments = num_keyframes if loop else num_keyframes - 1
    easings = _easings_without_overshoot(easing, segments)
    segment, local = _split_positions(frame_positions(num_keyframes, frames=frames, loop=loop), segments)
    return segment, (segment + 1) % num_keyframes, _eased(segment, local, easings)


def _easings_without_overshoot(easing: str | Sequence[str], segments: int) -> list[str]:
    """Per-segment timing for what blends between keyframes rather than following the latent path (labels, noise):
    "spline" segments ease in and out, the smooth curve that never leaves [0, 1] as a Catmull-Rom spline would."""
    return ["ease-in-out" if name == "spline" else name for name in _per_segment_easings(easing, max(segments, 1))]


# --- noise loops ----------------------------------------------------------------------------------------------------


def noise_loop(*, frames: int, dim: int, seed: int, spread: float = 1.0, center: Tensor | None = None) -> Tensor:
    """An endless ambient walk: (frames, dim) float32 latents on CPU tracing a circle in a random plane.

    z(t) = sqrt(1 - spread^2) c + spread (cos(2 pi t) a + sin(2 pi t) b), t = i / frames, with a, b (and c unless
    `center` is given) independent N(0, I) draws from `seed`. For every t the coefficients' squares sum to 1, so
    each frame is itself distributed N(0, I) (the generator sees in-distribution latents all the way round).
    spread in (0, 1]: 1 is a full circle of unrelated images; small values wobble around `center` (e.g. a seed's
    latent, (dim,)). Frame `frames` would equal frame 0, so the file loops seamlessly.
    """
    if frames < 1:
        raise ValueError(f"frames must be at least 1, got {frames}")
    if dim < 1:
        raise ValueError(f"dim must be at least 1, got {dim}")
    if not 0.0 < spread <= 1.0:
        raise ValueError(f"spread must be in (0, 1], got {spread}")
    generator = torch.Generator().manual_seed(int(seed))
    a, b, c = torch.randn(3, dim, generator=generator, dtype=torch.float64)
    if center is not None:
        if center.shape != (dim,):
            raise ValueError(f"center must have shape ({dim},), got {tuple(center.shape)}")
        c = center.detach().to("cpu", torch.float64)
    angle = 2 * math.pi * torch.arange(frames, dtype=torch.float64)[:, None] / frames
    circle = torch.cos(angle) * a + torch.sin(angle) * b
    return (math.sqrt(1.0 - spread * spread) * c + spread * circle).float()
