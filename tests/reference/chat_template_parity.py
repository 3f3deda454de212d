#!/usr/bin/env python3
"""Byte-for-byte parity of tessera's chat templates with transformers' apply_chat_template.

Every template in tests/data/chat_templates/*.jinja (plus, with --gguf, the tokenizer.chat_template
of GGUF files) is rendered for a set of conversations, with add_generation_prompt on and off,
by transformers (a PreTrainedTokenizerFast with the template and bos/eos tokens set, then
apply_chat_template(..., tokenize=False)) and by the C++ driver (chat_template_driver), and the
two outputs must be identical. When transformers raises, the driver must fail too; when the
template itself called raise_exception(msg), the driver's error must be exactly msg.

Usage: chat_template_parity.py --driver build/tests/reference/chat_template_driver [--gguf F.gguf]
"""

import argparse
import json
import pathlib
import subprocess
import sys

HERE = pathlib.Path(__file__).resolve().parent
TEMPLATE_DIR = HERE.parent / "data" / "chat_templates"

# Special tokens per template family (the template sees them as bos_token / eos_token).
TOKENS = {
    "llama2_chat": ("<s>", "</s>"),
    "mistral": ("<s>", "</s>"),
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "qwen": ("<|endoftext|>", "<|im_end|>"),
    "smollm2": ("<|im_start|>", "<|im_end|>"),
}
DEFAULT_TOKENS = ("<s>", "</s>")


def msg(role, content):
    return {"role": role, "content": content}


CONVERSATIONS = {
    "single_user": [msg("user", "Hello!")],
    "system_user": [msg("system", "You are a terse assistant."), msg("user", "What is 2+2?")],
    "multi_turn": [
        msg("user", "Hi there"),
        msg("assistant", "Hello! How can I help?"),
        msg("user", "Tell me a joke."),
    ],
    "system_multi_turn": [
        msg("system", "  Answer in French.\n"),
        msg("user", "Good morning"),
        msg("assistant", "Bonjour !"),
        msg("user", "Thanks"),
        msg("assistant", "De rien."),
    ],
    "empty_content": [msg("user", ""), msg("assistant", ""), msg("user", " ")],
    "unicode": [
        msg("system", "Réponds en 日本語 🚀"),
        msg("user", "  héllo wörld — ünïcödé ✓ 你好 🙂\u00a0\n"),
        msg("assistant", "\u3000Привет, мир!\t"),
        msg("user", "Emoji: 👩‍💻 and combining: e\u0301"),
    ],
    "special_chars": [
        msg("user", 'Quotes \' " and backslash \\ and {{ braces }} {% tags %} {# c #}'),
        msg("assistant", "Line1\nLine2\r\nLine3\ttab </s> <|eot_id|> [INST]"),
        msg("user", '{"json": [1, 2, {"k": null}]}\n\n'),
    ],
    "multiline_whitespace": [
        msg("system", "\n\n  system with padding  \n\n"),
        msg("user", "\tleading tab\nand\n\nblank lines\n"),
    ],
    "roles_not_alternating": [msg("user", "one"), msg("user", "two")],
    "assistant_first": [msg("assistant", "I start."), msg("user", "ok")],
    "unknown_role": [msg("user", "hi"), msg("narrator", "meanwhile...")],
}

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather in a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "City name, e.g. Paris"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time (ISO 8601) — in UTC.",
        "parameters": {"type": "object", "properties": {}, "required": []},
    },
}
TOOL_CONVERSATIONS = {
    "tools_question": [msg("system", "Use tools when helpful."), msg("user", "Weather in Paris?")],
    "tools_call_and_result": [
        msg("user", "Weather in Paris?"),
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "abc123xyz",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": {"city": "Paris", "unit": "celsius"}},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "abc123xyz", "content": '{"temperature": 21.5, "sky": "clear"}'},
        msg("assistant", "It is 21.5 °C and clear."),
        msg("user", "Thanks!"),
    ],
}
TOOL_TEMPLATES = {"llama3.1", "mistral_v0.3", "qwen2.5"}


