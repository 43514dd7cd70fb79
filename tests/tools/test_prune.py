import lightning as L
import pytest
import torch

from deeptrain.nn.mlp import MLPConfig
from deeptrain.nn.sparsity import plain_state_dict, prunable_weights, sparsity_report
from deeptrain.tools import prune as prune_tool
from deeptrain.training.module import Classifier
from tiny_data import TinyData


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("prune")
    torch.manual_seed(0)
    model = Classifier(MLPConfig(widths=[32, 16]), input_shape=(1, 4, 4), num_classes=3, lr=0.01)
    trainer = L.Trainer(default_root_dir=tmp, max_epochs=8, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, datamodule=TinyData())
    path = tmp / "trained.ckpt"
    trainer.save_checkpoint(path)
    return path


def test_prune_command_reports_sparsity_and_accuracy_and_saves_a_plain_checkpoint(trained_checkpoint, tmp_path, capsys):
    out = tmp_path / "pruned.ckpt"
    report = prune_tool.prune(None, TinyData(), str(trained_checkpoint), amount=0.7, out=str(out), finetune_epochs=2)
    n = report["global"].total
    assert n == 16 * 32 + 32 * 16 + 16 * 3
    assert report["global"].zeros == round(0.7 * n)
    assert len(report["layers"]) == 3 and all(0 < row.sparsity < 1 for row in report["layers"])
    for stage in ("before", "pruned", "finetuned"):
        assert 0 <= report[stage]["val_acc"] <= 1
    assert report["before"]["val_acc"] > 0.6  # the trained net learned the rule; pruning is measured against it
    printed = capsys.readouterr().out
    assert "global" in printed and f"{report['global'].sparsity:.2%}" in printed and "after fine-tuning" in printed

    state = torch.load(out, weights_only=True)["state_dict"]
    assert not any(k.endswith(("_orig", "_mask")) for k in state)
    reloaded = Classifier.load_from_checkpoint(out)
    assert sparsity_report(prunable_weights(reloaded))[1] == report["global"]
    (scores,) = prune_tool.quiet_trainer().validate(reloaded, datamodule=TinyData(), verbose=False)
    assert scores["val_acc"] == pytest.approx(report["finetuned"]["val_acc"])  # the fine-tuned masks are kept


def test_layer_scope_and_dense_head(trained_checkpoint):
    model = Classifier.load_from_checkpoint(trained_checkpoint)
    report = prune_tool.prune_model(model, TinyData(), amount=0.5, scope="layer", include_head=False)
    assert [row.name for row in report["layers"]] == ["net.backbone.0.linear", "net.backbone.1.linear"]
    assert [row.sparsity for row in report["layers"]] == [0.5, 0.5]
    assert (model.net.head.weight != 0).all()
    assert report["finetuned"] is None


def test_plain_state_dict_folds_masks():
    linear = torch.nn.Linear(3, 2)
    torch.nn.utils.prune.l1_unstructured(linear, "weight", amount=3)
    state = plain_state_dict(linear.state_dict())
    assert set(state) == {"weight", "bias"}
    torch.testing.assert_close(state["weight"], linear.weight)
    assert int((state["weight"] == 0).sum()) == 3


@pytest.mark.parametrize("amount", [0.0, 1.0, 1.5])
def test_an_amount_outside_0_1_is_a_clear_error(trained_checkpoint, amount):
    with pytest.raises(ValueError, match=f"amount must be a fraction in \\(0, 1\\), got {amount:g}"):
        prune_tool.prune(None, TinyData(), str(trained_checkpoint), amount=amount)
