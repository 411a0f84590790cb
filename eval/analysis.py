"""Why a method works or not: Q-values on own vs shared data, and how far the policy is from the data.

    robocds-analyse --checkpoint runs/x/version_0/checkpoints/last.ckpt --data <dataset> --out <folder>

On the dataset's held-out episodes (the validation split the run never trained on) it measures, with
the conservative Q (min over heads) of a trained model:

- ``q_matrix[i][j]``: mean Q_i(s, a) of target task i over transitions from task j's data (the
  diagonal is Q on own data). CDS shares a transition when Q_i(s, a) is high, so a method that
  keeps Q_i on other tasks' data low has little left to share.
- ``agreement[i]``: the fraction of task i's own transitions where task i's greedy action equals
  the data's action; ``data_nll[i]``: -log softmax(Q_i(s, .))[a_data], the policy's distance from
  the data's actions in nats (log 8 = 2.08 is a uniform policy over the 8 actions).

and, closed loop, on the states the policy itself visits (``episodes`` evaluation-seed episodes per
task, played greedily):

- ``oracle_agreement[i]``: the fraction of steps where the policy's action equals the noise-free
  scripted oracle's action in that state, and ``confusions[i]``: the most frequent (policy, oracle)
  action pairs where they differ. Low agreement here with high agreement on the data means the
  policy drifts into states the data does not cover.

The first are the paper's diagnostics for why sharing helps or hurts (Q on shared vs own data,
distance of the learned policy from the behaviour data per task).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
import torch

from robocds.errors import ConfigError, int_at_least, output_dir, run_cli
from robocds.eval.markdown import markdown_table
from robocds.files import write_text_atomic

ANALYSIS_FILE = "analysis.json"


@torch.no_grad()
def analyse(module, batches) -> dict:
    """Diagnostics of ``module`` (a MultiTaskCQL in eval mode) over training-format ``batches``."""
    from robocds.cql import data_action_values
    from robocds.datasets.schema import BATCH_ACTION

    q_sums, nll_sums, agree_sums = [], [], []
    count = 0
    for batch in batches:
        actions = batch[BATCH_ACTION].to(module.device)
        t, b = actions.shape
        q = module.batch_q_values(batch)  # [T_src, B, T_tgt, A]
        own = torch.arange(t, device=q.device)
        q_sums.append(data_action_values(q, actions).sum(1).T.double())  # [T_tgt, T_src]
        nll_sums.append(-data_action_values(torch.log_softmax(q, dim=-1), actions)[own, :, own].sum(1).double())
        # Task i's greedy action on its own data vs the data's action.
        agree_sums.append((q[own, :, own].argmax(-1) == actions).sum(1).double())
        count += b
    if count == 0:
        raise ConfigError("analyse: no batches (the dataset has no held-out episodes?)")
    return {
        "tasks": list(module.task_names),
        "transitions_per_task": count,
        "q_matrix": (sum(q_sums) / count).tolist(),
        "agreement": (sum(agree_sums) / count).tolist(),
        "data_nll": (sum(nll_sums) / count).tolist(),
    }


@torch.no_grad()
def on_policy_agreement(module, episodes: int = 4, base_seed: int = 0) -> dict:
    """Closed-loop agreement of the greedy policy with the noise-free oracle, per task (see module doc).

    The env is built from the settings the model carries (those of the data it was trained on).
    """
    from robocds.envs.actions import ACTION_NAMES
    from robocds.envs.env import ManipulationEnv
    from robocds.envs.seeds import eval_episode_seed
    from robocds.envs.tasks import TASK_NAMES, ScriptedOracle, get_task
    from robocds.eval.policy import module_env

    settings = module_env(module)
    agreement, confusions = [], []
    for index, task in enumerate(module.task_names):
        env = ManipulationEnv.from_settings(task, settings)
        oracle = ScriptedOracle(get_task(task))
        same, steps, pairs = 0, 0, Counter()
        try:
            for episode in range(episodes):
                obs, _ = env.reset(seed=eval_episode_seed(base_seed, TASK_NAMES.index(task), episode))
                oracle.reset()
                done = False
                while not done:
                    action = int(module.act(obs["image"], obs["proprio"])[0, index])
                    expert = oracle.act(env)
                    same, steps = same + (action == expert), steps + 1
                    if action != expert:
                        pairs[(ACTION_NAMES[action], ACTION_NAMES[expert])] += 1
                    obs, _, terminated, truncated, _ = env.step(action)
                    done = terminated or truncated
        finally:
            env.close()
        agreement.append(same / steps)
        confusions.append([[policy, expert, count / steps] for (policy, expert), count in pairs.most_common(3)])
    return {"oracle_agreement": agreement, "confusions": confusions, "on_policy_episodes": episodes}


def held_out_batches(module, data: str, batches: int, batch_size: int, seed: int = 0):
    """Fixed batches of the held-out episodes (the split training validates on) of ``module``'s tasks."""
    from robocds.datasets.datamodule import OfflineDataModule

    datamodule = OfflineDataModule(
        data, batch_size=batch_size, val_batches=batches, seed=seed, steps_per_epoch=1, tasks=module.task_names
    )
    for name in ("image_size", "proprio_dim", "num_actions"):
        if getattr(datamodule, name) != getattr(module, name):
            raise ConfigError(
                f"{data}: the dataset's {name}={getattr(datamodule, name)} but the checkpoint's is "
                f"{getattr(module, name)}: analyse a checkpoint on the dataset it was trained on"
            )
    from robocds.eval.policy import module_env

    differences = module_env(module).differences(datamodule.manifest.env)
    if differences:
        raise ConfigError(
            f"{data}: the checkpoint was trained in another env than this dataset records (checkpoint vs dataset: "
            f"{'; '.join(differences)}): analyse a checkpoint on the dataset it was trained on"
        )
    datamodule.setup("validate")
    return datamodule.val_dataloader()


