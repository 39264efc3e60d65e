"""The Studio facade: PIL images and paths in, results out. The UI and the CLI import only this module.

A Studio owns the model cache (one module per (name, device, dtype)), picks the device lazily (CUDA when present,
unless STUDIO_DEVICE says otherwise) and turns user settings into calls of the pure ops in `studio.ops`.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import os
import reprlib
import secrets
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence, Sized
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image, PngImagePlugin

from studio import imaging
from studio.files import replaced_when_done
from studio.memory import retain_freed_memory
from studio.ops.common import (  # Cancelled is re-exported: stopped progress raises it
    VIDEO_FORMATS,
    WALK_FRAME_METADATA_KEY,
    Cancelled,
    as_whole_number,
    check_output_side,
    weight_values,
)
from studio.registry import DEFAULT_GENERATOR, DEFAULT_VGG, ModelSpec, builtin_models
from studio.weights import (
    ProgressCallback,
    WeightsUnavailable,
    discover_local_models,
    local_model_problems,
    studio_cache_dir,
    with_dropped_in_weights,
)

if TYPE_CHECKING:
    from torch import Tensor, nn

    from studio.ops.adain import AdaINStylizer
    from studio.ops.directions import LatentDirections

MAX_SEED = 2**32 - 1
PSI_RANGE = (0.0, 1.5)
WALK_PATHS = ("keyframes", "noise-loop")  # through the seeds' latents, or a circle around the first one's
NOISE_LOOP_SPREAD_RANGE = (0.01, 1.0)  # how far a noise loop wanders from its seed's latent (1 = a typical latent)
DIRECTION_AMOUNT_LIMIT = 10.0
MAX_WALK_FRAMES = 3600
# On a CPU a walk synthesizes at most this many pixels per batch (16 frames of 128 px): batching gains little there,
# so a 1024 px model reports progress, and stops, frame by frame instead of every 16 frames (11 s and 4.5 GB apart).
WALK_CPU_BATCH_PIXELS = 16 * 128 * 128
METADATA_KEY = "gan-art-studio"
STYLIZE_METADATA_KEY = "gan-art-studio:stylize"
ADAIN_MODELS = ("adain-encoder", "adain-decoder")  # AdaIN needs both
MASK_NEEDS_ADAIN = "masks are an AdaIN feature: switch the method to AdaIN or remove the mask"


def _max_batch_from_env() -> int:
    raw = os.environ.get("STUDIO_MAX_BATCH", "64")
    try:
        limit = int(raw)
    except ValueError:
        limit = 0
    if limit < 1:
        raise ValueError(f"STUDIO_MAX_BATCH must be a whole number of at least 1, got {raw!r}")
    return limit


@dataclass(frozen=True)
class GenerationSettings:
    """Everything needed to regenerate an artwork; stored in the PNG text chunks."""

    model: str
    seeds: tuple[int, ...]
    psi: float = 1.0
    class_name: str | None = None
    directions: dict[int, float] = field(default_factory=dict)
    size: int | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GenerationSettings:
        """Parse and check settings read from a file: anything out of range raises ValueError saying what."""
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("they are not a JSON object")
            model, seeds, size = data.get("model"), data.get("seeds"), data.get("size")
            class_name, directions = data.get("class_name"), data.get("directions") or {}
            if not isinstance(model, str) or not model:
                raise ValueError("the model name is missing")
            if not isinstance(seeds, list) or not seeds:
                raise ValueError("the seeds are missing")
            if class_name is not None and not isinstance(class_name, str):
                raise ValueError(f"the class must be a name, got {class_name!r}")
            if not isinstance(directions, dict):
                raise ValueError(f"the directions must map an index to an amount, got {directions!r}")
            if size is not None:
                size = _check_output_size(size)
            return cls(
                model=model,
                seeds=tuple(_check_seed(seed) for seed in seeds),
                psi=_check_psi(data.get("psi", 1.0)),
                class_name=class_name,
                directions=_check_directions({_direction_index(key): value for key, value in directions.items()}),
                size=size,
            )
        except ValueError as error:  # json.JSONDecodeError is a ValueError too
            raise ValueError(f"the studio settings stored in this PNG are damaged: {error}") from None


@dataclass(frozen=True)
class GenerationResult:
    """`images[i]` was made from `seeds[i]`; `latents` (N, z_dim) on CPU are the seeds' latents moved by the
    directions, before truncation (each family truncates in its own space, see studio.ops.generation)."""

    images: list[Image.Image]
    seeds: tuple[int, ...]
    latents: Any  # torch.Tensor, kept untyped here so that importing studio.api does not import torch
    settings: GenerationSettings

    def grid(self, columns: int | None = None) -> Image.Image:
        return imaging.make_grid(self.images, columns=columns)

    def save(self, path: str | os.PathLike[str], *, index: int | None = None) -> Path:
        """Save one image (or the grid when index is None and there are several) as PNG with its settings, so that
        `Studio.regenerate` remakes it; JPEG/WebP by suffix, without them."""
        path = Path(path)
        image = self.images[index or 0] if index is not None or len(self.images) == 1 else self.grid()
        if path.suffix.lower() not in ("", ".png"):
            imaging.save_image(image, path)
            return path
        settings = self.settings
        if index is not None:
            settings = GenerationSettings(**{**asdict(settings), "seeds": (self.seeds[index],)})
        save_png_with_settings(image, path, settings)
        return path


@dataclass(frozen=True)
class StylizeResult:
    """A stylized picture, the settings that made it and how long it took."""

    image: Image.Image
    settings: dict[str, Any]
    seconds: float

    def save(self, path: str | os.PathLike[str], *, inputs: Mapping[str, Any] | None = None) -> Path:
        """Save as PNG with the settings (and `inputs`, e.g. the input file names) in a text chunk;
        JPEG/WebP by suffix, without them."""
        path = Path(path)
        if path.suffix.lower() in ("", ".png"):
            info = PngImagePlugin.PngInfo()
            described = {**self.settings, **(inputs or {})}
            info.add_text(STYLIZE_METADATA_KEY, json.dumps(described, sort_keys=True, default=str))
            info.add_text("Software", "GAN Art Studio")
            imaging.save_image(self.image, path, image_format="PNG", pnginfo=info)
        else:
            imaging.save_image(self.image, path)
        return path


def stylize_input_names(content: Any, styles: Sequence[Any], mask: Any = None) -> dict[str, Any]:
    """What a stylized PNG records of its inputs (`StylizeResult.save(inputs=...)`): the file names, not the paths
    or the pixels; None for a picture given as an image or bytes."""

    def name(source: Any) -> str | None:
        return Path(source).name if isinstance(source, (str, os.PathLike)) else None

    return {"content": name(content), "styles": [name(style) for style in styles], "mask": name(mask)}


@dataclass(frozen=True)
class WalkResult:
    """A rendered latent walk: the finished file, the (frames, z_dim) latents used (CPU) and timings."""

    path: Path
    latents: Any  # torch.Tensor
    frames: int
    fps: float
    width: int
    height: int
    seconds: float
    seconds_encoding: float
    settings: dict[str, Any]

    @property
    def stopped_early(self) -> bool:
        """True when a stop kept the walk's first frames: `frames` is then below `settings["frames"]`."""
        return self.frames < self.settings["frames"]

    @property
    def size_note(self) -> str:
        """Why the frames are a pixel larger than the size asked for, when they are ("" otherwise)."""
        asked = self.settings.get("size")
        if asked and max(self.width, self.height) == asked + 1:
            return f"rounded up from {asked} px: {self.settings['format'].upper()} frames need even sides"
        return ""

    @property
    def route(self) -> str:
        """Where the walk goes, in words: "keyframes 3, 14, 15", or what a noise loop or a single seed makes."""
        seeds = self.settings["seeds"]
        if self.settings["path"] == "noise-loop":
            return f"a noise loop around seed {seeds[0]} (spread {self.settings['spread']:g})"
        if len(seeds) == 1:
            return f"a loop around seed {seeds[0]} (one keyframe: give two or more seeds to walk between them)"
        return "keyframes " + ", ".join(map(str, seeds))


