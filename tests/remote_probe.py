"""Run by tests as a script, in a process where minibert cannot be imported (also under other transformers versions):
loads the checkpoints named in argv[1] (JSON) with `trust_remote_code=True` through the pipelines and through the
Auto classes named in argv[3] (JSON: Auto class name -> checkpoint; the test reads them from
`minibert.AUTO_CLASSES`, which cannot be imported here), and prints what they compute as one JSON line. The tests
compare it with minibert's own outputs."""

import json
import sys

sys.modules["minibert"] = None  # as on a machine where minibert was never installed
try:
    import minibert  # noqa: F401
except ImportError:
    pass
else:
    raise SystemExit("minibert is importable: the test proves nothing")

import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM, AutoTokenizer, pipeline  # noqa: E402

ckpt, texts, heads = (json.loads(arg) for arg in sys.argv[1:4])
remote = dict(trust_remote_code=True)
out = {"transformers": transformers.__version__}

fe = pipeline("feature-extraction", model=ckpt["pretraining"], **remote)
out["module"] = type(fe.model).__module__
out["feature_class"] = type(fe.model).__name__
out["features"] = fe(texts["feature"])
fm = pipeline("fill-mask", model=ckpt["pretraining"], **remote)
out["fill_mask_class"] = type(fm.model).__name__
out["fill_mask"] = fm(texts["fill_mask"], top_k=3)
tc = pipeline("text-classification", model=ckpt["seq"], **remote)
out["text_classification"] = tc(texts["classify"], top_k=None)
out["token_classification"] = pipeline("token-classification", model=ckpt["tok"], **remote)(texts["tokens"])

# Every Auto class, on the tokenized pair (raw outputs, compared with minibert's to 1e-5).
# A plain BertTokenizer; transformers 5 reads config.json first, whose auto_map would otherwise make it ask.
tokenizer = AutoTokenizer.from_pretrained(ckpt["pretraining"], **remote)
out["pair_encoding"] = {k: v.tolist() for k, v in tokenizer(*texts["pair"], return_tensors="pt").items()}
enc = {k: torch.tensor(v) for k, v in texts["encoded"].items()}  # the same ids as the main environment's
choices = {k: torch.tensor(v) for k, v in texts["encoded_choices"].items()}  # (1, C, S) for multiple choice
out["config_class"] = type(AutoConfig.from_pretrained(ckpt["pretraining"], **remote)).__name__
out["heads"] = {}
for name, which in heads.items():
    model = getattr(transformers, name).from_pretrained(ckpt[which], **remote).eval()
    with torch.no_grad():
        inputs = choices if name in texts["choice_heads"] else enc
        out["heads"][name] = {"class": type(model).__name__, "values": model(**inputs)[0].tolist()}

# Loaded as remote code and saved again: the new folder still carries the code and the full auto_map,
# and loads again (here, without minibert) through another Auto class.
if "resaved" in ckpt:
    model = AutoModelForMaskedLM.from_pretrained(ckpt["pretraining"], **remote)
    model.save_pretrained(ckpt["resaved"])
    out["resaved_class"] = type(AutoModel.from_pretrained(ckpt["resaved"], **remote)).__name__
print(json.dumps(out, default=float))  # pipelines return numpy scores
