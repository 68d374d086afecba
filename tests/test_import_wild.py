"""Models as other exporters write them: each input and output convention `visionrt import` maps,
tested with a small ``nn.Module`` exported by ``torch.onnx.export`` in that convention."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pytest

from conftest import needs_extra, require_or_skip

torch = require_or_skip("torch")
onnx = require_or_skip("onnx")

from visionrt.export.import_onnx import import_onnx  # noqa: E402
from visionrt.runtime import cli, tensorrt_env  # noqa: E402
from visionrt.runtime.contracts import ContractError  # noqa: E402
from visionrt.runtime.errors import ArtifactError, InputError  # noqa: E402
from visionrt.runtime.manifest import InputSpec, ModelDir  # noqa: E402
from visionrt.runtime.predictor import Predictor  # noqa: E402
from visionrt.runtime.preprocess import normalise  # noqa: E402

CLASSES = ["cat", "coffee", "person"]


def export(module: torch.nn.Module, path, example: torch.Tensor, outputs=("out",), sides=False):
    """``module`` as ONNX at ``path`` (TorchScript exporter: quick on two cores), input ``images``
    with a dynamic batch axis (``sides``: and dynamic height and width, outputs' axis 1 dynamic too)."""
    axes = {"images": {0: "batch", **({2: "height", 3: "width"} if sides else {})},
            **{name: {0: "batch", **({1: "anchors"} if sides else {})} for name in outputs}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), (example,), str(path), input_names=["images"], output_names=list(outputs),
                          dynamic_axes=axes, dynamo=False, opset_version=17)
    return path


class Classifier(torch.nn.Module):
    """Conv -> pool -> linear: ``[N, 3, 32, 32]`` -> ``[N, 3]`` logits, then ``head`` (softmax, sigmoid or none)."""

    def __init__(self, head=None, nhwc=False):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.fc, self.head, self.nhwc = torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 3), head, nhwc

    def forward(self, x):
        if self.nhwc:
            x = x.permute(0, 3, 1, 2)
        logits = self.fc(torch.relu(self.conv(x)).mean((2, 3))) * 4
        return {"softmax": lambda v: torch.softmax(v, 1), "sigmoid": torch.sigmoid, None: lambda v: v}[self.head](logits)


def images(count=3, side=32, seed=0):
    return [np.random.default_rng(seed + i).integers(0, 256, (side, side, 3), np.uint8) for i in range(count)]


