"""Export a run as one GGUF file for llama.cpp and Ollama, with an Ollama ``Modelfile`` beside it.

The run's adapter is merged into its base by `engine.export.export_merged` (full-precision base,
also for QLoRA), then the merged Hugging Face folder is written as GGUF with the `gguf` package's
writer, name map and quantizers. The `gguf` package ships no Hugging Face converter (that is
llama.cpp's ``convert_hf_to_gguf.py``), so the few steps it does for the llama family are here:
llama.cpp's rotary layout for q/k (`_permute`), the vocabulary with token types, and the
metadata keys. The file carries the tokenizer, the chat template, BOS / EOS, and the end-of-turn
token, so a runtime stops where the model was trained to stop.

Like the other exports, everything is written into a temporary folder beside the target and
renamed into place; a failed export leaves nothing behind.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from engine import export
from engine.errors import TunedeckError

Progress = Callable[[str], None]

# tunedeck's name → the gguf quantization type. The K-quants and i-quants need llama.cpp's
# quantize tool (importance matrices, mixed types per tensor); these the gguf package writes itself.
QUANTS = ("f16", "bf16", "f32", "q8_0", "q5_1", "q5_0", "q4_1", "q4_0")
DEFAULT_QUANT = "f16"
# Hugging Face model_type → llama.cpp architecture. Mistral is llama in llama.cpp.
ARCHITECTURES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}
MODELFILE = "Modelfile"


@dataclass
class GgufResult:
    path: Path           # the export folder
    gguf: Path           # the .gguf file inside it
    modelfile: Path
    quant: str
    architecture: str
    base_model: str
    size_bytes: int
    stops: list[str] = field(default_factory=list)
    fallbacks: list[str] = field(default_factory=list)  # tensors kept in f16 (shape not blockable)

    def run_commands(self) -> list[str]:
        """The one command per runtime found on PATH that runs this export."""
        commands = []
        if shutil.which("llama-cli"):
            commands.append(f'llama-cli -m "{self.gguf}" -cnv')
        if shutil.which("ollama"):
            commands.append(f'ollama create {self.path.name} -f "{self.modelfile}" && '
                            f"ollama run {self.path.name}")
        return commands


def _gguf_type(quant: str) -> Any:
    import gguf

    key = quant.lower()
    if key not in QUANTS:
        raise TunedeckError(f"Unknown GGUF type '{quant}'. Use one of: {', '.join(QUANTS)}. "
                            "For K-quants (q4_k_m…), export f16 and run llama.cpp's "
                            "llama-quantize on the file.")
    return gguf.GGMLQuantizationType[key.upper()]


def _file_type(qtype: Any) -> Any:
    import gguf

    name = qtype.name
    return gguf.LlamaFileType.ALL_F32 if name == "F32" else gguf.LlamaFileType[f"MOSTLY_{name}"]


def check_supported(config: dict[str, Any], where: str) -> str:
    """The llama.cpp architecture for a model config, or a message that says what to do."""
    model_type = str(config.get("model_type") or "")
    if model_type not in ARCHITECTURES:
        raise TunedeckError(
            f"{where}: GGUF export supports {', '.join(sorted(ARCHITECTURES))} models; this one is "
            f"'{model_type or 'unknown'}'. Export a Hugging Face folder with --merge and convert "
            "it with llama.cpp's convert_hf_to_gguf.py, which knows more architectures.")
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    kind = rope.get("rope_type") or rope.get("type") or "default"
    if kind not in ("default", "linear"):
        raise TunedeckError(
            f"{where}: rope scaling '{kind}' is not written by this exporter. Export with --merge "
            "and convert the folder with llama.cpp's convert_hf_to_gguf.py.")
    return ARCHITECTURES[model_type]


# --------------------------------------------------------------------------- metadata


def _rope_theta(config: dict[str, Any]) -> float:
    rope = config.get("rope_parameters") or {}
    return float(rope.get("rope_theta") or config.get("rope_theta") or 10000.0)


def _write_hparams(writer: Any, config: dict[str, Any], name: str) -> None:
    import gguf

    heads = int(config["num_attention_heads"])
    hidden = int(config["hidden_size"])
    head_dim = int(config.get("head_dim") or hidden // heads)
    writer.add_type("model")
    writer.add_name(name)
    writer.add_context_length(int(config.get("max_position_embeddings") or 2048))
    writer.add_embedding_length(hidden)
    writer.add_block_count(int(config["num_hidden_layers"]))
    writer.add_feed_forward_length(int(config["intermediate_size"]))
    writer.add_head_count(heads)
    writer.add_head_count_kv(int(config.get("num_key_value_heads") or heads))
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.get("rms_norm_eps") or 1e-6))
    writer.add_vocab_size(int(config["vocab_size"]))
    writer.add_rope_dimension_count(head_dim)
    if head_dim != hidden // heads:
        writer.add_key_length(head_dim)
        writer.add_value_length(head_dim)
    rope = config.get("rope_parameters") or config.get("rope_scaling") or {}
    if (rope.get("rope_type") or rope.get("type")) == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(rope["factor"]))


def _pre_tokenizer(folders: list[Path], tokenizer_json: dict[str, Any]) -> str:
    """llama.cpp's name for how text is split before BPE. A model converted from a GGUF (the
    default one) keeps its file's name; otherwise the split regex names it, and a plain
    byte-level split is 'default'."""
    for source in (f / "tunedeck-source.json" for f in folders):
        if not source.is_file():
            continue
        try:
            import gguf

            original = json.loads(source.read_text()).get("gguf")
            field_ = gguf.GGUFReader(original).fields.get("tokenizer.ggml.pre")
            if field_ is not None:
                return bytes(field_.parts[field_.data[0]]).decode()
        except (OSError, ValueError, KeyError, TypeError):
            continue
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    text = json.dumps(tokenizer_json.get("pre_tokenizer"))
    preferred = ("llama-bpe", "qwen2", "tekken", "gpt-4o")  # the names llama.cpp itself writes
    for name in preferred + tuple(GGUF_PRE_TOKENIZER_SPLITS):
        regex = GGUF_PRE_TOKENIZER_SPLITS.get(name)
        if regex and json.dumps(regex)[1:-1] in text:
            return name
    return "default"


def _write_vocab(writer: Any, folder: Path, tokenizer: Any, vocab_size: int,
                 stops: list[int], source: Path | None) -> None:
    import gguf

    tokenizer_json = json.loads((folder / "tokenizer.json").read_text(encoding="utf-8"))
    model = tokenizer_json.get("model", {})
    if model.get("type") == "BPE" and model.get("byte_fallback"):
        # sentencepiece-style BPE (Llama 2, Mistral, TinyLlama): the gguf package reads it
        vocab = gguf.LlamaHfVocab(folder)
        tokens, scores, types = [], [], []
        for text, score, kind in vocab.all_tokens():
            tokens.append(text)
            scores.append(score)
            types.append(kind)
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_token_scores(scores + [-1000.0] * (vocab_size - len(tokens)))
    elif model.get("type") == "BPE":
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(_pre_tokenizer([folder] + ([source] if source else []),
                                                tokenizer_json))
        added = {t["id"]: t for t in tokenizer_json.get("added_tokens", [])}
        reverse = {i: t for t, i in tokenizer.get_vocab().items()}
        tokens, types = [], []
        for i in range(min(vocab_size, len(tokenizer))):
            tokens.append(reverse.get(i, f"[PAD{i}]"))
            if i in added:
                types.append(gguf.TokenType.CONTROL if added[i].get("special")
                             else gguf.TokenType.USER_DEFINED)
            else:
                types.append(gguf.TokenType.NORMAL if i in reverse else gguf.TokenType.UNUSED)
    else:
        raise TunedeckError(f"{folder}: tokenizer model '{model.get('type')}' cannot be written "
                            "to GGUF here (BPE only). Convert the --merge folder with llama.cpp's "
                            "convert_hf_to_gguf.py.")
    # An embedding matrix padded past the tokenizer gets placeholder tokens, as llama.cpp does.
    for i in range(len(tokens), vocab_size):
        tokens.append(f"[PAD{i}]")
        types.append(gguf.TokenType.UNUSED)
    writer.add_token_list(tokens)
    writer.add_token_types(types)

    special = gguf.SpecialVocab(folder, load_merges=True, n_vocab=vocab_size)
    # EOS is the end of an assistant turn (what the chat template closes a reply with); the other
    # stops go in the eot / eom slots, each of which llama.cpp also treats as end of generation.
    special.special_token_ids["eos"] = stops[0]
    for key, token_id in zip(("eot", "eom"), stops[1:], strict=False):
        special.special_token_ids[key] = token_id
    # What the tokenizer really does, not what its config claims.
    probe = tokenizer("a")["input_ids"]
    special.add_special_token["bos"] = bool(probe) and probe[0] == tokenizer.bos_token_id
    special.add_special_token["eos"] = (len(probe) > 1 and probe[-1] == tokenizer.eos_token_id)
    special.add_to_gguf(writer, quiet=True)


# --------------------------------------------------------------------------- tensors


def _permute(weights: Any, n_head: int, n_head_kv: int) -> Any:
    """llama.cpp's rotary layout: its rope pairs dimensions (i, i+1), Hugging Face's (i, i+d/2)."""
    if n_head_kv != n_head:
        n_head = n_head_kv
    return (weights.reshape(n_head, 2, weights.shape[0] // n_head // 2, *weights.shape[1:])
            .swapaxes(1, 2).reshape(weights.shape))


def _tensors(folder: Path):
    from safetensors import safe_open

    files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise TunedeckError(f"{folder}: no .safetensors weights to convert.")
    for path in files:
        with safe_open(str(path), framework="pt") as handle:
            for name in handle.keys():  # noqa: SIM118 (safe_open is not a dict)
                yield name, handle.get_tensor(name)


def _write_tensors(writer: Any, folder: Path, config: dict[str, Any], arch_name: str,
                   qtype: Any, say: Progress) -> list[str]:
    import gguf
    import torch

    arch = next(a for a, n in gguf.MODEL_ARCH_NAMES.items() if n == arch_name)
    blocks = int(config["num_hidden_layers"])
    name_map = gguf.get_tensor_name_map(arch, blocks)
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    tied = bool(config.get("tie_word_embeddings", False))
    fallbacks: list[str] = []
    written = 0
    for name, tensor in _tensors(folder):
        if name.endswith("rotary_emb.inv_freq") or (tied and name == "lm_head.weight"):
            continue
        new_name = name_map.get_name(name, try_suffixes=(".weight", ".bias"))
        if new_name is None:
            raise TunedeckError(f"{folder}: tensor '{name}' has no GGUF name for {arch_name}. "
                                "Convert the --merge folder with llama.cpp's convert_hf_to_gguf.py.")
        data = tensor.to(torch.float32).numpy()
        if arch_name == "llama" and name.endswith(("q_proj.weight", "q_proj.bias")):
            data = _permute(data, heads, heads)
        elif arch_name == "llama" and name.endswith(("k_proj.weight", "k_proj.bias")):
            data = _permute(data, heads, kv_heads)
        kind = qtype
        if data.ndim < 2:  # norms and biases stay f32, as llama.cpp keeps them
            kind = gguf.GGMLQuantizationType.F32
        elif data.shape[-1] % gguf.GGML_QUANT_SIZES[qtype][0]:
            kind = gguf.GGMLQuantizationType.F16
            fallbacks.append(new_name)
        writer.add_tensor(new_name, gguf.quants.quantize(data, kind), raw_dtype=kind)
        written += 1
        if written % 64 == 0:
            say(f"  {written} tensors converted…")
    return fallbacks


# --------------------------------------------------------------------------- the export


def convert_folder(folder: str | Path, gguf_path: str | Path, *, quant: str = DEFAULT_QUANT,
                   name: str | None = None, base_folder: Path | None = None,
                   progress: Progress | None = None) -> tuple[str, list[str]]:
    """Write a Hugging Face model folder (a merged export) as one GGUF file. ``base_folder``:
    the base model's folder, whose GGUF origin (if any) names the pre-tokenizer.

    Returns the llama.cpp architecture and the tensors kept in f16 because their rows do not
    split into the chosen type's blocks.
    """
    import gguf
    from transformers import AutoTokenizer

    folder = Path(folder)
    say = progress or (lambda _text: None)
    qtype = _gguf_type(quant)
    if not (folder / "config.json").is_file():
        raise TunedeckError(f"{folder}: not a Hugging Face model folder (no config.json).")
    from transformers import AutoConfig

    # The full config, defaults included (config.json leaves out values equal to the default).
    config = AutoConfig.from_pretrained(str(folder)).to_dict()
    arch_name = check_supported(config, str(folder))
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    generation = None
    if (folder / "generation_config.json").is_file():
        from transformers import GenerationConfig

        generation = GenerationConfig.from_pretrained(str(folder))
    stops = export.stop_token_ids(tokenizer, generation)
    if not stops:
        raise TunedeckError(f"{folder}: the tokenizer has no EOS or end-of-turn token, so a "
                            "runtime would never stop. Set eos_token in tokenizer_config.json.")
    writer = gguf.GGUFWriter(str(gguf_path), arch_name, use_temp_file=True)
    try:
        _write_hparams(writer, config, name or folder.name)
        writer.add_file_type(_file_type(qtype))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _write_vocab(writer, folder, tokenizer, int(config["vocab_size"]), stops, base_folder)
        say(f"Converting the weights to {quant.lower()}…")
        fallbacks = _write_tensors(writer, folder, config, arch_name, qtype, say)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=False)  # tqdm floods a pipe with carriage returns
    finally:
        writer.close()
    return arch_name, fallbacks


def export_gguf(run: Any, out_dir: str | Path, *, quant: str = DEFAULT_QUANT,
                checkpoint: str | None = None, base: str | None = None,
                device: str | None = None, force: bool = False,
                progress: Progress | None = None, warn: Progress | None = None) -> GgufResult:
    """Merge a run's adapter into its base and write ``OUT/<name>.<quant>.gguf`` + ``Modelfile``."""
    from transformers import AutoTokenizer
    from transformers.utils import logging as hf_logging

    from engine import ollama

    say = progress or (lambda _text: None)
    # transformers' tqdm bars are thousands of carriage returns in a pipe or a log, and garbage
    # over a TUI; `say` reports the phases instead.
    hf_logging.disable_progress_bar()
    # Everything that can be refused is refused before minutes of merging.
    _gguf_type(quant)
    out = export.exports_target(out_dir)
    export._check_target(out, force)
    adapter = export._adapter_of(run, checkpoint)
    base_ref = base or adapter.base_model
    base_folder = None
    if base_ref:
        from engine import models

        base_folder = models.local_folder(base_ref)
        if (base_folder / "config.json").is_file():
            check_supported(json.loads((base_folder / "config.json").read_text()), base_ref)
    tmp = export._staging(out)
    try:
        tmp.mkdir()
        with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.merge-") as scratch:
            merged = export.export_merged(adapter, Path(scratch) / "merged", base=base,
                                          device=device, progress=say, warn=warn)
            config = json.loads((merged.path / "config.json").read_text())
            architecture = check_supported(config, merged.adapter.label)
            gguf_file = tmp / f"{out.name}.{quant.lower()}.gguf"
            say(f"Writing {out / gguf_file.name}…")
            _, fallbacks = convert_folder(merged.path, gguf_file, quant=quant, name=out.name,
                                          base_folder=base_folder, progress=say)
            tokenizer = AutoTokenizer.from_pretrained(str(merged.path))
            stop_ids = json.loads((merged.path / export.EXPORT_MARKER).read_text()).get(
                "stop_token_ids") or []
            stops = [tokenizer.convert_ids_to_tokens(i) for i in stop_ids]
            probe = tokenizer("a")["input_ids"]
            bos_added = bool(probe) and probe[0] == tokenizer.bos_token_id
            (tmp / MODELFILE).write_text(
                ollama.modelfile(gguf_file.name, tokenizer, stops, bos_added=bos_added),
                encoding="utf-8")
            (tmp / export.EXPORT_MARKER).write_text(json.dumps({
                "kind": "gguf", "run_id": merged.adapter.run_id, "adapter": merged.adapter.ref,
                "base_model": merged.base_model, "quant": quant.lower(), "gguf": gguf_file.name,
                "architecture": architecture, "stop_tokens": stops}, indent=1) + "\n")
        export._publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    final = out / gguf_file.name
    return GgufResult(path=out, gguf=final, modelfile=out / MODELFILE, quant=quant.lower(),
                      architecture=architecture, base_model=merged.base_model,
                      size_bytes=final.stat().st_size, stops=stops, fallbacks=fallbacks)
