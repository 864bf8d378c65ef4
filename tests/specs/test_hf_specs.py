"""hf:NAME specs: where configurations come from, task heads, batches, and bad input."""

import json

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from memfit import estimate, profile
from memfit.errors import WorkloadError
from memfit.specs import load_workload
from memfit.specs.hf import known_checkpoint, known_checkpoints

pytest.importorskip("transformers")

# Published parameter counts (model cards and papers), to check the table's fields by.
PUBLISHED = {
    "gpt2": 124e6,  # model card: 124M
    "gpt2-medium": 355e6,  # model card: 355M
    "gpt2-large": 774e6,  # model card: 774M
    "distilgpt2": 82e6,  # model card: 82M
    "bert-base-uncased": 110e6,  # BERT paper: 110M
    "bert-large-uncased": 336e6,  # model card: 336M
    "distilbert-base-uncased": 66e6,  # DistilBERT paper: 66M
    "roberta-base": 125e6,  # model card: 125M
    "roberta-large": 355e6,  # model card: 355M
    "t5-small": 60e6,  # model card: 60M
    "t5-base": 220e6,  # model card: 220M
    "google/vit-base-patch16-224": 86.6e6,  # hub page: 86.6M
    "TinyLlama-1.1B": 1.1e9,  # model card: 1.1B
    "Llama-2-7b": 6.74e9,  # hub page: 6.74B
    "Llama-3-8B": 8.03e9,  # hub page: 8.03B
    "Llama-3.2-1B": 1.23e9,  # model card: 1.23B
    "Mistral-7B": 7.24e9,  # hub page: 7.24B
    "Mistral-7B-v0.3": 7.25e9,  # hub page: 7.25B
    "Qwen2.5-0.5B": 0.49e9,  # model card: 0.49B
    "Qwen2.5-1.5B": 1.54e9,  # model card: 1.54B
    "Qwen2.5-7B": 7.61e9,  # model card: 7.61B
    "phi-2": 2.78e9,  # hub page: 2.78B
    "phi-3-mini": 3.82e9,  # hub page: 3.82B
}


def _parameters(spec: str) -> int:
    with FakeTensorMode():
        model = load_workload(spec).build_model()
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_table_configs_give_the_published_parameter_counts(name):
    count = _parameters(f"hf:{name}")
    assert abs(count - PUBLISHED[name]) / PUBLISHED[name] < 0.02


def test_every_table_entry_is_checked_against_a_published_count():
    covered = {known_checkpoint(name)[0] for name in PUBLISHED}
    assert covered == set(known_checkpoints())


def test_overrides_reach_derived_fields():
    # head_dim follows the new width: it is derived after the overrides, not before.
    w = load_workload(
        "hf:llama:hidden_size=256,num_attention_heads=8,num_key_value_heads=2,"
        "intermediate_size=512,num_hidden_layers=2,vocab_size=1000"
    )
    with FakeTensorMode():
        model = w.build_model()
    attn = model.model.layers[0].self_attn
    assert tuple(attn.q_proj.weight.shape) == (256, 256)
    assert tuple(attn.k_proj.weight.shape) == (64, 256)  # grouped-query: 2 of 8 heads
    assert len(model.model.layers) == 2


@pytest.mark.parametrize(
    "spec,task,keys",
    [
        ("hf:gpt2:n_layer=1,n_embd=32,n_head=2", "causal-lm", {"input_ids", "attention_mask", "labels"}),
        ("hf:bert:num_hidden_layers=1,hidden_size=32,num_attention_heads=2,intermediate_size=64", "masked-lm", {"input_ids", "attention_mask", "labels"}),
        ("hf:t5:num_layers=1,d_model=32,d_ff=64,num_heads=2,d_kv=16", "seq2seq", {"input_ids", "attention_mask", "labels"}),
        ("hf:vit:num_hidden_layers=1,hidden_size=32,num_attention_heads=2,intermediate_size=64,image_size=32", "image-cls", {"pixel_values", "labels"}),
        ("hf:roberta:task=seq-cls,num_hidden_layers=1,hidden_size=32,num_attention_heads=2,intermediate_size=64", "seq-cls", {"input_ids", "attention_mask", "labels"}),
    ],
)  # fmt: skip
def test_task_heads_train_on_their_own_loss(spec, task, keys):
    w = load_workload(spec + ",seq_len=64" if task != "image-cls" else spec)
    assert w.config["task"] == task and w.loss_fn is None
    batch = w.make_batch(4, "cpu")
    assert set(batch) == keys
    model = w.build_model()
    loss = w.loss(model, batch)
    loss.backward()
    assert loss.ndim == 0 and torch.isfinite(loss)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_text_batches_are_padded_like_real_ones():
    torch.manual_seed(0)
    w = load_workload("hf:gpt2:n_layer=1,n_embd=32,n_head=2,seq_len=128")
    batch = w.make_batch(64, "cpu")
    mask, labels = batch["attention_mask"], batch["labels"]
    assert tuple(batch["input_ids"].shape) == (64, 128)
    # Rows are real for a prefix of half to all of seq_len, then padding.
    lengths = mask.sum(1)
    assert lengths.min() >= 64 and lengths.max() <= 128 and lengths.float().std() > 5
    assert torch.equal(labels == -100, mask == 0)
    ignored = (labels == -100).float().mean().item()
    assert 0.15 < ignored < 0.35  # about a quarter is padding
    assert torch.all(batch["input_ids"][mask == 0] == 0)  # gpt2 has no pad token: id 0