def raw(model_dir: ModelDir, batch: np.ndarray) -> dict[str, np.ndarray]:
    """The model's own outputs, run directly in onnxruntime."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(model_dir.path("onnx")), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, {"images": batch})))


# a batch fixed in the file (exporters often write 1) ---------------------------------------------
def test_a_model_whose_file_fixes_batch_1_predicts_any_batch_in_chunks(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Classifier("softmax").eval(), (torch.zeros(1, 3, 32, 32),), str(tmp_path / "c.onnx"),
                          input_names=["images"], output_names=["out"], dynamo=False, opset_version=17)
    model_dir = import_onnx(tmp_path / "c.onnx", "classify", tmp_path / "m", classes=CLASSES)
    pictures = images(5)
    own = np.concatenate([raw(model_dir, normalise(picture[None], model_dir.manifest.input))["out"]
                          for picture in pictures])
    with Predictor(model_dir) as predictor:
        assert predictor.runner.inputs[0].shape[0] == 1
        results = predictor.predict(pictures)  # one batch of 5 through a file that takes 1
    assert [r.index for r in results] == own.argmax(1).tolist()
    assert [r.score for r in results] == pytest.approx(own.max(1).tolist(), abs=1e-6)


# classification: probabilities are shown as the model gives them --------------------------------
@pytest.mark.parametrize("head, found", [("softmax", "Softmax"), ("sigmoid", "Sigmoid")])
def test_classifier_ending_in_softmax_or_sigmoid_shows_its_own_probabilities(tmp_path, head, found):
    path = export(Classifier(head), tmp_path / "c.onnx", torch.zeros(1, 3, 32, 32))
    model_dir = import_onnx(path, "classify", tmp_path / "m", classes=CLASSES, image_size=(32, 32))
    m = model_dir.manifest
    assert m.postprocess["outputs"] == "probabilities" and m.model["last_op"] == found
    pictures = images()
    own = raw(model_dir, normalise(np.stack(pictures), m.input))["out"]
    with Predictor(model_dir) as predictor:
        results = predictor.predict(pictures)
    for result, probs in zip(results, own):
        assert result.index == int(probs.argmax())
        assert result.score == pytest.approx(float(probs.max()), abs=1e-6)  # never normalised twice
        assert [s for _, s in result.top_k] == pytest.approx(sorted(probs.tolist(), reverse=True), abs=1e-6)


def test_logits_are_softmaxed_and_the_flag_overrides_the_graph(tmp_path):
    path = export(Classifier(None), tmp_path / "c.onnx", torch.zeros(1, 3, 32, 32))
    logits_dir = import_onnx(path, "classify", tmp_path / "logits", classes=CLASSES, image_size=(32, 32))
    assert logits_dir.manifest.postprocess["outputs"] == "logits"
    picture = images(1)
    own = raw(logits_dir, normalise(np.stack(picture), logits_dir.manifest.input))["out"][0]
    expected = np.exp(own - own.max()) / np.exp(own - own.max()).sum()
    with Predictor(logits_dir) as predictor:
        assert predictor.predict(picture)[0].score == pytest.approx(float(expected.max()), abs=1e-6)
    softmax_path = export(Classifier("softmax"), tmp_path / "s.onnx", torch.zeros(1, 3, 32, 32))
    forced = import_onnx(softmax_path, "classify", tmp_path / "forced", classes=CLASSES, image_size=(32, 32),
                         outputs="logits")
    assert forced.manifest.postprocess["outputs"] == "logits"  # the user's word over the graph's


# input conventions --------------------------------------------------------------------------------
class ChannelMeans(torch.nn.Module):
    """Logits = each input channel's mean (so the predicted class names the channel): shows what the
    model was fed. ``nhwc``: channels last; ``uint8``: takes raw pixels."""

    def __init__(self, nhwc=False, uint8=False):
        super().__init__()
        self.nhwc, self.uint8 = nhwc, uint8

    def forward(self, x):
        x = x.float() if self.uint8 else x
        return x.mean((1, 2) if self.nhwc else (2, 3))


def test_normalise_applies_layout_channels_scale_and_dtype():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 5, 4, 3), np.uint8)
    mean, std = (10.0, 20.0, 30.0), (2.0, 4.0, 8.0)
    spec = InputSpec(height=5, width=4, color="BGR", scale="0-255", layout="NHWC", mean=mean, std=std)
    expected = (pixels[..., ::-1].astype(np.float32) - np.array(mean, np.float32)) / np.array(std, np.float32)
    np.testing.assert_allclose(normalise(pixels, spec), expected, rtol=1e-6)
    default = normalise(pixels, InputSpec(height=5, width=4))
    np.testing.assert_allclose(default, pixels.transpose(0, 3, 1, 2) / 255.0, rtol=1e-6)
    raw_pixels = normalise(pixels, InputSpec(height=5, width=4, dtype="uint8", scale="0-255"))
    assert raw_pixels.dtype == np.uint8 and np.array_equal(raw_pixels, pixels.transpose(0, 3, 1, 2))


@pytest.mark.parametrize("nhwc, uint8", [(True, False), (False, True), (True, True)])
def test_nhwc_bgr_uint8_inputs_are_fed_as_the_model_takes_them(tmp_path, nhwc, uint8):
    shape = (1, 24, 24, 3) if nhwc else (1, 3, 24, 24)
    example = torch.zeros(shape, dtype=torch.uint8 if uint8 else torch.float32)
    path = export(ChannelMeans(nhwc, uint8), tmp_path / "c.onnx", example)
    model_dir = import_onnx(path, "classify", tmp_path / "m", classes=["c0", "c1", "c2"], image_size=(24, 24),
                            channels="BGR", **({} if uint8 else {"scale": "0-255"}))
    spec = model_dir.manifest.input
    assert (spec.layout, spec.color, spec.dtype, spec.scale) == ("NHWC" if nhwc else "NCHW", "BGR",
                                                                "uint8" if uint8 else "float32", "0-255")
    red = np.zeros((24, 24, 3), np.uint8)
    red[..., 0] = 200
    with Predictor(model_dir) as predictor:
        result = predictor.predict([red])[0]
    assert result.label == "c2"  # red is the last channel of BGR
    assert result.score == pytest.approx(float(np.exp(200) / (np.exp(200) + 2)), abs=1e-6)


def test_input_errors_name_the_input(tmp_path):
    path = export(ChannelMeans(), tmp_path / "c.onnx", torch.zeros(1, 4, 24, 24))
    with pytest.raises(ContractError, match=r"input 'images' is \[batch, 4, 24, 24\] float32: cannot tell its layout"):
        import_onnx(path, "classify", tmp_path / "m", classes=["a", "b", "c", "d"])
    uint8 = export(ChannelMeans(uint8=True), tmp_path / "u.onnx", torch.zeros(1, 3, 24, 24, dtype=torch.uint8))
    with pytest.raises(InputError, match="input 'images' is uint8"):
        import_onnx(uint8, "classify", tmp_path / "m", classes=["a", "b", "c"], mean=(0.5, 0.5, 0.5))
    assert not (tmp_path / "m" / "manifest.json").exists()


# segmentation -----------------------------------------------------------------------------------
class Segmenter(torch.nn.Module):
    """Per-pixel scores from a 1x1 conv; ``head``: argmax (an int map), softmax, or sigmoid (one channel)."""

    def __init__(self, head, classes=3):
        super().__init__()
        torch.manual_seed(0)
        self.conv, self.head = torch.nn.Conv2d(3, 1 if head == "sigmoid" else classes, 1), head

    def forward(self, x):
        y = self.conv(x - 0.5) * 10
        return {"argmax": lambda v: v.argmax(1), "softmax": lambda v: torch.softmax(v, 1),
                "sigmoid": torch.sigmoid}[self.head](y)


@pytest.mark.parametrize("head, classes", [("argmax", CLASSES), ("softmax", CLASSES), ("sigmoid", ["bg", "text"])])
def test_segmenters_ending_in_argmax_softmax_or_sigmoid(tmp_path, head, classes):
    path = export(Segmenter(head, len(classes)), tmp_path / "s.onnx", torch.zeros(1, 3, 32, 32))
    model_dir = import_onnx(path, "segment", tmp_path / "m", classes=classes, image_size=(32, 32))
    post = model_dir.manifest.postprocess
    assert post.get("output_layout") == ("binary" if head == "sigmoid" else None)
    pictures = images(2)
    own = raw(model_dir, normalise(np.stack(pictures), model_dir.manifest.input))["out"]
    expected = own if head == "argmax" else (own[:, 0] > 0.5) if head == "sigmoid" else own.argmax(1)
    with Predictor(model_dir) as predictor:
        results = predictor.predict(pictures)
    for result, class_map in zip(results, expected):
        np.testing.assert_array_equal(result.class_map, class_map.astype(np.uint8))


# detection layouts --------------------------------------------------------------------------------
#: Two objects in a 64x64 input: (x1, y1, x2, y2), class, score.
OBJECTS = [((8.0, 10.0, 30.0, 40.0), 1, 0.9), ((36.0, 20.0, 60.0, 50.0), 2, 0.7)]


def candidates(layout: str) -> list[np.ndarray]:
    """The raw outputs of a detector in ``layout`` holding :data:`OBJECTS` among low-scoring candidates."""
    rng = np.random.default_rng(0)
    boxes = np.tile(np.array([[20.0, 20.0, 30.0, 30.0]], np.float32), (6, 1))
    cls = np.full((6, 3), 0.01, np.float32)
    for i, (box, c, score) in enumerate(OBJECTS):
        boxes[i], cls[i, c] = box, score
    cls[2:] += rng.uniform(0, 0.05, (4, 3)).astype(np.float32)
    xywh = np.concatenate([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], axis=1)
    if layout == "yolov5":  # objectness × class probability = the score
        return [np.concatenate([xywh, np.ones((6, 1), np.float32), cls], axis=1)[None]]
    if layout == "yolov8":
        return [np.concatenate([xywh, cls], axis=1).T[None]]
    yxyx = boxes[:, [1, 0, 3, 2]] / 64.0  # TensorFlow's order, normalised
    return [yxyx[None], np.concatenate([1 - cls.sum(1, keepdims=True), cls], axis=1)[None]]


class FixedDetector(torch.nn.Module):
    """Returns fixed raw outputs for each image of the batch (plus 0 × the input, so the graph uses it)."""

    def __init__(self, outputs):
        super().__init__()
        self.outputs = [torch.tensor(o) for o in outputs]

    def forward(self, x):
        zero = x.mean((1, 2, 3)).view(-1, 1, 1) * 0
        return tuple(o + zero for o in self.outputs)


@pytest.mark.parametrize("layout", ["yolov5", "yolov8", "ssd"])
def test_detection_layouts_map_onto_the_detect_contract(tmp_path, layout):
    names = ("boxes", "scores") if layout == "ssd" else ("predictions",)
    path = export(FixedDetector(candidates(layout)), tmp_path / "d.onnx", torch.zeros(1, 3, 64, 64), outputs=names)
    extra = {"postprocess": {"box_format": "yxyx", "box_units": "normalised"}} if layout == "ssd" else {}
    model_dir = import_onnx(path, "detect", tmp_path / "m", classes=CLASSES, image_size=(64, 64),
                            output_layout=layout, **extra)
    post = model_dir.manifest.postprocess
    assert post["nms"] == "runtime" and post["output_layout"] == layout
    assert [o.name for o in model_dir.manifest.outputs] == ["candidate_boxes", "candidate_scores"]
    photo = np.random.default_rng(1).integers(0, 256, (128, 96, 3), np.uint8)  # stretched to 64x64
    with Predictor(model_dir) as predictor:
        found = predictor.predict(photo)[0].detections
    assert [(d.index, round(d.score, 4)) for d in found] == [(c, s) for _, c, s in OBJECTS]
    for detection, (box, _, _) in zip(found, OBJECTS):
        np.testing.assert_allclose(detection.box, np.array(box) * [96 / 64, 2, 96 / 64, 2], atol=1e-3)


# dynamic height and width: a range of sizes ----------------------------------------------------------
class GridDetector(torch.nn.Module):
    """A fully convolutional YOLOv5-layout detector for sides divisible by 4 (it pools twice and adds the
    upsampled coarse map back): one candidate per 2×2 cell, a 2×2 px box on the cell, scored by the
    cell's brightness (class 1: 1x1 convolutions passing the channels on, which int8 quantises, and
    averaging them, which it keeps float as a head)."""

    def __init__(self):
        super().__init__()
        self.mix, self.brightness = torch.nn.Conv2d(3, 3, 1), torch.nn.Conv2d(3, 1, 1)
        with torch.no_grad():
            self.mix.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.brightness.weight.fill_(1 / 3)
            for conv in (self.mix, self.brightness):
                conv.bias.zero_()

    def forward(self, x):
        half = torch.nn.functional.avg_pool2d(self.brightness(torch.relu(self.mix(x))), 2)
        coarse = torch.nn.functional.interpolate(torch.nn.functional.avg_pool2d(half, 2), scale_factor=2.0)
        score = half + 0 * coarse  # the two maps agree in size only where the sides are multiples of 4
        n, _, h, w = score.shape
        ys = (torch.arange(h, dtype=x.dtype) * 2 + 1).view(1, 1, h, 1).expand(n, 1, h, w)
        xs = (torch.arange(w, dtype=x.dtype) * 2 + 1).view(1, 1, 1, w).expand(n, 1, h, w)
        two, zero = torch.full_like(score, 2.0), torch.zeros_like(score)
        return torch.cat([xs, ys, two, two, score, zero, torch.ones_like(score), zero], 1).flatten(2).transpose(1, 2)


def block_picture(height, width, box):
    """A black ``height × width`` picture with a white block at ``box`` (x1, y1, x2, y2)."""
    picture = np.zeros((height, width, 3), np.uint8)
    x1, y1, x2, y2 = box
    picture[y1:y2, x1:x2] = 255
    return picture


def test_a_range_of_sizes_feeds_each_image_at_its_own_size_within_it(tmp_path):
    path = export(GridDetector(), tmp_path / "d.onnx", torch.zeros(1, 3, 64, 64), outputs=("predictions",), sides=True)
    model_dir = import_onnx(path, "detect", tmp_path / "m", classes=CLASSES, output_layout="yolov5",
                            image_size_range=(30, 96, 130))
    m = ModelDir.open(tmp_path / "m").manifest
    assert (m.input.height, m.input.size_range, m.input.stride) == (None, (32, 128), 4)  # stride found, range inward
    assert m.build_profile == {"height": [32, 96, 128], "width": [32, 96, 128]}
    assert m.input.shape == ["batch", 3, "height", "width"]
    other = import_onnx(path, "detect", tmp_path / "m2", classes=CLASSES, output_layout="yolov5",
                        image_size_range=(32, 128))
    assert other.manifest.input.stride == 4  # it runs at 32 and at 33 (pooling drops a row), not at 127
    from visionrt.runtime.preprocess import fit, model_input

    assert fit(60, 80, m.input).size == (60, 80)      # inside: its own size
    assert fit(62, 81, m.input).size == (64, 80)      # rounded to the stride
    assert fit(192, 256, m.input).size == (96, 128)   # larger: scaled into the range, aspect kept
    assert fit(10, 20, m.input).size == (32, 64)      # smaller: scaled up to the minimum
    assert fit(20, 400, m.input).size == (32, 128)    # too long for both ends: each side clamped
    inside, outside = (60, 80, (20, 12, 28, 20)), (192, 256, (64, 32, 96, 64))
    with Predictor(model_dir) as predictor:
        for height, width, box in (inside, outside):
            picture = block_picture(height, width, box)
            assert model_input([picture], m).shape == (1, 3, *fit(height, width, m.input).size)
            found = [d for d in predictor.predict(picture)[0].detections if d.score > 0.5]
            assert found and {d.index for d in found} == {1} and max(d.score for d in found) > 0.99
            extent = np.array([d.box for d in found])  # the cells on the block, in the picture's pixels
            exact = (height, width) == inside[:2]  # fed as it is; else halved (a resize blurs the edges)
            np.testing.assert_allclose([*extent[:, :2].min(0), *extent[:, 2:].max(0)], box, atol=1e-3 if exact else 4)


def test_a_range_of_sizes_is_checked_in_one_line(tmp_path, capsys):
    path = export(GridDetector(), tmp_path / "d.onnx", torch.zeros(1, 3, 64, 64), outputs=("predictions",), sides=True)
    common = {"classes": CLASSES, "output_layout": "yolov5"}
    with pytest.raises(InputError, match=r"--image-size-range 128,64 is not MIN,MAX or MIN,OPT,MAX"):
        import_onnx(path, "detect", tmp_path / "m", image_size_range=(128, 64), **common)
    with pytest.raises(InputError, match="--image-size fixes the input size and --image-size-range spans it"):
        import_onnx(path, "detect", tmp_path / "m", image_size=(64, 64), image_size_range=(32, 64), **common)
    with pytest.raises(InputError, match=r"--image-size-range 33,35 holds no multiple of the model's stride 4"):
        import_onnx(path, "detect", tmp_path / "m", image_size_range=(33, 35), stride=4, **common)
    with pytest.raises(ContractError, match=r"runs in onnxruntime at no size tried within --image-size-range 33,35"):
        import_onnx(path, "detect", tmp_path / "m", image_size_range=(33, 35), **common)
    fixed = export(Classifier("softmax"), tmp_path / "c.onnx", torch.zeros(1, 3, 32, 32))
    with pytest.raises(ContractError, match=r"input 'images' is \[batch, 3, 32, 32\]: its height \(32\) and width "
                                            r"\(32\) are fixed in the graph"):
        import_onnx(fixed, "classify", tmp_path / "m", classes=CLASSES, image_size_range=(16, 64))
    assert not (tmp_path / "m" / "manifest.json").exists()
    names = tmp_path / "classes.txt"
    names.write_text("\n".join(CLASSES))
    code = cli.main(["import", str(path), "--task", "detect", "--classes", str(names), "--output-layout", "yolov5",
                     "--image-size-range", "64,32", "--out", str(tmp_path / "n")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) <= 2 and "--image-size-range 64,32 is not" in err
    assert cli.main(["import", str(path), "--task", "detect", "--classes", str(names), "--output-layout", "yolov5",
                     "--image-size-range", "32,64", "--stride", "8", "--out", str(tmp_path / "n")]) == 0
    spec = ModelDir.open(tmp_path / "n").manifest.input
    assert (spec.size_range, spec.stride) == ((32, 64), 8)


@pytest.mark.slow  # builds an engine
@needs_extra(tensorrt_env.installed("tensorrt_rtx") is not None, "TensorRT-RTX is not installed (pip install 'visionrt[rtx]')")
def test_a_range_of_sizes_is_the_engines_optimisation_profile(tmp_path):
    from visionrt.export.build import build

    path = export(GridDetector(), tmp_path / "d.onnx", torch.zeros(1, 3, 64, 64), outputs=("predictions",), sides=True)
    import_onnx(path, "detect", tmp_path / "m", classes=CLASSES, output_layout="yolov5", image_size_range=(30, 96, 130))
    facts = build(tmp_path / "m", flavour="tensorrt_rtx", max_batch=2).facts
    assert facts["profile"]["images"] == {"min": [1, 3, 32, 32], "opt": [2, 3, 96, 96], "max": [2, 3, 128, 128]}


def test_several_outputs_choose_by_role_and_ignore_the_rest(tmp_path):
    class TwoHeads(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = Classifier("softmax")

        def forward(self, x):
            return x.mean((2, 3)), self.net(x)

    path = export(TwoHeads(), tmp_path / "t.onnx", torch.zeros(1, 3, 32, 32), outputs=("features", "probs"))
    model_dir = import_onnx(path, "classify", tmp_path / "m", classes=CLASSES, image_size=(32, 32),
                            output_roles=[("probs", "probabilities")])
    outputs = model_dir.manifest.outputs
    assert outputs[0].name == "probs" and outputs[1].meaning == "not read by the runtime"
    assert model_dir.manifest.postprocess["outputs"] == "probabilities"
    with pytest.raises(ContractError, match="has no output 'nope' \\(it has features, probs\\)"):
        import_onnx(path, "classify", tmp_path / "n", classes=CLASSES, image_size=(32, 32),
                    output_roles=[("nope", "logits")])


def test_layout_errors_name_the_output(tmp_path):
    path = export(FixedDetector(candidates("yolov8")), tmp_path / "d.onnx", torch.zeros(1, 3, 64, 64),
                  outputs=("predictions",))
    with pytest.raises(ContractError, match=r"output 'predictions' \[1, 7, 6\] read as yolov5 gives 1 class score"):
        import_onnx(path, "detect", tmp_path / "m", classes=CLASSES, image_size=(64, 64), output_layout="yolov5")
    with pytest.raises(ArtifactError, match=r"output 'predictions' is \[1, 7, 6\]; the ssd layout reads"):
        import_onnx(path, "detect", tmp_path / "m", classes=CLASSES, image_size=(64, 64), output_layout="ssd",
                    output_roles=[("predictions", "boxes"), ("predictions", "scores")])
    with pytest.raises(InputError, match="box_units='inches' is not one of pixels, normalised"):
        import_onnx(path, "detect", tmp_path / "m", classes=CLASSES, image_size=(64, 64), output_layout="yolov8",
                    postprocess={"box_units": "inches"})
    with pytest.raises(ContractError, match="is a detect layout; this is a classify model"):
        import_onnx(path, "classify", tmp_path / "m", classes=CLASSES, image_size=(64, 64), output_layout="yolov8")


def test_cli_import_records_conventions_and_errors_in_one_line(tmp_path, capsys):
    path = export(ChannelMeans(nhwc=True), tmp_path / "c.onnx", torch.zeros(1, 24, 24, 3))
    names = tmp_path / "classes.txt"
    names.write_text("c0\nc1\nc2\n")
    code = cli.main(["import", str(path), "--task", "classify", "--classes", str(names), "--image-size", "24x24",
                     "--channels", "BGR", "--scale", "0-255", "--mean", "1,2,3", "--out", str(tmp_path / "m"), "--json"])
    assert code == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["input"] == {"layout": "NHWC", "color": "BGR", "scale": "0-255", "dtype": "float32"}
    assert ModelDir.open(tmp_path / "m").manifest.input.mean == (1.0, 2.0, 3.0)
    code = cli.main(["import", str(path), "--task", "classify", "--classes", str(names), "--image-size", "24x24",
                     "--output", "out=boxes", "--out", str(tmp_path / "n")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) <= 2 and "'boxes' is not a role" in err
    assert not (tmp_path / "n").exists()


def test_input_axes_sharing_a_name_get_their_own(tmp_path):
    """Paddle2ONNX writes ``[-1, 3, ?, ?]``: TensorRT would read both ``?`` as one size; the copy names each."""
    path = export(Classifier("softmax"), tmp_path / "c.onnx", torch.zeros(1, 3, 32, 32))
    model = onnx.load(str(path))
    dims = model.graph.input[0].type.tensor_type.shape.dim
    dims[0].dim_value = -1
    for axis in (2, 3):
        dims[axis].dim_param = "?"
    onnx.save(model, str(path))
    model_dir = import_onnx(path, "classify", tmp_path / "m", classes=CLASSES, image_size=(32, 32))
    copied = onnx.load(str(model_dir.path("onnx"))).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_param or d.dim_value for d in copied] == ["batch", 3, "height", "width"]
    assert model_dir.manifest.model["input_axes_named"] == {"0": "batch", "2": "height", "3": "width"}
    with Predictor(model_dir) as predictor:
        assert predictor.predict(images(1))[0].label in CLASSES


# every stage for an imported model -----------------------------------------------------------------
def test_bench_without_data_runs_on_generated_images(tmp_path):
    from visionrt.benchmarks.run import bench_model_dir

    path = export(Classifier("softmax"), tmp_path / "c.onnx", torch.zeros(1, 3, 32, 32))
    model_dir = import_onnx(path, "classify", tmp_path / "m", classes=CLASSES, image_size=(32, 32))
    report = bench_model_dir(model_dir, backends=["onnxruntime"], batch_sizes=[2], min_seconds=0.01, max_seconds=0.1)
    rows = json.loads(report["json"].read_text())["results"]
    assert {(r["mode"], r["batch"]) for r in rows if r["median_ms"]} == {("model", 2), ("end-to-end", 2)}


def test_export_of_an_import_checks_other_backends_against_onnxruntime(tmp_path, capsys):
    require_or_skip("openvino")
    path = export(Segmenter("argmax"), tmp_path / "s.onnx", torch.zeros(1, 3, 32, 32))
    import_onnx(path, "segment", tmp_path / "m", classes=CLASSES, image_size=(32, 32))
    assert cli.main(["export", str(tmp_path / "m"), "--json"]) == 0
    parity = ModelDir.open(tmp_path / "m").manifest.parity["openvino-cpu"]
    assert parity["passed"] and parity["reference"] == "onnxruntime-cpu-fp32" and parity["task"]["miou"]["candidate"] == 1.0


class Joints(torch.nn.Module):
    """A one-joint pose model: the joint at the (sigmoid of the) mean of the first two channels."""

    def forward(self, x):
        return torch.sigmoid(x.mean((2, 3))[:, :2]).view(-1, 1, 2)


def test_precisions_of_an_import_need_photos_and_a_judged_task(tmp_path, capsys):
    path = export(Joints(), tmp_path / "p.onnx", torch.zeros(1, 3, 32, 32))
    import_onnx(path, "pose", tmp_path / "p", classes=["nose"], image_size=(32, 32))
    assert cli.main(["export", str(tmp_path / "p"), "--precision", "int8"]) == 2
    assert "imported pose model cannot be judged here" in capsys.readouterr().err
    path = export(GridDetector(), tmp_path / "d.onnx", torch.zeros(1, 3, 64, 64), outputs=("predictions",), sides=True)
    import_onnx(path, "detect", tmp_path / "d", classes=CLASSES, output_layout="yolov5", image_size_range=(32, 64))
    assert cli.main(["export", str(tmp_path / "d"), "--precision", "int8"]) == 2
    assert "of several input sizes cannot be judged here" in capsys.readouterr().err
    classifier = export(Classifier("softmax"), tmp_path / "c.onnx", torch.zeros(1, 3, 32, 32))
    import_onnx(classifier, "classify", tmp_path / "c", classes=CLASSES, image_size=(32, 32))
    assert cli.main(["export", str(tmp_path / "c"), "--precision", "int8"]) == 2
    assert "pass --data DIR, a folder of your photos" in capsys.readouterr().err
    assert not (tmp_path / "c" / "model.int8.onnx").exists()


def test_a_detectors_reduced_precisions_are_judged_by_map_against_fp32s_own_detections(tmp_path):
    from visionrt.runtime.tasks import runtime_task

    path = export(FixedDetector(candidates("yolov5")), tmp_path / "d.onnx", torch.zeros(1, 3, 64, 64),
                  outputs=("predictions",))
    model_dir = import_onnx(path, "detect", tmp_path / "m", classes=CLASSES, image_size=(64, 64), output_layout="yolov5")
    m, task = model_dir.manifest, runtime_task("detect")
    with Predictor(model_dir) as predictor:
        fp32 = predictor.infer(predictor.preprocess(images(2, side=48)))
    targets = task.imported.own_targets(fp32, m)
    assert [(t["image"]["height"], t["image"]["width"]) for t in targets] == [(64, 64)] * 2
    shown = [(a["category_id"] - 1, [round(v, 3) for v in a["bbox"]]) for a in targets[0]["annotations"]]
    assert shown == [(c, [x1, y1, x2 - x1, y2 - y1]) for (x1, y1, x2, y2), c, _ in OBJECTS]  # above 0.25 only
    assert task.evaluate(fp32, targets, m)["map50"] == 1.0
    moved = {**fp32, "candidate_boxes": fp32["candidate_boxes"] + np.array([20, 0, 20, 0], np.float32)}
    assert task.evaluate(moved, targets, m)["map50"] < 1.0 - task.precision_tolerance["map50"][0]


def block_photos(folder, count, side=64, seed=0):
    """``count`` PNG photos of a light block on dark noise at random places (what GridDetector finds)."""
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(count):
        x, y = rng.integers(0, side - 16, 2)
        block = block_picture(side, side, (x, y, x + rng.integers(4, 16), y + rng.integers(4, 16)))
        noise = rng.integers(0, 60, block.shape)
        Image.fromarray(np.where(block > 0, 255 - noise, noise).astype(np.uint8)).save(folder / f"{i}.png")
    return folder


@pytest.mark.slow
def test_fp16_and_int8_of_an_imported_detector_are_judged_on_photos(tmp_path):
    path = export(GridDetector(), tmp_path / "d.onnx", torch.zeros(1, 3, 64, 64), outputs=("predictions",))
    import_onnx(path, "detect", tmp_path / "m", classes=CLASSES, image_size=(64, 64), output_layout="yolov5")
    photos = block_photos(tmp_path / "photos", 8)
    assert cli.main(["export", str(tmp_path / "m"), "--precision", "fp16,int8", "--data", str(photos)]) in (0, 1)
    m = ModelDir.open(tmp_path / "m").manifest
    assert m.precisions["calibration"]["count"] == 8
    for precision, key in (("fp16", "onnx_fp16"), ("int8", "onnx_int8")):
        accuracy = m.precisions[precision]["files"][key]["accuracy"]
        map50 = accuracy["metrics"]["map50"]
        assert map50["fp32_onnx"] == 1.0 and map50["tolerance"] == 0.02 and 0 <= map50["value"] <= 1
        assert accuracy["passed"] == (map50["change"] >= -0.02) and accuracy["samples"] == 8
    assert m.precisions["fp16"]["passed"]  # fp16 keeps a brightness score's detections
    with Predictor(tmp_path / "m", precision="int8") as predictor:
        assert len(predictor.predict(sorted(photos.iterdir()))) == 8


@pytest.mark.slow
def test_int8_of_an_import_is_calibrated_and_judged_on_photos(tmp_path):
    from PIL import Image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i, picture in enumerate(images(12, side=40)):
        Image.fromarray(picture).save(photos / f"{i}.png")
    path = export(Classifier("softmax"), tmp_path / "c.onnx", torch.zeros(1, 3, 32, 32))
    import_onnx(path, "classify", tmp_path / "m", classes=CLASSES, image_size=(32, 32))
    assert cli.main(["export", str(tmp_path / "m"), "--precision", "fp16,int8", "--data", str(photos)]) in (0, 1)
    m = ModelDir.open(tmp_path / "m").manifest
    assert m.precisions["calibration"]["count"] == 12 and m.precisions["calibration"]["split"] == "train"
    accuracy = m.precisions["int8"]["files"]["onnx_int8"]["accuracy"]
    top1 = accuracy["metrics"]["top1"]
    assert top1["fp32_onnx"] == 1.0 and 0 <= top1["value"] <= 1 and accuracy["passed"] == (top1["change"] >= -0.005)
    with Predictor(tmp_path / "m", precision="int8") as predictor:
        assert len(predictor.predict(sorted(photos.iterdir()))) == 12
