"""scikit-learn's digits as a second tiny real dataset."""

from scaling_sweep.schema import DataOptions
from scaling_sweep.train.data import load_dataset


def test_digits_load_as_fixed_split_of_8x8_images():
    data = load_dataset(DataOptions(name="digits", fraction=0.5), "cpu")
    assert data.input_shape == (1, 8, 8) and data.num_classes == 10
    assert data.n_train == 719 and data.test_x.shape[0] == 360
    again = load_dataset(DataOptions(name="digits", fraction=0.5), "cpu")
    assert (data.test_y == again.test_y).all() and (data.train_x == again.train_x).all()
