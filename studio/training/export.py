"""Turn a trained generator into a model folder the studio (and the Hub) understands.

    weights/<name>/
      model.safetensors   the (EMA) generator's state dict, keys in the DCGANGenerator layout (main.{i}.*)
      config.json         what studio.weights.spec_from_export reads (architecture, config, classes, sha256, ...)
      README.md           a model card: what it is, how it was trained, how to use it
      samples.png         a sample grid, when given

`push_to_hub` uploads exactly those files to a Hugging Face model repository.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from studio.files import replaced_when_done, write_text_when_done
from studio.models.dcgan import DCGANGenerator
from studio.weights import is_offline, sha256_of

WEIGHTS_FILE = "model.safetensors"
EXPORTED_FILES = (WEIGHTS_FILE, "config.json", "README.md", "samples.png")


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    weights: Path
    config: Path
    card: Path
    sha256: str


class HubUploadError(RuntimeError):
    """The upload to the Hub failed; the message says why and what to do."""


def export_generator(
    generator: DCGANGenerator,
    *,
    out_dir: str | os.PathLike[str],
    name: str,
    classes: tuple[str, ...] = (),
    description: str = "",
    license: str = "",
    credit: str = "trained with GAN Art Studio",
    training: dict[str, Any] | None = None,
    samples: str | os.PathLike[str] | None = None,
) -> ExportResult:
    """Write model.safetensors + config.json + README.md (+ samples.png) into `out_dir` (created if needed).

    The weights are stored in float32 on CPU. `training` (settings, steps, metrics) goes into config.json and the
    card as given (JSON-serialisable values only).
    """
    if len(classes) != generator.config.num_classes:
        raise ValueError(f"{len(classes)} class names for a generator with {generator.config.num_classes} classes")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    state = {
        key: value.detach().to("cpu", torch.float32 if value.is_floating_point() else value.dtype).contiguous()
        for key, value in generator.state_dict().items()
    }
    weights = folder / WEIGHTS_FILE
    with replaced_when_done(weights) as temporary:
        save_file(state, str(temporary), metadata={"format": "pt", "architecture": "dcgan", "name": name})
    digest = sha256_of(weights)
    config = generator.config
    convention = (
        f"z ~ N(0, I) of {config.z_dim}" + (" + one-hot class" if classes else "") + "; tanh output in [-1, 1]"
    )
    meta = {
        "name": name,
        "kind": "generator",
        "architecture": "dcgan",
        "key_format": "studio",
        "config": asdict(config),
        "classes": list(classes),
        "convention": convention,
        "description": description or f"DCGAN trained on your images, {config.resolution} px",
        "license": license or "same as the training images",
        "credit": credit,
        "weights": WEIGHTS_FILE,
        "sha256": digest,
        "training": training or {},
    }
    config_path = folder / "config.json"
    write_text_when_done(config_path, json.dumps(meta, indent=2) + "\n")
    if samples is not None and Path(samples).resolve() != (folder / "samples.png").resolve():
        shutil.copyfile(samples, folder / "samples.png")
    card = folder / "README.md"
    write_text_when_done(card, model_card(meta, has_samples=(folder / "samples.png").is_file()))
    return ExportResult(folder, weights, config_path, card, digest)


def model_card(meta: dict[str, Any], *, has_samples: bool) -> str:
    """A Hugging Face model card (YAML front matter + markdown) from config.json's content."""
    config, training = meta["config"], meta.get("training", {})
    task = "class-conditional-image-generation" if meta["classes"] else "unconditional-image-generation"
    lines = [
        "---",
        "library_name: pytorch",
        f"tags: [gan, dcgan, art, {task}, gan-art-studio]",
        "---",
        "",
        f"# {meta['name']}",
        "",
        meta["description"],
        "",
    ]
    if has_samples:
        lines += ["![samples](samples.png)", ""]
    lines += [
        "## Model",
        "",
        f"- DCGAN generator (Radford et al. 2016), {config['resolution']} px, latent size {config['z_dim']}, "
        f"{config['base_channels']} base channels.",
        f"- Input/output: {meta['convention']}.",
    ]
    if meta["classes"]:
        lines.append(f"- Conditional on {len(meta['classes'])} classes: {', '.join(meta['classes'])}.")
    lines += [
        f"- Weights: `{meta['weights']}` (sha256 `{meta['sha256']}`), keys `main.{{i}}.*`; the exponential moving "
        "average of the generator, with BatchNorm statistics re-measured for those weights.",
        f"- Licence: {meta['license']}. Credit: {meta['credit']}.",
        "",
        "## Use",
        "",
        f"Put this folder in `weights/` and pick **{meta['name']}** in GAN Art Studio, or:",
        "",
        "```python",
        "import json, torch",
        "from safetensors.torch import load_file",
        "from studio.models.dcgan import DCGANConfig, DCGANGenerator",
        "",
        'meta = json.load(open("config.json"))',
        'model = DCGANGenerator(DCGANConfig(**meta["config"])).eval()',
        'model.load_state_dict(load_file("model.safetensors"))',
        f"z = torch.randn(16, {config['z_dim']})",
        "images = model(z"
        + (", torch.eye(len(meta['classes']))[torch.zeros(16, dtype=torch.long)]" if meta["classes"] else "")
        + ")  # (16, 3, R, R) in [-1, 1]",
        "```",
        "",
    ]
    if training:
        lines += ["## Training", ""]
        settings = training.get("settings", {})
        if "steps" in training:
            lines.append(f"- Steps: {training['steps']}; images: {training.get('images', '?')}.")
        if settings:
            shown = ", ".join(f"{key}={value}" for key, value in settings.items() if key not in ("data", "out"))
            lines.append(f"- Settings: {shown}.")
        history = training.get("metrics", [])
        if history:
            names = sorted({key for entry in history for key in entry if key != "step"})
            lines += ["", "| step | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
            for entry in history:
                values = " | ".join(f"{entry[n]:.2f}" if isinstance(entry.get(n), float) else "-" for n in names)
                lines.append(f"| {entry['step']} | {values} |")
            lines += [
                "",
                "vgg_fd: Fréchet distance between VGG19 relu4_1 features of generated and training images (lower is "
                "closer; comparable within this run only). fid: Inception-v3 FID against the training folder.",
            ]
        lines.append("")
    return "\n".join(lines)


def check_push_target(repo_id: str) -> None:
    """What can be known about an upload before training for it: ValueError for a malformed repository id,
    HubUploadError when offline."""
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"{repo_id!r} is not a Hub repository id such as your-name/my-gan: {error}") from None
    if "/" not in repo_id:
        raise ValueError(f"{repo_id!r} is not a Hub repository id: give the owner too, e.g. your-name/{repo_id}")
    if is_offline():
        raise HubUploadError(
            "cannot push to the Hugging Face Hub while offline (HF_HUB_OFFLINE or STUDIO_OFFLINE is set); "
            "unset it on a machine with a network"
        )


