"""``ofa serve`` (issue #16 item 5): a real LitServe server on localhost, real HTTP requests. Answers equal the
local pipeline's, concurrent requests are batched, bad requests get 4xx with a message and the server keeps
serving."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

import ofa

pytest.importorskip("litserve")

OPTIONS = {"image_size": 64, "max_len": 6, "beam_size": 2}


def _png(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return base64.b64encode(buffer.getvalue()).decode()


def _post(port: int, body: Any = None, raw: bytes | None = None) -> tuple[int, Any]:
    data = raw if raw is not None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{port}/predict", data=data,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _wait_healthy(port: int, proc: subprocess.Popen[str], timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"the server exited with {proc.returncode} (its log is in the test's temp dir)")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            time.sleep(0.5)
    raise AssertionError(f"the server on port {port} was not healthy after {timeout} s")


def _wait_group_empty(group: int, timeout: float = 30.0) -> bool:
    """Wait for every process of ``group`` to exit; True when some are still alive after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        time.sleep(0.2)
    return True


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, small_model: Any, tok: Any) -> Path:
    path = tmp_path_factory.mktemp("serve") / "ck"
    small_model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def servers(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A caption and a refcoco server, started together: the caption server as users start it (memory reuse on),
    the refcoco server with ``--system-malloc``."""
    import socket

    logs = tmp_path_factory.mktemp("serve-logs")
    running: dict[str, Any] = {}
    for task in ("caption", "refcoco"):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        task_options = OPTIONS if task == "caption" else {"image_size": 64, "max_image_size": 64}
        options = [x for k, v in task_options.items() for x in ("-o", f"{k}={v}")]
        if task == "refcoco":
            options.append("--system-malloc")
        env = dict(os.environ)
        env.pop("OFA_SYSTEM_MALLOC", None)  # tests/conftest.py sets it for pytest
        log = open(logs / f"{task}.log", "w+")
        # a session of its own: the server's worker processes share its process group
        proc = subprocess.Popen([sys.executable, "-m", "ofa.apps.cli", "-v", "serve", "--task", task,
                                 "--checkpoint", str(checkpoint), "--port", str(port), "--max-batch-size", "8",
                                 "--batch-timeout", "0.2", *options], stdout=log, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True, env=env)
        running[task] = {"port": port, "proc": proc, "log": log}
    try:
        for server in running.values():
            _wait_healthy(server["port"], server["proc"])
        yield running
    finally:
        for server in running.values():
            server["proc"].terminate()
            try:
                server["proc"].wait(timeout=60)
            finally:
                server["left"] = _wait_group_empty(server["proc"].pid)
                if server["left"]:
                    os.killpg(server["proc"].pid, signal.SIGKILL)
                server["log"].close()


@pytest.mark.slow
def test_answers_equal_the_local_pipeline_and_concurrent_requests_are_batched(
        servers: dict[str, Any], small_model: Any, tok: Any, pil_image: Callable[..., Any]) -> None:
    port = servers["caption"]["port"]
    images = [pil_image(40 + i, (48 + 4 * i, 40)) for i in range(16)]
    local = ofa.pipeline("caption", small_model, tok, **OPTIONS)
    expected = [p.text for p in local(images)]
    status, answer = _post(port, {"image": _png(images[0])})
    assert status == 200 and answer["text"] == expected[0] and isinstance(answer["score"], float)
    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(lambda image: _post(port, {"image": _png(image)}), images))
    assert [a[0] for a in answers] == [200] * 16
    assert [a[1]["text"] for a in answers] == expected
    log = Path(servers["caption"]["log"].name).read_text()
    sizes = [int(n) for n in re.findall(r"predicting a batch of (\d+) requests", log)]
    assert max(sizes) > 1 and sum(sizes) == 17, sizes  # the 16 concurrent requests shared model calls
    # the worker process (not only the one that started it) keeps freed memory; --system-malloc leaves it alone
    assert "freed memory kept for reuse: yes" in log
    assert "freed memory kept for reuse: no" in Path(servers["refcoco"]["log"].name).read_text()


@pytest.mark.slow
def test_bad_requests_get_4xx_with_a_message_and_the_server_keeps_serving(
        servers: dict[str, Any], pil_image: Callable[..., Any]) -> None:
    port = servers["caption"]["port"]
    image = _png(pil_image(1))
    cases = [
        ({"img": image}, None, 422, "image"),                              # missing key, unknown key
        ([1, 2], None, 422, "dictionary"),                                 # not an object
        (None, b"{not json", 422, "JSON"),                                 # not JSON
        ({"image": image, "text": 5}, None, 422, "string"),                # wrong type
        ({"image": "bm90IGFuIGltYWdl"}, None, 422, "could not be read"),   # base64 of "not an image"
        ({"image": "%%%"}, None, 422, "base64"),
        ({"image": "https://example.com/a.png"}, None, 400, "URL"),
    ]
    for body, raw, code, words in cases:
        status, answer = _post(port, body, raw)
        assert status == code and words in json.dumps(answer["detail"]), (body, raw, status, answer)
    status, answer = _post(port, {"image": image})
    assert status == 200 and answer["text"]


@pytest.mark.slow
def test_grounding_returns_a_box_and_refuses_a_missing_expression(servers: dict[str, Any],
                                                                   pil_image: Callable[..., Any]) -> None:
    port = servers["refcoco"]["port"]
    status, answer = _post(port, {"image": _png(pil_image(2, (80, 48))), "text": "the red square"})
    assert status == 200 and len(answer["box"]) == 4
    assert all(0 <= v <= 80 for v in answer["box"][::2]) and all(0 <= v <= 48 for v in answer["box"][1::2])
    status, answer = _post(port, {"image": _png(pil_image(2))})  # refcoco needs the expression
    assert status == 422 and answer["detail"]
    assert _post(port, {"image": _png(pil_image(3)), "text": "the circle"})[0] == 200


@pytest.mark.slow
def test_unbatched_serving_and_sigterm_stopping_every_process(checkpoint: Path, tmp_path: Path,
                                                             pil_image: Callable[..., Any]) -> None:
    """With --max-batch-size 1 LitServe hands requests over one by one; SIGTERM stops the whole server."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with open(tmp_path / "serve.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ofa.apps.cli", "serve", "--task", "caption", "--checkpoint",
                                 str(checkpoint), "--port", str(port), "-o", "image_size=64", "-o", "max_len=6",
                                 "--max-batch-size", "1"], stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
        try:
            _wait_healthy(port, proc)
            for seed in (1, 2):
                status, answer = _post(port, {"image": _png(pil_image(seed))})
                assert status == 200 and answer["text"], (status, answer)
            proc.terminate()
            assert proc.wait(timeout=60) is not None
            assert not _wait_group_empty(proc.pid), "worker processes outlived the server"
        finally:
            if _wait_group_empty(proc.pid, timeout=0.1):
                os.killpg(proc.pid, signal.SIGKILL)
