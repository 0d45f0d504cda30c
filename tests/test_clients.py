"""The rows of docs/model.md's "use it from X" table whose client is a dev dependency, each run as its line says.

Rows tested elsewhere: remote code on transformers 4.48 / 5.0 (tests/test_compat.py), pipelines without minibert
(tests/test_checkpoints.py), Trainer with gradient accumulation (tests/test_loss_convention.py), sentence-transformers
after `minibert-convert` (tests/test_convert_sentence_transformers.py), ONNX / torch.export / LoRA on named targets
(tests/test_runtimes.py). Here: peft's default targets once minibert is imported (either import order), a
CrossEncoder on a classifier checkpoint, and `AutoTokenizer` with `trust_remote_code=False` where minibert is absent.
"""

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import random_model, run_without_minibert
from transformers import AutoTokenizer

from minibert import MiniBertForSequenceClassification
from minibert.hub import save_model_folder

PEFT_DEFAULTS = """
import json, torch
{imports}
from transformers import BertConfig, BertForSequenceClassification
from minibert import MiniBertConfig, MiniBertForSequenceClassification

sizes = dict(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
targeted = {{}}
for name, model in [("minibert", MiniBertForSequenceClassification(MiniBertConfig(**sizes))),
                    ("bert", BertForSequenceClassification(BertConfig(**sizes)))]:
    lora = get_peft_model(model, LoraConfig(task_type="SEQ_CLS", r=4))  # no target_modules: peft's defaults
    targeted[name] = sorted(n.removeprefix("base_model.model.") for n, m in lora.named_modules() if hasattr(m, "lora_A") and "." in n and n.endswith(("query", "value", "key", "dense")))
    lora(input_ids=torch.tensor([[2, 5, 7, 3]]), labels=torch.tensor([1])).loss.backward()
print(json.dumps(targeted))
"""


@pytest.mark.parametrize("order", ["minibert_first", "peft_first"])
def test_peft_default_lora_targets_once_minibert_is_imported(order):
    pytest.importorskip("peft")
    imports = {
        "minibert_first": "import minibert\nfrom peft import LoraConfig, get_peft_model",
        "peft_first": "from peft import LoraConfig, get_peft_model\nimport minibert",
    }[order]
    code = PEFT_DEFAULTS.format(imports=imports)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    targeted = json.loads(proc.stdout.strip().splitlines()[-1])
    assert targeted["minibert"] == targeted["bert"]  # BERT's defaults, on the same module names
    assert targeted["minibert"] and all(n.endswith(("query", "value")) for n in targeted["minibert"])


def test_cross_encoder_scores_a_classifier_checkpoint(tmp_path, wordpiece_tokenizer):
    st = pytest.importorskip("sentence_transformers")
    model = random_model(MiniBertForSequenceClassification, num_labels=1, vocab_size=len(wordpiece_tokenizer))
    save_model_folder(model, wordpiece_tokenizer, str(tmp_path / "ckpt"))
    pairs = [("what is the capital of france?", "paris is the capital of france."), ("hello", "the lazy dog")]
    scores = st.CrossEncoder(str(tmp_path / "ckpt"), trust_remote_code=True, device="cpu").predict(
        pairs, activation_fn=torch.nn.Identity()
    )
    saved = AutoTokenizer.from_pretrained(tmp_path / "ckpt")  # segment ids too (the in-memory wrapper has none)
    encoded = saved([a for a, _ in pairs], [b for _, b in pairs], padding=True, return_tensors="pt")
    assert encoded["token_type_ids"].any()
    with torch.no_grad():
        expected = model(**encoded).logits.squeeze(-1)
    torch.testing.assert_close(torch.as_tensor(scores, dtype=torch.float32), expected, rtol=1e-5, atol=1e-5)


def test_auto_tokenizer_with_trust_remote_code_false_needs_no_minibert(tmp_path, wordpiece_tokenizer):
    """transformers 5 asks before running a checkpoint's code, and `AutoTokenizer` looks at config.json's auto_map
    first; `trust_remote_code=False` answers at once: the tokenizer is a plain BertTokenizer, no code runs."""
    save_model_folder(random_model(MiniBertForSequenceClassification), wordpiece_tokenizer, str(tmp_path / "ckpt"))
    script = tmp_path / "load_tokenizer.py"
    script.write_text(
        textwrap.dedent(
            """
            import json, sys
            sys.modules["minibert"] = None
            from transformers import AutoTokenizer
            tok = AutoTokenizer.from_pretrained(sys.argv[1], trust_remote_code=False)
            print(json.dumps({"class": type(tok).__name__, "ids": tok("paris is nice.", "is it?")["input_ids"]}))
            """
        )
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    out = run_without_minibert(
        [script, tmp_path / "ckpt"],
        cwd=work,
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        HF_HOME=str(tmp_path / "hf"),
    )
    assert out["class"].startswith("BertTokenizer")
    assert out["ids"] == wordpiece_tokenizer("paris is nice.", "is it?")["input_ids"]
