"""A memfit plan applied to a real Lightning run by MemoryPlanCallback."""

import warnings

import pytest
import torch

pytest.importorskip("transformers")
L = pytest.importorskip("lightning")

from memfit import estimate, plan  # noqa: E402
from memfit.integrations.lightning import MemoryPlanCallback, trainer_code, trainer_kwargs  # noqa: E402
from memfit.measure.process import current_rss_bytes  # noqa: E402
from memfit.specs import load_workload  # noqa: E402

SEQ_LEN = 64
SPEC = f"hf:gpt2:vocab_size=256,n_layer=2,n_embd=64,n_head=2,seq_len={SEQ_LEN}"


class ByteLM(L.LightningModule):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def training_step(self, batch, batch_idx):
        return self.model(**batch).loss

    def configure_optimizers(self):
        return torch.optim.AdamW(self.parameters(), lr=1e-3)


class RssReadings(L.Callback):
    """The process's resident size after each batch, as the OS reports it (psutil)."""

    def __init__(self):
        self.rss = []

    def on_train_batch_end(self, *args, **kwargs):
        self.rss.append(current_rss_bytes())


def _trainer(callbacks, steps=3):
    return L.Trainer(
        accelerator="cpu",
        max_steps=steps,
        callbacks=callbacks if isinstance(callbacks, list) else [callbacks],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )


@pytest.fixture(scope="module")
def planned():
    workload = load_workload(SPEC)
    baseline = estimate(workload, 32, "adamw").peak_bytes
    the_plan = plan(workload, baseline // 2, 32, exact=True, optimizer="adamw", reserve_bytes=0)
    assert the_plan.fits and the_plan.accumulation_steps > 1
    return workload, the_plan


def test_the_callback_applies_the_plan_and_measures_the_peak(planned, byte_chunks):
    workload, the_plan = planned
    settings = the_plan.to_dict()
    # As a plan for a tighter budget says, to check that both are applied:
    settings["precision"] = "bf16"
    settings["checkpointed"] = ["transformer.h.1"]
    module = ByteLM(workload.build_model())
    # Calls of a checkpointed block's attention: twice per micro-batch when recomputed.
    block = module.model.get_submodule("transformer.h.1").attn
    calls = []
    block.register_forward_hook(lambda *_: calls.append(1))
    loader = torch.utils.data.DataLoader(
        byte_chunks(SEQ_LEN), batch_size=the_plan.micro_batch_size, shuffle=True
    )
    callback = MemoryPlanCallback(settings, on_over_budget="warn")
    readings = RssReadings()
    trainer = _trainer([readings, callback])  # each reading comes before the callback's
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tiny budget of a toy plan: the RSS is over it
        trainer.fit(module, loader)

    micro_batches = 3 * the_plan.accumulation_steps
    assert trainer.accumulate_grad_batches == the_plan.accumulation_steps
    assert trainer.global_step == 3
    assert trainer.precision == "bf16-mixed"
    assert callback.checkpointed == ["model.transformer.h.1"]
    assert len(calls) == 2 * micro_batches
    assert callback.watch.steps_seen == 3
    # A high-water mark: at least every resident size the OS reported during those steps.
    assert callback.measured_peak_bytes >= max(readings.rss) > 0


def test_over_budget_stops_the_run(planned, byte_chunks):
    workload, the_plan = planned
    settings = {**the_plan.to_dict(), "budget_bytes": current_rss_bytes() // 2, "reserve_bytes": 0}
    callback = MemoryPlanCallback(settings, on_over_budget="stop")
    loader = torch.utils.data.DataLoader(byte_chunks(SEQ_LEN), batch_size=the_plan.micro_batch_size)
    trainer = _trainer(callback, steps=5)
    trainer.fit(ByteLM(workload.build_model()), loader)
    assert callback.over_budget and trainer.global_step == 1
    assert "over the" in callback.summary()


def test_trainer_settings_and_code_for_a_plan(planned):
    _, the_plan = planned
    kwargs = trainer_kwargs(the_plan)
    assert kwargs == {"accumulate_grad_batches": the_plan.accumulation_steps}
    code = trainer_code(the_plan, "hf:gpt2")
    compile(code, "emitted", "exec")
    assert f"batch_size={the_plan.micro_batch_size}" in code
    assert "MemoryPlanCallback(plan)" in code
