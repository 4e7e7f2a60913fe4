"""Pictures: feature PCA shared between truth and imagination, label colours, grids, files on disk."""

from __future__ import annotations

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from conftest import micro_tokenizer_config
from test_rollout import micro_world
from tokenizer.model import Tokenizer
from tokenizer.runtime.errors import InputError
from worldmodel.evaluation import PictureRecord
from worldmodel.heads import TaskHeads
from worldmodel.pictures import (
    ROLLOUT_CELL,
    FeaturePCA,
    animate_futures,
    colorize_depth,
    colorize_seg,
    draw_futures,
    futures_picture,
    image_grid,
    imagine_futures,
    pca_rgb,
    plot_metric_vs_horizon,
    rollout_animation,
    rollout_picture,
    save_animation,
    save_png,
    seg_palette,
    shared_vmax,
    upscale_nearest,
)
from worldmodel.rgb_head import RGBHead, RGBHeadConfig


def test_pca_fitted_on_truth_colours_identical_features_identically():
    true = torch.randn(3, 64, 16, generator=torch.Generator().manual_seed(0))  # (F, N, D) on an 8x8 grid
    imagined = true.clone()
    true_rgb, imagined_rgb = pca_rgb(true, (8, 8), imagined)
    assert true_rgb.shape == (3, 8, 8, 3)
    assert np.array_equal(true_rgb, imagined_rgb)
    assert true_rgb.min() >= 0.0 and true_rgb.max() <= 1.0
    assert true_rgb.std() > 0.05  # not a flat picture


def test_pca_uses_truth_only():
    true = torch.randn(2, 16, 8, generator=torch.Generator().manual_seed(0))
    exaggerated = 50.0 * true  # imagined features far outside the truth's spread
    _, exaggerated_rgb = pca_rgb(true, (4, 4), exaggerated)
    refit = FeaturePCA.fit(exaggerated).to_rgb(exaggerated, (4, 4))
    # Scaled by the truth they saturate; a PCA refitted on them would spread them over the range instead.
    saturated = np.isin(exaggerated_rgb, (0.0, 1.0)).mean()
    assert saturated > 0.8 and np.isin(refit, (0.0, 1.0)).mean() < 0.3


def test_pca_survives_degenerate_features():
    constant = torch.ones(2, 4, 6)
    rgb = FeaturePCA.fit(constant).to_rgb(constant, (2, 2))
    assert rgb.shape == (2, 2, 2, 3) and np.isfinite(rgb).all()
    bad = torch.randn(1, 4, 2)  # fewer feature dims than colours, plus NaN
    bad[0, 0, 0] = float("nan")
    rgb = pca_rgb(bad, (2, 2))[0]
    assert np.isfinite(rgb).all() and rgb.min() >= 0 and rgb.max() <= 1
    with pytest.raises(InputError):
        FeaturePCA.fit(constant).to_rgb(constant, (3, 3))


def test_seg_palette_fixed_with_black_unlabelled():
    palette = seg_palette()
    assert palette.shape == (256, 3)
    assert np.array_equal(palette, seg_palette())
    assert np.all(palette[255] == 0)
    assert len({tuple(c) for c in palette[:124].round(3)}) == 124  # every VSPW class distinguishable
    labels = torch.tensor([[0, 255], [3, 3]])
    rgb = colorize_seg(labels)
    assert rgb.shape == (2, 2, 3) and np.all(rgb[0, 1] == 0) and np.array_equal(rgb[1, 0], rgb[1, 1])


def test_depth_colours_share_one_scale():
    truth = np.array([[0.0, 5.0], [10.0, 20.0]])
    pred = np.array([[5.0, 5.0], [10.0, 40.0]])
    vmax = shared_vmax(truth, pred)
    assert vmax == 40.0
    a, b = colorize_depth(truth, vmax), colorize_depth(pred, vmax)
    assert np.array_equal(a[0, 1], b[0, 1])  # equal depth, equal colour
    assert np.all(a[0, 0] == 0)  # no measurement is black
    assert a.shape == (2, 2, 3) and a.max() <= 1


