"""Every registered model builds from (options, input shape, classes), scales with width, names its head."""

import pytest
import torch
import torch.nn as nn

from scaling_sweep.schema import ModelOptions
from scaling_sweep.train.models import MODELS, build_model

SHAPES = {"mlp": (1, 40), "cnn1d": (1, 40), "cifar_resnet": (3, 32, 32), "cifar_vgg": (3, 32, 32)}
DEPTHS = {"mlp": 2, "cnn1d": 3, "cifar_resnet": 8, "cifar_vgg": 11}


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(MODELS))
def test_model_maps_a_batch_to_logits_and_grows_with_width(name):
    narrow = build_model(ModelOptions(name=name, width=0.25, depth=DEPTHS[name]), SHAPES[name], 10)
    wide = build_model(ModelOptions(name=name, width=0.5, depth=DEPTHS[name]), SHAPES[name], 10)
    assert narrow(torch.randn(2, *SHAPES[name])).shape == (2, 10)
    assert isinstance(narrow.head, nn.Linear) and narrow.head.out_features == 10
    assert _params(wide) > _params(narrow)


def test_resnet_20_at_width_1_has_the_known_parameter_count():
    model = build_model(ModelOptions(name="cifar_resnet", width=1, depth=20), (3, 32, 32), 10)
    # Pinned: stem, 9 basic blocks of 16/32/64 channels, 1x1 projections where the shape changes.
    assert _params(model) == 272_474
    blocks = [m for m in model.modules() if type(m).__name__ == "Block"]
    assert len(blocks) == 9


def test_mlp_depth_counts_hidden_layers_and_width_scales_units():
    model = build_model(ModelOptions(name="mlp", width=2, depth=3), (1, 40), 10)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [200, 200, 200, 10]


def test_cnn1d_depth_counts_conv_layers_and_reads_images_as_signals():
    model = build_model(ModelOptions(name="cnn1d", width=1, depth=5), (1, 8, 8), 10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv1d)]
    assert len(convs) == 5 and convs[0].out_channels == 32
    assert model(torch.randn(3, 1, 8, 8)).shape == (3, 10)


def test_channels_last_is_used_on_cpu_only_for_channel_counts_in_multiples_of_8():
    from scaling_sweep.train.imp import channels_last_pays

    cpu = torch.device("cpu")
    resnet = {
        w: build_model(ModelOptions(name="cifar_resnet", width=w, depth=8), (3, 32, 32), 10)
        for w in (0.25, 0.5, 0.75, 1.0)
    }
    # Width 0.25 has a 4 -> 8 strided 1x1 shortcut, whose channels-last backward crashes on CPU.
    assert [channels_last_pays(resnet[w], cpu) for w in (0.25, 0.5, 0.75, 1.0)] == [False, True, False, True]
    assert channels_last_pays(resnet[0.25], torch.device("cuda"))
    assert not channels_last_pays(build_model(ModelOptions(name="cnn1d"), (1, 40), 10), cpu)
