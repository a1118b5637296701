"""Tiny random models for tests: Llama-, GPT-2- and BERT-style, with a real tiny tokenizer.

The tokenizer is a byte-level BPE with a 512-token vocabulary, trained once on the built-in
calibration text and cached on disk, so tiny models read real text quickly.
"""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from torch import nn
from transformers import PreTrainedTokenizerFast

from lowrank_lab.data.text import builtin_text
from lowrank_lab.paths import cache_dir
from lowrank_lab.tasks import auto_model_class, task_of_config

TINY_VOCAB = 512
_TOKENIZER_VERSION = "tiny-bpe-512-v1"
_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<pad>"]
# ChatML, the template SmolLM2 uses, so instruction data formats the same way on tiny models.
CHATML_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def tiny_tokenizer() -> PreTrainedTokenizerFast:
    """Return the tiny byte-level BPE tokenizer (trained on first use, then read from the cache)."""
    folder = cache_dir("tokenizers", _TOKENIZER_VERSION)
    path = folder / "tokenizer.json"
    if not path.exists():
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=TINY_VOCAB,
            special_tokens=_SPECIALS,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator([builtin_text("calibration")], trainer=trainer)
        tmp = path.with_suffix(f".{torch.randint(0, 2**31, ()).item()}.tmp")
        tok.save(str(tmp))
        tmp.replace(path)  # atomic: parallel test workers never read half a file
    return PreTrainedTokenizerFast(
        tokenizer_file=str(path),
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        pad_token="<pad>",
        chat_template=CHATML_TEMPLATE,
        model_max_length=256,
    )


def tiny_model(name: str, seed: int = 0) -> nn.Module:
    """Build a tiny model with random weights (``torch.manual_seed(seed)``).

    Args:
        name: ``tiny-llama``, ``tiny-gpt2`` or ``tiny-bert``.
        seed: seed of the random initialisation; the same seed gives the same weights.
    """
    from transformers import BertConfig, GPT2Config, LlamaConfig  # heavy: imported on first use, not with lowrank_lab

    common = dict(vocab_size=TINY_VOCAB, pad_token_id=3)
    if name == "tiny-llama":
        config = LlamaConfig(
            hidden_size=64,
            intermediate_size=160,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=256,
            tie_word_embeddings=True,
            bos_token_id=0,
            eos_token_id=0,
            **common,
        )
        architecture = "LlamaForCausalLM"
    elif name == "tiny-gpt2":
        config = GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=256, bos_token_id=0, eos_token_id=0, **common)
        architecture = "GPT2LMHeadModel"
    elif name == "tiny-bert":
        config = BertConfig(
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=256,
            **common,
        )
        architecture = "BertModel"
    else:
        raise ValueError(f"unknown tiny model {name!r}")
    config.architectures = [architecture]
    torch.manual_seed(seed)
    # Through the auto class, so the modelling code is imported only when a tiny model is built.
    return auto_model_class(task_of_config(config)).from_config(config)
