"""The k-NN monitor's classifier against DINO's weighted vote written out, query by query."""

import math

import pytest
import torch

from pixmim.evaluation.knn import TEMPERATURE, K, knn_predict, knn_top1


def brute_force(bank, bank_labels, queries, k, t):
    """DINO's k-NN (eval_knn.py) as plain loops: cosine similarity to every bank feature,
    the k most similar (equal similarities: bank order), each voting exp(sim / T) for its
    label, the class of the largest sum (equal sums: the lowest class)."""
    preds = []
    for q in queries.tolist():
        sims = []
        for j, b in enumerate(bank.tolist()):
            dot = sum(x * y for x, y in zip(q, b, strict=True))
            norm = math.sqrt(sum(x * x for x in q)) * math.sqrt(sum(y * y for y in b))
            sims.append((dot / norm, j))
        nearest = sorted(sims, key=lambda s: (-s[0], s[1]))[:k]
        votes = {}
        for sim, j in nearest:
            label = int(bank_labels[j])
            votes[label] = votes.get(label, 0.0) + math.exp(sim / t)
        best = max(votes.values())
        preds.append(min(c for c, v in votes.items() if math.isclose(v, best, rel_tol=1e-6)))
    return preds


def test_the_defaults_are_dinos():
    assert (K, TEMPERATURE) == (20, 0.07)  # facebookresearch/dino eval_knn.py


@pytest.mark.parametrize("t", [0.07, 1.0])
@pytest.mark.parametrize("k", [1, 5, 20, 50])  # 50 > the bank: the whole bank votes
def test_knn_equals_the_brute_force_vote(k, t):
    g = torch.Generator().manual_seed(k)
    bank, queries = torch.randn(30, 8, generator=g), torch.randn(25, 8, generator=g)
    labels = torch.randint(0, 5, (30,), generator=g)
    expected = brute_force(bank, labels, queries, k, t)
    assert knn_predict(bank, labels, queries, k, t).tolist() == expected
    # the chunks of queries (a [chunk, bank] block at a time) change nothing
    assert knn_predict(bank, labels, queries, k, t, chunk=7).tolist() == expected
    query_labels = torch.randint(0, 5, (25,), generator=g)
    hits = sum(int(p == y) for p, y in zip(expected, query_labels.tolist(), strict=True))
    assert knn_top1(bank, labels, queries, query_labels, k, t) == pytest.approx(
        100 * hits / 25)


def test_ties_in_similarity_and_in_votes():
    # bank rows 0-3 lie in one direction (equal similarity to the query), labels 2, 2, 1, 1:
    # equal similarities are taken in bank order (k = 1, 2, 3: class 2), and k = 4 gives
    # classes 2 and 1 equal sums: the lowest class, 1, wins the tie
    bank = torch.tensor([[1.0, 0.0]] * 4 + [[0.0, 1.0]])
    labels = torch.tensor([2, 2, 1, 1, 0])
    query = torch.tensor([[2.0, 0.0]])  # any scale: cosine similarity
    for k, want in [(1, 2), (2, 2), (3, 2), (4, 1)]:
        assert knn_predict(bank, labels, query, k, 0.07).tolist() == [want], k
        assert brute_force(bank, labels, query, k, 0.07) == [want], k
    # k > bank: the whole bank votes; the far neighbour's vote for 0 changes nothing
    assert knn_predict(bank, labels, query, 100, 0.07).tolist() == [1]


def test_the_temperature_weights_close_neighbours():
    # two far neighbours of class 0 outvote one close one of class 1 with a flat weighting
    # (large T), not with T = 0.07: exp(sim / T) is DINO's weighting, not a majority vote
    bank = torch.tensor([[1.0, 0.0], [0.5, 0.866], [0.5, -0.866]])
    labels = torch.tensor([1, 0, 0])
    query = torch.tensor([[1.0, 0.05]])
    assert knn_predict(bank, labels, query, 3, 0.07).tolist() == [1]
    assert knn_predict(bank, labels, query, 3, 100.0).tolist() == [0]
    assert brute_force(bank, labels, query, 3, 100.0) == [0]
