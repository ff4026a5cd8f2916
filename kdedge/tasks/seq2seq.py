"""seq2seq: a source text to a target text (headlines from articles); an encoder-decoder
teacher (or a bert2bert assembled from an encoder) and student."""

from kdedge.tasks.generation import generation_kind

KIND = generation_kind("seq2seq", "a source text to a target text, by an encoder-decoder")
