"""The training data: balanced class weights, the training-only augmentation, and the tf.data pipeline.

Augmentation runs on raw [0, 255] pixels (the model scales them itself, see core.model) and touches only the
training dataset, as a `.map` with AUTOTUNE parallelism before `.prefetch`.
"""

from __future__ import annotations

import math

import numpy as np

from core.config import TrainConfig


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """sklearn's "balanced" weights n / (k * count_c), for the classes present in `labels`."""
    counts = np.bincount(labels, minlength=num_classes)
    return {c: float(len(labels) / (num_classes * counts[c])) for c in range(num_classes) if counts[c]}


def affine_transforms(batch_size, height: int, width: int, config: TrainConfig, generator):
    """One projective transform per film (b, 8) combining flip, rotation and zoom about the centre.

    Rotation is uniform in ±rotation_degrees, the zoom factor uniform in 1 ± zoom (as Keras's RandomZoom
    with one factor: both zoom in and out, aspect kept), the flip horizontal with probability 0.5. The
    transform maps each output pixel to the input position it samples, as ImageProjectiveTransformV3 wants.
    """
    import tensorflow as tf

    angle = generator.uniform([batch_size], -1.0, 1.0) * (config.rotation_degrees * math.pi / 180.0)
    scale = 1.0 + generator.uniform([batch_size], -1.0, 1.0) * config.zoom
    flip = (tf.where(generator.uniform([batch_size]) < 0.5, -1.0, 1.0) if config.horizontal_flip
            else tf.ones([batch_size]))
    cos, sin = tf.cos(angle) * scale, tf.sin(angle) * scale
    centre_x, centre_y = (width - 1) / 2.0, (height - 1) / 2.0
    a0, a1 = cos * flip, -sin
    b0, b1 = sin * flip, cos
    a2 = centre_x - a0 * centre_x - a1 * centre_y
    b2 = centre_y - b0 * centre_x - b1 * centre_y
    zeros = tf.zeros([batch_size])
    return tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)


def build_augmentation(config: TrainConfig):
    """The training-only augmentation on raw [0, 255] pixels (b, S, S, 1), or None when there is none.

    Rotation, zoom and flip are composed into one affine transform per film and applied in a single
    resampling pass (the three Keras layers RandomRotation, RandomZoom and RandomFlip would resample three
    times); brightness then adds one offset per film of up to ±brightness x 255, as Keras's
    RandomBrightness does. Pixels leaving the film are filled black.
    """
    import tensorflow as tf

    geometric = bool(config.rotation_degrees or config.zoom or config.horizontal_flip)
    if not geometric and not config.brightness:
        return None
    generator = tf.random.Generator.from_seed(config.seed)

    def augment(images):
        shape = tf.shape(images)
        batch_size, height, width = shape[0], shape[1], shape[2]
        if geometric:
            transforms = affine_transforms(batch_size, tf.cast(height, tf.float32), tf.cast(width, tf.float32),
                                           config, generator)
            images = tf.raw_ops.ImageProjectiveTransformV3(
                images=images, transforms=transforms, output_shape=tf.stack([height, width]),
                fill_value=0.0, interpolation="BILINEAR", fill_mode="CONSTANT",
            )
        if config.brightness:
            offsets = generator.uniform([batch_size, 1, 1, 1], -1.0, 1.0) * (config.brightness * 255.0)
            images = images + offsets
        return tf.clip_by_value(images, 0.0, 255.0)

    return augment


def make_dataset(images: np.ndarray, labels: np.ndarray, num_classes: int, config: TrainConfig,
                 training: bool, rows: np.ndarray | None = None, shard: tuple[int, int] | None = None,
                 skip_batches: int = 0):
    """A batched tf.data pipeline over decoded films: shuffle and augment only when training, prefetch.

    images: uint8 (N, S, S, 1) decoded films, in memory or the on-disk FilmCache (core.training.cache);
    labels: int (N,); rows: the rows to use (default all), in order. Only row numbers enter the pipeline:
    each batch's films are read from `images` when the batch is formed, so an on-disk cache is never
    copied whole (a tensor made from the films would be). The order is the one a pipeline over the films
    themselves would give: the shuffle permutes row numbers with the same seed.
    Yields (float32 raw pixels (b, S, S, 1), one-hot float32 (b, k)).
    """
    import tensorflow as tf

    rows = np.arange(len(images)) if rows is None else np.asarray(rows, dtype=np.int64)
    one_hot = np.eye(num_classes, dtype=np.float32)[labels]
    shape = (None,) + tuple(images.shape[1:])

    def read(batch_rows):
        return images[batch_rows].astype(np.float32), one_hot[batch_rows]

    def gather(batch_rows):
        films, targets = tf.numpy_function(read, [batch_rows], (tf.float32, tf.float32), stateful=False)
        return tf.ensure_shape(films, shape), tf.ensure_shape(targets, (None, num_classes))

    dataset = tf.data.Dataset.from_tensor_slices(rows)
    if training:
        dataset = dataset.shuffle(len(rows), seed=config.seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(config.batch_size).skip(skip_batches)
    if shard is not None:
        dataset = dataset.map(lambda batch_rows: _part_of_batch(batch_rows, *shard))
        config = config.replace(seed=config.seed + shard[0])
    dataset = dataset.map(gather, num_parallel_calls=tf.data.AUTOTUNE)
    augmentation = build_augmentation(config) if training else None
    if augmentation is not None:
        dataset = dataset.map(lambda x, y: (augmentation(x), y), num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


def _part_of_batch(batch_rows, index: int, count: int):
    """Part `index` of `count` of a batch: rows [index * m / count, (index + 1) * m / count) of its m rows,
    so the parts of all workers together are the batch, in order."""
    import tensorflow as tf

    size = tf.shape(batch_rows, out_type=tf.int64)[0]
    return batch_rows[index * size // count:(index + 1) * size // count]
