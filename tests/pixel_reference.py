"""Host-side numpy reference of FQL's image batches (frame stack, random crop), for tests and bench.

It works the way FQL's ``Dataset.sample`` does: on a regular dataset that holds separate
``observations`` and ``next_observations`` arrays, with episode starts found from ``terminals``
by a sorted search, and the crop applied to the concatenated images of the batch.
"""

import numpy as np

PADDING = 3


def episode_initial_indices(terminals):
    """Each transition's episode start, found as FQL finds it (sorted search of the starts)."""
    ends = np.flatnonzero(np.asarray(terminals) > 0)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return starts[np.searchsorted(starts, np.arange(len(terminals)), side='right') - 1]


def reference_crop(images, crop_froms, padding=PADDING):
    """Edge-pad (B, H, W, C) images by ``padding`` and cut each at its (row, column)."""
    height, width = images.shape[1:3]
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)), mode='edge')
    return np.stack(
        [padded[b, r : r + height, c : c + width] for b, (r, c) in enumerate(crop_froms)]
    )


def reference_batch(dataset, idxs, frame_stack=None, crop_froms=None):
    """The batch of transitions ``idxs``: stacked on channels, cropped when ``crop_froms`` given."""
    batch = {k: v[idxs] for k, v in dataset.items()}
    if frame_stack is not None:
        first = episode_initial_indices(dataset['terminals'])[idxs]
        steps_back = range(frame_stack - 1, -1, -1)
        frames = [dataset['observations'][np.maximum(idxs - s, first)] for s in steps_back]
        batch['observations'] = np.concatenate(frames, axis=-1)
        next_frames = [*frames[1:], dataset['next_observations'][idxs]]
        batch['next_observations'] = np.concatenate(next_frames, axis=-1)
    if crop_froms is not None:
        for key in ('observations', 'next_observations'):
            batch[key] = reference_crop(batch[key], crop_froms)
    return batch


def reference_sample(dataset, rng, batch_size, frame_stack=None, p_aug=None):
    """FQL's host sampling: uniform indices, then with probability ``p_aug`` a random crop."""
    size = len(dataset['observations'])
    idxs = rng.integers(size, size=batch_size)
    crop_froms = None
    if p_aug is not None and rng.random() < p_aug:
        crop_froms = rng.integers(0, 2 * PADDING + 1, (batch_size, 2))
    return reference_batch(dataset, idxs, frame_stack, crop_froms)
