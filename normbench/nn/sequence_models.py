"""Sequence models: an Elman RNN, an LSTM and a small transformer encoder, their norms from SEQUENCE_NORMS
(nn/sequence_norms.py) named by model.norm. Each reads a padded batch as data.py lays it out, x (N, T, C + 1) whose
last feature is the padding mask, and predicts from the state at each sequence's last real position.

Like the mlp's, the models are role-named blocks, so the recorder finds their points by name (models.py):

    layer0.norm, layer0.act       the input (identity; the transformer's: the embedded tokens)
    layer{i}.fc                   the input-to-hidden weight (rnn, lstm) or the first MLP weight (transformer)
    layer{i}.norm -> ...  layer{i}.act     the recorded norm and activation of layer i:
        rnn:  norm on the input-to-hidden path, h_t = act(norm(W x)_t + norm_h(U h_{t-1}) + b)
              (norm_paths both, Cooijmans et al.; input: norm_h is none, Laurent et al.), or with norm_paths sum
              h_t = act(norm(W x_t + U h_{t-1} + b)) (Ba et al.'s layer-normalized RNN)
        lstm: gates = norm_x(W x)_t + norm_h(U h_{t-1}) + b; c_t = f c_{t-1} + i g; h_t = o act(norm(c_t)),
              act tanh (Cooijmans et al.'s BN-LSTM, Ba et al.'s LN-LSTM; norm_paths input: norm_x only)
        transformer: x + attention(attn_norm(x)), then x + fc2(act(fc(norm(x)))) (placement pre), or
              attn_norm(x + attention(x)), then norm(x + fc2(act(fc(x)))) (placement post: the original's)
    layer{i}.norm_h               the hidden-to-hidden norm (rnn, lstm), recorded over time only
    layer{i}.state                an identity on the hidden state h_t (the block's output for the transformer):
                                  where the recorder takes dL/dh_t over time (record.time)
    head                          the linear output layer

Every recorded value is (N, T, C) or, inside a recurrence, (N, C) once per step; `last_mask` holds the padding mask
of the last forward, so the recorder keeps the real positions only (engine/autograd.py). A padded step leaves an
RNN's state as it was, and the transformer's attention never looks at a padded key (nor, with attention causal,
at a later one).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import torch
from torch import nn

from normbench.data import unpack_sequences
from normbench.nn.models import init_weights
from normbench.registry import ACTIVATIONS, MODELS, SEQUENCE_NORMS

if TYPE_CHECKING:
    from normbench.config import ModelConfig


def _norm(cfg: ModelConfig, width: int, max_steps: int, name: str | None = None) -> nn.Module:
    """A norm of `width` channels; batch norms of a recurrent model start with gamma model.bn_gamma."""
    name = cfg.norm if name is None else name
    cls = SEQUENCE_NORMS.get(name)
    gamma = cfg.bn_gamma if getattr(cls, "batch_statistics", False) and cfg.name != "transformer" else None
    opts = dict(eps=cfg.norm_eps, momentum=cfg.norm_momentum, affine=cfg.norm_affine, max_steps=max_steps)
    if not cfg.norm_mask:
        opts["mask_statistics"] = False
    return cls(width, gamma=gamma, **opts)


class Inputs(nn.Module):
    """Layer 0: the values of the sequence, or the tokens embedded (a linear map of the one-hot tokens plus a
    learned embedding of each position up to max_steps), recorded as they are."""

    def __init__(self, embed: nn.Linear | None = None, max_steps: int = 0):
        super().__init__()
        self.embed = embed or nn.Identity()
        self.position = nn.Parameter(torch.zeros(max_steps, embed.out_features)) if embed is not None else None
        self.norm, self.act = nn.Identity(), nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        if self.position is not None:
            if x.shape[1] > len(self.position):
                raise ValueError(f"the transformer has positions for {len(self.position)} steps, got {x.shape[1]}")
            h = h + self.position[: x.shape[1]]
        return self.act(self.norm(h))


class SequenceModel(nn.Module):
    """layer0 .. layer{depth}, head: forward(x (N, T, C + 1)) -> (N, outputs) at each sequence's last real step."""

    sequence = True  # its recorded values are (N, T, C) with a padding mask (engine/autograd.py)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values, mask = unpack_sequences(x)
        self.last_mask = mask
        h = self.layer0(values)
        for i in range(1, self.depth + 1):
            h = getattr(self, f"layer{i}")(h, mask)
        h = self.last_layer(h, mask)
        last = (mask.sum(1) - 1).clamp(min=0)  # (N,) each sequence's last real step
        return self.head(h[torch.arange(len(h)), last])

    def last_layer(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return h


class RNNLayer(nn.Module):
    """One Elman layer over the whole sequence (the module docstring has the equations)."""

    def __init__(self, cfg: ModelConfig, width_in: int, max_steps: int):
        super().__init__()
        h, paths = cfg.width, cfg.norm_paths
        self.paths = paths
        self.fc = nn.Linear(width_in, h, bias=False)
        self.rec = nn.Linear(h, h, bias=False)
        self.b = nn.Parameter(torch.zeros(h))
        self.norm = _norm(cfg, h, max_steps)
        self.norm_h = _norm(cfg, h, max_steps, cfg.norm if paths == "both" else "none")
        self.act = ACTIVATIONS.get(cfg.activation).make()
        self.state = nn.Identity()  # h_t, where the recorder takes dL/dh_t (record.time)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        wx = self.fc(x) if self.paths == "sum" else self.norm(self.fc(x), mask)  # (N, T, H)
        h = x.new_zeros(len(x), self.b.shape[0])
        out = []
        for t in range(x.shape[1]):
            real = mask[:, t]
            if self.paths == "sum":
                a = self.norm(wx[:, t] + self.rec(h) + self.b, real, t=t)
            else:
                a = wx[:, t] + self.norm_h(self.rec(h), real, t=t) + self.b
            h = self.state(torch.where(real[:, None], self.act(a), h))  # a padded step keeps the state
            out.append(h)
        return torch.stack(out, 1)


class LSTMLayer(nn.Module):
    """One LSTM layer over the whole sequence; gate order i, f, o, g; the forget gate's bias starts at 1."""

    def __init__(self, cfg: ModelConfig, width_in: int, max_steps: int):
        super().__init__()
        h = cfg.width
        self.fc = nn.Linear(width_in, 4 * h, bias=False)
        self.rec = nn.Linear(h, 4 * h, bias=False)
        self.b = nn.Parameter(torch.zeros(4 * h))
        both = cfg.norm_paths == "both"
        self.norm_x = _norm(cfg, 4 * h, max_steps)
        self.norm_h = _norm(cfg, 4 * h, max_steps, cfg.norm if both else "none")
        self.norm = _norm(cfg, h, max_steps, cfg.norm if both else "none")  # on the cell
        self.act = nn.Tanh()
        self.state = nn.Identity()  # h_t, where the recorder takes dL/dh_t (record.time)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        wx = self.norm_x(self.fc(x), mask)  # (N, T, 4H)
        n, width = len(x), self.b.shape[0] // 4
        h, c = x.new_zeros(n, width), x.new_zeros(n, width)
        out = []
        for t in range(x.shape[1]):
            real = mask[:, t]
            gates = wx[:, t] + self.norm_h(self.rec(h), real, t=t) + self.b
            i, f, o, g = gates.chunk(4, 1)
            c_new = f.sigmoid() * c + i.sigmoid() * g.tanh()
            h_new = o.sigmoid() * self.act(self.norm(c_new, real, t=t))
            keep = real[:, None]
            h, c = self.state(torch.where(keep, h_new, h)), torch.where(keep, c_new, c)
            out.append(h)
        return torch.stack(out, 1)


class RNN(SequenceModel):
    """model.depth Elman layers of model.width units (activation model.activation), then a linear head."""

    layer_type = RNNLayer

    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], out_features: int):
        super().__init__()
        max_steps, features = input_shape[0], input_shape[1] - 1
        self.depth = cfg.depth
        self.layer0 = Inputs()
        width_in = features
        for i in range(1, cfg.depth + 1):
            self.add_module(f"layer{i}", self.layer_type(cfg, width_in, max_steps))
            width_in = cfg.width
        self.head = nn.Linear(width_in, out_features)
        init_weights(self, cfg.weight_init, cfg.bias_init)
        with torch.no_grad():
            for i in range(1, cfg.depth + 1):
                b = getattr(self, f"layer{i}").b
                b.fill_(cfg.bias_init)
                if self.layer_type is LSTMLayer:
                    b[cfg.width : 2 * cfg.width] += 1.0  # the forget gate starts open


