"""Slot attention (Locatello et al., 2020) and the feature normalisation in front of it.

Slots compete for input tokens: the attention softmax runs over the *slots*, so every token's
weights sum to one across slots, and each slot then takes a weighted mean of the tokens it won.
That competition, not any supervision, is what makes slots bind to objects.

:class:`FeatureNormalizer` sits between a frozen backbone and the slot module. Raw feature scales
differ about 8x between backbones (CLIP std ~0.5, DINOv1 ~3.7), and both the slot module and the
reconstruction target see these features, so a comparison of backbones is only fair once the scale
is taken out. It has no learnable parameters on purpose: the normalised features are also the
decoder's reconstruction target, and a learnable target could shrink to zero to make the loss vanish.
"""

from __future__ import annotations

import torch
from torch import nn

from featlab.errors import require, unknown_name

SLOT_INITS = ("sampled", "learned")


def mlp(in_dim: int, hidden_dims: list[int] | tuple[int, ...], out_dim: int) -> nn.Sequential:
    """Linear-ReLU stack; the last layer has no activation."""
    dims = [in_dim, *hidden_dims, out_dim]
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(dims) - 2:
            layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class SlotAttention(nn.Module):
    """Iterative slot attention over a set of input tokens.

    Args:
        num_slots: K, the number of slots (objects + background the model may separate).
        slot_dim: size of each slot vector.
        input_dim: channels of the incoming tokens.
        iterations: attention rounds; 3 in the paper and in DINOSAUR.
        mlp_hidden: hidden size of the residual MLP applied to slots after each GRU update.
        input_mlp_hidden: if set, tokens pass LayerNorm + a 2-layer MLP before attention (as in
            DINOSAUR's encoder head); otherwise LayerNorm + one linear map.
        init: ``sampled`` draws slots from a learned Gaussian (the paper: slots are exchangeable,
            so K can change at test time); ``learned`` gives every slot its own learned start
            vector (deterministic, often steadier on small data, but K is fixed).
        epsilon: added to the attention before the weighted mean so empty slots stay finite.
    """

    def __init__(
        self,
        num_slots: int,
        slot_dim: int,
        input_dim: int,
        iterations: int = 3,
        mlp_hidden: int = 512,
        input_mlp_hidden: int | None = None,
        init: str = "sampled",
        epsilon: float = 1e-8,
    ) -> None:
        super().__init__()
        require(num_slots >= 1, "task.slots.num_slots", f"must be >= 1, got {num_slots}")
        require(iterations >= 1, "task.slots.iterations", f"must be >= 1, got {iterations}")
        require(slot_dim >= 1, "task.slots.slot_dim", f"must be >= 1, got {slot_dim}")
        if init not in SLOT_INITS:
            raise unknown_name("task.slots.init", init, SLOT_INITS, "slot initialisation")
        self.num_slots, self.slot_dim, self.iterations = num_slots, slot_dim, iterations
        self.init, self.epsilon = init, epsilon
        self.scale = slot_dim ** -0.5

        hidden = [input_mlp_hidden] if input_mlp_hidden else []
        self.input_encoder = nn.Sequential(nn.LayerNorm(input_dim), mlp(input_dim, hidden, slot_dim))
        self.norm_inputs = nn.LayerNorm(slot_dim)
        self.to_k = nn.Linear(slot_dim, slot_dim, bias=False)
        self.to_v = nn.Linear(slot_dim, slot_dim, bias=False)
        self.norm_slots = nn.LayerNorm(slot_dim)
        self.to_q = nn.Linear(slot_dim, slot_dim, bias=False)
        self.gru = nn.GRUCell(slot_dim, slot_dim)
        self.norm_mlp = nn.LayerNorm(slot_dim)
        self.mlp = mlp(slot_dim, [mlp_hidden], slot_dim)

        if init == "sampled":
            self.slots_mu = nn.Parameter(torch.empty(1, 1, slot_dim))
            self.slots_log_sigma = nn.Parameter(torch.empty(1, 1, slot_dim))
            nn.init.xavier_uniform_(self.slots_mu)
            nn.init.xavier_uniform_(self.slots_log_sigma)
        else:
            self.slots_init = nn.Parameter(torch.empty(1, num_slots, slot_dim))
            nn.init.xavier_uniform_(self.slots_init)

    def initial_slots(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, K, D) starting slots; sampled ones use ``generator`` so evaluation can be seeded."""
        if self.init == "learned":
            return self.slots_init.expand(batch_size, -1, -1)
        mu, sigma = self.slots_mu, self.slots_log_sigma.exp()
        noise = torch.randn(batch_size, self.num_slots, self.slot_dim, generator=generator,
                            device=mu.device if generator is None else generator.device, dtype=mu.dtype)
        return mu + sigma * noise.to(mu.device)

    def attention(self, slots: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
        """(B, K, N) weights, softmax over the K slots: every token's weights sum to one."""
        queries = self.to_q(self.norm_slots(slots))
        logits = torch.einsum("bkd,bnd->bkn", queries, keys) * self.scale
        return logits.softmax(dim=1)

    def forward(self, inputs: torch.Tensor, slots: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Group ``inputs`` (B, N, input_dim) into slots.

        Returns ``(slots (B, K, D), attention (B, K, N))``; the attention is the last round's,
        normalised over slots (the soft assignment of each token), before the per-slot mean.
        """
        batch = inputs.shape[0]
        tokens = self.norm_inputs(self.input_encoder(inputs))
        keys, values = self.to_k(tokens), self.to_v(tokens)
        slots = self.initial_slots(batch) if slots is None else slots
        attn = None
        for _ in range(self.iterations):
            previous = slots
            attn = self.attention(slots, keys)
            weights = attn + self.epsilon
            weights = weights / weights.sum(dim=-1, keepdim=True)  # weighted mean over tokens
            updates = torch.einsum("bkn,bnd->bkd", weights, values)
            slots = self.gru(updates.reshape(-1, self.slot_dim), previous.reshape(-1, self.slot_dim))
            slots = slots.reshape(batch, -1, self.slot_dim)
            slots = slots + self.mlp(self.norm_mlp(slots))
        assert attn is not None
        return slots, attn
