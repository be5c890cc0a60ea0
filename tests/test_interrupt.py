"""Ctrl-C stops a run promptly wherever its pool is (the runner's process pool).

A terminal's Ctrl-C sends SIGINT to the whole process group. These tests do
the same to a child Python that runs a batch, then check it exits within
seconds with status 130 (run_batch) or KeyboardInterrupt (map_ordered).
"""

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent(
    """
    import sys, time
    from csaws_tools.execution.runner import map_ordered, run_batch
    from csaws_tools.execution.tasks import Task

    def big(task):
        return {"status": "ok"}, b"x" * (48 << 20)

    def slow(x):
        time.sleep(1.0)
        return x

    tasks = [Task(key=str(i), source=str(i)) for i in range(400)]
    print("ready", file=sys.stderr, flush=True)
    if sys.argv[1] == "payloads":
        result = run_batch(tasks, big, manifest=None, workers=2, progress=False, on_result=lambda row, data: None)
        sys.exit(result.exit_code)
    map_ordered(slow, list(range(40)), workers=2)
    """
)


def _interrupt(mode: str, delay: float) -> tuple[int, float, str]:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-c", CHILD, mode], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stderr is not None
        assert proc.stderr.readline().strip() == b"ready"
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGINT)
        start = time.monotonic()
        _, stderr = proc.communicate(timeout=30)
        return proc.returncode, time.monotonic() - start, stderr.decode()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.mark.parametrize("delay", [0.4, 0.9])
def test_ctrl_c_while_workers_send_large_results_exits_promptly(delay):
    # Killed in the middle of sending a result, a pool process leaves half a
    # message in the pool's pipe; the pool used to wait for the rest for ever.
    code, seconds, stderr = _interrupt("payloads", delay)
    assert code == 130, stderr
    assert "interrupted" in stderr
    assert seconds < 10
    assert "Traceback" not in stderr  # pool processes ignore SIGINT: no traceback from each of them


def test_ctrl_c_stops_map_ordered_without_waiting_for_queued_items():
    code, seconds, stderr = _interrupt("map", 1.5)
    assert code != 0 and "KeyboardInterrupt" in stderr
    assert seconds < 5  # the 40 one-second items would take 20 s on two processes
    assert stderr.count("Traceback") == 1  # the main process's only
