"""`make llm`'s files are found where it puts them, and their absence is no error."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tools.stack import model_server


def _install(root: Path, *, server: bool, model: bool) -> None:
    package = root / "site" / model_server.MODEL_PACKAGE
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    if model:
        (package / "SmolLM2-135M-Instruct.Q4_1.gguf").write_bytes(b"GGUF")
    if server:
        (root / "llm" / "bin").mkdir(parents=True)
        (root / "llm" / "bin" / "llama-server").write_text("")


@pytest.mark.parametrize(("server", "model"), [(True, True), (True, False), (False, True)])
def test_the_local_model_is_installed_only_with_both_its_server_and_its_model_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, server: bool, model: bool
) -> None:
    _install(tmp_path, server=server, model=model)
    monkeypatch.setattr(model_server, "LLM_DIR", tmp_path / "llm")
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site"), *sys.path])
    found = model_server.installed()
    if server and model:
        assert found is not None
        assert found.server == tmp_path / "llm" / "bin" / "llama-server"
        assert found.model.name.endswith(".gguf")
    else:
        assert found is None
