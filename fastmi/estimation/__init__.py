"""One-call MI estimation: ``fastmi.estimate_mi(x, y, estimator=..., critic=...)`` trains a critic
on the samples through the fused losses and returns the held-out estimate (train.py); the critic
factories (critics.py) and what each estimator trains (objectives.py)."""
