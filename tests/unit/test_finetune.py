"""LoRA fine-tuning on tiny models: loss falls, Stop keeps the adapter, saved adapters reload with
PEFT and give the same logits, the shared model never changes, PiSSA, and healing a compressed model."""

from __future__ import annotations

import threading

import pytest
import torch
from peft import PeftModel
from peft.tuners.lora import LoraLayer

from lowrank_lab import LowRankLinear, load_compressed, load_model
from lowrank_lab.data import builtin_source, prepare
from lowrank_lab.errors import SettingsError
from lowrank_lab.export import save_adapter
from lowrank_lab.finetune import LoraSettings, TrainControl, finetune, generate, lora_targets, target_modules
from tests.unit.export_support import compressed_model, logits

FAST = dict(steps=12, batch_size=4, max_seq_len=32, learning_rate=1e-2, eval_every=4, eval_examples=8, r=4, alpha=8)


@pytest.fixture(scope="module")
def domain(tiny_llama):
    return prepare(builtin_source("domain-text"), tiny_llama.tokenizer, max_seq_len=32)


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _same(before: dict[str, torch.Tensor], model) -> bool:
    now = model.state_dict()
    return before.keys() == now.keys() and all(torch.equal(before[k], now[k]) for k in before)


def _adapted(model) -> list[str]:
    """Names of the layers that carry a LoRA adapter."""
    return [name for name, m in model.named_modules() if isinstance(m, LoraLayer)]


def test_a_few_steps_lower_the_loss_and_leave_the_shared_model_bit_identical(tiny_llama, domain):
    before = _weights(tiny_llama.model)
    seen = []
    adapter = finetune(tiny_llama, domain, LoraSettings(**FAST), on_step=seen.append)
    report = adapter.report
    assert _same(before, tiny_llama.model)
    assert not any(p.requires_grad for p in tiny_llama.model.parameters())
    assert report.val_loss_after < report.val_loss_before - 0.02
    assert report.perplexity_after < report.perplexity_before
    assert [s.step for s in seen] == list(range(1, 13)) and seen[-1].seconds_left == 0
    assert [s.step for s in seen if s.val_loss is not None] == [4, 8]
    assert [step for step, _ in report.val_losses] == [0, 4, 8, 12]
    assert report.tokens == 12 * 4 * 32 and report.tokens_per_s > 0 and not report.stopped
    assert adapter.base == "original" and adapter.source == tiny_llama.spec and adapter.compressed is None
    assert isinstance(adapter.model, PeftModel)
    assert report.trainable_params == sum(v.numel() for k, v in adapter.model.state_dict().items() if "lora_" in k)


def test_stop_ends_training_cleanly_and_keeps_a_usable_adapter(tmp_path, tiny_llama, domain):
    control = TrainControl()

    def on_step(info):
        if info.step == 3:  # as a Stop button would, from another thread
            threading.Thread(target=control.stop).start()
            while not control.stop_requested:
                pass

    adapter = finetune(tiny_llama, domain, LoraSettings(**FAST), on_step=on_step, control=control)
    assert adapter.report.stopped and adapter.report.steps_done == 3 and adapter.report.steps_planned == 12
    assert len(adapter.report.losses) == 3
    lora_b = [v for k, v in adapter.model.state_dict().items() if "lora_B" in k]
    assert any(v.abs().sum() > 0 for v in lora_b)  # three steps of learning are kept
    folder = save_adapter(adapter, tmp_path / "a")
    reloaded = PeftModel.from_pretrained(load_model("tiny-llama").copy(), str(folder))
    assert torch.allclose(logits(reloaded), logits(adapter.model), atol=1e-5)


def test_saved_adapter_reloads_with_peft_and_gives_the_same_logits(tmp_path, tiny_llama, domain):
    settings = LoraSettings(**{**FAST, "steps": 4, "targets": ("q_proj", "v_proj"), "dropout": 0.1})
    adapter = finetune(tiny_llama, domain, settings)
    folder = save_adapter(adapter, tmp_path / "adapter")
    reloaded = PeftModel.from_pretrained(load_model("tiny-llama").copy(), str(folder))
    assert torch.allclose(logits(reloaded), logits(adapter.model), atol=1e-5)
    assert not torch.allclose(logits(adapter.model), logits(tiny_llama.model), atol=1e-4)
    assert {name.rpartition(".")[2] for name in _adapted(adapter.model)} == {"q_proj", "v_proj"}


def test_pissa_init_is_saved_as_a_plain_adapter_on_the_untouched_base(tmp_path, tiny_llama, domain):
    adapter = finetune(tiny_llama, domain, LoraSettings(**{**FAST, "steps": 4, "init": "pissa"}))
    assert adapter.model.peft_config["default"].r == 2 * FAST["r"]  # PEFT's PiSSA → LoRA conversion
    base = adapter.model.get_base_model()
    layer = base.model.layers[0].self_attn.q_proj.base_layer
    assert torch.equal(layer.weight, tiny_llama.model.model.layers[0].self_attn.q_proj.weight)
    assert adapter.report.val_loss_after < adapter.report.val_loss_before
    folder = save_adapter(adapter, tmp_path / "pissa")
    reloaded = PeftModel.from_pretrained(load_model("tiny-llama").copy(), str(folder))
    assert torch.allclose(logits(reloaded), logits(adapter.model), atol=1e-4)


