"""Weighted k-nearest-neighbour classification of frozen features (DINO's k-NN evaluation).

Each query takes the ``k`` bank features most cosine-similar to it; neighbour ``j`` votes for
its label with weight ``exp(s_j / T)``; the class with the largest summed weight is the
prediction (Caron et al., ICCV 2021, "Emerging Properties in Self-Supervised Vision
Transformers", Sec. 4.1 and facebookresearch/dino ``eval_knn.py``: k = 20, T = 0.07).

Made deterministic where DINO's code leaves it to the kernels: neighbours of equal
similarity are taken in bank order (a stable sort), classes of equal summed weight go to
the lowest class index, and ``k`` larger than the bank takes the whole bank.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

K = 20  # neighbours: DINO eval_knn.py (its reported 20-NN, Caron et al. 2021 Sec. 4.1)
TEMPERATURE = 0.07  # vote weight exp(sim / T): DINO eval_knn.py --temperature


@torch.no_grad()
def knn_predict(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
                k: int = K, temperature: float = TEMPERATURE, num_classes: int | None = None,
                chunk: int = 1024) -> torch.Tensor:
    """Predicted labels of ``queries`` by temperature-weighted votes of their k nearest
    bank features (module docstring).

    Args:
        bank: [B, D] features (any scale: L2-normalised here); bank_labels: [B] int64.
        queries: [Q, D] features.
        num_classes: size of the vote vector (None: ``max(bank_labels) + 1``).
        chunk: queries per similarity block ([chunk, B] at a time).

    Returns:
        [Q] int64 predicted labels.
    """
    if bank.shape[0] == 0:
        raise ValueError("k-NN: the feature bank is empty")
    bank = F.normalize(bank.float(), dim=1)
    queries = F.normalize(queries.float(), dim=1)
    bank_labels = bank_labels.long().to(bank.device)
    classes = int(bank_labels.max()) + 1 if num_classes is None else num_classes
    preds = []
    for q in queries.split(chunk):
        sim = q.to(bank.device) @ bank.T  # [q, B] cosine similarities
        top, idx = sim.sort(dim=1, descending=True, stable=True)
        weights = (top[:, :k] / temperature).exp()  # [q, k]
        votes = torch.zeros(len(q), classes, dtype=weights.dtype, device=bank.device)
        votes.scatter_add_(1, bank_labels[idx[:, :k]], weights)
        preds.append(votes.argmax(dim=1))  # first maximum: the lowest class on a tie
    return torch.cat(preds)


def knn_top1(bank: torch.Tensor, bank_labels: torch.Tensor, queries: torch.Tensor,
             query_labels: torch.Tensor, k: int = K, temperature: float = TEMPERATURE) -> float:
    """Top-1 (%) of :func:`knn_predict` on labelled queries."""
    classes = int(max(bank_labels.max(), query_labels.max())) + 1
    pred = knn_predict(bank, bank_labels, queries, k, temperature, classes)
    return 100.0 * (pred.cpu() == query_labels.long().cpu()).float().mean().item()
