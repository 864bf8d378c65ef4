"""The model of PyTorch's CUDA caching allocator, against hand counts of its rules."""

import torch

from memfit import zoo
from memfit.measure.cuda_allocator import (
    CachingAllocatorModel,
    reserved_peak,
    round_size,
    segment_size,
)
from memfit.measure.step import TrainingStep
from memfit.measure.tracker import MemoryTracker

MiB = 2**20


def test_requests_round_to_512_bytes_and_segments_follow_the_size_classes():
    assert round_size(1) == 512 and round_size(513) == 1024 and round_size(4096) == 4096
    assert segment_size(512) == 2 * MiB  # small pool
    assert segment_size(MiB) == 2 * MiB
    assert segment_size(MiB + 512) == 20 * MiB  # mid-sized: one 20 MiB segment
    assert segment_size(10 * MiB) == 10 * MiB  # large: rounded to 2 MiB
    assert segment_size(11 * MiB) == 12 * MiB


def test_freed_blocks_are_reused_and_neighbours_merge():
    m = CachingAllocatorModel()
    blocks = [m.allocate(6 * MiB) for _ in range(3)]  # 18 MiB of one 20 MiB segment
    assert m.reserved_bytes == 20 * MiB
    m.free(blocks[0])
    m.free(blocks[1])  # merges with the first: 12 MiB free in one piece
    m.allocate(11 * MiB)
    assert m.reserved_bytes == 20 * MiB  # no new segment
    m.allocate(3 * MiB)  # 1 + 2 MiB left in pieces too small: a new segment
    assert m.reserved_bytes == 40 * MiB and m.peak_reserved_bytes == 40 * MiB


def test_small_requests_share_two_mib_segments():
    m = CachingAllocatorModel()
    for _ in range(4):
        m.allocate(400 * 1024)
    assert m.reserved_bytes == 2 * MiB  # 1.6 MiB in one small segment
    m.allocate(500 * 1024)
    assert m.reserved_bytes == 4 * MiB


def test_a_tracked_steps_events_replay_to_a_reserve_above_its_tensor_peak():
    w = zoo.get("mlp", depth=3, width=300, inputs=300)
    model = w.build_model()
    opt = torch.optim.Adam(model.parameters())
    step = TrainingStep.for_workload(w, model, opt)
    step(w.make_batch(64, "cpu"))
    tracker = MemoryTracker()
    tracker.model_cuda_allocator = True
    tracker.register_model(model)
    tracker.register_optimizer(opt)
    batch = w.make_batch(64, "cpu")
    with tracker.track(model):
        step.on_phase = lambda p: setattr(tracker, "phase", p)
        step(batch)
    result = tracker.result()
    allocated, reserved = reserved_peak(
        (id(e), e.nbytes, sign) for e, sign, *_ in tracker._events if e.nbytes
    )
    assert result.reserved_peak_bytes == reserved
    # 300x300 fp32 weights (360 kB) each take a rounded small block: the reserve is whole
    # segments, above the tensors' own peak, and a multiple of 2 MiB.
    assert reserved >= allocated >= result.peak_bytes
    assert reserved % (2 * MiB) == 0