def push_to_hub(
    folder: str | os.PathLike[str], *, repo_id: str, token: str | None = None, private: bool = False
) -> str:
    """Upload an exported model folder (the files in EXPORTED_FILES) to a Hub model repo; returns the commit URL.

    Raises ValueError for a folder that is not an export, HubUploadError when offline, not logged in or the Hub
    cannot be reached.
    """
    path = Path(folder)
    if not (path / "config.json").is_file() or not (path / WEIGHTS_FILE).is_file():
        raise ValueError(f"{path} is not an exported model (it needs config.json and {WEIGHTS_FILE}); train first")
    check_push_target(repo_id)
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi(token=token)
    try:
        api.create_repo(repo_id, repo_type="model", private=private, exist_ok=True)
        commit = api.upload_folder(
            folder_path=str(path),
            repo_id=repo_id,
            repo_type="model",
            allow_patterns=list(EXPORTED_FILES),
            commit_message="Upload DCGAN trained with GAN Art Studio",
        )
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        if status in (401, 403):
            raise HubUploadError(
                f"the Hub refused the upload to {repo_id} (HTTP {status}); log in with `hf auth login` using a token "
                "with write access, or pass token=..."
            ) from None
        raise HubUploadError(f"the Hub answered HTTP {status} while uploading to {repo_id}: {error}") from None
    except Exception as error:  # the Hub client's transport errors (httpx) do not derive from OSError
        raise HubUploadError(
            f"could not reach the Hugging Face Hub to upload {repo_id} ({type(error).__name__}: {error}); "
            "check your network connection"
        ) from None
    return str(getattr(commit, "commit_url", commit))
