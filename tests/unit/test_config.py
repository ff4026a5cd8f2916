from pathlib import Path

import pytest

from kdedge.config import build_config, dump_config, load_config
from kdedge.errors import KdedgeError
from kdedge.tasks.classification import DEMO_PRESET


def test_demo_preset_applies_only_to_the_demo() -> None:
    demo = build_config()
    assert demo.data.source == "demo"
    assert demo.data.max_train_samples == DEMO_PRESET["data"]["max_train_samples"]
    assert demo.data.max_length == 64
    assert (demo.teacher.training.epochs, demo.distill.training.epochs) == (3, 3)
    own = build_config(overrides={"data.source": "reviews.csv"})
    assert own.data.max_train_samples is None
    assert own.data.max_length == 128


def test_cli_overrides_beat_the_file_which_beats_the_preset(tmp_path: Path) -> None:
    path = tmp_path / "recipe.yaml"
    path.write_text("data:\n  max_train_samples: 100\ndistill:\n  alpha: 0.9\n  temperature: 4\n")
    cfg = load_config(path, {"distill.alpha": 0.2})
    assert cfg.data.max_train_samples == 100
    assert cfg.distill.alpha == 0.2
    assert cfg.distill.temperature == 4


def test_resolved_yaml_round_trips(tmp_path: Path) -> None:
    cfg = build_config(overrides={"distill.student": 2, "bench.batch_sizes": [1, 8]})
    path = tmp_path / "resolved.yaml"
    path.write_text(dump_config(cfg))
    assert load_config(path) == cfg
    assert cfg.distill.student == "2"


def test_unknown_key_suggests_the_nearest() -> None:
    with pytest.raises(KdedgeError, match=r"Unknown config key 'distill.temprature'; did you mean "
                                          r"'distill.temperature'\?"):
        build_config({"distill": {"temprature": 3}})


def test_bad_value_names_the_key_and_value() -> None:
    with pytest.raises(KdedgeError, match=r"Invalid value -1 for distill.temperature: Input should "
                                          r"be greater than 0"):
        build_config(overrides={"distill.temperature": -1})


def test_conflicting_sequence_lengths_are_refused() -> None:
    with pytest.raises(KdedgeError, match=r"bench\.sequence_lengths 256 exceeds data\.max_length 64"):
        build_config(overrides={"bench.sequence_lengths": [32, 256]})
    cfg = build_config(overrides={"bench.sequence_lengths": 32, "bench.threads": 2})
    assert (cfg.bench.sequence_lengths, cfg.bench.threads) == ((32,), (2,))  # a scalar is a list


def test_three_text_columns_are_refused() -> None:
    with pytest.raises(KdedgeError, match="one text column, or two for sentence pairs"):
        build_config(overrides={"data.text_columns": ["a", "b", "c"]})


def test_yaml_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("- a\n- b\n")
    with pytest.raises(KdedgeError, match="must hold a mapping of sections"):
        load_config(path)
    path.write_text("data: [unclosed\n")
    with pytest.raises(KdedgeError, match="is not valid YAML"):
        load_config(path)


def test_yaml_tags_cannot_run_code(tmp_path: Path) -> None:
    path = tmp_path / "evil.yaml"
    path.write_text("run: !!python/object/apply:os.system ['echo hacked']\n")
    with pytest.raises(KdedgeError, match="is not valid YAML"):
        load_config(path)


def test_annealing_needs_enough_phase_one_epochs() -> None:
    with pytest.raises(KdedgeError, match=r"phase1_epochs 3 is below tau_max 7, so Phi never reaches 1"):
        build_config(overrides={"distill.recipe": "annealing", "distill.annealing.phase1_epochs": 3})


def test_unknown_recipe_lists_the_known_ones() -> None:
    with pytest.raises(KdedgeError, match=r"Invalid value 'distil' for distill.recipe: unknown recipe; "
                                          r"known: annealing, gold, imitkd, kd, lifelong, "
                                          r"multi-task, multi-teacher, seq-kd, two-stage, word-kd"):
        build_config(overrides={"distill.recipe": "distil"})


def test_a_section_given_in_part_keeps_the_defaults_its_field_sets() -> None:
    from kdedge.config import build_config

    # DistillConfig.training = TrainingConfig(epochs=3, learning_rate=1e-4); TrainingConfig's
    # own learning rate is 5e-5, which a partial section used to fall back to
    cfg = build_config(overrides={"distill.training.epochs": 5, "data.source": "x.csv"})
    assert (cfg.distill.training.epochs, cfg.distill.training.learning_rate) == (5, 1e-4)
    teacher = build_config(overrides={"teacher.training.batch_size": 8, "data.source": "x.csv"})
    assert (teacher.teacher.training.epochs, teacher.teacher.training.patience,
            teacher.teacher.training.batch_size) == (5, 1, 8)
    demo = build_config()  # the demo preset sets distill epochs and teacher epochs only
    assert (demo.distill.training.learning_rate, demo.teacher.training.patience) == (1e-4, 1)