def test_upscale_nearest_repeats_pixels():
    image = np.arange(12, dtype=np.float32).reshape(2, 2, 3)
    big = upscale_nearest(image, 4)
    assert big.shape == (8, 8, 3)
    assert np.array_equal(big[:4, :4], np.broadcast_to(image[0, 0], (4, 4, 3)))
    assert upscale_nearest(np.zeros((5, 2, 2, 3)), 3).shape == (5, 6, 6, 3)


def test_image_grid_size_labels_and_blank_cells():
    red = np.zeros((32, 32, 3))
    red[..., 0] = 1.0
    plain = image_grid([[red, None, red], [red, red, None]])
    assert plain.shape == (64, 96, 3) and plain.dtype == np.uint8
    assert np.all(plain[:32, 32:64] == 255)  # None cell stays blank
    assert np.array_equal(plain[40, 10], [255, 0, 0])

    small = np.zeros((8, 8), dtype=np.uint8)  # grey and smaller: scaled up to the cell size
    labelled = image_grid([[red, small], [None, red]], row_labels=["true", "imagined"], col_labels=["t+1", "t+2"])
    assert labelled.shape[0] > 64 and labelled.shape[1] > 64
    assert (labelled < 128).any(axis=-1).sum() > 0  # some dark label text was drawn
    with pytest.raises(InputError):
        image_grid([[red]], row_labels=["a", "b"])


def test_png_and_gif_written_and_read_back(tmp_path):
    image = np.random.default_rng(0).random((24, 40, 3))
    save_png(tmp_path / "grid.png", image)
    back = iio.imread(tmp_path / "grid.png")
    assert back.shape == (24, 40, 3)
    assert np.abs(back.astype(int) - (image * 255).round()).max() <= 1

    frames = [np.full((16, 20, 3), 40 * i, dtype=np.uint8) for i in range(5)]
    save_animation(tmp_path / "clip.gif", frames, fps=4)
    gif = iio.imread(tmp_path / "clip.gif", index=None)
    assert gif.shape[0] == 5 and gif.shape[1:3] == (16, 20)
    assert not list(tmp_path.glob(".*"))  # no temp files left behind
    with pytest.raises(InputError):
        save_animation(tmp_path / "clip.avi", frames)


def test_mp4_written_with_all_frames(tmp_path):
    frames = np.stack([np.full((15, 21, 3), 50 * i, dtype=np.uint8) for i in range(4)])
    save_animation(tmp_path / "clip.mp4", frames, fps=2)
    video = iio.imread(tmp_path / "clip.mp4", plugin="FFMPEG")
    assert video.shape[0] == 4 and video.shape[1:3] == (16, 22)  # odd sides padded to even


def test_plot_metric_vs_horizon_writes_a_picture(tmp_path):
    results = {
        "copy_last": {1: 0.50, 2: 0.41, 4: 0.30},
        "world_best": {1: 0.62, 2: 0.55, 4: 0.47},
        "world_mean": {1: 0.60, 2: 0.51, 4: 0.42},
    }
    path = tmp_path / "plots" / "miou.png"
    plot_metric_vs_horizon(results, "mIoU", path)
    picture = iio.imread(path)
    assert picture.ndim == 3 and picture.shape[0] > 100 and picture.shape[1] > 100
    with pytest.raises(InputError):
        plot_metric_vs_horizon(results, "mIoU", tmp_path / "miou.jpg")


def rollout_record(rgb: bool, context: int = 2, steps: int = 2, samples: int = 2) -> PictureRecord:
    """A rollout of 64-pixel frames on an 8x8 grid; with `rgb`, head maps hold random RGB frames (F, 3, 64, 64)."""
    g = torch.Generator().manual_seed(0)
    frames = context + steps
    imagined = torch.randn(samples, steps, 64, 16, generator=g)
    rows = {"truth": frames, "best": steps, "mean": steps, **{f"sample {k + 1}": steps for k in range(samples)}}
    maps = {
        name: ({"rgb": torch.randint(0, 256, (count, 3, 64, 64), dtype=torch.uint8, generator=g)} if rgb else {})
        for name, count in rows.items()
    }
    return PictureRecord(
        frames=torch.randint(0, 256, (frames, 3, 64, 64), dtype=torch.uint8, generator=g),
        true_features=torch.randn(frames, 64, 16, generator=g),
        imagined=imagined,
        best=imagined[0],
        spread=imagined.std(dim=0).pow(2).mean(dim=-1).sqrt(),
        mean=imagined.mean(dim=0),
        grid=(8, 8),
        maps=maps,
        labels={},
        context=context,
        model="bom",
    )