def tokens_for(name):
    for family, toks in TOKENS.items():
        if family in name.lower():
            return toks
    return DEFAULT_TOKENS


def make_tokenizer(template, bos, eos):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(WordLevel({bos: 0, eos: 1}, unk_token=None))
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=bos, eos_token=eos)
    tok.chat_template = template
    return tok


def reference(tok, messages, add_generation_prompt, tools):
    """transformers' rendering: {"text": ...} or {"error": ..., "raised": bool}."""
    import jinja2

    try:
        kwargs = {"tools": tools} if tools is not None else {}
        text = tok.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=add_generation_prompt, **kwargs
        )
        return {"text": text}
    except jinja2.exceptions.TemplateSyntaxError as e:
        return {"error": str(e), "raised": False}
    except jinja2.exceptions.TemplateError as e:
        # raise_exception() raises a bare TemplateError; undefined/runtime errors are subclasses.
        return {"error": str(e), "raised": type(e) is jinja2.exceptions.TemplateError}
    except Exception as e:  # noqa: BLE001 - any failure in the template counts as an error
        return {"error": f"{type(e).__name__}: {e}", "raised": False}


def load_templates(gguf_paths):
    templates = []
    for path in sorted(TEMPLATE_DIR.glob("*.jinja")):
        templates.append((path.stem, path.read_text(encoding="utf-8")))
    for path in gguf_paths:
        import gguf

        reader = gguf.GGUFReader(path)
        field = reader.fields.get("tokenizer.chat_template")
        if field is None:
            sys.exit(f"{path}: no tokenizer.chat_template in the GGUF metadata")
        text = bytes(field.parts[field.data[0]]).decode("utf-8")
        templates.append((f"gguf:{pathlib.Path(path).name}", text))
    return templates


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--driver", required=True, help="path to chat_template_driver")
    parser.add_argument("--gguf", action="append", default=[], help="also test this GGUF's template")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args()

    cases = []  # (label, request, expected)
    for name, template in load_templates(args.gguf):
        bos, eos = tokens_for(name)
        tok = make_tokenizer(template, bos, eos)
        convs = [(k, v, None) for k, v in CONVERSATIONS.items()]
        if name in TOOL_TEMPLATES:
            convs += [(k, v, [WEATHER_TOOL, TIME_TOOL]) for k, v in TOOL_CONVERSATIONS.items()]
        for conv_name, messages, tools in convs:
            for agp in (True, False):
                request = {
                    "template": template,
                    "messages": messages,
                    "add_generation_prompt": agp,
                    "bos_token": bos,
                    "eos_token": eos,
                }
                if tools is not None:
                    request["tools"] = tools
                label = f"{name} / {conv_name} / add_generation_prompt={agp}"
                cases.append((label, request, reference(tok, messages, agp, tools)))

    stdin = "".join(json.dumps(req, ensure_ascii=False) + "\n" for _, req, _ in cases)
    proc = subprocess.run(
        [args.driver], input=stdin.encode("utf-8"), capture_output=True, check=False
    )
    if proc.returncode != 0:
        sys.exit(f"driver exited with {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    outputs = [json.loads(line) for line in proc.stdout.decode("utf-8").splitlines()]
    if len(outputs) != len(cases):
        sys.exit(f"driver printed {len(outputs)} results for {len(cases)} requests")

    failures = 0
    rendered = errors = 0
    for (label, _, want), got in zip(cases, outputs):
        if "text" in want:
            ok = isinstance(got, str) and got == want["text"]
            rendered += ok
        else:
            ok = isinstance(got, dict) and "error" in got
            if ok and want["raised"]:
                ok = got["error"] == want["error"]
            errors += ok
        if not ok:
            failures += 1
            print(f"MISMATCH {label}\n  transformers: {json.dumps(want, ensure_ascii=False)}\n"
                  f"  tessera:      {json.dumps(got, ensure_ascii=False)}")
        elif args.verbose:
            print(f"ok {label}")
    print(f"chat template parity: {len(cases)} cases ({rendered} rendered identically, {errors} "
          f"matching errors), {failures} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
