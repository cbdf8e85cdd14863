"""Teacher families: the transformers sequence classifiers that can teach, and where their parts are.

BERT, RoBERTa and ELECTRA classifiers share BERT's encoder layer (attention.self.query/key/value,
attention.output, intermediate, output, post-norm LayerNorms) under `model.base_model.encoder`; DistilBERT
has the same parts under other names (attention.q_lin ..., sa_layer_norm, ffn.lin1/lin2,
output_layer_norm) under `model.base_model.transformer`, and no token types. They differ in their
embeddings too (RoBERTa's positions start after the padding index, which its config carries; ELECTRA may
embed narrower than its width and project up: `embeddings_project`) and in their heads (BERT: pooler and
classifier; DistilBERT: pre_classifier and classifier; RoBERTa and ELECTRA: classifier.dense and
classifier.out_proj). A student is built in its teacher's family from the teacher's config, so
transformers' Auto classes load it with the same tokenizer. Other families are refused with one line.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from fastbert_nas.config import UserError

FAMILIES = ("bert", "roberta", "electra", "distilbert")  # config.model_type of the supported classifiers


@dataclass(frozen=True)
class LayerParts:
    """Attribute paths, from one encoder layer, of its parts."""

    query: str
    key: str
    value: str
    attn_out: str     # the attention's output projection
    attn_norm: str    # LayerNorm after the attention block
    ffn_in: str
    ffn_out: str
    out_norm: str     # LayerNorm after the feed-forward block


BERT_PARTS = LayerParts("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
                        "attention.output.LayerNorm", "intermediate.dense", "output.dense", "output.LayerNorm")
DISTILBERT_PARTS = LayerParts("attention.q_lin", "attention.k_lin", "attention.v_lin", "attention.out_lin",
                              "sa_layer_norm", "ffn.lin1", "ffn.lin2", "output_layer_norm")


def check_family(config, name: str) -> str:
    """The model's family (config.model_type); UserError naming it and the supported ones otherwise."""
    family = getattr(config, "model_type", None)
    if family not in FAMILIES:
        raise UserError(f"model {name!r} is a {family} classifier; supported teacher families: "
                        f"{', '.join(FAMILIES)}")
    return family


def takes_token_types(config) -> bool:
    """Whether the family has segment embeddings (BERT, ELECTRA; not RoBERTa's single type, nor DistilBERT)."""
    return getattr(config, "type_vocab_size", 0) > 1


def model_inputs(model, batch: dict) -> dict:
    """The inputs of a batch (tasks.collate's) the model takes: ids and mask, and the token types of sentence
    pairs where the family has them (takes_token_types)."""
    names = ("input_ids", "attention_mask") + (("token_type_ids",) if takes_token_types(model.config) else ())
    return {k: batch[k] for k in names if k in batch}


def parts(model) -> LayerParts:
    return DISTILBERT_PARTS if model.config.model_type == "distilbert" else BERT_PARTS


def part(layer, path: str):
    """The module at `path` (a LayerParts field) of an encoder layer."""
    return functools.reduce(getattr, path.split("."), layer)


def _encoder(model):
    base = model.base_model
    return base.transformer if model.config.model_type == "distilbert" else base.encoder


def encoder_layers(model):
    """The classifier's encoder layers (a ModuleList, assignable through set_encoder_layers)."""
    return _encoder(model).layer


def set_encoder_layers(model, layers) -> None:
    _encoder(model).layer = layers


def encoder_prefix(model) -> str:
    """The parameter-name prefix of the encoder layers: 'bert.encoder.', 'distilbert.transformer.', ..."""
    return f"{model.base_model_prefix}.{'transformer' if model.config.model_type == 'distilbert' else 'encoder'}."


def config_shape(config) -> tuple[int, int, int, int]:
    """(layers, hidden, heads, ffn) of a config of any supported family."""
    ffn = config.hidden_dim if config.model_type == "distilbert" else config.intermediate_size
    return config.num_hidden_layers, config.hidden_size, config.num_attention_heads, ffn


def shaped_config(teacher_config, layers: int, hidden: int, heads: int, ffn: int):
    """The teacher's config (its class: vocabulary, positions, padding, labels kept) with another shape. An
    ELECTRA teacher that embeds at its own width gives a student that embeds at the student's; one that
    embeds narrower keeps its embedding width (the student projects it up)."""
    cfg = type(teacher_config).from_dict(teacher_config.to_dict())
    cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads = layers, hidden, heads
    if cfg.model_type == "distilbert":
        cfg.hidden_dim = ffn
    else:
        cfg.intermediate_size = ffn
    if getattr(teacher_config, "embedding_size", None) == teacher_config.hidden_size:
        cfg.embedding_size = hidden
    return cfg
