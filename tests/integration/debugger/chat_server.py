"""A local HTTP server that speaks the chat-completions protocol (OpenAI's `/v1/chat/completions`
and Ollama's `/api/chat`): the one stand-in for a model the debugger's tests use. It answers by
repeating the placeholders of the prompt it got, and records every request."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_PLACEHOLDER = re.compile(r"<[A-Z]+_\d+>|\[SECRET:[a-z-]+\]")


@dataclass
class ChatServer:
    """The server's address, what it was asked, and how it behaves (`mode`)."""

    url: str = ""
    requests: list[dict[str, object]] = field(default_factory=list)
    raw_requests: list[bytes] = field(default_factory=list)
    mode: str = "answer"  # answer | slow | error | garbage


def _answer(server: ChatServer, path: str, body: dict[str, object]) -> bytes:
    prompt = str(body.get("messages"))
    cited = " ".join(dict.fromkeys(_PLACEHOLDER.findall(prompt)))
    text = f"The job failed; see {cited or 'the lines cited'}."
    if path == "/api/chat":
        return json.dumps(
            {"model": body.get("model"), "message": {"role": "assistant", "content": text}, "done": True}
        ).encode()
    return json.dumps({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}}]}).encode()


@contextmanager
def chat_server() -> Iterator[ChatServer]:
    state = ChatServer()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            raw = self.rfile.read(int(self.headers.get("content-length") or 0))
            state.raw_requests.append(raw + str(dict(self.headers)).encode())
            body = json.loads(raw)
            state.requests.append(body)
            if state.mode == "slow":
                time.sleep(1.5)
            if state.mode == "error":
                self.send_response(500)
                self.end_headers()
                return
            data = b"not json" if state.mode == "garbage" else _answer(state, self.path, body)
            try:
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the debugger stopped waiting (the slow mode's point)

        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
