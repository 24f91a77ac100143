"""Outputs carried along the motion from frame to frame: flicker down,
motion followed, a cut never dragged; and the segments that filter their
frames on the way into a video."""

import cv2
import numpy as np
import onnx_models as om
import pytest
from sgd_fakes import FakeInput as Input

from mlstorlets.sandbox.errors import ParameterError
from mlstorlets.sandbox.video import avi, tasks
from mlstorlets.sandbox.video.temporal import Stabilizer, flicker


def _scene(shift=0, seed=0, noise=3.0, size=(96, 128)):
    """A textured scene moved ``shift`` pixels right, with fresh sensor
    noise each time."""
    rng = np.random.default_rng(1234)
    base = cv2.GaussianBlur(rng.random((size[0], size[1] + 40)) * 255, (0, 0), 3)
    base = base[:, 20 - shift : 20 - shift + size[1]]
    noisy = base + np.random.default_rng(seed).normal(0, noise, base.shape)
    gray = np.clip(noisy, 0, 255).astype(np.uint8)
    return cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR)


def _edges(image):
    """A filter that turns noise into flicker, as a cartoon's edges do."""
    gray = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    mask = cv2.adaptiveThreshold(gray, 255, cv2.ADAPTIVE_THRESH_MEAN_C, cv2.THRESH_BINARY, 9, 2)
    return cv2.cvtColor(mask, cv2.COLOR_GRAY2BGR)


def test_without_strength_every_output_is_the_filters():
    stabilizer = Stabilizer(0.0)
    for seed in range(3):
        frame = _scene(seed=seed)
        assert np.array_equal(stabilizer.step(frame, _edges(frame)), _edges(frame))


def test_noise_turned_to_flicker_is_damped():
    frames = [_scene(seed=s) for s in range(12)]
    alone = [_edges(f) for f in frames]
    stabilizer = Stabilizer(0.7)
    carried = [stabilizer.step(f, e) for f, e in zip(frames, alone)]
    assert flicker(carried) < 0.6 * flicker(alone)


def test_the_output_follows_the_motion():
    frames = [_scene(shift=2 * i, seed=i, noise=0.5) for i in range(8)]
    styled = [cv2.applyColorMap(f, cv2.COLORMAP_JET) for f in frames]
    stabilizer = Stabilizer(0.7)
    out = [stabilizer.step(f, s) for f, s in zip(frames, styled)]
    # Carried along the motion, the last output is still the last frame's
    # picture (away from the edge that came into view), not a smear.
    inner = (slice(8, -8), slice(24, -8))
    error = np.abs(out[-1][inner].astype(int) - styled[-1][inner]).mean()
    assert error < 4, error


def test_a_cut_is_not_dragged_along():
    stabilizer = Stabilizer(0.9)
    before = _scene(seed=0)
    stabilizer.step(before, _edges(before))
    cut = np.full_like(before, 200)
    cut[20:60, 30:90] = 40
    out = stabilizer.step(cut, cv2.applyColorMap(cut, cv2.COLORMAP_JET))
    assert np.abs(out.astype(int) - cv2.applyColorMap(cut, cv2.COLORMAP_JET)).mean() < 3


def _jpeg(image):
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def _decoded(body):
    _, read = avi.read_avi(body, "v")
    return [cv2.imdecode(np.frombuffer(bytes(f), np.uint8), cv2.IMREAD_COLOR) for f in read]


def test_a_segment_filters_its_frames_and_the_context_frame_is_not_output():
    frames = [_scene(seed=s) for s in range(5)]
    inputs = [Input(_jpeg(f), {"Frame-Fps": "25"}) for f in frames]
    params = {"filter": "colormap", "map": "jet", "temporal": "0.7", "context": "1"}
    result, body = tasks.assemble(inputs, params)
    assert result == {"Video-Frames": 4, "Video-Fps": "25"}
    out = _decoded(body)
    assert len(out) == 4
    assert np.abs(out[0].astype(int) - cv2.applyColorMap(frames[1], cv2.COLORMAP_JET)).mean() < 8


def test_a_segment_applies_a_model_given_last():
    frames = [_scene(seed=s) for s in range(3)]
    inputs = [Input(_jpeg(f), {"Frame-Fps": "10"}) for f in frames] + [Input(om.invert())]
    result, body = tasks.assemble(inputs, {"model": "models/negative.onnx"})
    assert result["Video-Frames"] == 3
    for got, frame in zip(_decoded(body), frames):
        assert np.abs(got.astype(int) - (255 - frame.astype(int))).mean() < 4


def test_temporal_without_a_filter_is_the_callers_mistake():
    with pytest.raises(ParameterError) as err:
        tasks.assemble([Input(_jpeg(_scene()), {"Frame-Fps": "5"})], {"temporal": "0.5"})
    assert err.value.parameter == "temporal"