def walk_file_stem(model: str, seeds: Sequence[int]) -> str:
    """How a new walk file's name starts: the model and the first six keyframe seeds."""
    return f"walk-{model}-{'-'.join(map(str, list(seeds)[:6]))}"


def walk_suffix(format: str) -> str:
    """The file suffix of a walk format (mp4, webm, gif, zip); ValueError for any other."""
    if str(format).lower() not in VIDEO_FORMATS:
        raise ValueError(f"video format must be one of {VIDEO_FORMATS}, got {format!r}")
    return f".{str(format).lower()}"


def save_png_with_settings(image: Image.Image, path: Path, settings: GenerationSettings) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text(METADATA_KEY, settings.to_json())
    info.add_text("Software", "GAN Art Studio")
    info.add_text("Description", f"{settings.model} seeds={list(settings.seeds)} psi={settings.psi}")
    imaging.save_image(image, path, image_format="PNG", pnginfo=info)


def read_png_settings(path_or_image: str | os.PathLike[str] | Image.Image) -> GenerationSettings:
    """The generation settings stored in a PNG written by the studio; ValueError saying what is wrong otherwise."""
    if isinstance(path_or_image, Image.Image):
        return _settings_in({**path_or_image.info, **getattr(path_or_image, "text", {})})
    path = Path(path_or_image)
    if path.is_file():  # the studio writes its settings before the pixels: read them without decoding (big grids)
        with contextlib.suppress(OSError):
            texts = imaging.png_text_before_pixels(path)
            if METADATA_KEY in texts:
                return _settings_in(texts)
    with imaging.open_image(path_or_image, name="this file", wanted="give a PNG saved from Generate") as image:
        if image.format != "PNG":
            raise ValueError(f"this is a {image.format} file; give a PNG saved from Generate")
        try:
            image.load()  # text chunks after the pixels are read here too
        except (OSError, SyntaxError, EOFError) as error:
            raise ValueError(f"this PNG could not be read ({error}); the file looks truncated or corrupt") from None
        return _settings_in({**image.info, **getattr(image, "text", {})})


def _settings_in(chunks: Mapping[str, Any]) -> GenerationSettings:
    text = chunks.get(METADATA_KEY)
    if not text:
        if chunks.get(STYLIZE_METADATA_KEY):
            raise ValueError("this is a stylized picture; recreating works for artworks saved from Generate")
        if chunks.get(WALK_FRAME_METADATA_KEY):
            raise ValueError(
                "this is a frame of a latent walk; recreating works for artworks saved from Generate (render the walk "
                "again from its keyframe seeds)"
            )
        raise ValueError("this image has no GAN Art Studio settings (it was not generated here, or was re-saved)")
    return GenerationSettings.from_json(text)