def test_healing_a_compressed_model_trains_its_thin_factors(tmp_path, tiny_llama, domain):
    compressed = compressed_model(tiny_llama, keep=0.4)
    before = _weights(compressed.model)
    adapter = finetune(compressed, domain, LoraSettings(**{**FAST, "steps": 16}))
    assert _same(before, compressed.model)
    adapted = _adapted(adapter.model)
    assert adapted and all(name.endswith((".A", ".B")) for name in adapted)
    assert len(adapted) == 2 * len(compressed.plan)
    assert adapter.base == "compressed" and adapter.compressed is compressed
    assert adapter.report.val_loss_after < adapter.report.val_loss_before
    folder = save_adapter(adapter, tmp_path / "healed")
    reloaded = PeftModel.from_pretrained(load_compressed(folder / "base").model, str(folder))
    assert sum(isinstance(m, LowRankLinear) for m in reloaded.modules()) == len(compressed.plan)
    assert torch.allclose(logits(reloaded), logits(adapter.model), atol=1e-5)


def test_generate_gives_text_for_each_prompt(tiny_llama):
    out = generate(
        tiny_llama.model, tiny_llama.tokenizer, ["Write the number in English words: 7"], chat=True, max_new_tokens=4
    )
    assert len(out) == 1 and isinstance(out[0], str)


def test_lora_targets_and_modules(tiny_llama):
    targets = lora_targets(tiny_llama.model)
    assert targets == ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    names = target_modules(tiny_llama.model, "all-linear")
    assert len(names) == 14 and "lm_head" not in names
    with pytest.raises(SettingsError, match="no layers named qkv.*choose from down_proj"):
        target_modules(tiny_llama.model, ("qkv",))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"r": 0}, "r must be a positive integer, got 0"),
        ({"alpha": -1}, "alpha must be positive"),
        ({"dropout": 1.0}, r"dropout must be in \[0, 1\)"),
        ({"targets": ()}, "targets"),
        ({"init": "gaussian"}, "init 'gaussian' is unknown; use one of default, pissa"),
        ({"learning_rate": 2.0}, "learning_rate"),
        ({"schedule": "step"}, "schedule 'step'"),
        ({"steps": None}, "exactly one of steps and epochs"),
        ({"steps": 5, "epochs": 1.0}, "exactly one of steps and epochs"),
        ({"steps": 0}, "steps must be at least 1"),
        ({"batch_size": 0}, "batch_size"),
        ({"max_seq_len": 4}, "max_seq_len"),
        ({"eval_every": -1}, "eval_every"),
    ],
)
def test_bad_settings_name_the_value_and_the_fix(kwargs, message):
    with pytest.raises(SettingsError, match=message):
        LoraSettings(**kwargs)


def test_epochs_set_the_number_of_steps():
    assert LoraSettings(steps=None, epochs=0.5, batch_size=4).total_steps(40) == 5
    assert LoraSettings(targets=["q_proj"]).targets == ("q_proj",)


def test_an_encoder_cannot_be_fine_tuned_on_text(tiny_bert, domain):
    with pytest.raises(SettingsError, match="no language-model head"):
        finetune(tiny_bert, domain, LoraSettings(**FAST))


def test_validation_before_is_told_before_the_first_step_and_after_at_the_end(tiny_llama, domain):
    order: list[tuple] = []
    settings = LoraSettings(**{**FAST, "steps": 3, "eval_every": 0})
    adapter = finetune(
        tiny_llama,
        domain,
        settings,
        on_step=lambda s: order.append(("step", s.step)),
        progress=lambda d, t, m: order.append(("progress", m)),
        on_validation=lambda step, loss: order.append(("validation", step, loss)),
    )
    report = adapter.report
    validations = [o for o in order if o[0] == "validation"]
    assert validations == [("validation", 0, report.val_loss_before), ("validation", 3, report.val_loss_after)]
    first_step = order.index(("step", 1))
    assert order.index(validations[0]) < first_step < order.index(validations[1])
    messages = [o[1] for o in order if o[0] == "progress"]
    assert messages[0] == "copying the model and putting the adapters on it"
    assert "validation loss before training: 8/8 examples" in messages
    assert messages[-1] == "validation loss after training: 8/8 examples"


def test_a_progress_callback_can_cancel_before_training(tiny_llama, domain):
    from lowrank_lab.errors import Cancelled

    steps = []

    def cancel(done, total, message):
        if message.startswith("validation loss before"):
            raise Cancelled("stopped before training")

    with pytest.raises(Cancelled):
        finetune(tiny_llama, domain, LoraSettings(**FAST), on_step=steps.append, progress=cancel)
    assert steps == []
