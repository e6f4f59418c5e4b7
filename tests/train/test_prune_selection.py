"""What IMP prunes: the default rule (2-D+ weights, attention projections included, embeddings and the output layer not), prune.include / prune.exclude."""

import torch
import torch.nn as nn

from scaling_sweep.train.pruning import Masks, attach_masks, describe, output_layer, prunable_parameters


class TinyTransformer(nn.Module):
    """Token embedding, one attention block (nn.MultiheadAttention), an MLP, a LayerNorm and an output head."""

    def __init__(self, vocab: int = 11, dim: int = 16) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.pos = nn.Parameter(torch.zeros(8, dim))
        self.attn = nn.MultiheadAttention(dim, 2, batch_first=True)
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.out = nn.Linear(dim, vocab)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(x) + self.pos[: x.shape[1]]
        h = h + self.attn(h, h, h, need_weights=False)[0]
        return self.out(h + self.mlp(self.norm(h)))


def _names(model: nn.Module, **kw) -> list[str]:
    return [n for n, _ in prunable_parameters(model, kw.pop("include_output_layer", False), **kw)]


def test_default_prunes_attention_projections_and_linears_not_embeddings_norms_or_the_output_layer():
    model = TinyTransformer()
    assert output_layer(model) == {"out.weight"}  # no `.head`: the last 2-D weight
    assert _names(model) == ["attn.in_proj_weight", "attn.out_proj.weight", "mlp.0.weight", "mlp.2.weight"]
    assert _names(model, include_output_layer=True)[-1] == "out.weight"


def test_include_and_exclude_are_regular_expressions_over_parameter_names():
    model = TinyTransformer()
    assert _names(model, include=r"embed|pos") == ["pos", "embed.weight"]  # registration order
    assert _names(model, exclude=r"^attn\.") == ["mlp.0.weight", "mlp.2.weight"]
    assert _names(model, include=r"weight", exclude=r"norm|embed") == [
        "attn.in_proj_weight",
        "attn.out_proj.weight",
        "mlp.0.weight",
        "mlp.2.weight",
    ]


def test_attention_in_projection_is_masked_pruned_and_stays_pruned_through_training():
    torch.manual_seed(0)
    model = TinyTransformer()
    attach_masks(model, include_output_layer=False)
    masks = Masks.of(model)
    assert masks.names[:2] == ["attn.in_proj_weight", "attn.out_proj"]
    assert "attn.in_proj_weight_mask" in model.state_dict()
    masks.prune_rate(0.5)
    w = model.attn.in_proj_weight
    pruned = model.attn.in_proj_weight_mask == 0
    assert 0 < int(pruned.sum()) < w.numel()
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.randint(0, 11, (4, 8))
    for _ in range(3):  # gradients reach the pruned weights; re-masking after each step zeroes them again
        loss = nn.functional.cross_entropy(model(x).flatten(0, 1), x.flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
        masks.apply()
    assert torch.all(w[pruned] == 0) and torch.any(w[~pruned] != 0)
    masks.check()
    line = describe(masks, model)
    assert line.startswith(f"prunable: {masks.numel():,} of ") and "in 4 tensors" in line


def test_a_model_with_a_head_module_keeps_the_whole_head_dense():
    model = nn.Sequential()
    model.add_module("body", nn.Linear(4, 8))
    model.add_module("head", nn.Linear(8, 3))
    model.head = model.get_submodule("head")
    assert output_layer(model) == {"head.weight", "head.bias"}
    assert _names(model) == ["body.weight"]
