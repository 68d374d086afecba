"""A task's runtime spec, declared once: :class:`RuntimeTask` (what the manifest schema, the
Predictor, the server, the CLI, export, doctor and the benchmarks read of a task), the output
contract it holds (:class:`Contract` of :class:`Variant` of :class:`Tensor`), its post-processing
:class:`Options`, its :class:`Architecture` catalogue, and :class:`ImageResult`.

A task's runtime module ``visionrt.runtime.tasks.<task>`` (numpy only) defines its functions and
one instance ``TASK = RuntimeTask(...)`` naming them; nothing outside it tests the task's name.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from .. import folders
from ..errors import InputError
from ..render import side_by_side

if TYPE_CHECKING:  # the manifest's schema reads the specs (prediction options, task names)
    from ..manifest import Manifest

#: Parity tolerance of the task metrics: one absolute tolerance for every metric, or per metric
#: ``{name: (atol, rtol)}`` (metrics not named: exactly equal).
MetricTolerance = float | dict[str, tuple[float, float]]


@dataclasses.dataclass(frozen=True)
class Architecture:
    """One trainable architecture of a task: its ``name`` (the manifest's ``model["arch"]``, the
    CLI's ``--model``), the plugin ops its TensorRT engine needs (none: any TensorRT takes it)
    and whether it is the task's ``default`` (the one ``visionrt train`` picks)."""

    name: str
    plugin_ops: tuple[str, ...] = ()
    default: bool = False


# post-processing options ---------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Option:
    """One post-processing option a prediction takes (``predict(..., name=value)``, ``--name-flag``,
    ``?name=``): ``kind`` ``int`` or ``float``, accepted range ``[low, high]`` (``None``: open),
    ``help`` what it does, ``default`` when the manifest's ``postprocess`` has no value for it
    (``None``: the manifest must have one). ``None`` given means that default."""

    name: str
    kind: type
    help: str
    low: float | None = None
    high: float | None = None
    default: Any = None

    @property
    def expected(self) -> str:
        """What a value must be, in words (the error messages' and the manifest schema's)."""
        if self.kind is int and self.low == 1 and self.high is None:
            return "a positive integer (at least 1)"
        noun = "an integer" if self.kind is int else "a number"
        if self.low is not None and self.high is not None:
            return f"{noun} in [{self.low:g}, {self.high:g}]"
        return f"{noun} >= {self.low:g}" if self.low is not None else noun

    def accepts(self, value: Any) -> bool:
        integral = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
        number = integral or isinstance(value, (float, np.floating))
        if not (integral if self.kind is int else number):
            return False
        return (self.low is None or value >= self.low) and (self.high is None or value <= self.high)  # NaN: False

    def check(self, value: Any, shown: str | None = None) -> int | float:
        """``value`` as a plain ``int``/``float``, or :class:`InputError`: the one wording of every
        entry point, showing the value as given (``shown``: the text it was parsed from)."""
        if self.accepts(value):
            return self.kind(value)
        shown = shown or (repr(value) if isinstance(value, str) else str(value))
        number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
        if self.kind is float and number:
            problem = f"is outside [{self.low:g}, {self.high:g}]" if None not in (self.low, self.high) \
                else f"is not {self.expected}"
        else:
            problem = f"is not {self.expected}"
        raise InputError(f"{self.name} {shown} {problem}", fix=f"{self.name}: {self.help}, {self.expected}")

    def parse(self, text: str) -> int | float:
        """A value given as text (a CLI flag, a query parameter) -> :meth:`check` of it."""
        for kind in (self.kind, float):  # "2.5" for a count: refused as the number it is
            try:
                value = kind(text)
            except ValueError:
                continue
            return self.check(value, text)
        return self.check(text)


@dataclasses.dataclass(frozen=True)
class Options:
    """A task's post-processing options, in the order ``--help`` lists them."""

    items: tuple[Option, ...] = ()

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.items]

    def check(self, task: str, given: Mapping[str, Any]) -> dict[str, Any]:
        """The given options checked (:class:`InputError` for an unknown name or a bad value) and
        typed; ``None`` values (the manifest's default) left out."""
        known = {o.name: o for o in self.items}
        unknown = sorted(set(given) - set(known))
        if unknown:
            raise InputError(f"{task} predictions take no option {', '.join(unknown)}",
                             fix=f"its options are: {', '.join(known) or 'none'}")
        return {name: known[name].check(value) for name, value in given.items() if value is not None}

    def parse(self, task: str, texts: Mapping[str, str]) -> dict[str, Any]:
        """Options given as text (query parameters), checked as :meth:`check` does."""
        self.check(task, {name: None for name in texts})
        known = {o.name: o for o in self.items}
        return {name: known[name].parse(text) for name, text in texts.items()}

    def resolve(self, manifest: Manifest, given: Mapping[str, Any]) -> dict[str, Any]:
        """Every option's value for one post-processing call: the given ones (checked), else the
        manifest's ``postprocess`` value, else the option's default."""
        checked = self.check(manifest.task, given)
        return {o.name: checked[o.name] if o.name in checked else manifest.postprocess.get(o.name, o.default)
                for o in self.items}


