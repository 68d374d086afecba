"""Model directories of an older format still open: a version-1 manifest is migrated on load."""
import json
import shutil
from pathlib import Path

import pytest

from visionrt.runtime.errors import ArtifactError
from visionrt.runtime.manifest import FORMAT_VERSION, MANIFEST_NAME, ModelDir

V1 = Path(__file__).parent / "data" / "manifest_v1.json"


def test_a_version_1_model_directory_opens_as_version_2(tmp_path):
    shutil.copy(V1, tmp_path / MANIFEST_NAME)
    m = ModelDir.open(tmp_path).manifest
    assert m.primary_metric == "psnr_gain" and m.metrics == {"pytorch": {"test": {"psnr": 30.1, "psnr_gain": 1.2}}}
    assert m.build_profile["max_batch"] == 8 and m.build_profile["height"] == [32, 256, 512]
    assert "build" not in m.postprocess and m.postprocess["max_side"] == 256
    assert set(m.benchmarks["median_ms"]) == {"pytorch/e2e/b1", "onnxruntime-cpu/e2e/b1"}


def test_a_migrated_manifest_is_saved_in_the_current_format(tmp_path):
    shutil.copy(V1, tmp_path / MANIFEST_NAME)
    ModelDir.open(tmp_path).save()
    saved = json.loads((tmp_path / MANIFEST_NAME).read_text())
    assert saved["format_version"] == FORMAT_VERSION == 2
    assert "metric" not in saved["metrics"] and "build" not in saved["postprocess"]
    assert ModelDir.open(tmp_path).manifest.primary_metric == "psnr_gain"


def test_a_newer_format_is_refused_with_the_fix(tmp_path):
    data = json.loads(V1.read_text())
    (tmp_path / MANIFEST_NAME).write_text(json.dumps({**data, "format_version": FORMAT_VERSION + 1}))
    with pytest.raises(ArtifactError, match="upgrade visionrt"):
        ModelDir.open(tmp_path)