def test_rollout_pictures_gain_rgb_rows_with_an_rgb_head():
    plain, with_rgb = rollout_record(rgb=False), rollout_record(rgb=True)
    picture, rgb_picture = rollout_picture(plain), rollout_picture(with_rgb)
    # Truth, best and mean RGB rows on the left (taller than the samples' panel on the right).
    assert rgb_picture.shape[0] == picture.shape[0] + 3 * ROLLOUT_CELL
    # Rows: frame, then truth RGB first of the truth's rows; the true features' first frame drawn there, enlarged.
    first_row = picture.shape[0] - 7 * ROLLOUT_CELL  # below the column labels: 7 rows without RGB
    band = rgb_picture[first_row + ROLLOUT_CELL : first_row + 2 * ROLLOUT_CELL]
    truth = upscale_nearest(with_rgb.maps["truth"]["rgb"][0].permute(1, 2, 0).numpy(), ROLLOUT_CELL // 64)
    assert any(np.array_equal(band[:, x : x + ROLLOUT_CELL], truth) for x in range(band.shape[1] - ROLLOUT_CELL + 1))
    assert band.std() > 10

    animation, rgb_animation = rollout_animation(plain), rollout_animation(with_rgb)
    assert len(rgb_animation) == len(animation) == 4
    assert rgb_animation[0].shape[1] == animation[0].shape[1] + 3 * ROLLOUT_CELL  # truth, best and mean RGB columns
    assert rgb_animation[0].shape[0] == animation[0].shape[0]


def test_rollout_picture_labels_and_the_truth_beside_the_samples():
    record = rollout_record(rgb=True, context=2, steps=2, samples=2)
    picture = rollout_picture(record)
    cells = ROLLOUT_CELL // 64
    # The right panel: at the last step, the truth's RGB and then each sample's, left to right in one band.
    truth = upscale_nearest(record.maps["truth"]["rgb"][-1].permute(1, 2, 0).numpy(), cells)
    sample = upscale_nearest(record.maps["sample 1"]["rgb"][-1].permute(1, 2, 0).numpy(), cells)

    def found(image: np.ndarray) -> tuple[int, int]:
        for y in range(picture.shape[0] - ROLLOUT_CELL + 1):
            for x in np.flatnonzero((picture[y, :, :] == image[0, 0]).all(-1)):
                if np.array_equal(picture[y : y + ROLLOUT_CELL, x : x + ROLLOUT_CELL], image):
                    return y, x
        raise AssertionError("cell not in the picture")

    (truth_y, truth_x), (sample_y, sample_x) = found(truth), found(sample)
    assert truth_y == sample_y and sample_x == truth_x + ROLLOUT_CELL
    assert (picture[:truth_y, truth_x : truth_x + ROLLOUT_CELL] < 128).any()  # "truth" written above it
    assert (picture[ROLLOUT_CELL:, :40] < 128).any()  # row labels in the left margin


@pytest.fixture(scope="module")
def micro_models():
    """A micro tokenizer's world model and an RGB head reading its features (random weights, 32-pixel frames)."""
    torch.manual_seed(0)
    tokenizer = Tokenizer.build(micro_tokenizer_config()).eval()
    rgb = RGBHead(
        tokenizer.dim, tokenizer.backbone.feature_norm, RGBHeadConfig(32, 1, 2, 64, patch_size=8, image_size=32)
    ).eval()
    return micro_world(tokenizer), TaskHeads(rgb=rgb)


def clip(length: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    frames = torch.randint(
        0, 256, (1, length, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(3)
    )
    return frames, 0.2 * torch.arange(length, dtype=torch.float32)[None]


def margins(picture: np.ndarray, rows: int, columns: int) -> tuple[int, int]:
    """(top, left) label margins of a grid of ROLLOUT_CELL cells."""
    return picture.shape[0] - rows * ROLLOUT_CELL, picture.shape[1] - columns * ROLLOUT_CELL


def test_futures_picture_labels_context_truth_and_samples(micro_models):
    world, heads = micro_models
    frames, timestamps = clip(5)
    futures = imagine_futures(world, frames, timestamps, horizon=2, num_samples=3, heads=heads)
    assert (futures.context, futures.decoding, len(futures.samples), len(futures.samples[0])) == (3, "RGB head", 3, 2)
    assert futures.seconds == pytest.approx([-0.4, -0.2, 0.0, 0.2, 0.4])
    # The truth row is the true features drawn by the same head as the samples.
    true = heads.rgb.render(world.tokenizer.features(frames)[0], (4, 4)).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(np.stack(futures.truth), true)

    picture = draw_futures(futures)
    top, left = margins(picture, rows=2 + 3, columns=5)
    assert top > 0 and left > 0  # margins for the labels, none inside the cells
    assert (picture[:top] < 128).any() and (picture[top:, :left] < 128).any()  # label text in both

    def cell(row: int, col: int) -> np.ndarray:
        y, x = top + row * ROLLOUT_CELL, left + col * ROLLOUT_CELL
        return picture[y : y + ROLLOUT_CELL, x : x + ROLLOUT_CELL]

    scale = ROLLOUT_CELL // 32
    assert np.array_equal(cell(0, 4), upscale_nearest(frames[0, 4].permute(1, 2, 0).numpy(), scale))  # true frame
    assert np.array_equal(cell(1, 3), upscale_nearest(true[3], scale))  # the truth row at t+1
    assert np.array_equal(cell(2, 3), upscale_nearest(futures.samples[0][0], scale))  # sample 1 at t+1
    assert np.all(cell(2, 0) == 255)  # samples have no context cells
    # No white strip on the right: the last column holds the true future and every sample.
    assert all(cell(row, 4).std() > 0 for row in range(5))

    animation = animate_futures(futures)
    assert len(animation) == 5 and len({frame.shape for frame in animation}) == 1
    # One step per frame, video, truth and the 3 samples side by side; samples only at imagined steps.
    assert np.all(animation[0][-ROLLOUT_CELL:, -ROLLOUT_CELL:] == 255)
    assert np.array_equal(animation[4][-ROLLOUT_CELL:, -ROLLOUT_CELL:], upscale_nearest(futures.samples[2][1], scale))


def test_futures_beyond_the_clip_in_pca_colours(micro_models, tmp_path):
    world, _ = micro_models
    frames, timestamps = clip(3)
    futures = imagine_futures(world, frames, timestamps, horizon=2, context=3, num_samples=2)
    assert (futures.decoding, futures.closest, len(futures.video), len(futures.truth)) == ("feature PCA", None, 3, 3)
    assert futures.seconds == pytest.approx([-0.4, -0.2, 0.0, 0.2, 0.4])  # imagined at the clip's own spacing
    picture = futures_picture(
        world,
        frames,
        timestamps,
        horizon=2,
        context=3,
        num_samples=2,
        out=tmp_path / "futures.png",
        animation=tmp_path / "futures.gif",
    )
    assert np.array_equal(iio.imread(tmp_path / "futures.png"), picture)
    assert iio.imread(tmp_path / "futures.gif", index=None).shape[0] == 5
    top, left = margins(picture, rows=2 + 2, columns=5)
    # No truth beyond the clip: the video and truth rows end at t, the samples fill t+1 and t+2.
    assert np.all(picture[top : top + 2 * ROLLOUT_CELL, left + 3 * ROLLOUT_CELL :] == 255)
    assert picture[top + 2 * ROLLOUT_CELL :, left + 3 * ROLLOUT_CELL :].std() > 0


@pytest.mark.parametrize(
    ("length", "kwargs", "fragment"),
    [
        (3, {"horizon": 3}, "leaves no context"),
        (5, {"horizon": 2, "context": 6}, "context must be 1 to 5"),
        (5, {"horizon": 1, "context": 2}, "3 frames after its context"),
        (5, {"horizon": 2, "out": "futures.jpg"}, "must end in .png"),
    ],
)
def test_futures_refuse_what_they_cannot_draw(micro_models, length, kwargs, fragment, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    world, heads = micro_models
    with pytest.raises(InputError, match=fragment):
        futures_picture(world, *clip(length), heads=heads, **kwargs)
    with pytest.raises(InputError, match="one clip"):
        futures_picture(world, *(x.repeat(2, *[1] * (x.ndim - 1)) for x in clip(5)), horizon=2)
    assert not list(tmp_path.iterdir())
