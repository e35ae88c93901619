"""GGUF export: the file loads back with transformers' GGUF loader and answers with the same
greedy tokens as the merged model; the Modelfile's template renders conversations exactly like
the chat template; unsupported input gets a message that says what to do."""

from __future__ import annotations

import json

import pytest
import torch
from adapter_runs import make_run

from cli.main import main
from engine import export, gguf_export, models, ollama, paths
from engine.errors import TunedeckError

pytestmark = pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing.*:FutureWarning")
PROMPTS = ["Write a SQL query that lists every customer.", "What is 12 + 30?"]


def _chat_ids(tokenizer, text):
    out = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                        add_generation_prompt=True, return_tensors="pt")
    return out if torch.is_tensor(out) else out["input_ids"]


def test_gguf_round_trip_matches_merged_model(tiny_model_dir, capsys, monkeypatch):
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    # What a user's pipe gets: no HF progress bars switched off by the test environment.
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    run = make_run(tiny_model_dir, name="gguf")
    assert main(["export", run.id, "--gguf", "tiny-gguf", "--quant", "f32"]) == 0
    captured = capsys.readouterr()
    out = paths.exports_dir() / "tiny-gguf"
    gguf_file = out / "tiny-gguf.f32.gguf"
    assert captured.out.strip() == str(gguf_file)  # the file alone on stdout, for scripts
    assert "\r" not in captured.err and len(captured.err.splitlines()) < 15
    assert "Run it with" in captured.err
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [gguf_file.name, "Modelfile", export.EXPORT_MARKER])
    assert not list(out.parent.glob(".tiny-gguf*"))  # staging and merge scratch are gone

    # Tokenizer, chat template and stop tokens are in the file itself.
    fields = gguf.GGUFReader(gguf_file).fields
    text = lambda key: bytes(fields[key].parts[fields[key].data[0]]).decode()  # noqa: E731
    number = lambda key: int(fields[key].parts[fields[key].data[0]][0])  # noqa: E731
    merged_tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    # The tiny model's tokenizer.json splits like GPT-2; the default model keeps its GGUF's name.
    assert text("tokenizer.ggml.model") == "gpt2" and text("tokenizer.ggml.pre") == "default"
    assert gguf_export._pre_tokenizer([tiny_model_dir, models.local_folder()], {}) == "smollm"
    assert text("tokenizer.chat_template") == merged_tok.chat_template
    assert number("tokenizer.ggml.eos_token_id") == merged_tok.convert_tokens_to_ids("<|im_end|>")
    assert number("tokenizer.ggml.bos_token_id") == merged_tok.bos_token_id

    # Round trip: the merged model (base + adapter) and the GGUF give the same greedy tokens.
    reference = export.export_merged(run.id, "tiny-merged").path
    merged = AutoModelForCausalLM.from_pretrained(str(reference))
    loaded = AutoModelForCausalLM.from_pretrained(str(out), gguf_file=gguf_file.name)
    loaded_tok = AutoTokenizer.from_pretrained(str(out), gguf_file=gguf_file.name)
    for prompt in PROMPTS:
        ids = _chat_ids(merged_tok, prompt)
        assert torch.equal(ids, _chat_ids(loaded_tok, prompt))
        with torch.inference_mode():
            torch.testing.assert_close(loaded(ids).logits, merged(ids).logits,
                                       rtol=1e-5, atol=1e-5)
            want = merged.generate(ids, max_new_tokens=8, do_sample=False)
            got = loaded.generate(ids, max_new_tokens=8, do_sample=False)
        assert got.tolist() == want.tolist()
    assert loaded_tok.eos_token == "<|im_end|>"

    modelfile = (out / "Modelfile").read_text()
    assert modelfile.startswith(f"FROM ./{gguf_file.name}\n")
    assert 'PARAMETER stop "<|im_end|>"' in modelfile
    assert 'SYSTEM """You are a helpful AI assistant named SmolLM' in modelfile
    marker = json.loads((out / export.EXPORT_MARKER).read_text())
    assert marker["kind"] == "gguf" and marker["run_id"] == run.id and marker["quant"] == "f32"

    # `tunedeck models` (and the Models screen) lists the file, by the path that loads it.
    from engine.model_catalog import available_models

    entry = next(e for e in available_models() if e.name == "tiny-gguf.f32")
    assert (entry.kind, entry.ref) == ("exported (GGUF f32)", str(gguf_file))
    assert main(["models", "--format", "json"]) == 0
    assert str(gguf_file) in capsys.readouterr().out


def test_quantized_tensor_types(tiny_model_dir, tmp_path):
    import gguf

    target = tmp_path / "tiny.q8_0.gguf"
    arch, fallbacks = gguf_export.convert_folder(tiny_model_dir, target, quant="q8_0")
    assert arch == "llama" and fallbacks == []
    reader = gguf.GGUFReader(target)
    kinds = {t.name: t.tensor_type.name for t in reader.tensors}
    assert kinds["blk.0.attn_q.weight"] == "Q8_0" and kinds["token_embd.weight"] == "Q8_0"
    assert kinds["blk.0.attn_norm.weight"] == "F32"  # norms stay f32, as llama.cpp keeps them
    assert "output.weight" not in kinds  # tied embeddings are written once


LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' "
    "+ message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
    "{% endif %}")
CONVERSATIONS = [
    [{"role": "user", "content": "hi"}],
    [{"role": "system", "content": "Answer in SQL."}, {"role": "user", "content": "All rows?"}],
    [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"},
     {"role": "user", "content": "and 3+3?"}],
]


@pytest.mark.parametrize("template", [None, LLAMA3_TEMPLATE], ids=["chatml", "llama3"])
def test_modelfile_template_renders_like_the_chat_template(tiny_model_dir, template):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    if template:
        tokenizer.chat_template = template
    shape = ollama.chat_shape(tokenizer, ["<|eot_id|>" if template else "<|im_end|>"])
    for messages in CONVERSATIONS:
        assert shape.render(messages) == tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True), messages
    go = ollama.go_template(shape)
    assert '{{ else if eq .Role "user" }}' in go and "{{ .Content }}" in go
    assert "{{-" not in go  # trimming would eat the newlines the pieces hold
    if template:  # a template that writes no system turn of its own has no SYSTEM line
        assert shape.default_system is None
        assert shape.generation == "<|start_header_id|>assistant<|end_header_id|>\n\n"
        assert shape.start == tokenizer.bos_token  # the BOS the template writes itself
        assert not ollama.go_template(shape, strip=tokenizer.bos_token).startswith(
            tokenizer.bos_token)
    else:
        assert shape.default_system.startswith("You are a helpful AI assistant named SmolLM")
        assert shape.user == ("<|im_start|>user\n", "<|im_end|>\n")
        assert shape.generation == "<|im_start|>assistant\n"


def test_unsupported_input_says_what_to_do(capsys):
    with pytest.raises(TunedeckError, match="convert_hf_to_gguf.py"):
        gguf_export.check_supported({"model_type": "gpt2"}, "some-model")
    with pytest.raises(TunedeckError, match="rope scaling 'yarn'"):
        gguf_export.check_supported({"model_type": "llama",
                                     "rope_parameters": {"rope_type": "yarn"}}, "m")
    assert main(["export", "any-run", "--gguf", "out", "--quant", "q4_k_m"]) == 1
    err = capsys.readouterr().err
    assert "Unknown GGUF type 'q4_k_m'" in err and "llama-quantize" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["export", "any-run", "--merge", "out", "--quant", "q8_0"]) == 1
    assert "--quant applies to --gguf only" in capsys.readouterr().err
