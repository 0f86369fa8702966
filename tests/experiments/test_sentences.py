"""The hidden-unit analysis is a computation on hidden vectors; check its parts on known inputs."""

import numpy as np
import torch

from elman.datasets.elman1990 import NOUNS, VERBS
from elman.experiments import sentences


def test_likelihood_vectors_are_successor_distributions_of_identical_prefixes():
    corpus = [["man", "eat", "bread"], ["man", "eat", "cookie"], ["man", "sleep"], ["cat", "move"]]
    likelihood = sentences.likelihood_vectors(corpus)
    assert likelihood.shape == (10, 31)
    torch.testing.assert_close(likelihood.sum(1), torch.ones(10))
    # after "man" (three sentences): eat, eat, sleep
    first = likelihood[0]
    assert first[sentences.INDEX["eat"]] == 2 / 3 and first[sentences.INDEX["sleep"]] == 1 / 3
    # after "man eat": bread or cookie, one each
    assert likelihood[1][sentences.INDEX["bread"]] == 0.5 and likelihood[1][sentences.INDEX["cookie"]] == 0.5
    # sentence-final tokens are followed by the next sentence's first word; the corpus wraps around
    assert likelihood[9][sentences.INDEX["man"]] == 1.0


def test_clustering_finds_the_top_split_of_separated_groups():
    rng = np.random.default_rng(0)
    vectors = {w: rng.normal(0, 0.1, 8) + (5 if w in VERBS else 0) for w in VERBS + NOUNS}
    words, linkage = sentences.cluster(vectors, "average")
    assert set(sentences.top_split(words, linkage)) == {frozenset(VERBS), frozenset(NOUNS)}
    assert sentences.split_of(frozenset(VERBS), words, linkage) is not None


def test_smallest_cluster_with_a_word_is_its_first_merge():
    vectors = {"man": np.array([0.0]), "zog": np.array([0.1]), "cat": np.array([5.0]), "eat": np.array([9.0])}
    words, linkage = sentences.cluster(vectors, "average")
    assert sentences.smallest_cluster_with("zog", words, linkage) == {"zog", "man"}
