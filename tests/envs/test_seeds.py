import pytest

from robocds.envs.seeds import EVAL_SEED_START, data_episode_seed, eval_episode_seed, is_eval_seed


def test_data_and_eval_seeds_never_overlap():
    data = {data_episode_seed(b, t, e) for b in range(3) for t in range(9) for e in range(200)}
    evals = {eval_episode_seed(b, t, e) for b in range(3) for t in range(9) for e in range(200)}
    assert max(data) < EVAL_SEED_START <= min(evals)
    assert not data & evals
    assert all(is_eval_seed(s) for s in evals) and not any(is_eval_seed(s) for s in data)
    assert len(data) == 3 * 9 * 200  # distinct episodes get distinct seeds


def test_negative_inputs_are_rejected():
    with pytest.raises(ValueError, match="episode=-1"):
        data_episode_seed(0, 0, -1)
