"""The runtime is the base install: it must not need (or load) torch."""
import subprocess
import sys


def test_runtime_works_when_torch_cannot_be_imported(tmp_path):
    """Simulate a runtime-only install (``None`` in sys.modules makes ``import torch`` fail)."""
    code = ("import sys\n"
            "sys.modules['torch'] = None\n"
            "from visionrt.runtime.cli import main\n"
            "sys.exit(main(['doctor']))\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "onnxruntime" in result.stdout
    assert "torch: not installed (pip install 'visionrt[train]')" in result.stdout


def test_packages_list_every_subpackage():
    """pyproject lists packages explicitly (the folders map onto visionrt.*): none may be missing, and
    the only others are folders of data (package-data, e.g. the server's page)."""
    import tomllib
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    listed = set(config["packages"])
    found = set()
    for top in ("train", "export", "runtime", "benchmarks"):
        for init in (root / top).rglob("__init__.py"):
            rel = init.parent.relative_to(root / top).parts
            found.add(".".join(("visionrt", top, *rel)))
    data_only = {name for name in config["package-data"] if name != "*" and name not in found}
    assert found | data_only == listed
