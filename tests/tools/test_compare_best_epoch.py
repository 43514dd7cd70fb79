"""`deeptrain compare` reports the epoch early stopping kept, by its own monitor and mode."""

from deeptrain.callbacks.early_stopping import EarlyStopping
from deeptrain.tools.compare import best_entry

# val_loss bottoms out at epoch 1 while val_acc climbs to epoch 3 (a 1cycle run that overfits in loss)
HISTORY = [{"epoch": e, "val_loss": l, "val_acc": a}
           for e, (l, a) in enumerate([(1.6, 0.40), (1.4, 0.48), (1.5, 0.50), (1.7, 0.53), (1.8, 0.52)])]


def test_best_epoch_follows_the_early_stopping_monitor():
    assert best_entry(HISTORY, EarlyStopping(monitor="val_loss"))["epoch"] == 1
    assert best_entry(HISTORY, EarlyStopping(monitor="val_acc", mode="max"))["epoch"] == 3


def test_best_epoch_without_early_stopping_or_an_unrecorded_monitor_is_the_lowest_val_loss():
    assert best_entry(HISTORY, None)["epoch"] == 1
    assert best_entry(HISTORY, EarlyStopping(monitor="train_acc", mode="max"))["epoch"] == 1
