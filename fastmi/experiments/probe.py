"""Probes on frozen features: the evaluation of the representation-learning experiments.

``train_probe`` fits a linear classifier (``hidden=None``) or a one-hidden-layer MLP
(Linear(d, hidden) -> BatchNorm1d -> ReLU -> Linear(hidden, C), orthogonal weights, zero biases:
the Neural Bayes authors' probe) with Adam and cross-entropy on precomputed features, and reports
two protocols side by side:

* ``test_acc`` — accuracy on the full test set at the selected epoch: the epoch of best validation
  accuracy when ``val_fraction`` holds out part of the training set (early stopping with
  ``patience``), else the last epoch. The test set never selects anything.
* ``first_n_best_acc`` — the Neural Bayes authors' protocol (MIM/train_pred.py): accuracy on the
  first ``first_n`` (128) test samples, maximised over epochs. Every such number is a multiple of
  100/first_n percent.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Optional

import torch
from torch import nn


@dataclasses.dataclass
class ProbeResult:
    """Accuracies in [0, 1]; ``history`` has one dict per epoch (loss, val_acc, test_acc, first_n_acc)."""
    test_acc: float
    first_n_best_acc: float
    best_epoch: int
    val_acc: Optional[float]
    history: list


def probe_model(in_features: int, num_classes: int, hidden: Optional[int] = None,
                generator: Optional[torch.Generator] = None) -> nn.Module:
    """Linear probe, or Linear-BN1d-ReLU-Linear with ``hidden`` units; orthogonal weights, zero biases."""
    layers = [nn.Linear(in_features, num_classes)] if hidden is None else [
        nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(), nn.Linear(hidden, num_classes)]
    for layer in layers:
        if isinstance(layer, nn.Linear):
            nn.init.orthogonal_(layer.weight, generator=generator)
            nn.init.zeros_(layer.bias)
    return nn.Sequential(*layers)


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 4096) -> float:
    """Fraction of ``x`` classified as ``y`` by ``model`` in eval mode."""
    was_training = model.training
    model.eval()
    correct = sum(int((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(y), batch_size))
    model.train(was_training)
    return correct / max(len(y), 1)


def _check(train_x, train_y, test_x, test_y):
    for name, x, y in (("train", train_x, train_y), ("test", test_x, test_y)):
        if not (isinstance(x, torch.Tensor) and x.ndim == 2 and x.is_floating_point()):
            raise ValueError(f"train_probe: {name}_x must be a float N x d tensor, got "
                             f"{getattr(x, 'shape', type(x).__name__)}")
        if not (isinstance(y, torch.Tensor) and y.ndim == 1 and y.dtype == torch.int64 and len(y) == len(x)):
            raise ValueError(f"train_probe: {name}_y must be an int64 vector with one label per row of {name}_x")
        if not torch.isfinite(x).all():
            raise ValueError(f"train_probe: {name}_x has non-finite values")
    if train_x.shape[1] != test_x.shape[1]:
        raise ValueError(f"train_probe: train_x has {train_x.shape[1]} features but test_x has {test_x.shape[1]}")
    if (train_y < 0).any() or (test_y < 0).any():
        raise ValueError("train_probe: labels must be >= 0")


def train_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor, *,
                hidden: Optional[int] = None, epochs: int = 100, lr: float = 1e-3, batch_size: int = 128,
                weight_decay: float = 0.0, val_fraction: Optional[float] = None, patience: int = 10,
                first_n: int = 128, num_classes: Optional[int] = None,
                generator: Optional[torch.Generator] = None) -> ProbeResult:
    """Train a probe on (train_x, train_y) and evaluate it on (test_x, test_y); see the module docstring."""
    _check(train_x, train_y, test_x, test_y)
    if epochs < 1 or batch_size < 1 or patience < 1 or first_n < 1:
        raise ValueError("train_probe: epochs, batch_size, patience and first_n must be >= 1")
    if val_fraction is not None and not 0.0 < val_fraction < 1.0:
        raise ValueError(f"train_probe: val_fraction must be in (0, 1) or None, got {val_fraction}")
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    n_cls = num_classes or int(max(train_y.max(), test_y.max())) + 1
    val_x = val_y = None
    if val_fraction is not None:
        perm = torch.randperm(len(train_y), generator=gen).to(train_y.device)
        n_val = max(1, int(round(val_fraction * len(train_y))))
        if n_val >= len(train_y):
            raise ValueError(f"train_probe: val_fraction={val_fraction} leaves no training samples")
        val_x, val_y = train_x[perm[:n_val]], train_y[perm[:n_val]]
        train_x, train_y = train_x[perm[n_val:]], train_y[perm[n_val:]]
    model = probe_model(train_x.shape[1], n_cls, hidden, gen).to(train_x.device)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    head_x, head_y = test_x[:first_n], test_y[:first_n]
    history, best_val, best_epoch, best_state, waited = [], -1.0, 0, None, 0
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(train_y), generator=gen).to(train_y.device)
        total = 0.0
        for i in range(0, len(perm), batch_size):
            idx = perm[i:i + batch_size]
            if hidden is not None and len(idx) < 2:   # BatchNorm needs two samples
                continue
            loss = nn.functional.cross_entropy(model(train_x[idx]), train_y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        row = {"epoch": epoch, "loss": total / len(perm), "test_acc": accuracy(model, test_x, test_y),
               "first_n_acc": accuracy(model, head_x, head_y)}
        if val_x is not None:
            row["val_acc"] = accuracy(model, val_x, val_y)
            if row["val_acc"] > best_val:
                best_val, best_epoch, best_state, waited = row["val_acc"], epoch, copy.deepcopy(model.state_dict()), 0
            else:
                waited += 1
        history.append(row)
        if val_x is not None and waited >= patience:
            break
    if val_x is None:
        best_epoch = len(history) - 1
    return ProbeResult(test_acc=history[best_epoch]["test_acc"],
                       first_n_best_acc=max(r["first_n_acc"] for r in history), best_epoch=best_epoch,
                       val_acc=None if val_x is None else best_val, history=history)
