"""Fixtures for the end-to-end CLI tests: the tessera binary, a tiny random model made here
(converted from a Hugging Face checkpoint that transformers writes), and the default model."""
import json
import os
import subprocess

import pytest

# mpirun as root, more ranks than cores, and this VM's faster shared-memory path.
MPI_ENV = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMPI_MCA_rmaps_base_oversubscribe="1",
               OMPI_MCA_btl_vader_single_copy_mechanism="none", OMP_NUM_THREADS="1")

CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + "
          "message['content'] + '<|im_end|>' + '\n'}}{% endfor %}"
          "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def pytest_addoption(parser):
    parser.addoption("--tessera", required=True, help="the tessera binary")
    parser.addoption("--default-model", default="", help="converted default model (.h5)")
    parser.addoption("--default-gguf", default="", help="the default model's GGUF")
    parser.addoption("--default-model-f32", default="",
                     help="the default model dequantized to float32 (.h5)")
    parser.addoption("--default-model-q4-k-m", default="",
                     help="the default model requantized to q4_k_m by tessera (.h5)")


@pytest.fixture(scope="session")
def tessera(request):
    return os.path.abspath(request.config.getoption("--tessera"))


@pytest.fixture(scope="session")
def default_model(request):
    path = request.config.getoption("--default-model")
    if not path or not os.path.exists(path):
        pytest.fail("the default model is needed (scripts/fetch_model.sh makes it)")
    return path


def _model_option(request, option, how):
    path = request.config.getoption(option)
    if not path or not os.path.exists(path):
        pytest.fail(f"{option} is needed ({how})")
    return path


@pytest.fixture(scope="session")
def default_model_f32(request):
    return _model_option(request, "--default-model-f32", "scripts/fetch_model.sh f32 makes it")


@pytest.fixture(scope="session")
def default_model_q4_k_m(request):
    return _model_option(request, "--default-model-q4-k-m",
                         "scripts/fetch_model.sh q4_k_m makes it")


@pytest.fixture(scope="session")
def default_gguf(request):
    path = request.config.getoption("--default-gguf")
    if not path or not os.path.exists(path):
        pytest.fail("the default GGUF is needed (scripts/fetch_model.sh fetches it)")
    return path


def records_by_key(path):
    """A batch job's records keyed as the job knows them: (id, 0), or (id, line) for the error
    record of a line whose id an earlier line used."""
    recs = {}
    for r in map(json.loads, open(path).read().splitlines()):
        err = r.get("error")
        dup = isinstance(err, dict) and err.get("reason") == "duplicate_id"
        recs[(r["id"], err["line"] if dup else 0)] = r
    return recs


def make_hf_checkpoint(out_dir, max_positions=64, seed=0, hidden=32, ffn=64, layers=2,
                       arch="llama"):
    import torch
    import transformers
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    torch.manual_seed(seed)
    config_class, model_class = {
        "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
        "qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM)}[arch]
    cfg = config_class(vocab_size=300, hidden_size=hidden, intermediate_size=ffn,
                       num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                       max_position_embeddings=max_positions, bos_token_id=0, eos_token_id=1,
                       tie_word_embeddings=False)
    model = model_class(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.5)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<s>", "</s>", "<|im_start|>",
                                                                  "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(["hello world, the quick brown fox. " * 20, "abc 123 def"], trainer)
    tok.save(os.path.join(out_dir, "tokenizer.json"))
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<s>", "eos_token": "</s>", "chat_template": CHATML}, f)


@pytest.fixture(scope="session")
def tiny_hf(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny_hf")
    make_hf_checkpoint(str(d))
    return str(d)


@pytest.fixture(scope="session")
def tiny_model(tessera, tiny_hf, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tiny") / "tiny.h5")
    subprocess.run([tessera, "convert", "--input", tiny_hf, "--output", out], check=True,
                   capture_output=True)
    return out