def default_device() -> str:
    """STUDIO_DEVICE if set (checked), else CUDA when available, else CPU. Probes CUDA only when first called."""
    import torch

    configured = os.environ.get("STUDIO_DEVICE")
    if not configured:
        return "cuda" if torch.cuda.is_available() else "cpu"
    return check_device(configured, setting="STUDIO_DEVICE")


def check_device(device: Any, *, setting: str = "device") -> str:
    """`device` (text such as "cpu", "CUDA:1", or a torch.device) as the device string the studio runs on; ValueError
    naming `setting` when it is not a device, not cpu or cuda, or a GPU this machine does not have."""
    import torch

    text = str(device).strip().lower()
    try:
        parsed = torch.device(text)
    except RuntimeError:
        raise ValueError(f"{setting}={device!r} is not a device; use cpu or cuda (cuda:1, ...)") from None
    if parsed.type not in ("cpu", "cuda"):
        raise ValueError(f"{setting}={device!r}: the studio runs on cpu or cuda")
    if parsed.type == "cuda" and not (torch.cuda.is_available() and (parsed.index or 0) < torch.cuda.device_count()):
        raise ValueError(f"{setting}={device!r} but this machine has no such CUDA GPU; use cpu")
    return text


class Studio:
    """Generate, stylize and walk. Thread-safe for concurrent requests.

    Each model is loaded (and downloaded) once, under a lock of its own: a request waits only for the models it
    uses, never for another model's download.
    """

    def __init__(self, *, device: str | None = None, weights_dir: str | os.PathLike[str] | None = None) -> None:
        retain_freed_memory()  # the studio's tensors reuse freed memory instead of faulting in fresh pages each step
        self._requested_device = device  # checked on first use, like STUDIO_DEVICE (no torch import here)
        self._device: str | None = None
        self._weights_dir = Path(weights_dir) if weights_dir else None
        self._models: dict[tuple[str, str, str], _LoadedModel] = {}
        self._directions: dict[tuple[str, int], tuple[str, LatentDirections]] = {}  # with the weights' sha256
        self._adain: AdaINStylizer | None = None
        self._gram_cache: Any = None
        self._temporary: Path | None = None
        self._lock = threading.Lock()  # guards `_locks` only; held for no more than a dict look-up
        self._locks: dict[Any, threading.Lock] = {}

    # --- models -----------------------------------------------------------------------------------------------

    @property
    def device(self) -> str:
        if self._device is None:
            requested = self._requested_device
            self._device = default_device() if requested is None else check_device(requested)
        return self._device

    def models(self, kind: str | None = None) -> list[ModelSpec]:
        """Built-in models, then the ones found in the weights folder (a local model may shadow nothing)."""
        specs = {name: with_dropped_in_weights(spec, self._weights_dir) for name, spec in builtin_models().items()}
        for spec in discover_local_models(self._weights_dir):
            specs.setdefault(spec.name, spec)
        return [spec for spec in specs.values() if kind is None or spec.kind == kind]

    def spec(self, name: str) -> ModelSpec:
        for spec in self.models():
            if spec.name == name:
                return spec
        for folder, problem in local_model_problems(self._weights_dir):
            if folder.name == name:
                raise ValueError(f"model {name!r} in {folder} cannot be used: {problem}")
        known = ", ".join(spec.name for spec in self.models())
        raise ValueError(f"unknown model {name!r}; known models: {known}")

    def _temporary_folder(self) -> Path:
        """Where files go that the caller gave no path for: one folder per Studio, not one per call."""
        with self._lock_for("temporary folder"):
            if self._temporary is None:
                import tempfile

                self._temporary = Path(tempfile.mkdtemp(prefix="gan-art-studio-"))
            return self._temporary

    def _lock_for(self, key: Any) -> threading.Lock:
        """The lock serialising the one-off work named by `key` (a model's load, a generator's directions, ...)."""
        with self._lock:
            return self._locks.setdefault(key, threading.Lock())

    def load(self, name: str, *, progress: ProgressCallback | None = None) -> nn.Module:
        """The model on this studio's device, loaded once and cached; loaded again when its weights change on disk
        (a model retrained into its folder, a file dropped into weights/<name>/), so a running app never serves
        weights older than the ones it reports."""
        return self._loaded(name, progress=progress).module

    def weight_digest(self, name: str) -> str:
        """sha256 of the weight file the loaded model came from (as it was when loaded)."""
        return self._loaded(name).digest

    def _loaded(self, name: str, *, progress: ProgressCallback | None = None) -> _LoadedModel:
        spec = self.spec(name)
        key = (name, self.device, "float32")
        loaded = self._models.get(key)  # loaded models are served without waiting for a load in progress
        if loaded is not None and loaded.is_current(spec):
            return loaded
        with self._lock_for(("load", key)):
            loaded = self._models.get(key)
            if loaded is None or not loaded.is_current(spec):
                from studio.loader import fetch_model

                fetched = fetch_model(spec, progress=progress)
                loaded = _LoadedModel(
                    module=fetched.module.to(self.device),
                    spec=spec,
                    path=fetched.path,
                    digest=fetched.digest,
                    file_state=_file_state(fetched.path),
                )
                self._models[key] = loaded
            return loaded

    # --- generate ---------------------------------------------------------------------------------------------

    def generate(
        self,
        *,
        model: str = DEFAULT_GENERATOR,
        seed: int | None = None,
        seeds: Sequence[int] | None = None,
        batch: int = 1,
        psi: float = 1.0,
        class_name: str | None = None,
        directions: Mapping[int, float] | None = None,
        size: int | None = None,
    ) -> GenerationResult:
        """Artworks from seeds. `seeds` wins over `seed`+`batch` (seed, seed+1, ..., wrapping from 4294967295 to
        0); no seed: a random one.

        psi in [0, 1.5] pulls latents towards the generator's mean (see `studio.ops.generation.truncate`);
        `directions` maps a direction index to an amount in standard deviations; `size` resizes the output.
        """
        spec = self.spec(model)
        if spec.kind != "generator":
            raise ValueError(f"{model} is not an image generator (its kind: {spec.kind}); pick a generator")
        chosen = self._choose_seeds(seed=seed, seeds=seeds, batch=batch)
        psi = _check_psi(psi)
        amounts = _check_directions(directions)
        if size is not None:
            size = _check_output_size(size)
        label_index = class_index(spec, class_name)
        from studio.ops import generation

        generator = self.load(model)
        latents = generation.seeded_latents(chosen, z_dim=generator.z_dim)
        if amounts:
            from studio.ops.directions import apply_directions

            latents = apply_directions(latents, self.directions(model), amounts)
        labels = generation.one_hot(label_index, len(spec.classes), count=len(chosen)) if spec.classes else None
        images = generation.synthesize(generator, latents, labels=labels, psi=psi, seeds=chosen, device=self.device)
        pil_images = imaging.signed_to_pil(images)
        if size is not None:
            pil_images = [image.resize((size, size), Image.Resampling.LANCZOS) for image in pil_images]
        settings = GenerationSettings(
            model=model,
            seeds=chosen,
            psi=psi,
            class_name=spec.classes[label_index] if spec.classes else None,
            directions=amounts,
            size=size,
        )
        return GenerationResult(images=pil_images, seeds=chosen, latents=latents, settings=settings)

    def regenerate(self, png: str | os.PathLike[str] | Image.Image) -> GenerationResult:
        """Make the same artwork again from the settings stored in a studio PNG."""
        settings = read_png_settings(png)
        return self.generate(
            model=settings.model,
            seeds=settings.seeds,
            psi=settings.psi,
            class_name=settings.class_name,
            directions=settings.directions,
            size=settings.size,
        )

    def directions(self, model: str, *, count: int = 8) -> LatentDirections:
        """GANSpace-style directions of a generator, computed once and cached on disk by the weights' sha256."""
        key = (model, count)
        with self._lock_for(("directions", key)):
            loaded = self._loaded(model)  # one snapshot: the module and the digest of the same weights
            generator = loaded.module
            known = self._directions.get(key)
            if known is not None and known[0] == loaded.digest:  # not computed for weights since replaced
                return known[1]
            import torch

            from studio.ops import generation
            from studio.ops.directions import LatentDirections, find_directions

            cache = studio_cache_dir() / "directions" / f"{model}-{loaded.digest[:16]}-{count}.pt"
            found: LatentDirections | None = None
            if cache.is_file():
                try:
                    stored = torch.load(cache, map_location="cpu", weights_only=True)
                    found = LatentDirections(vectors=stored["vectors"], explained=stored["explained"])
                except Exception:  # a damaged cache entry is recomputed, never trusted
                    found = None
                if found is not None and not _directions_fit(found, count=count, z_dim=generator.z_dim):
                    found = None
            if found is None:
                spec = self.spec(model)
                found = find_directions(
                    generation.early_features_fn(generator, num_classes=len(spec.classes)),
                    z_dim=generator.z_dim,
                    count=count,
                    device=self.device,
                )
                try:
                    with replaced_when_done(cache, make_folder=True) as temporary:
                        torch.save({"vectors": found.vectors, "explained": found.explained}, temporary)
                except (OSError, RuntimeError):  # a read-only or full cache: keep them for this process only
                    pass
            self._directions[key] = (loaded.digest, found)
            return found

    # --- stylize ----------------------------------------------------------------------------------------------

    def stylize(
        self,
        *,
        content: imaging.ImageSource,
        styles: Sequence[imaging.ImageSource] | imaging.ImageSource,
        style_weights: Sequence[float] | None = None,
        method: str = "gatys",
        strength: float = 1.0,
        preserve_color: str = "none",
        size: int = 512,
        steps: int = 300,
        mask: imaging.ImageSource | None = None,
        seed: int = 0,
        preview: bool = False,
        vgg: str = DEFAULT_VGG,
        on_progress: Callable[[int, int], bool | None] | None = None,
        on_picture: Callable[[int, int, Callable[[], StylizeResult]], None] | None = None,
    ) -> StylizeResult:
        """Paint `content` in the style of `styles` (several are blended by `style_weights`).

        method "gatys": optimisation on VGG19 features (`vgg`, offline by default), `steps` evaluations at full size
        (from 1024 px after a half-size warm-up); strength scales the style weight (0 = content only, 1 = the default
        balance).
        method "adain": feed-forward, real time; strength is alpha (0 = content, 1 = full style); `preview` renders
        a small version for slider drags; `mask` (white = first style, black = second) needs exactly two styles.
        `size` is the output's long side in pixels. `on_progress(done, total)` returning False cancels (`Cancelled`).
        on_picture(done, total, picture_so_far) (Gatys): after every step; `picture_so_far()` renders the best picture
        yet as a StylizeResult whose settings count the full-size steps behind it (a few milliseconds: call it only
        to show or keep the picture).
        """
        # decoded first, so that a bad picture is named before any weights are downloaded
        content = imaging.load_image(content, name="content image", reuse=True)
        style_list: list[imaging.ImageSource] = [
            imaging.load_image(style, name=f"style image {index}", reuse=True)
            for index, style in enumerate(imaging.image_sources(styles), start=1)
        ]
        strength = _check_number(strength, "strength", 0.0, 1.0)
        size = _check_output_size(size)
        if preserve_color not in ("none", "luminance", "histogram"):
            raise ValueError(f"preserve_color must be none, luminance or histogram, got {preserve_color!r}")
        weights = None if style_weights is None else weight_values(style_weights, what="style")
        if method == "adain":
            return self._stylize_adain(content, style_list, weights, strength, preserve_color, size, mask, preview)
        if method != "gatys":
            raise ValueError(f"method must be 'gatys' or 'adain', got {method!r}")
        if mask is not None:
            raise ValueError(MASK_NEEDS_ADAIN)
        from studio.ops.style_transfer import GatysSettings, level_sizes, level_steps, stylize_gatys

        steps = _check_whole(steps, "steps", 1, 5000)
        vgg_kind = self.spec(vgg).kind
        if vgg_kind != "vgg-encoder":
            encoders = ", ".join(spec.name for spec in self.models("vgg-encoder"))
            raise ValueError(f"{vgg} is a {vgg_kind}, not a VGG19 encoder; use one of {encoders}")
        defaults = GatysSettings()
        settings = GatysSettings(
            size=size,
            steps=steps,
            style_weight=defaults.style_weight * strength,
            seed=_check_seed(seed),
            scales=gatys_scales(size),
            preserve_color=preserve_color,
            style_weights=weights,
        )

        def on_step(step: int, total: int, loss: float) -> None:
            if on_progress is not None and on_progress(step, total) is False:
                raise Cancelled(f"style transfer cancelled at step {step} of {total}")

        levels = level_sizes(settings.size, settings.scales, min_side=settings.min_level_side)
        warm_up_steps = sum(level_steps(settings, len(levels))[:-1])  # at coarser sizes, before the full-size steps
        used = _settings_dict(settings, method="gatys", vgg=vgg, strength=strength, warm_up_steps=warm_up_steps)

        def picture_at(step: int, total: int, render: Callable[[], Image.Image]) -> None:
            if on_picture is None:
                return
            done = used | {"steps": max(0, step - warm_up_steps), "planned_steps": steps}

            def picture_so_far() -> StylizeResult:
                return StylizeResult(image=render(), settings=done, seconds=time.perf_counter() - started)

            on_picture(step, total, picture_so_far)

        encoder = self.load(vgg)
        with self._lock_for("gram cache"):
            if self._gram_cache is None:
                from studio.ops.style_transfer import StyleTargetCache

                self._gram_cache = StyleTargetCache()
        started = time.perf_counter()
        result = stylize_gatys(
            content=content,
            styles=style_list,
            vgg=encoder,
            settings=settings,
            on_step=on_step,
            on_picture=picture_at,
            cache=self._gram_cache,
        )
        return StylizeResult(image=result.image, settings=used, seconds=result.seconds)

    def _stylize_adain(self, content, styles, weights, strength, preserve_color, size, mask, preview) -> StylizeResult:
        from studio.ops.adain import AdaINSettings

        if mask is not None:
            mask = imaging.load_mask(mask, name="mask", reuse=True)
        settings = AdaINSettings(
            alpha=strength,
            content_size=size,
            style_size=_adain_style_size(),
            style_weights=weights,
            preserve_color=preserve_color,
        )
        stylizer = self.adain()
        render = stylizer.preview if preview else stylizer.stylize
        result = render(content=content, styles=styles, settings=settings, mask=mask)
        return StylizeResult(
            image=result.image,
            settings=_settings_dict(settings, method="adain", preview=preview),
            seconds=result.seconds,
        )

    def adain(self) -> AdaINStylizer:
        """The AdaIN encoder + decoder with its feature cache (weights fetched on first use)."""
        with self._lock_for("adain"):
            encoder, decoder = self.load_adain()
            if self._adain is None or self._adain.encoder is not encoder or self._adain.decoder is not decoder:
                from studio.ops.adain import AdaINStylizer

                self._adain = AdaINStylizer(encoder=encoder, decoder=decoder)  # new weights: a fresh feature cache
            return self._adain

    def load_adain(
        self, progress_for: Callable[[str], ProgressCallback | None] | None = None
    ) -> tuple[nn.Module, nn.Module]:
        """AdaIN's encoder and decoder (`load` each, `progress_for(name)` reporting its download). When neither file
        is on this machine the error names both, so that one fetch gets everything AdaIN needs."""
        from studio.weights import is_cached

        encoder_name, decoder_name = ADAIN_MODELS
        try:
            encoder = self.load(encoder_name, progress=progress_for(encoder_name) if progress_for else None)
            decoder = self.load(decoder_name, progress=progress_for(decoder_name) if progress_for else None)
        except WeightsUnavailable as error:
            if any(is_cached(self.spec(name)) for name in ADAIN_MODELS):
                raise
            raise WeightsUnavailable(
                f"{error}. AdaIN needs both adain-encoder and adain-decoder, and neither is on this machine: "
                "python -m studio weights fetch adain-encoder adain-decoder"
            ) from None
        return encoder, decoder

    def _walk_stylizer(self, style: imaging.ImageSource, *, strength: float) -> Callable[[Tensor], Tensor]:
        """A frame transform for walks: AdaIN with the style's statistics computed once."""
        from studio.ops.adain import ENCODER_TAP, blend_styles

        alpha = _check_number(strength, "style strength", 0.0, 1.0)
        # decoded first, so that a bad file is named before any download
        style_image = imaging.load_image(style, name="style image", reuse=True)
        stylizer = self.adain()
        stats = stylizer.style_stats(style_image, size=_adain_style_size())

        def transform(images: Tensor) -> Tensor:
            unit = imaging.signed_to_unit(images).to(stylizer.device)
            features = stylizer.encoder(unit, [ENCODER_TAP])[ENCODER_TAP]
            target = blend_styles(features, [stats], [1.0], alpha=alpha)
            decoder_dtype = next(stylizer.decoder.parameters()).dtype
            decoded = stylizer.decoder(target.to(decoder_dtype))[:, :, : unit.shape[2], : unit.shape[3]]
            return imaging.unit_to_signed(decoded.float().clamp(0, 1))

        return transform

    # --- walk -------------------------------------------------------------------------------------------------

    def walk(
        self,
        *,
        model: str = DEFAULT_GENERATOR,
        seeds: Sequence[int] = (0, 1, 2),
        frames: int = 120,
        fps: float = 30,
        loop: bool = True,
        easing: str = "spline",
        path: str = "keyframes",
        spread: float = 1.0,
        psi: float = 1.0,
        class_name: str | Sequence[str] | None = None,
        directions: Mapping[int, float] | None = None,
        format: str | None = None,
        size: int | None = None,
        style: imaging.ImageSource | None = None,
        style_strength: float = 1.0,
        out: str | os.PathLike[str] | None = None,
        on_progress: Callable[[int, int], bool | None] | None = None,
        keep_partial: bool = False,
    ) -> WalkResult:
        """Render a latent walk to MP4 / GIF / WebM / PNG zip and return the file.

        path="keyframes": through the seeds' latents (slerp with `easing`: "spline" | "linear" | "ease-in-out"),
        back to the first when `loop`; path="noise-loop": a circular walk seeded by seeds[0] (`spread` 0..1 =
        how far it wanders from that seed's image). `frames` is the number of frames in the file. `class_name`
        may name one class per keyframe for conditional models. `style`: an image to stylize every frame with
        (AdaIN, style features computed once). `on_progress(done, total)` returning False cancels (`Cancelled`),
        leaving no file behind; with `keep_partial` the file keeps the frames made so far instead (`frames` counts
        them, `settings["frames"]` the planned ones, `stopped_early` is True). `out`: the file to write (its suffix
        may give the format); None writes a new file in this Studio's temporary folder (one per Studio, made on
        first use).
        """
        from studio.ops import generation, video

        spec = self.spec(model)
        if spec.kind != "generator":
            raise ValueError(f"{model} is not an image generator (its kind: {spec.kind}); pick a generator")
        from studio.ops.interpolation import check_easing

        if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
            raise ValueError(f"seeds must be a list of whole numbers such as [3, 14, 15], got {seeds!r}")
        check_easing(easing)  # here too: noise loops and one-seed loops never reach the easing
        keyframe_seeds = tuple(_check_seed(seed) for seed in seeds)
        if not keyframe_seeds:
            raise ValueError("give at least one keyframe seed")
        if path == "noise-loop" and len(keyframe_seeds) > 1:
            raise ValueError(
                f"a noise loop circles one seed: give one (seeds=[{keyframe_seeds[0]}]), or path='keyframes' to go "
                "through them all"
            )
        if path == "keyframes" and len(keyframe_seeds) < 2 and not loop:
            raise ValueError(
                "a walk needs at least two keyframe seeds; with one, turn on the loop (--loop; on the page: Loop "
                "back to the first keyframe) to circle around it"
            )
        frames = _check_whole(frames, "frames", 2, MAX_WALK_FRAMES)
        fps = _check_number(fps, "fps", 1, 60)
        psi = _check_psi(psi)
        amounts = _check_directions(directions)
        if size is not None:
            size = _check_output_size(size)
        if path not in WALK_PATHS:
            raise ValueError(f"path must be one of {WALK_PATHS}, got {path!r}")
        if path == "noise-loop":
            spread = _check_number(spread, "spread", *NOISE_LOOP_SPREAD_RANGE)
        generator = self.load(model)
        latents = _walk_latents(
            keyframe_seeds, z_dim=generator.z_dim, frames=frames, loop=loop, easing=easing, path=path, spread=spread
        )
        if amounts:
            from studio.ops.directions import apply_directions

            latents = apply_directions(latents, self.directions(model), amounts)
        labels = self._walk_labels(
            spec, class_name, keyframe_count=len(keyframe_seeds), frames=frames, loop=loop, easing=easing, path=path
        )
        frame_noise = self._walk_noise(keyframe_seeds, frames=frames, loop=loop, easing=easing, path=path)
        frames_made = 0  # render_walk synthesizes the frames in order, each once

        def synthesize(z: Tensor, y: Tensor | None = None) -> Tensor:
            nonlocal frames_made
            noise = frame_noise(frames_made, z.shape[0]) if generation.uses_noise(generator) else None
            frames_made += z.shape[0]
            return generation.synthesize(generator, z, labels=y, psi=psi, noise=noise, device=self.device)

        frame_transform = None
        if style is not None:
            frame_transform = self._walk_stylizer(style, strength=style_strength)
        if out is None:
            name = f"{walk_file_stem(model, keyframe_seeds)}-{secrets.token_hex(4)}{walk_suffix(format or 'mp4')}"
            out = self._temporary_folder() / name
        rendered = video.render_walk(
            latents,
            synthesize=synthesize,
            out=out,
            labels=labels,
            fps=fps,
            format=format,
            size=size,
            frame_transform=frame_transform,
            on_progress=on_progress,
            keep_partial=keep_partial,
            max_batch_pixels=WALK_CPU_BATCH_PIXELS if self.device.partition(":")[0] == "cpu" else None,
        )
        settings = {
            "model": model,
            "seeds": list(keyframe_seeds),
            "frames": frames,
            "fps": fps,
            "loop": loop,
            "easing": easing,
            "path": path,
            "spread": spread if path == "noise-loop" else None,
            "psi": psi,
            "class_name": class_name,
            "directions": amounts,
            "format": rendered.format,
            "size": size,
            "styled": style is not None,
        }
        return WalkResult(
            path=rendered.path,
            latents=latents,
            frames=rendered.frames,
            fps=rendered.fps,
            width=rendered.width,
            height=rendered.height,
            seconds=rendered.seconds_generating + rendered.seconds_encoding,
            seconds_encoding=rendered.seconds_encoding,
            settings=settings,
        )

    @staticmethod
    def _walk_noise(
        seeds: tuple[int, ...], *, frames: int, loop: bool, easing: str, path: str
    ) -> Callable[[int, int], list[Any]]:
        """(first frame, count) -> fresh noise sources for those frames of a walk, for generators that inject noise.
        The noise changes smoothly and never flickers: between two keyframes it blends from the one seed's noise to
        the other's (`NoiseBlend`), so each keyframe frame is the image Generate makes of its seed; a noise loop (or
        a loop around one seed) keeps that seed's noise throughout."""
        from studio.ops import generation, interpolation

        if path == "noise-loop" or len(seeds) == 1:
            return lambda first, count: generation.noise_generators([seeds[0]] * count)
        starts, ends, weights = interpolation.keyframe_blends(len(seeds), frames=frames, loop=loop, easing=easing)

        def noise_for(first: int, count: int) -> list[Any]:
            chosen = slice(first, first + count)
            return generation.blended_noise(
                [seeds[i] for i in starts[chosen].tolist()],
                [seeds[i] for i in ends[chosen].tolist()],
                weights[chosen].tolist(),
            )

        return noise_for

    def _walk_labels(
        self,
        spec: ModelSpec,
        class_name: str | Sequence[str] | None,
        *,
        keyframe_count: int,
        frames: int,
        loop: bool,
        easing: str,
        path: str,
    ) -> Tensor | None:
        if not spec.classes:
            if class_name not in (None, "") and class_name != []:
                raise ValueError(f"{spec.name} is not class-conditional; leave the class empty")
            return None
        import torch

        from studio.ops import generation, interpolation

        if path == "noise-loop" and not (class_name is None or isinstance(class_name, str)):
            names = list(class_name)
            if len(names) != 1:
                raise ValueError(f"a noise loop circles one seed, so it takes a single class, got {len(names)}")
            if names[0] in (None, ""):  # an empty slot would silently take the first class
                raise ValueError("the noise loop's class is empty: name a class, or leave the class out")
            class_name = names[0]
        if class_name is None or isinstance(class_name, str):
            return generation.one_hot(class_index(spec, class_name), len(spec.classes), count=1)[0]
        names = list(class_name)
        if len(names) != keyframe_count:
            raise ValueError(f"give one class per keyframe ({keyframe_count}), or a single class, got {len(names)}")
        for index, name in enumerate(names):
            if name in (None, ""):  # an empty slot would silently take the first class
                raise ValueError(f"keyframe {index + 1} has no class; give one class per keyframe, or a single one")
        keys = torch.stack([generation.one_hot(class_index(spec, n), len(spec.classes), count=1)[0] for n in names])
        return interpolation.label_path(keys, frames=frames, loop=loop, easing=easing)

    # --- helpers ----------------------------------------------------------------------------------------------

    def _choose_seeds(self, *, seed: int | None, seeds: Sequence[int] | None, batch: int) -> tuple[int, ...]:
        limit = _max_batch_from_env()

        def within_limit(count: int) -> None:  # checked before any seed is made: a count may be absurd
            if count > limit:
                raise ValueError(f"batch of {count} is above the limit of {limit}; lower it or raise STUDIO_MAX_BATCH")

        if seeds is not None:
            if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Iterable):
                raise ValueError(f"seeds must be a list of whole numbers, got {seeds!r}")
            if isinstance(seeds, Sized):
                within_limit(len(seeds))
            chosen = tuple(_check_seed(value) for value in itertools.islice(seeds, limit + 1))
            if not chosen:
                raise ValueError("give at least one seed")
            within_limit(len(chosen))
            return chosen
        count = as_whole_number(batch)
        if count is None or count < 1:
            raise ValueError(f"batch must be a whole number >= 1, got {batch!r}")
        within_limit(count)
        start = secrets.randbelow(MAX_SEED + 1) if seed is None else _check_seed(seed)
        return tuple((start + offset) % (MAX_SEED + 1) for offset in range(count))


