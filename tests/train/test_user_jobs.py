"""Jobs of the user's own model, data and training step (docs/examples): IMP rows, what is pruned, exact resume, per-token metrics, one-line errors."""

import math

import pytest
import torch

from scaling_sweep import schema
from scaling_sweep.errors import ConfigError
from scaling_sweep.train import checkpoint
from scaling_sweep.train.data.user import MEMORY_LIMIT_ENV
from scaling_sweep.train.imp import Interrupted, load_weights, run_imp
from scaling_sweep.train.pruning import Masks, attach_masks


def without_wall(levels: list[dict]) -> list[dict]:
    return [{k: v for k, v in level.items() if k != "wall_s"} for level in levels]


def _stop_after(poll: int):
    """A stop() that answers True at its `poll`-th call (1 = after the first optimizer step)."""
    count = 0

    def stop() -> bool:
        nonlocal count
        count += 1
        return count == poll

    return stop


def trainer_config(model: dict, data: dict, train: dict, prune: dict, seed: int = 0) -> dict:
    """What JobSpec.trainer_config() hands the trainer: every section through schema.normalize, as the plan does."""
    sections = {"model": model, "data": data, "train": train, "prune": prune}
    return {**{s: schema.normalize(s, v) for s, v in sections.items()}, "seed": seed}


def vit_job(**prune) -> dict:
    """TinyViT (nn.MultiheadAttention blocks) on half of the built-in digits: 12 steps an epoch."""
    return trainer_config(
        {"_target_": "tinyvit.TinyViT", "width": 0.5, "depth": 1, "heads": 2, "patch": 2},
        {"name": "digits", "fraction": 0.5},
        {
            "optimizer": "adamw",
            "lr": 0.01,
            "weight_decay": 0.0,
            "schedule": "cosine",
            "epochs": 2,
            "batch_size": 64,
        },
        {"levels": 2, **prune},
    )


def charlm_job(root, **data) -> dict:
    """The char LM of docs/examples/charlm: its loader, model and step, on half of the text's blocks."""
    return trainer_config(
        {"_target_": "charlm.CharTransformer", "width": 0.5, "depth": 1, "heads": 2},
        {
            "_target_": "charlm.load",
            "name": "scaling_text",
            "root": str(root),
            "file": "scaling.txt",
            "block": 32,
            "fraction": 0.5,
            "num_workers": 0,
            **data,
        },
        {
            "optimizer": "adamw",
            "lr": 0.01,
            "weight_decay": 0.0,
            "schedule": "cosine",
            "epochs": 10,
            "batch_size": 32,  # 56 blocks: 2 steps an epoch
            "step": {"_target_": "charlm.next_character"},
        },
        {"levels": 2, "rate": 0.5, "stop_at_chance": 0},
    )


def test_tiny_vit_prunes_its_attention_and_resumes_bitwise(examples, tmp_path):
    said: list[str] = []
    reference = run_imp(vit_job(), "cpu", tmp_path / "reference", emit=lambda rows: None, log=said.append)
    assert [r["level"] for r in reference] == [0, 1, 2] and all(r["n_train"] == 719 for r in reference)
    assert [round(r["density"], 2) for r in reference] == [1.0, 0.8, 0.64]
    assert all(0 < r["test_error"] < 0.9 for r in reference)  # learns (chance is 0.9)
    assert [line for line in said if line.startswith("prunable:")] == [
        f"prunable: {reference[0]['params_prunable']:,} of {reference[0]['params_total']:,} parameters "
        f"({100 * reference[0]['params_prunable'] / reference[0]['params_total']:.1f} %) in 5 tensors"
    ]

    state = checkpoint.load(tmp_path / "reference")["model"]
    weight, mask = state["blocks.0.attn.in_proj_weight"], state["blocks.0.attn.in_proj_weight_mask"]
    assert 0 < int((mask == 0).sum()) < mask.numel()
    assert torch.all(weight[mask == 0] == 0) and torch.all(weight[mask == 1] != 0)

    with pytest.raises(Interrupted):  # mid-epoch in level 1 (24 steps a level)
        run_imp(vit_job(), "cpu", tmp_path / "stopped", emit=lambda rows: None, stop=_stop_after(24 + 17))
    resumed = run_imp(vit_job(), "cpu", tmp_path / "stopped", emit=lambda rows: None)
    assert without_wall(resumed) == without_wall(reference)


def test_char_lm_counts_blocks_as_examples_and_reports_per_character_error(examples, tmp_path):
    import charlm

    levels = run_imp(charlm_job(examples / "charlm"), "cpu", tmp_path, emit=lambda rows: None)
    train, test = charlm.load(str(examples / "charlm"))
    assert [r["level"] for r in levels] == [0, 1, 2]
    assert all(r["n_train"] == math.ceil(len(train) / 2) for r in levels)  # blocks, not characters
    # Learns: below always guessing the training text's commonest character (a space: 0.833 of the test
    # characters are something else), far below chance (1 - 1/46).
    common = torch.bincount(train.y.flatten()).argmax()
    assert all(0 < r["test_error"] < (test.y != common).float().mean().item() for r in levels)

    # test_error is the share of wrong next characters: recount it with the final checkpoint's weights.
    model = charlm.CharTransformer((32,), train.num_classes, width=0.5, depth=1, heads=2)
    attach_masks(model, include_output_layer=False)
    model.load_state_dict(checkpoint.load(tmp_path)["model"])
    model.eval()
    with torch.no_grad():
        logits = model(test.x)
    wrong = (logits.argmax(-1) != test.y).sum().item()
    loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), test.y.flatten()).item()
    assert levels[-1]["test_error"] == wrong / test.y.numel()
    assert levels[-1]["test_loss"] == pytest.approx(loss, rel=1e-5)


