"""Global magnitude pruning: agreement with torch.nn.utils.prune, the ceil rule, masks that hold."""

import copy
import math

import torch
import torch.nn as nn
import torch.nn.utils.prune as torch_prune

from scaling_sweep.schema import ModelOptions
from scaling_sweep.train import checkpoint
from scaling_sweep.train.imp import run_imp
from scaling_sweep.train.models import build_model
from scaling_sweep.train.pruning import MASK, Masks, attach_masks, param_counts, prunable_parameters


def _conv_net() -> nn.Module:
    torch.manual_seed(0)
    return build_model(ModelOptions(name="cnn1d", width=0.5, depth=3), (1, 40), 10)


def _module(model: nn.Module, parameter: str) -> nn.Module:
    return model.get_submodule(parameter.rpartition(".")[0])


def test_global_masks_equal_torch_global_unstructured_over_two_rounds():
    ours = _conv_net()
    reference = copy.deepcopy(ours)
    attach_masks(ours, include_output_layer=False)
    masks = Masks.of(ours)
    targets = [(_module(reference, n), "weight") for n, _ in prunable_parameters(reference, False)]
    for _ in range(2):  # the second round ranks only the survivors of the first
        count = math.ceil(0.2 * masks.remaining())
        masks.prune(count)
        torch_prune.global_unstructured(targets, pruning_method=torch_prune.L1Unstructured, amount=count)
        for mine, (module, _) in zip(
            [_module(ours, n) for n, _ in prunable_parameters(ours, False)], targets
        ):
            assert torch.equal(getattr(mine, MASK), module.weight_mask)
            assert torch.equal(mine.weight, module.weight)


def test_pruning_leaves_output_layer_biases_and_batchnorm_untouched():
    model = _conv_net()
    attach_masks(model, include_output_layer=False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    Masks.of(model).prune_rate(0.5)
    after = model.state_dict()
    pruned = {f"{name}.weight" for name, m in model.named_modules() if hasattr(m, MASK)}
    assert "head.weight" not in pruned and pruned
    for key, value in before.items():
        if key not in pruned and not key.endswith(MASK):
            assert torch.equal(after[key], value), key
    assert any(not torch.equal(after[k], before[k]) for k in pruned)


def test_output_layer_is_pruned_only_when_included():
    model = _conv_net()
    attach_masks(model, include_output_layer=True)
    assert hasattr(model.head, MASK)
    counts = param_counts(model, Masks.of(model))
    assert counts["params_prunable"] == sum(
        m.weight.numel() for m in model.modules() if isinstance(m, (nn.Conv1d, nn.Linear))
    )


def test_density_after_levels_follows_the_ceil_rule():
    model = _conv_net()
    attach_masks(model, include_output_layer=False)
    masks = Masks.of(model)
    n = masks.numel()
    remaining = n
    for level in range(1, 9):
        removed = masks.prune_rate(0.2)
        assert removed == math.ceil(0.2 * remaining)
        remaining -= removed
        assert masks.remaining() == remaining
        assert masks.density() == remaining / n
        assert abs(masks.density() - 0.8**level) <= level / n  # one weight of rounding per level


def test_prune_to_keeps_the_rounded_share():
    model = _conv_net()
    attach_masks(model, include_output_layer=False)
    masks = Masks.of(model)
    masks.prune_to(0.3)
    assert masks.remaining() == round(0.3 * masks.numel())


def test_pruned_weights_stay_zero_after_a_full_level_of_training(job, tmp_path):
    levels = run_imp(job(prune={"levels": 2, "rate": 0.5}), "cpu", tmp_path, emit=lambda rows: None)
    state = checkpoint.load(tmp_path)["model"]  # trained weights of the last level
    zeroed = 0
    for key, mask in state.items():
        if key.endswith(MASK):
            weight = state[key[: -len(MASK)] + "weight"]
            assert torch.count_nonzero(weight[mask == 0]) == 0
            zeroed += int((mask == 0).sum())
    assert zeroed > 0
    assert [round(level["density"], 2) for level in levels] == [1.0, 0.5, 0.25]


def test_emptied_by_predicts_which_layers_a_pruning_would_empty_and_changes_nothing():
    model = _conv_net()
    attach_masks(model, include_output_layer=False)
    masks = Masks.of(model)
    assert masks.names == [name for name, m in model.named_modules() if hasattr(m, MASK)]
    seen_empty = False
    while masks.remaining() > 1:
        count = masks.count_for_rate(0.6)
        before = [m.clone() for m in masks.masks]
        predicted = masks.emptied_by(count)
        assert all(torch.equal(m, b) for m, b in zip(masks.masks, before))  # a prediction only
        masks.prune(count)
        assert predicted == [i for i, m in enumerate(masks.masks) if not m.any()]
        seen_empty = seen_empty or bool(predicted)
    assert seen_empty
    assert masks.emptied_by(masks.remaining()) == list(range(len(masks.masks)))
