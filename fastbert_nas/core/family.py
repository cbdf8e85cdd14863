"""Teacher families: the transformers sequence classifiers that can teach, and where their parts are.

BERT, RoBERTa and ELECTRA classifiers share BERT's encoder layer (attention.self.query/key/value,
attention.output, intermediate, output, post-norm LayerNorms) under `model.base_model`; they differ in
their embeddings (RoBERTa's positions start after the padding index, which its config carries; ELECTRA
may embed narrower than its width and project up: `embeddings_project`) and their heads (BERT: pooler
and classifier; RoBERTa and ELECTRA: classifier.dense and classifier.out_proj). A student is built in its
teacher's family from the teacher's config (transformers' Auto classes load it with the same tokenizer).
DistilBERT (other layer names, no token types) and other families are refused with one line.
"""

from __future__ import annotations

from fastbert_nas.config import UserError

FAMILIES = ("bert", "roberta", "electra")  # config.model_type of the supported classifiers


def check_family(config, name: str) -> str:
    """The model's family (config.model_type); UserError naming it and the supported ones otherwise."""
    family = getattr(config, "model_type", None)
    if family not in FAMILIES:
        raise UserError(f"model {name!r} is a {family} classifier; supported teacher families: "
                        f"{', '.join(FAMILIES)}")
    return family


def encoder_layers(model):
    """The classifier's encoder layers (a ModuleList, assignable through set_encoder_layers)."""
    return model.base_model.encoder.layer


def set_encoder_layers(model, layers) -> None:
    model.base_model.encoder.layer = layers


def shaped_config(teacher_config, layers: int, hidden: int, heads: int, ffn: int):
    """The teacher's config (its class: vocabulary, positions, padding, labels kept) with another shape. An
    ELECTRA teacher that embeds at its own width gives a student that embeds at the student's; one that
    embeds narrower keeps its embedding width (the student projects it up)."""
    cfg = type(teacher_config).from_dict(teacher_config.to_dict())
    cfg.num_hidden_layers, cfg.hidden_size, cfg.num_attention_heads, cfg.intermediate_size = layers, hidden, heads, ffn
    if getattr(teacher_config, "embedding_size", None) == teacher_config.hidden_size:
        cfg.embedding_size = hidden
    return cfg
