"""convert/qat.py: the fake-quantised model that quantisation-aware training trains through."""

import json

import cv2
import numpy as np

from conftest import FIXTURE_IMAGES, needs_tensorflow


def test_fake_quant_model_tracks_the_int8_export_and_trains_the_float_weights(shared_weights,
                                                                            tmp_path):
    """After calibration on the export's representative images, the simulated model's outputs
    are closer to the real int8 TFLite model's than the float model's are; it rounds at
    the tensors the converter stores in int8, and its gradients reach the float model."""
    tf = needs_tensorflow()
    import keras

    from convert import qat
    from convert.detector import build
    from convert.quantize import to_int8_tflite
    from edge.detector import FaceDetector, softmax_face

    hw = (128, 128)
    model, spec = build(shared_weights, hw, "mnv2fpn")
    for layer in model.layers:  # stand-in for trained weights: the heads and laterals move
        if layer.name.startswith(("head", "fpn")) and layer.weights:
            layer.set_weights([w + 0.05 * np.random.default_rng(1).standard_normal(w.shape)
                               for w in layer.get_weights()])
    images = [cv2.resize(cv2.imread(str(p)), hw[::-1]) for p in FIXTURE_IMAGES]
    path = to_int8_tflite(model, lambda: iter(images), tmp_path / "d.tflite", batch_of_one=True)
    sim = qat.fake_quant_model(model, hw)
    # rounding sits after fused groups only: conv -> BN -> ReLU6 is one int8 tensor, the
    # linear bottleneck's BN output and the residual sum are int8 tensors of their own
    names = {layer.name for layer in sim.activation_quants}
    assert {"Conv1_relu_aq", "block_1_project_BN_aq", "block_2_add_aq", "fpn8_relu_aq",
            "conf_aq"} <= names
    assert not {"Conv1_aq", "bn_Conv1_aq", "block_1_project_aq", "fpn8_add_aq"} & names
    assert len(sim.quant_layers) > len(names)  # and every convolution's kernel
    qat.calibrate(sim, images)
    ranges = {q.name: (float(q.lo.numpy()), float(q.hi.numpy())) for q in sim.activation_quants}
    assert ranges["Conv1_relu_aq"][0] == 0.0 and 0.0 < ranges["Conv1_relu_aq"][1] <= 6.0

    (tmp_path / "d.json").write_text(json.dumps({"anchors": spec.to_dict()}))
    det = FaceDetector(path)
    real = []
    for im in images[:2]:
        det.preprocess(im)
        real.append(det.raw()[1])  # p(face) of every prior, from the int8 logits
    x = np.stack(images[:2]).astype(np.float32)

    def face_prob(out):
        return np.stack([softmax_face(conf) for conf in out["conf"].numpy()])

    simulated = face_prob(sim(x, training=False))
    exact = face_prob(model(x, training=False))
    # (here about 0.6; without the rounding, or with other ranges, it would be 1 or more)
    assert np.abs(simulated - real).mean() < 0.8 * np.abs(exact - real).mean()

    # one training step through the simulation moves the float model's own weights
    head = model.get_layer("head0_conf_pw")
    before = head.get_weights()[0].copy()
    opt = keras.optimizers.SGD(0.1)
    with tf.GradientTape() as tape:
        out = sim(x, training=True)
        loss = tf.reduce_mean(tf.square(out["conf"])) + tf.reduce_mean(tf.square(out["loc"]))
    grads = tape.gradient(loss, sim.trainable_variables)
    assert all(g is not None for g in grads)
    opt.apply_gradients(zip(grads, sim.trainable_variables))
    assert not np.allclose(before, head.get_weights()[0])


def test_quantised_kernel_rounds_each_output_channel_to_127_steps():
    tf = needs_tensorflow()
    from convert.qat import quantised_kernel

    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((3, 3, 4, 5)).astype(np.float32)
    kernel[..., 2] *= 100.0  # one wide channel must not coarsen the others
    for depthwise, k in ((False, kernel), (True, kernel[..., :1])):
        q = quantised_kernel(tf.constant(k), depthwise).numpy()
        channels = k.reshape(-1, k.shape[2] * k.shape[3]) if depthwise else \
            k.reshape(-1, k.shape[3])
        flat_q = q.reshape(channels.shape)
        step = np.abs(channels).max(0) / 127
        np.testing.assert_allclose(flat_q, np.round(channels / step) * step, rtol=1e-5,
                                   atol=1e-6)


def test_detector_training_with_qat_selects_on_the_simulated_int8_model(shared_weights, tmp_path,
                                                                      monkeypatch):
    """`convert detector-train --qat` end to end on a tiny dataset: it trains through the
    rounding, records the choice and saves float weights the export can load."""
    needs_tensorflow()
    import shutil

    from conftest import FIXTURES
    from convert import detector, qat
    from convert.detector import build, train

    calibrated, evaluated = [], []
    real_calibrate, real_evaluate = qat.calibrate, detector.evaluate_keras

    def calibrate(net, images):
        calibrated.append((net.name, len(images)))
        real_calibrate(net, images)

    def evaluate(net, *args):
        evaluated.append(net.name)
        return real_evaluate(net, *args)

    monkeypatch.setattr(qat, "calibrate", calibrate)
    monkeypatch.setattr(detector, "evaluate_keras", evaluate)
    data = tmp_path / "detect"
    shutil.copytree(FIXTURES / "andrewmvd", data / "andrewmvd")
    names = sorted(p.name for p in (data / "andrewmvd" / "images").iterdir())
    rows = [f"andrewmvd/images/{n},train" for n in names[:-2]] + \
        [f"andrewmvd/images/{n},val" for n in names[-2:]]
    (data / "splits.csv").write_text("image,split\n" + "\n".join(rows) + "\n")
    run = train(data, shared_weights, tmp_path / "run", epochs=1, batch_size=2, sizes=(128,),
                eval_size=128, arch="mnv2fpn", qat=True, max_steps=2)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    history = json.loads((tmp_path / "run" / "history.json").read_text())
    assert config["qat"] is True and history[0]["steps"] == 2
    # calibrated on every train image (fewer than the export's 300) before training and again
    # before the val selection, which ran on the simulated model
    assert calibrated == [("ssdlite_fpn_mobilenetv2_int8sim", len(names) - 2)] * 2
    assert evaluated == ["ssdlite_fpn_mobilenetv2_int8sim"]
    model, _ = build(shared_weights, (128, 128), "mnv2fpn")
    before = model.get_layer("head0_conf_pw").get_weights()[0].copy()
    model.load_weights(run)  # a plain float model: what `detector-export` quantises
    assert not np.allclose(before, model.get_layer("head0_conf_pw").get_weights()[0])
