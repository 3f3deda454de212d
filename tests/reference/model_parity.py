#!/usr/bin/env python3
"""Logit parity of tessera with Hugging Face transformers (PyTorch, CPU, float32).

Two modes:
  random   tiny Llama-family models made by transformers itself with random weights, saved as
           Hugging Face checkpoints, converted with `tessera convert`, and run by both sides:
           prompt logits and 16 greedy steps must agree to max|diff| <= 1e-4 * max|logit| with
           identical tokens.
  default  the default real model (a GGUF file): transformers loads and dequantizes the GGUF
           itself; tessera converts it. 32 greedy steps must give identical tokens and logits
           within 1e-3 * max|logit|.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import transformers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

torch.set_num_threads(2)

CORPUS = [
    "The quick brown fox jumps over the lazy dog. " * 3,
    "Pack my box with five dozen liquor jugs! 0123456789",
    "def main():\n    return 42  # the answer\n",
    "Les élèves étudient à l'école; naïve café, déjà vu.",
]


def make_tokenizer(out_dir, vocab_size):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=min(vocab_size, 400),
                                  special_tokens=["<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "add_bos_token": False}, f)


# name -> (config class, model class, config kwargs, stored dtype[, max shard size])
def cases():
    L, Q, M = transformers.LlamaConfig, transformers.Qwen2Config, transformers.MistralConfig
    LM, QM, MM = (transformers.LlamaForCausalLM, transformers.Qwen2ForCausalLM,
                  transformers.MistralForCausalLM)
    base = dict(vocab_size=1000, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
                rms_norm_eps=1e-5, rope_theta=10000.0, bos_token_id=0, eos_token_id=1)
    return {
        "llama_gqa_4_2": (L, LM, dict(base), torch.float32),
        "llama_mha": (L, LM, dict(base, num_key_value_heads=4), torch.float32),
        "llama_tied": (L, LM, dict(base, tie_word_embeddings=True), torch.float32),
        "llama_odd_sizes": (L, LM, dict(base, vocab_size=1000, hidden_size=72, intermediate_size=200,
                                        num_attention_heads=6, num_key_value_heads=2,
                                        num_hidden_layers=3), torch.float32),
        "llama3_rope_scaling": (L, LM, dict(base, rope_theta=500000.0, rope_scaling={
            "rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
            "high_freq_factor": 4.0, "original_max_position_embeddings": 64}), torch.float32),
        "llama_bf16_weights": (L, LM, dict(base), torch.bfloat16),
        "llama_f16_weights": (L, LM, dict(base, tie_word_embeddings=True), torch.float16),
        "qwen2_bias_tied": (Q, QM, dict(base, tie_word_embeddings=True), torch.float32),
        "mistral": (M, MM, dict(base, sliding_window=None), torch.float32),
        # several *.safetensors files with model.safetensors.index.json
        "llama_sharded_checkpoint": (L, LM, dict(base), torch.float32, "100KB"),
    }


def randomize(model, seed):
    # transformers' own init (std 0.02) makes near-uniform logits; wider weights give the argmax
    # a margin, so a real bug shows as a token change, not a rounding tie.
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 2:
                p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)
            elif "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
            else:  # biases
                p.copy_(0.2 * torch.randn(p.shape, generator=g))


def run_tessera(args, model_h5, ids, steps, tmp):
    out_bin = os.path.join(tmp, "logits.bin")
    res = subprocess.run([args.driver, model_h5, ",".join(map(str, ids)), str(steps), out_bin],
                         capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"logits_driver failed: {res.stderr.strip()}")
    meta = json.loads(res.stdout)
    logits = np.fromfile(out_bin, dtype=np.float32).reshape(-1, meta["vocab"])
    return meta["tokens"], logits


@torch.no_grad()
def run_reference(model, ids, steps):
    out = model(torch.tensor([ids]), use_cache=True)
    rows = [out.logits[0].float().numpy()]
    past = out.past_key_values
    tokens = []
    nxt = int(out.logits[0, -1].argmax())
    for s in range(steps):
        tokens.append(nxt)
        if s + 1 == steps:
            break
        out = model(torch.tensor([[nxt]]), past_key_values=past, use_cache=True)
        past = out.past_key_values
        rows.append(out.logits[0].float().numpy())
        nxt = int(out.logits[0, -1].argmax())
    return tokens, np.concatenate(rows, axis=0)


def compare(name, ref_tokens, ref_logits, got_tokens, got_logits, rel_tol):
    ok = True
    if ref_logits.shape != got_logits.shape:
        print(f"FAIL {name}: logits shape {got_logits.shape}, reference {ref_logits.shape}")
        return False
    scale = float(np.abs(ref_logits).max())
    diff = float(np.abs(ref_logits - got_logits).max())
    status = "ok" if diff <= rel_tol * scale else "FAIL"
    ok &= status == "ok"
    if ref_tokens != got_tokens:
        ok = False
        first = next(i for i, (a, b) in enumerate(zip(ref_tokens, got_tokens)) if a != b)
        print(f"FAIL {name}: tokens differ at step {first}: reference {ref_tokens}, tessera {got_tokens}")
    print(f"{status:4} {name}: max|diff| {diff:.3e} = {diff / scale:.2e} x max|logit| ({scale:.3f}), "
          f"tolerance {rel_tol:g}; {len(got_tokens)} greedy tokens {'identical' if ref_tokens == got_tokens else 'DIFFER'}")
    return ok


def mode_random(args):
    all_ok = True
    for i, (name, (cfg_cls, model_cls, kw, dtype, *shard)) in enumerate(cases().items()):
        with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
            torch.manual_seed(i)
            config = cfg_cls(**kw)
            model = model_cls(config).float().eval()
            randomize(model, 1000 + i)
            hf_dir = os.path.join(tmp, "hf")
            model.to(dtype).save_pretrained(hf_dir, safe_serialization=True,
                                            **({"max_shard_size": shard[0]} if shard else {}))
            n_files = len([f for f in os.listdir(hf_dir) if f.endswith(".safetensors")])
            if shard and n_files < 2:
                print(f"FAIL {name}: expected a sharded checkpoint, got {n_files} file(s)")
                all_ok = False
            make_tokenizer(hf_dir, config.vocab_size)
            # The reference runs on exactly the stored (possibly bf16/f16-rounded) weights.
            model = model_cls.from_pretrained(hf_dir, torch_dtype=torch.float32).eval()
            h5 = os.path.join(tmp, "model.h5")
            conv = subprocess.run([args.tessera, "convert", "--input", hf_dir, "--output", h5],
                                  capture_output=True, text=True)
            if conv.returncode != 0:
                print(f"FAIL {name}: tessera convert: {conv.stderr.strip()}")
                all_ok = False
                continue
            rng = np.random.default_rng(i)
            ids = [int(x) for x in rng.integers(2, config.vocab_size, size=11)]
            ref_tokens, ref_logits = run_reference(model, ids, 16)
            got_tokens, got_logits = run_tessera(args, h5, ids, 16, tmp)
            all_ok &= compare(name, ref_tokens, ref_logits, got_tokens, got_logits, 1e-4)
    return all_ok


def mode_default(args):
    gguf_dir, gguf_name = os.path.split(os.path.abspath(args.gguf))
    model = transformers.AutoModelForCausalLM.from_pretrained(
        gguf_dir, gguf_file=gguf_name, torch_dtype=torch.float32).eval()
    # The prompt: the chat template rendered and tokenized by tessera (tokenizer parity is
    # tested on its own).
    res = subprocess.run([args.tessera, "tokenize", "--model", args.model, "--text",
                          "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
                          "<|im_start|>assistant\n"], capture_output=True, text=True, check=True)
    ids = json.loads(res.stdout)
    ref_tokens, ref_logits = run_reference(model, ids, 32)
    got_tokens, got_logits = run_tessera(args, args.model, ids, 32, args.workdir)
    return compare("default model (" + gguf_name + ")", ref_tokens, ref_logits, got_tokens,
                   got_logits, 1e-3)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("mode", choices=["random", "default"])
    p.add_argument("--tessera", required=True)
    p.add_argument("--driver", required=True)
    p.add_argument("--workdir", default=tempfile.gettempdir())
    p.add_argument("--gguf", help="default mode: the GGUF file")
    p.add_argument("--model", help="default mode: the converted tessera model file")
    args = p.parse_args()
    os.makedirs(args.workdir, exist_ok=True)
    ok = mode_random(args) if args.mode == "random" else mode_default(args)
    print("PASS" if ok else "FAILED")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
