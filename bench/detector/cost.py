"""Cost breakdown of the cough detector on the trimmed archive (decode excluded, one thread),
its import cost, and the network part run by TFLite instead of numpy (NOTES.md):

    .venv/bin/python bench/detector/cost.py [NPZ]
"""
import glob, os, subprocess, sys, time
os.environ.setdefault("OMP_NUM_THREADS", "1"); os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, soundfile as sf
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
from cough.audio import detector as D  # noqa: E402

npz = sys.argv[1] if len(sys.argv) > 1 else D.DEFAULT_PATH
det = D.load(npz)
data = []
for f in sorted(glob.glob(os.path.join(os.environ.get("COUGH_DATA", os.path.join(os.path.dirname(ROOT), "shared", "data")), "covid19-cough", "raw", "*.mp3"))):
    try:
        y, sr = sf.read(f, dtype="float32", always_2d=True); data.append((y.mean(1), sr))
    except Exception:
        pass
n = len(data)
def timed(fn, xs):
    t = time.process_time(); out = [fn(x) for x in xs]; return (time.process_time() - t) / n * 1e3, out
det.detect(*data[0])
ms_total, _ = timed(lambda d: det.detect(*d), data)
ms_res, y8 = timed(lambda d: det.resample(*d), data)
ms_mel, dbs = timed(det.log_mel, y8)
ms_feat, fs = timed(det.features, dbs)
ms_net, zs = timed(det.logits, fs)
ms_ev, _ = timed(lambda z: det.detect_probs(1 / (1 + np.exp(-z))), zs)
print(f"trimmed archive: {n} files; ms/recording: total {ms_total:.3f} = resample {ms_res:.3f} + log-mel {ms_mel:.3f} "
      f"+ features {ms_feat:.3f} + network {ms_net:.3f} + events {ms_ev:.3f}")
for q in ("HQ", "MQ", "LQ", "QQ"):
    D.RESAMPLE_QUALITY = q
    ms, _ = timed(lambda d: det.resample(*d), data)
    print(f"  soxr {q}: resample {ms:.3f} ms/recording")
D.RESAMPLE_QUALITY = "HQ"
imp = subprocess.run([sys.executable, "-c", "import time; t=time.perf_counter(); import sys; sys.path.insert(0, %r); "
                      "from cough.audio import detector; d = detector.load(%r); print((time.perf_counter()-t)*1e3)"
                      % (ROOT, npz)], capture_output=True, text=True)
print(f"import detector + load weights (fresh process, numpy already counted): {float(imp.stdout):.1f} ms")

# TFLite: the same network, converted from TensorFlow, per recording
import tensorflow as tf
tf.config.threading.set_intra_op_parallelism_threads(1); tf.config.threading.set_inter_op_parallelism_threads(1)
ws = [tf.constant(w) for w, _ in det.layers]; bs = [tf.constant(b) for _, b in det.layers]
wo = tf.constant(det.w_out[:, None]); bo = tf.constant(det.b_out)
@tf.function(input_signature=[tf.TensorSpec([1, None, fs[0].shape[1]], tf.float32)])
def net(x):
    for w, b, d, res in zip(ws, bs, det.dilations, det.residual):
        h = tf.nn.relu(tf.nn.conv1d(x, w, 1, "VALID", dilations=d) + b)
        if res:
            c = (w.shape[0] - 1) * d // 2
            h = h + x[:, c:tf.shape(x)[1] - c]
        x = h
    return tf.squeeze(tf.tensordot(x, wo, 1), -1) + bo
conv = tf.lite.TFLiteConverter.from_concrete_functions([net.get_concrete_function()], net)
interp = tf.lite.Interpreter(model_content=conv.convert(), num_threads=1)
inp, outp = interp.get_input_details()[0]["index"], interp.get_output_details()[0]["index"]
def tfl(f):
    x = np.zeros((1, len(f) + 2 * det.pad, f.shape[1]), np.float32); x[0, det.pad:det.pad + len(f)] = f
    interp.resize_tensor_input(inp, x.shape); interp.allocate_tensors(); interp.set_tensor(inp, x); interp.invoke()
    return interp.get_tensor(outp)[0]
tfl(fs[0])
ms_tfl, zt = timed(tfl, fs)
print(f"network by TFLite (1 thread, resize+allocate+invoke per recording): {ms_tfl:.3f} ms/recording vs numpy "
      f"{ms_net:.3f}; max |diff| {max(np.max(np.abs(a - b)) for a, b in zip(zs, zt)):.1e}")
imp = subprocess.run([sys.executable, "-c", "import time; t=time.perf_counter(); import tensorflow; "
                      "print((time.perf_counter()-t)*1e3)"], capture_output=True, text=True)
print(f"import tensorflow: {float(imp.stdout.strip().splitlines()[-1]):.0f} ms")
