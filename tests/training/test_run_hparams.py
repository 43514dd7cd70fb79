"""TensorBoard's HParams tab shows the data's settings and the seed beside the model's keys."""

from study_helpers import needs_data, tiny_config
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.plugins.hparams import plugin_data_pb2

from deeptrain.cli import build_cli


def logged_hparams(log_dir):
    """The hparams of the run's session_start_info (what the HParams tab shows), by key."""
    found = {}
    for events in sorted(log_dir.glob("events.out.tfevents.*")):
        accumulator = EventAccumulator(str(events))
        accumulator.Reload()
        try:
            contents = accumulator.PluginTagToContent("hparams").values()
        except KeyError:  # a file without hparams (Lightning writes several)
            continue
        for content in contents:
            data = plugin_data_pb2.HParamsPluginData.FromString(content)
            if data.HasField("session_start_info"):  # the last one written is what the tab shows
                found = {k: getattr(v, v.WhichOneof("kind")) for k, v in data.session_start_info.hparams.items()}
    return found


@needs_data
def test_hparams_hold_the_data_settings_and_the_seed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = build_cli(["--config", str(tiny_config(tmp_path, "run", max_epochs=1, limit_train_batches=2, limit_val_batches=1)),
                     "--seed_everything=7", "--data.hflip=true", "--data.batch_size=64", "--trainer.enable_progress_bar=false",
                     f"--trainer.logger.init_args.save_dir={tmp_path}", "--trainer.logger.init_args.version=0"], run=False)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    hparams = logged_hparams(tmp_path / "deeptrain" / "version_0")
    assert hparams["seed"] == 7 and hparams["data/batch_size"] == 64 and hparams["data/hflip"] == 1  # booleans are logged as 0/1
    assert hparams["data/dataset"] == "fashion_mnist" and hparams["data/normalize"] == "standardize"
    assert hparams["data/crop_padding"] == 0 and hparams["net/dropout"] == 0.0  # the model's keys stay
    assert not any(key.startswith("data/_") for key in hparams)  # no jsonargparse internals
