"""A deep ensemble inside one model: ``members`` independently initialised copies of an architecture whose class
probabilities are averaged.

Any registered model becomes an ensemble with ``create_model(name, ..., members=K)`` (``arch_kwargs`` ``members``).
Averaging the probabilities of networks that differ only in their random initialisation is the "deep ensemble" of
Lakshminarayanan et al., "Simple and scalable predictive uncertainty estimation using deep ensembles", NeurIPS 2017:
members trained on few labelled pixels make different mistakes where the data say little (a region unlike the
training region), and their average is both more accurate and better calibrated than any one of them. The seed
spread it removes is measured in ``benchmarks/accuracy.py`` (``benchmarks/results/accuracy_cpu.txt``).

Training sees the members as one model with a summed loss: ``forward`` in train mode returns the first member's
logits and hands the others over as auxiliary outputs of weight 1 (with each member's own auxiliary outputs), and
``forward_pixels`` stacks every member's per-pixel logits along the batch axis. Each member's gradient depends only
on its own loss, and AdamW updates every weight from its own gradient, so joint training is exactly K independent
trainings on the same batches. In eval mode ``forward`` returns ``log(mean_k softmax(member_k(x)))``: log
probabilities, which softmax/argmax treat as logits. Cost: K times one member's compute, in training and prediction.
"""

from __future__ import annotations

import torch
from torch import nn

from geoseg.models.layers import auxiliary_outputs


class ProbabilityEnsemble(nn.Module):
    """``members`` models with the same input and classes; see the module docstring. Input ``(batch, bands, rows,
    cols)`` float32, output ``(batch, classes, rows, cols)`` log-probabilities in eval mode."""

    def __init__(self, members: list[nn.Module]) -> None:
        super().__init__()
        if len(members) < 1:
            raise ValueError("an ensemble needs at least one member")
        self.members = nn.ModuleList(members)
        first = members[0]
        for attr in ("output_stride", "receptive_field"):
            value = getattr(first, attr, None)
            if value is not None:
                setattr(self, attr, value)
        self.aux_weights: tuple[float, ...] = ()
        self.aux_outputs: list[torch.Tensor] = []
        if all(hasattr(m, "forward_pixels") for m in members):
            self.forward_pixels = self._forward_pixels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            first = self.members[0](x)
            weights: list[float] = [w for w, _ in auxiliary_outputs(self.members[0])]
            outs: list[torch.Tensor] = [a for _, a in auxiliary_outputs(self.members[0])]
            for member in self.members[1:]:
                weights.append(1.0)
                outs.append(member(x))
                for w, a in auxiliary_outputs(member):
                    weights.append(w)
                    outs.append(a)
            self.aux_weights, self.aux_outputs = tuple(weights), outs
            return first
        self.aux_outputs = []
        if len(self.members) == 1:
            return self.members[0](x)
        p = torch.stack([m(x).float().softmax(1) for m in self.members]).mean(0)
        return p.clamp_min(1e-8).log()

    def _forward_pixels(self, x: torch.Tensor) -> torch.Tensor:
        """``(members * N, classes)`` per-pixel logits of N pixels ``(N, bands)``, member by member (member k's rows
        are ``k * N .. (k + 1) * N``): a loss on them against the targets repeated ``members`` times, times
        ``members``, is the sum of the members' losses."""
        return torch.cat([m.forward_pixels(x) for m in self.members], 0)  # type: ignore[operator]
