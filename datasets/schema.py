"""The one place that names the data: episode sample keys in the shards and training batch keys.

Writers, readers, validators and the learner all import these names; nothing else spells a key.

Training batch (what every loader yields and the Lightning module consumes). T is the number of
tasks, B the number of transitions drawn from each task's own data, H x W the image size:

=====================  ==========  ==================  ============================================
key                    dtype       shape               meaning
=====================  ==========  ==================  ============================================
``BATCH_IMAGE``        uint8       [T, B, 3, H, W]     observation frame, row t drawn from task t's data
``BATCH_NEXT_IMAGE``   uint8       [T, B, 3, H, W]     next frame
``BATCH_PROPRIO``      float32     [T, B, P]           grasp point xyz and fingertip gap
``BATCH_NEXT_PROPRIO`` float32     [T, B, P]           next proprio
``BATCH_ACTION``       int64       [T, B]              action taken
``BATCH_REWARDS``      float32     [T, B, T]           reward of *every* task k for the transition (last axis)
``BATCH_SUCCESSES``    float32     [T, B, T]           1 where task k is solved at the next state (terminal for k)
=====================  ==========  ==================  ============================================

Relabeling a transition of task j for task i reads ``rewards[j, :, i]`` and ``successes[j, :, i]``.
"""

from __future__ import annotations

BATCH_IMAGE = "image"
BATCH_NEXT_IMAGE = "next_image"
BATCH_PROPRIO = "proprio"
BATCH_NEXT_PROPRIO = "next_proprio"
BATCH_ACTION = "action"
BATCH_REWARDS = "rewards"
BATCH_SUCCESSES = "successes"

BATCH_KEYS = (
    BATCH_IMAGE,
    BATCH_NEXT_IMAGE,
    BATCH_PROPRIO,
    BATCH_NEXT_PROPRIO,
    BATCH_ACTION,
    BATCH_REWARDS,
    BATCH_SUCCESSES,
)
