"""Test-session hooks."""

from __future__ import annotations


def pytest_unconfigure(config) -> None:
    """A session that loaded nvImageCodec (tests/backends/cuda/test_gpu.py with --decoder nvimgcodec available) ends here,
    with pytest's exit status: nvImageCodec 0.9 has crashed or hung the process in its teardown at
    interpreter exit after every test had passed (H100, 2026-11-23). See cuda.jpeg.exit_before_teardown."""
    from gpupipe.backends.cuda.jpeg import exit_before_teardown
    exit_before_teardown(int(getattr(config, "_gpupipe_exitstatus", 0)))


def pytest_sessionfinish(session, exitstatus) -> None:
    session.config._gpupipe_exitstatus = int(exitstatus)