def class_index(spec: ModelSpec, class_name: str | None) -> int:
    """The one-hot position of `class_name` in a conditional model (0 for none); ValueError naming the choices."""
    if not spec.classes:
        if class_name not in (None, ""):
            raise ValueError(f"{spec.name} is not class-conditional; leave the class empty")
        return 0
    if class_name in (None, ""):
        return 0
    if class_name not in spec.classes:
        raise ValueError(f"{spec.name} has no class {class_name!r}; choose one of {', '.join(spec.classes)}")
    return spec.classes.index(class_name)


def _walk_latents(
    seeds: tuple[int, ...], *, z_dim: int, frames: int, loop: bool, easing: str, path: str, spread: float
) -> Tensor:
    """(frames, z_dim) latents: slerp through the seeds' latents, or a noise loop around the first seed's (also
    used for a keyframe loop of a single seed, which has nowhere else to go)."""
    from studio.ops import generation, interpolation

    keys = generation.seeded_latents(seeds, z_dim=z_dim)
    if path == "noise-loop" or len(seeds) == 1:
        radius = spread if path == "noise-loop" else 0.35
        return interpolation.noise_loop(frames=frames, dim=z_dim, seed=seeds[0], spread=radius, center=keys[0])
    return interpolation.keyframe_path(keys, frames=frames, loop=loop, easing=easing)