class LSTM(RNN):
    """model.depth LSTM layers of model.width units, then a linear head."""

    layer_type = LSTMLayer


class SelfAttention(nn.Module):
    """Multi-head self-attention; padded keys (and, if causal, later ones) get no weight."""

    def __init__(self, width: int, heads: int, causal: bool):
        super().__init__()
        self.heads, self.causal = heads, causal
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        n, steps, width = x.shape
        q, k, v = (
            self.qkv(x).view(n, steps, 3, self.heads, width // self.heads).permute(2, 0, 3, 1, 4)
        )  # (N, nh, T, hs)
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # (N, nh, T, T)
        allowed = mask[:, None, None, :]  # keys
        if self.causal:
            allowed = allowed & torch.ones(steps, steps, dtype=torch.bool, device=x.device).tril()
        weights = scores.masked_fill(~allowed, float("-inf")).softmax(-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(n, steps, width))


class TransformerBlock(nn.Module):
    """Self-attention and an MLP (width -> 4 width -> width), each a residual branch with its norm (placement
    pre or post)."""

    def __init__(self, cfg: ModelConfig, max_steps: int):
        super().__init__()
        w = cfg.width
        self.pre = cfg.placement == "pre"
        self.attn_norm = _norm(cfg, w, max_steps)
        self.attn = SelfAttention(w, cfg.heads, cfg.attention == "causal")
        self.norm = _norm(cfg, w, max_steps)
        self.fc = nn.Linear(w, 4 * w)
        self.act = ACTIVATIONS.get(cfg.activation).make()
        self.fc2 = nn.Linear(4 * w, w)
        self.state = nn.Identity()  # the block's output, where the recorder takes dL/dh_t (record.time)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.pre:
            x = x + self.attn(self.attn_norm(x, mask), mask)
            return self.state(x + self.fc2(self.act(self.fc(self.norm(x, mask)))))
        x = self.attn_norm(x + self.attn(x, mask), mask)
        return self.state(self.norm(x + self.fc2(self.act(self.fc(x))), mask))


class Transformer(SequenceModel):
    """A transformer encoder: the input's features (one-hot tokens) embedded by a linear map plus a learned position
    embedding (layer0), model.depth blocks of model.width, model.heads heads, a final norm with placement pre (Xiong et
    al.), then a linear head."""

    def __init__(self, cfg: ModelConfig, input_shape: tuple[int, ...], out_features: int):
        super().__init__()
        max_steps, features = input_shape[0], input_shape[1] - 1
        self.depth = cfg.depth
        self.layer0 = Inputs(nn.Linear(features, cfg.width), max_steps)
        for i in range(1, cfg.depth + 1):
            self.add_module(f"layer{i}", TransformerBlock(cfg, max_steps))
        self.final_norm = _norm(cfg, cfg.width, max_steps, cfg.norm if cfg.placement == "pre" else "none")
        self.head = nn.Linear(cfg.width, out_features)
        init_weights(self, cfg.weight_init, cfg.bias_init)
        with torch.no_grad():
            self.layer0.position.normal_(0.0, 0.02)

    def last_layer(self, h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.final_norm(h, mask)


MODELS.register("rnn", help="Elman RNN (model.depth layers of model.width), norms by model.norm_paths")(RNN)
MODELS.register("lstm", help="LSTM (model.depth layers of model.width), norms by model.norm_paths")(LSTM)
MODELS.register("transformer", help="transformer encoder, norm placement pre or post, padding or causal mask")(
    Transformer
)
