"""The TensorFlow "Image segmentation" tutorial's model, timed on this machine (reference for train_speed.py).

Runs in its own environment with tensorflow-cpu (never a dependency of mobileseg). Prints one JSON line:
train and inference images/s (median over timed steps after warm-up), batch 8, 224 px, binary output.
``--precision mixed_bfloat16`` sets Keras' global mixed-precision policy, as a Keras user on a CPU with bf16 units
would (the logits layer stays float32, as Keras' mixed-precision guide advises).

    python benchmarks/keras_tutorial_step.py --threads 2 --steps 20 --precision mixed_bfloat16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time


def build_model(size: int = 224, out_channels: int = 1, freeze_encoder: bool = False, logits_dtype=None):  # type: ignore[no-untyped-def]
    import tensorflow as tf

    base = tf.keras.applications.MobileNetV2(input_shape=[size, size, 3], include_top=False, weights=None)
    names = [
        "block_1_expand_relu",
        "block_3_expand_relu",
        "block_6_expand_relu",
        "block_13_expand_relu",
        "block_16_project",
    ]
    down_stack = tf.keras.Model(inputs=base.input, outputs=[base.get_layer(n).output for n in names])
    down_stack.trainable = not freeze_encoder  # the tutorial freezes it; mobileseg fine-tunes it by default

    def upsample(filters: int):  # pix2pix.upsample(filters, 3), apply_dropout=False
        init = tf.random_normal_initializer(0.0, 0.02)
        return tf.keras.Sequential(
            [
                tf.keras.layers.Conv2DTranspose(
                    filters, 3, strides=2, padding="same", kernel_initializer=init, use_bias=False
                ),
                tf.keras.layers.BatchNormalization(),
                tf.keras.layers.ReLU(),
            ]
        )

    inputs = tf.keras.layers.Input(shape=[size, size, 3])
    skips = down_stack(inputs)
    x = skips[-1]
    for up, skip in zip([upsample(512), upsample(256), upsample(128), upsample(64)], reversed(skips[:-1]), strict=True):
        x = tf.keras.layers.Concatenate()([up(x), skip])
    x = tf.keras.layers.Conv2DTranspose(out_channels, 3, strides=2, padding="same", dtype=logits_dtype)(x)
    return tf.keras.Model(inputs=inputs, outputs=x)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, default=224)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--freeze-encoder", action="store_true", help="the tutorial's down_stack.trainable = False")
    ap.add_argument(
        "--jit",
        choices=["auto", "true", "false"],
        default="auto",
        help="model.compile(jit_compile=...): Keras 3's default 'auto' turns XLA on for the TF backend",
    )
    ap.add_argument("--precision", choices=["float32", "mixed_bfloat16"], default="float32")
    ap.add_argument("--infer-only", action="store_true", help="time predict_on_batch only (train_img_s: null)")
    args = ap.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    tf.keras.mixed_precision.set_global_policy(args.precision)
    logits_dtype = "float32" if args.precision != "float32" else None
    model = build_model(args.size, freeze_encoder=args.freeze_encoder, logits_dtype=logits_dtype)
    jit = {"auto": "auto", "true": True, "false": False}[args.jit]
    model.compile(optimizer="adam", loss=tf.keras.losses.BinaryCrossentropy(from_logits=True), jit_compile=jit)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, args.size, args.size, 3), dtype=np.float32)
    y = (rng.random((args.batch, args.size, args.size, 1)) > 0.5).astype(np.float32)

    def timed(fn) -> list[float]:  # type: ignore[no-untyped-def]
        for _ in range(args.warmup):
            fn()
        times = []
        for _ in range(args.steps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return times

    train = None if args.infer_only else timed(lambda: model.train_on_batch(x, y))
    infer = timed(lambda: model.predict_on_batch(x))
    print(
        json.dumps(
            {
                "framework": f"tensorflow {tf.__version__} / keras {tf.keras.__version__}",
                "params": int(model.count_params()),
                "train_img_s": None if train is None else args.batch / statistics.median(train),
                "infer_img_s": args.batch / statistics.median(infer),
                "threads": args.threads,
                "jit_compile": args.jit,
                "freeze_encoder": args.freeze_encoder,
                "precision": args.precision,
                "xla": bool(getattr(model, "jit_compile", False)),
                "batch": args.batch,
                "size": args.size,
            }
        )
    )


if __name__ == "__main__":
    main()