def test_streamed_user_data_gives_the_numbers_of_the_in_memory_path_and_resumes(
    examples, tmp_path, monkeypatch
):
    config = charlm_job(examples / "charlm")
    in_memory = run_imp(config, "cpu", tmp_path / "memory", emit=lambda rows: None)
    monkeypatch.setenv(MEMORY_LIMIT_ENV, "0")  # every dataset is larger than that: streamed
    streamed = run_imp(config, "cpu", tmp_path / "streamed", emit=lambda rows: None)
    assert without_wall(streamed) == without_wall(in_memory)
    with pytest.raises(Interrupted):  # 20 steps a level: stop inside an epoch of level 1
        run_imp(config, "cpu", tmp_path / "stopped", emit=lambda rows: None, stop=_stop_after(20 + 7))
    resumed = run_imp(config, "cpu", tmp_path / "stopped", emit=lambda rows: None)
    assert without_wall(resumed) == without_wall(in_memory)


@pytest.mark.parametrize("limit", [None, "0"], ids=["in_memory", "streamed"])
def test_balanced_subsets_of_per_token_targets_fail_in_one_line(examples, tmp_path, monkeypatch, limit):
    if limit is not None:
        monkeypatch.setenv(MEMORY_LIMIT_ENV, limit)
    with pytest.raises(
        ConfigError, match=r"^data.balanced=true: scaling_text has targets of shape \(32,\)"
    ) as e:
        run_imp(charlm_job(examples / "charlm", balanced=True), "cpu", tmp_path, emit=lambda rows: None)
    assert "\n" not in str(e.value)


def test_a_loader_that_returns_no_datasets_fails_in_one_line(user_module, tmp_path):
    user_module(
        "bad_loaders",
        """
        import torch

        def three():
            return [1, 2, 3]

        def numbers():
            return 5, torch.zeros(3)

        def unpaired():
            return torch.zeros(4, 2), torch.zeros(4, 2)
        """,
    )
    expected = {
        "three": r"returned list of 3; a data loader returns \(train, test\)",
        "numbers": r"its train set \(int\) is not a map-style dataset",
        "unpaired": r"train\[0\] \(Tensor\) is not a pair \(x, y\)",
    }
    for name, message in expected.items():
        config = vit_job()
        config["data"] = schema.normalize("data", {"_target_": f"bad_loaders.{name}"})
        with pytest.raises(ConfigError, match=rf"^data._target_=bad_loaders.{name}: {message}") as e:
            run_imp(config, "cpu", tmp_path / name, emit=lambda rows: None)
        assert "\n" not in str(e.value)


def test_a_model_callable_that_returns_no_module_fails_in_one_line(user_module, tmp_path):
    user_module(
        "bad_models",
        """
        def weights(input_shape, num_classes):
            return {"w": 1}
        """,
    )
    config = vit_job()
    config["model"] = {"_target_": "bad_models.weights"}
    with pytest.raises(
        ConfigError, match=r"^model._target_=bad_models.weights: returned dict, not a torch.nn.Module$"
    ):
        run_imp(config, "cpu", tmp_path, emit=lambda rows: None)


def test_a_user_model_gets_the_seeded_init_and_its_section_identifies_its_checkpoint(examples, tmp_path):
    from tinyvit import TinyViT

    config = vit_job(levels=0)
    config["train"]["steps"], config["train"]["epochs"] = 1, None
    run_imp(config, "cpu", tmp_path, emit=lambda rows: None)
    saved = checkpoint.load(tmp_path)
    assert saved["identity"]["model"] == config["model"]  # the raw section, as written
    again = run_imp(config, "cpu", tmp_path, emit=lambda rows: None)  # resumes: the identity matches
    assert len(again) == 1
    # Built under the job's init seed: the same weights as the checkpoint's level-0 start.
    from scaling_sweep.train.seeds import derive_seed

    torch.manual_seed(derive_seed(0, "init"))
    fresh = TinyViT((1, 8, 8), 10, width=0.5, depth=1, heads=2, patch=2)
    assert all(torch.equal(v, saved["init"][k]) for k, v in fresh.state_dict().items())
    other = {**config, "model": {**config["model"], "heads": 1}}
    with pytest.raises(ValueError, match="another job"):
        run_imp(other, "cpu", tmp_path, emit=lambda rows: None)


def test_load_weights_keeps_exactly_the_mask_buffers():
    class Net(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pos = torch.nn.Parameter(torch.randn(4, 3))
            self.fc = torch.nn.Linear(3, 3)
            # A model's own buffer that merely ends like a mask: weights to restore like any other.
            self.register_buffer("gate_weight_mask", torch.randn(3))

    model = Net()
    attach_masks(model, include_output_layer=True, include=r"pos|fc\.weight")
    masks = Masks.of(model)
    assert masks.keys == ["pos_mask", "fc.weight_mask"]
    init = {k: v.clone() for k, v in model.state_dict().items()}
    masks.prune(5)
    pruned = [m.clone() for m in masks.masks]
    with torch.no_grad():
        model.gate_weight_mask.add_(1.0)
        model.pos.add_(1.0)
    load_weights(model, init, masks)
    assert all(
        torch.equal(m, p) for m, p in zip(masks.masks, pruned)
    )  # pos_mask too, though not "weight_mask"
    assert torch.equal(model.gate_weight_mask, init["gate_weight_mask"])
    assert torch.equal(model.pos, init["pos"])
