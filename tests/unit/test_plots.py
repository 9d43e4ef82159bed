"""The training-curves figure logged with every run."""

from mlcore.plots import curves_figure


def _labels(history):
    _, acc_ax = curves_figure(history).axes
    return [line.get_label() for line in acc_ax.get_lines()]


def test_training_curves_plot_the_validation_split_per_epoch():
    rows = [{"epoch": e, "train_loss": 1 / e, "train_accuracy": 0.8 + e / 100,
             "validation_accuracy": 0.79 + e / 100, "seconds": e} for e in (1, 2, 3)]
    assert _labels(rows) == ["train", "validation"]
    # No validation split (validation_fraction 0): the train curve alone, no empty line.
    assert _labels([{k: v for k, v in r.items() if k != "validation_accuracy"} for r in rows]) \
        == ["train"]
