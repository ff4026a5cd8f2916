"""Model families: how a student of each family is built (students.py lists them), exported and
run. kdedge's own families (birnn.py, gru_decoder.py) are transformers models with their own
config types; `register_auto_classes` lets the Auto classes load them, and whatever loads a
saved student calls it first: nothing is registered by importing a module."""


def register_auto_classes() -> None:
    """Make the Auto classes know kdedge's own model types (idempotent)."""
    from kdedge.models import birnn, gru_decoder

    birnn.register_auto()
    gru_decoder.register_auto()