# output contract -------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Tensor:
    """One output the runtime reads: ``shape`` in the symbols of :mod:`~visionrt.runtime.contracts`,
    ``kind`` ``float`` or ``int`` (any width), ``meaning`` what it holds."""

    name: str
    shape: tuple[str | int, ...]
    kind: str
    meaning: str

    def text(self) -> str:
        return f"{self.name} [{', '.join(map(str, self.shape))}] {self.kind}"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One accepted set of outputs; ``by_name``: the runtime finds them by these names (else by
    position, names free); ``postprocess``: manifest parameters it needs, with their meaning."""

    label: str
    outputs: tuple[Tensor, ...]
    by_name: bool
    postprocess: dict[str, str] = dataclasses.field(default_factory=dict)


#: Manifest parameters of a model that takes images of any size.
IMAGE_SIDES = {"min_side": "smallest accepted image side (px)", "max_side": "largest accepted image side (px)"}


def _no_defaults(variant: Variant, classes: list[str], bound: dict[str, int]) -> dict[str, Any]:
    return {}


@dataclasses.dataclass(frozen=True)
class Contract:
    """What a model of the task must be: input ``[N, 3, H, W]`` float32 RGB of a ``fixed`` size
    (images are resized to it) or of ``any`` size; what ``classes`` name (empty: none); its output
    variants; ``defaults(variant, classes, bound)``: post-processing parameters an imported model
    gets where a default makes sense (``bound``: the shape symbols its outputs fixed)."""

    image_size: str
    classes: str
    variants: tuple[Variant, ...]
    defaults: Callable[[Variant, list[str], dict[str, int]], dict[str, Any]] = _no_defaults


# the spec --------------------------------------------------------------------------------------
def _unchanged(image: np.ndarray, manifest: Manifest) -> np.ndarray:
    return image


def _by_raw_outputs(reference, candidate, targets, manifest) -> None:
    return None


def _drawn(result: Any, image: np.ndarray, target: Any) -> np.ndarray:
    return result.draw(image)


def _training_images(data_dir: str | Path, manifest: Manifest) -> list[Path]:
    return folders.training_images(data_dir)


@dataclasses.dataclass(frozen=True)
class Imported:
    """How ``visionrt import`` reads a model of the task that another exporter wrote, beyond its
    contract: ``output_layouts``, the raw layouts it maps onto the contract
    (:data:`~visionrt.runtime.output_adapters.LAYOUTS`); ``one_channel_layout``, the layout of a
    two-class model's single-channel output (a Sigmoid map), if any; ``scores``, what the outputs
    are where the graph's last op does not say (``"logits"`` or ``"probabilities"``);
    ``own_targets(outputs, manifest)``, targets made from a model's own outputs, against which its
    fp16/int8 files are judged (no labels, no PyTorch: fp32's predictions); ``None``: not judged."""

    output_layouts: tuple[str, ...] = ()
    one_channel_layout: str | None = None
    scores: str = "logits"
    own_targets: Callable[[dict[str, np.ndarray], Manifest], np.ndarray] | None = None


@dataclasses.dataclass(frozen=True, kw_only=True)
class RuntimeTask:
    """A task's runtime spec (numpy only). Results (what ``postprocess`` returns, one per image)
    have ``to_dict()``, ``summary()`` and ``draw(image) -> RGB uint8``; those of a task with
    ``image_result`` are :class:`ImageResult` (``output() -> RGB uint8``, what ``predict --save-dir``
    and the server's ``output=1`` give).

    The functions (``manifest``: the model's :class:`~visionrt.runtime.manifest.Manifest`):

    * ``postprocess(outputs, manifest, image_sizes, **options) -> [result]``: model outputs of a
      batch -> one result per image; ``image_sizes`` the originals' ``(height, width)``;
      ``options`` checked and completed by ``options.resolve``;
    * ``heldout(data_dir, count=None, manifest=None) -> (images, targets)``: the first ``count``
      (or all) test-split images (paths, or arrays) and their targets; ``manifest`` where the data
      alone does not say what the inputs are (super-resolution of a folder of photos: the scale);
    * ``evaluate(outputs, targets, manifest) -> {metric: value}``: task metrics of the outputs for
      ``heldout`` images;
    * ``prepare(image, manifest) -> image``: the task's own step before the generic preprocessing
      (may refuse the image with :class:`InputError`); default: unchanged;
    * ``compare(reference, candidate, targets, manifest) -> dict | None``: parity after
      post-processing of two backends' outputs (a dict with ``passed``), or ``None`` (default) to
      judge the raw outputs within tolerance;
    * ``report_picture(result, image, target) -> RGB uint8``: the pipeline report's picture of a
      held-out image; default: ``result.draw(image)``;
    * ``training_images(data_dir, manifest) -> [Path]``: what int8 calibration samples; default:
      :func:`~visionrt.runtime.folders.training_images`;
    * ``model_image(image, manifest) -> image``: a training image as the model's users give it;
      default: itself (super-resolution degrades its photos).
    """

    name: str
    architectures: tuple[Architecture, ...]
    contract: Contract
    postprocess: Callable[..., list[Any]]
    heldout: Callable[..., tuple[list[Path | np.ndarray], np.ndarray]]
    evaluate: Callable[[dict[str, np.ndarray], np.ndarray, Manifest], dict[str, float]]
    options: Options = Options()
    prepare: Callable[[np.ndarray, Manifest], np.ndarray] = _unchanged
    compare: Callable[..., dict[str, Any] | None] = _by_raw_outputs
    report_picture: Callable[[Any, np.ndarray, Any], np.ndarray] = _drawn
    training_images: Callable[[str | Path, Manifest], list[Path]] = _training_images
    model_image: Callable[[np.ndarray, Manifest], np.ndarray] = _unchanged
    #: Whether results are :class:`ImageResult` (the product is an image).
    image_result: bool = False
    #: How far each backend's fp32 task metrics may be from PyTorch's (see :data:`MetricTolerance`).
    parity_tolerance: MetricTolerance = 0.0
    #: Largest loss of the task metric vs PyTorch fp32 a reduced precision (fp16, int8) may show,
    #: ``{metric: (atol, rtol)}``, the primary metric first (points are fractions: 0.005 is half a point).
    precision_tolerance: dict[str, tuple[float, float]] = dataclasses.field(default_factory=dict)
    #: Input sides (px) to benchmark on the dataset's ``bench/<side>x<side>.png``, for models of
    #: any input size; empty: benchmark on the test images.
    bench_sides: tuple[int, ...] = ()
    #: The most input pixels per benchmarked batch (``None``: no cap).
    bench_pixels: int | None = None
    #: How models of the task from other exporters are read (:class:`Imported`).
    imported: Imported = Imported()

    @property
    def default_architecture(self) -> Architecture:
        (default,) = [a for a in self.architectures if a.default]
        return default


@dataclasses.dataclass
class ImageResult:
    """A result that is an image (super-resolution, style transfer): ``image`` RGB uint8
    ``[H, W, 3]``, ``title`` what made it (e.g. ``"vdsr x2"``), ``facts`` the fields of
    :meth:`to_dict` beside its size, ``text`` the one-line summary; :meth:`draw` shows the input
    (through ``show_input``, e.g. a bicubic upscale, where given), titled ``input_title``, beside it."""

    image: np.ndarray
    title: str
    facts: dict[str, Any]
    text: str
    input_title: str = "input"
    show_input: Callable[[np.ndarray], np.ndarray] | None = None

    def to_dict(self) -> dict:
        h, w = self.image.shape[:2]
        return {"width": w, "height": h, **self.facts}

    def summary(self) -> str:
        return self.text

    def output(self) -> np.ndarray:
        return self.image

    def draw(self, image: np.ndarray) -> np.ndarray:
        """The input ``image`` | this result, side by side."""
        shown = self.show_input(image) if self.show_input else image
        return side_by_side([(self.input_title, shown), (self.title, self.image)])
