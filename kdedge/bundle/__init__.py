"""The deployment bundle: the folder a user ships (model, tokenizer, labels, predict.py, card).

`stage.py` is the pipeline's last stage, `card.py` writes the model card from the report's
data, and `predict.py` is the standalone script copied into every bundle unchanged.
"""
