"""Offload seen from outside the process: resident memory during a step, and a real kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from memfit.errors import OffloadError
from memfit.techniques.offload import OffloadedOptimizer

MIB = 2**20

# One step's peak resident memory above the resident set just before it, in a fresh process
# with MALLOC_MMAP_THRESHOLD_ set so freed temporaries go back to the system at once.
STEP_PEAK_CHILD = textwrap.dedent(
    """
    import json, sys, torch
    from memfit.techniques.offload import OffloadedOptimizer

    def status_kib(key):
        for line in open("/proc/self/status"):
            if line.startswith(key):
                return int(line.split()[1])

    kind, state_dir, numel, bound = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    torch.set_num_threads(1)

    def make(param, folder):
        if kind == "offload":
            return OffloadedOptimizer([param], state_dir=folder, max_resident_bytes=bound)
        return torch.optim.AdamW([param])

    # A first step on a tiny parameter loads the code an optimizer step needs (about 5 MiB,
    # once per process): not state, so it is left out of the measured figure.
    tiny = torch.nn.Parameter(torch.zeros(8))
    tiny.grad = torch.ones(8)
    make(tiny, state_dir + "/warm-up").step()
    param = torch.nn.Parameter(torch.zeros(numel))
    param.grad = torch.randn(numel)
    opt = make(param, state_dir + "/state")
    open("/proc/self/clear_refs", "w").write("5")
    before = status_kib("VmRSS:")
    for _ in range(2):
        opt.step()
    print(json.dumps({"step_peak_bytes": (status_kib("VmHWM:") - before) * 1024}))
    """
)


def step_peak_bytes(kind: str, state_dir, numel: int, bound: int) -> int:
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="1048576")
    out = subprocess.run(
        [sys.executable, "-c", STEP_PEAK_CHILD, kind, str(state_dir), str(numel), str(bound)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])["step_peak_bytes"]


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/clear_refs"), reason="needs Linux /proc")
def test_step_resident_memory_stays_under_the_bound(tmp_path):
    numel = 16 * MIB // 4 * 4  # 16 Mi parameters: 128 MiB of Adam state
    bound = 16 * MIB  # an eighth of the state
    offloaded = step_peak_bytes("offload", tmp_path, numel, bound)
    in_memory = step_peak_bytes("in-memory", tmp_path / "unused", numel, bound)
    state_bytes = 2 * 4 * numel
    assert in_memory >= state_bytes  # the measurement sees a state that is held in RAM
    assert offloaded <= bound + 2 * MIB  # 2 MiB: page-table and interpreter noise


KILLED_CHILD = textwrap.dedent(
    """
    import sys, time, torch
    from memfit.techniques.offload import OffloadedOptimizer

    state_dir, marker = sys.argv[1], sys.argv[2]
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(4 * 2**20))
    opt = OffloadedOptimizer([param], state_dir=state_dir, max_resident_bytes=2**22)
    param.grad = torch.randn_like(param)
    opt.step()
    opt.checkpoint()
    real_update = OffloadedOptimizer._update_chunk

    def update_then_wait(self, *args):
        real_update(self, *args)
        open(marker, "w").close()
        time.sleep(60)

    OffloadedOptimizer._update_chunk = update_then_wait
    opt.step()
    """
)


@pytest.mark.slow
def test_process_killed_mid_step_leaves_state_that_is_refused(tmp_path):
    marker = tmp_path / "in-step"
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_CHILD, str(tmp_path / "state"), str(marker)],
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert child.poll() is None, child.stderr.read().decode()
            assert time.monotonic() < deadline, "the child never reached its step"
            time.sleep(0.05)
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    param = torch.nn.Parameter(torch.zeros(4 * 2**20))
    with pytest.raises(OffloadError, match="changed after its last checkpoint"):
        OffloadedOptimizer([param], state_dir=tmp_path / "state", resume=True)