def test_masked_lm_labels_a_share_of_real_tokens():
    torch.manual_seed(0)
    w = load_workload("hf:bert-base-uncased:seq_len=128")
    batch = w.make_batch(32, "cpu")
    real = batch["attention_mask"].bool()
    labelled = batch["labels"] != -100
    assert not (labelled & ~real).any()
    share = labelled.sum().item() / real.sum().item()
    assert 0.12 < share < 0.2
    assert labelled.any(1).all()  # every row has something to learn from
    assert w.count_items(batch) == labelled.sum().item()


def test_seq_len_from_the_spec_and_the_model_limit():
    assert load_workload("hf:gpt2").config["seq_len"] == 512
    assert load_workload("hf:gpt2:seq_len=64").make_batch(2, "cpu")["input_ids"].shape[1] == 64
    assert load_workload("hf:roberta-base").config["seq_len"] == 512  # 514 positions, 2 reserved
    with pytest.raises(WorkloadError, match="at most 1024 positions"):
        load_workload("hf:gpt2:seq_len=2048")


def test_a_local_folder_with_config_json(tmp_path):
    _, fields = known_checkpoint("TinyLlama-1.1B")
    (tmp_path / "config.json").write_text(json.dumps({**fields, "num_hidden_layers": 2}))
    w = load_workload(f"hf:{tmp_path}:seq_len=16")
    assert w.config["model_type"] == "llama" and "folder" in w.config["source"]
    assert _parameters(f"hf:{tmp_path}") < 0.3e9  # 2 of TinyLlama's 22 layers


def test_estimate_matches_a_measured_step():
    spec = "hf:llama:hidden_size=64,num_attention_heads=4,num_key_value_heads=2,intermediate_size=128,num_hidden_layers=2,vocab_size=512,seq_len=32"
    measured = profile(spec, batch_size=4, optimizer="adamw")
    estimated = estimate(spec, batch_size=4, optimizer="adamw")
    assert estimated.peak_bytes == measured.peak_bytes
    # Parameters by hand: embeddings and head 2*512*64, per layer q,o 64*64 each, k,v
    # 32*64 each (2 of 4 heads), MLP 3*64*128, two norms of 64; the final norm; and the
    # rotary embedding's two buffers of head_dim / 2 = 8 frequencies.
    per_layer = 2 * 64 * 64 + 2 * 32 * 64 + 3 * 64 * 128 + 2 * 64
    expected = 4 * (2 * 512 * 64 + 2 * per_layer + 64 + 2 * 8)
    assert estimated.categories["parameters"] == expected


@pytest.mark.parametrize(
    "spec,needle",
    [
        ("hf:nosuchmodel", "not a transformers model type"),
        ("hf:gtp2", "did you mean gpt2"),
        ("hf:gpt2:n_layer=2.5", "n_layer takes an integer"),
        ("hf:gpt2:hiden_size=8", "did you mean hidden_size"),
        ("hf:gpt2:task=image-cls", "no image classification head for gpt2"),
        ("hf:gpt2:task=dance", "unknown task"),
        ("hf:vit:seq_len=16", "image model"),
        ("hf:gpt2:dtype=int4", "dtype=int4"),
        ("hf:", "needs a model"),
        ("hf:gpt2:seq_len=64", None),
    ],
)
def test_bad_hf_specs_are_one_clear_line(spec, needle):
    if needle is None:
        load_workload(spec)
        return
    with pytest.raises(WorkloadError, match=needle) as info:
        load_workload(spec)
    assert "\n" not in str(info.value)


def test_a_setting_transformers_refuses_is_one_line():
    w = load_workload("hf:gpt2:n_embd=100,n_head=3,n_layer=1")
    with pytest.raises(WorkloadError, match="divisible") as info:
        w.build_model()
    assert "\n" not in str(info.value)
    # The estimator passes it on as it is, not as a fake-tensor failure.
    with pytest.raises(WorkloadError, match="divisible"):
        estimate(w, batch_size=1)


def test_hub_id_offline_says_what_to_do(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))  # an empty cache
    with pytest.raises(WorkloadError, match="hf:path/to/folder") as info:
        load_workload("hf:someone/some-model")
    assert "cannot fetch its config.json" in str(info.value)


def test_hub_id_in_the_table_needs_no_network(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    w = load_workload("hf:meta-llama/Llama-2-7b-hf")
    assert w.config["source"] == "memfit's table (meta-llama/Llama-2-7b-hf)"