@dataclass(frozen=True)
class _LoadedModel:
    """A model loaded by `Studio.load` and the weight file it came from, as that file was then."""

    module: nn.Module
    spec: ModelSpec
    path: Path
    digest: str  # sha256 of the file as it was loaded
    file_state: tuple[int, int, int] | None

    def is_current(self, spec: ModelSpec) -> bool:
        """Whether `spec` (looked up now) still names these weights and the file is unchanged."""
        return spec == self.spec and _file_state(self.path) == self.file_state


def _file_state(path: Path) -> tuple[int, int, int] | None:
    """What tells a file rewritten or replaced from the one read: inode, size and modification time."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def _directions_fit(directions: LatentDirections, *, count: int, z_dim: int) -> bool:
    """Cached directions are used only when they are what was asked for: (count, z_dim) finite vectors."""
    vectors, explained = directions.vectors, directions.explained
    return (
        tuple(vectors.shape) == (count, z_dim)
        and tuple(explained.shape) == (count,)
        and bool(vectors.isfinite().all())
        and bool(explained.isfinite().all())
    )


def _adain_style_size() -> int:
    """The long side AdaIN encodes styles at: its default (512 px), or the output limit when that is smaller."""
    from studio.ops.adain import AdaINSettings

    return min(AdaINSettings.style_size, imaging.max_side_from_env())


def gatys_scales(size: int) -> int:
    """Coarse-to-fine levels for a Gatys output of long side `size`. With the spectral parametrisation a coarse level
    pays for itself only at large sizes (benchmarks/bench_stylize.py, 2 CPU cores): one scale was fastest at 256 and
    512 px; at 1024 px starting from a 512 px result reached the same loss 1.2x sooner, and a third level did not."""
    return 1 if size < 1024 else 2


def _settings_dict(settings: Any, **extra: Any) -> dict[str, Any]:
    return {**asdict(settings), **extra}


def _check_whole(value: Any, name: str, low: int, high: int) -> int:
    number = as_whole_number(value)
    if number is None:
        raise ValueError(f"{name} must be a whole number between {low} and {high}, got {reprlib.repr(value)}")
    if not low <= number <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {reprlib.repr(value)}")
    return number


def _check_number(value: Any, name: str, low: float, high: float) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} must be a number between {low} and {high}, got {reprlib.repr(value)}") from None
    if not math.isfinite(number) or not low <= number <= high:
        raise ValueError(f"{name} must be between {low} and {high}, got {reprlib.repr(value)}")
    return number


def _check_seed(seed: Any) -> int:
    number = as_whole_number(seed)
    if number is None:
        raise ValueError(f"seed must be a whole number between 0 and {MAX_SEED}, got {seed!r}")
    if not 0 <= number <= MAX_SEED:
        raise ValueError(f"seed must be between 0 and {MAX_SEED}, got {number}")
    return number


def _check_psi(psi: Any) -> float:
    try:
        value = float(psi)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(
            f"psi must be a number between {PSI_RANGE[0]} and {PSI_RANGE[1]}, got {reprlib.repr(psi)}"
        ) from None
    if not math.isfinite(value) or not PSI_RANGE[0] <= value <= PSI_RANGE[1]:
        raise ValueError(f"psi must be between {PSI_RANGE[0]} and {PSI_RANGE[1]}, got {reprlib.repr(psi)}")
    return value


def _direction_index(key: Any) -> int:
    """A direction's index: a whole number >= 0 (JSON stores it as text)."""
    try:
        index = int(key)
    except (TypeError, ValueError, OverflowError):
        index = -1
    if isinstance(key, bool) or index < 0 or (isinstance(key, float) and not key.is_integer()):
        raise ValueError(f"a direction is named by its index, a whole number from 0, got {key!r}")
    return index


def _check_directions(directions: Mapping[int, float] | None) -> dict[int, float]:
    if directions is not None and not isinstance(directions, Mapping):
        raise ValueError(f"directions map a direction index to an amount, e.g. {{0: 2.5}}; got {directions!r}")
    checked: dict[int, float] = {}
    for index, amount in (directions or {}).items():
        index = _direction_index(index)
        try:
            value = float(amount)
        except (TypeError, ValueError, OverflowError):
            raise ValueError(f"direction {index} amount must be a number, got {reprlib.repr(amount)}") from None
        if not math.isfinite(value) or abs(value) > DIRECTION_AMOUNT_LIMIT:
            raise ValueError(
                f"direction {index} amount must be between -{DIRECTION_AMOUNT_LIMIT} and {DIRECTION_AMOUNT_LIMIT}, "
                f"got {reprlib.repr(amount)}"
            )
        if value != 0.0:
            checked[index] = value
    return checked


def _check_output_size(size: Any) -> int:
    return check_output_side(size, imaging.max_side_from_env())


ProgressFn = Callable[[float, str], None]
