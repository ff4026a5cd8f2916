"""The deployment bundle: the folder a user ships (model, tokenizer, labels, its script, card).

`stage.py` is the pipeline's last stage, `card.py` writes the model card from the report's
data, and `predict.py` (classifiers, regressors, encoders) and `generate.py` (generators) are the
standalone scripts copied into bundles unchanged; `generator.py` describes a generator's graphs
for generate.py. generate.py is also the ONNX generator kdedge benches.
"""
