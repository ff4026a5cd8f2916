"""seq2seq: a source text to a target text (headlines from articles); an encoder-decoder
teacher (or a bert2bert assembled from an encoder) and student."""

from kdedge.tasks.generation import generation_kind

# The seq2seq demo: BBC article -> headline with a bert2bert teacher built from the demo encoder
# (DEMO_ASSETS.md). The article's first 64 tokens, headlines up to 24; 1000 training pairs. The
# settings of benchmarks/seq2seq.py, whose results/seq2seq.md gives the stage times on 2 cores.
DEMO_PRESET = {
    "data": {"max_train_samples": 1000, "max_eval_samples": 100, "max_length": 64,
             "max_target_length": 24},
    # at 3e-4 the teacher's validation ROUGE-L collapsed after epoch 3 (0.3 at epoch 5)
    "teacher": {"training": {"epochs": 6, "batch_size": 16, "learning_rate": 1e-4}},
    "distill": {"student": "2", "recipe": "imitkd",
                "training": {"epochs": 4, "batch_size": 16, "learning_rate": 3e-4}},
    "bench": {"batch_sizes": [1, 8], "min_runs": 10, "min_duration_s": 2.0, "warmup_runs": 2},
}

KIND = generation_kind("seq2seq", "a source text to a target text, by an encoder-decoder",
                       DEMO_PRESET)