def analyse_checkpoint(
    checkpoint: str | Path, data: str, batches: int = 8, batch_size: int = 64, episodes: int = 4
) -> dict:
    from robocds.eval.policy import load_checkpoint_policy

    module = load_checkpoint_policy(checkpoint, device="cpu").module
    result = analyse(module, held_out_batches(module, data, batches, batch_size))
    if episodes > 0:
        result.update(on_policy_agreement(module, episodes))
    return {"checkpoint": str(checkpoint), **result}


def summarize(results: list[dict]) -> dict:
    """Mean over runs (seeds) of each diagnostic, per task; shared Q is the mean over the other tasks' data."""
    tasks = results[0]["tasks"]
    for result in results:
        if result["tasks"] != tasks:
            raise ValueError(f"{result['checkpoint']}: tasks {result['tasks']} differ from {tasks}")
    q = np.mean([np.array(r["q_matrix"]) for r in results], axis=0)
    off = ~np.eye(len(tasks), dtype=bool)
    return {
        "tasks": tasks,
        "runs": len(results),
        "q_own": np.diag(q).tolist(),
        "q_shared": [float(q[i][off[i]].mean()) if off[i].any() else float("nan") for i in range(len(tasks))],
        "agreement": np.mean([r["agreement"] for r in results], axis=0).tolist(),
        "data_nll": np.mean([r["data_nll"] for r in results], axis=0).tolist(),
        **(_closed_loop(results, len(tasks)) if all("oracle_agreement" in r for r in results) else {}),
    }


def _closed_loop(results: list[dict], num_tasks: int) -> dict:
    """Mean closed-loop agreement, and each task's most frequent disagreement pooled over runs."""
    top = []
    for i in range(num_tasks):
        pooled: Counter = Counter()
        for result in results:
            for policy, expert, fraction in result["confusions"][i]:
                pooled[f"{policy} for {expert}"] += fraction / len(results)
        top.append(pooled.most_common(1)[0] if pooled else None)
    return {
        "oracle_agreement": np.mean([r["oracle_agreement"] for r in results], axis=0).tolist(),
        "top_confusion": top,
    }


def markdown(summaries: dict[str, dict]) -> str:
    """One table per diagnostic, a column per method."""
    methods = list(summaries)
    tasks = summaries[methods[0]]["tasks"]
    lines = []
    percent = "{:.0%}".format
    tables = (  # (title, the summary key it needs, the cell of task i in a summary)
        ("Mean conservative Q on the task's own held-out data / on the other tasks' data", "q_own",
         lambda s, i: f"{s['q_own'][i]:.2f} / {s['q_shared'][i]:.2f}"),
        ("Greedy action = data action, on the task's own held-out data", "agreement",
         lambda s, i: percent(s["agreement"][i])),
        ("Distance from the data's actions: -log softmax(Q)[a_data], nats (uniform: 2.08)", "data_nll",
         lambda s, i: f"{s['data_nll'][i]:.2f}"),
        ("Closed loop: policy action = noise-free oracle action on the states the policy visits "
         "(most frequent disagreement: share of steps)", "oracle_agreement",
         lambda s, i: percent(s["oracle_agreement"][i]) + _confusion(s["top_confusion"][i])),
    )  # fmt: skip
    for title, key, cell in tables:
        if any(key not in s for s in summaries.values()):
            continue
        rows = [[task, *(cell(s, i) for s in summaries.values())] for i, task in enumerate(tasks)]
        lines += ["", f"{title}:", "", markdown_table(["task", *methods], rows)]
    return "\n".join(lines).lstrip("\n") + "\n"


def _confusion(top) -> str:
    return f" ({top[0]}: {top[1]:.0%})" if top else ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="robocds-analyse", description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, help="a MultiTaskCQL checkpoint (.ckpt)")
    parser.add_argument("--data", required=True, help="the dataset folder it was trained on")
    parser.add_argument("--out", required=True, help="output folder (writes analysis.json)")
    parser.add_argument("--batches", type=int_at_least(1), default=8, help="held-out batches per task")
    parser.add_argument("--batch-size", type=int_at_least(1), default=64, help="transitions per task per batch")
    parser.add_argument("--episodes", type=int_at_least(0), default=4, help="closed-loop episodes per task (0: none)")
    args = parser.parse_args(argv)
    out = output_dir(args.out)
    result = analyse_checkpoint(args.checkpoint, args.data, args.batches, args.batch_size, args.episodes)
    write_text_atomic(out / ANALYSIS_FILE, json.dumps(result, indent=1) + "\n")
    print(markdown({Path(args.checkpoint).stem: summarize([result])}))
    print(f"outputs: {out / ANALYSIS_FILE}")
    return 0


def cli() -> None:
    """Console-script entry point (``robocds-analyse``)."""
    run_cli(main, "robocds-analyse")


if __name__ == "__main__":
    cli()
