"""Exact Bayes-optimal expected return of the E1 gridworld meta-episode (reference line).

The belief of a Bayes-optimal agent under the uniform goal prior is the set of goals not yet
ruled out. While the goal is unfound every observation is predictable (position is
deterministic, every reward is −0.1), so the belief state — (position, visited goal cells,
time, episode) — is a deterministic function of the actions taken; once the goal is found,
acting optimally is trivial (stay on it, and in later episodes walk the shortest path and
stay). Averaging the return over goals, a goal ``g`` first visited at global step ``T``
(episode ``e``, step ``t``) contributes::

    step·(T−1) + goal·(H−t+1) + (K−e)·best_episode(g)

and an unfound goal contributes ``step·K·H``. So the Bayes-optimal value is a maximum over
search paths of a sum of per-goal *prizes* (gain over never finding the goal), computed by
a forward dynamic programme over the belief states, one layer per time step: each layer keeps,
per reachable belief state, the best prize collected so far. Layers are pruned with an
admissible upper bound on the prizes still collectable against the value of a greedy
(beam-search) solution, which keeps the exact computation to seconds.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from metarl.envs import gridworld as gw
from metarl.utils.io import save_json


def _prize_table(width, height, start, goals, horizon, episodes, goal_reward, step_reward):
    """prize[T, cell]: gain over never finding the goal when goal ``cell`` is first visited at
    global step T = 1..K·H (0 for cells that are not goals)."""
    prize = np.zeros((episodes * horizon + 1, width * height))
    for x, y in goals:
        d = max(abs(x - start[0]) + abs(y - start[1]), 1)  # a goal on the start is found by staying
        best_episode = (step_reward * (d - 1) + goal_reward * (horizon - d + 1) if d <= horizon
                        else step_reward * horizon)
        for T in range(1, episodes * horizon + 1):
            e, t = (T - 1) // horizon + 1, (T - 1) % horizon + 1
            found = step_reward * (T - 1) + goal_reward * (horizon - t + 1) + (episodes - e) * best_episode
            prize[T, x * height + y] = found - step_reward * episodes * horizon
    return prize


def _best_prize(succ, bit, prize, start_cell, horizon, episodes, lower_bound=-np.inf, beam=None, trace=False):
    """Forward DP over belief states ``code = visited_mask * n_cells + cell``; returns the best
    total prize (and with ``trace``, the action at each step of a search path that attains it).
    States whose prize plus the upper bound still to come is below ``lower_bound`` are dropped
    (exact for any feasible ``lower_bound``); ``beam`` keeps only the best states per layer (a
    fast feasible solution, used as the lower bound)."""
    n_cells, n_goals = succ.shape[0], int(np.count_nonzero(bit))
    steps = episodes * horizon
    # upper_bound[T, n]: at most one goal is newly found per step, each worth at most the
    # largest prize of that step, and at most n goals remain: sum of the n largest such prizes
    best_per_step = prize.max(1)
    upper_bound = np.zeros((steps + 1, n_goals + 1))
    for T in range(steps + 1):
        top = np.sort(best_per_step[T + 1:])[::-1]
        upper_bound[T, 1:] = np.cumsum(np.pad(top, (0, max(0, n_goals - len(top))))[:n_goals])
    codes, values = np.array([start_cell], dtype=np.int64), np.zeros(1)
    layers = []     # per step and kept state: its index in the expansion (predecessor · moves + action)
    for T in range(1, steps + 1):
        if T > 1 and (T - 1) % horizon == 0:  # new episode: back to the start, belief kept
            codes = codes // n_cells * n_cells + start_cell
        mask, cell = np.repeat(codes // n_cells, succ.shape[1]), succ[codes % n_cells].ravel()
        values = np.repeat(values, succ.shape[1]) + np.where(mask & bit[cell], 0.0, prize[T, cell])
        codes = (mask | bit[cell]) * n_cells + cell
        remaining = n_goals - np.bitwise_count(codes // n_cells)
        keep = values + upper_bound[T, remaining] >= lower_bound - 1e-9
        order = np.flatnonzero(keep)
        order = order[np.lexsort((-values[order], codes[order]))]  # per state keep its best value
        first = np.r_[True, codes[order][1:] != codes[order][:-1]]
        order = order[first]
        if beam is not None and len(order) > beam:
            order = order[np.argpartition(-values[order], beam)[:beam]]
        codes, values = codes[order], values[order]
        if trace:
            layers.append(order)
    if not trace:
        return values.max()
    state, actions = int(np.argmax(values)), []
    for order in reversed(layers):
        state, action = divmod(int(order[state]), succ.shape[1])
        actions.append(action)
    return values.max(), actions[::-1]


def _solve(width, height, start, goals, horizon, episodes, goal_reward, step_reward, trace=False):
    """The exact best prize over search paths (with ``trace``, also its actions): the beam search's
    value is the pruning bound of the exact pass."""
    cells = [(x, y) for x in range(width) for y in range(height)]
    succ = np.array([[min(max(x + dx, 0), width - 1) * height + min(max(y + dy, 0), height - 1)
                      for dx, dy in gw.MOVES] for x, y in cells], dtype=np.int64)
    bit = np.array([1 << goals.index(c) if c in goals else 0 for c in cells], dtype=np.int64)
    prize = _prize_table(width, height, start, goals, horizon, episodes, goal_reward, step_reward)
    args = succ, bit, prize, start[0] * height + start[1], horizon, episodes
    return _best_prize(*args, lower_bound=_best_prize(*args, beam=2000), trace=trace)


def bayes_optimal_return(width: int = gw.SIZE, height: int = gw.SIZE, start=gw.START, goals=None,
                         horizon: int = gw.HORIZON, episodes: int = gw.EPISODES,
                         goal_reward: float = gw.GOAL_REWARD, step_reward: float = gw.STEP_REWARD) -> float:
    """Expected return over a meta-episode of the Bayes-optimal agent, goal uniform over
    ``goals`` (default: the E1 gridworld)."""
    goals = [tuple(g) for g in (gw.GOALS if goals is None else goals)]
    best = _solve(width, height, start, goals, horizon, episodes, goal_reward, step_reward)
    return step_reward * episodes * horizon + best / len(goals)


def bayes_optimal_episode_returns(eval_goals=None) -> np.ndarray:
    """Return of each episode of the E1 meta-episode under a Bayes-optimal agent (optimal for the
    uniform goal prior): an optimal search path from the DP above, replayed in the gridworld
    environment per goal (follow the path until the goal is found, then stay on it; in later
    episodes walk straight to it and stay), averaged over ``eval_goals`` (default: every goal once,
    the prior's expectation; a task split's goals give that agent's return on the split). The split
    between episodes is that of this optimal path (others may exist)."""
    import gymnasium as gym

    import metarl.envs  # noqa: F401  (registers the gym ids)

    goals, horizon, episodes = [tuple(g) for g in gw.GOALS], gw.HORIZON, gw.EPISODES
    _, actions = _solve(gw.SIZE, gw.SIZE, gw.START, goals, horizon, episodes, gw.GOAL_REWARD, gw.STEP_REWARD,
                        trace=True)
    env = gym.make("metarl/GridWorld-v0", max_episode_steps=None).unwrapped
    eval_goals = goals if eval_goals is None else [tuple(g) for g in eval_goals]
    returns = np.zeros(episodes)
    for goal in eval_goals:
        found = False
        for episode in range(episodes):
            env.reset(options={"task": {"goal": list(goal)}})
            for step in range(horizon):
                action = actions[episode * horizon + step]
                if found:   # straight to the goal, then stay
                    dx, dy = goal[0] - env.pos[0], goal[1] - env.pos[1]
                    action = gw.MOVES.index((int(np.sign(dx)), 0) if dx else (0, int(np.sign(dy))))
                reward = env.step(action)[1]
                found = found or reward > 0
                returns[episode] += reward / len(eval_goals)
    return returns


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="metarl bayes-optimal", description="Exact Bayes-optimal return of the E1 gridworld")
    parser.add_argument("--episodes", type=int, default=gw.EPISODES)
    parser.add_argument("--horizon", type=int, default=gw.HORIZON)
    parser.add_argument("--out", help="write a reference-line JSON {label, values: {gridworld: value}} here")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    value = bayes_optimal_return(horizon=args.horizon, episodes=args.episodes)
    print(f"Bayes-optimal expected return over {args.episodes} episodes of {args.horizon} steps: "
          f"{value:.4f}  ({time.perf_counter() - t0:.1f} s)")
    if (args.episodes, args.horizon) == (gw.EPISODES, gw.HORIZON):
        print("per episode (one optimal search path): " + " / ".join(f"{r:.4f}" for r in bayes_optimal_episode_returns()))
    if args.out:
        save_json({"label": "Bayes-optimal", "values": {"gridworld": value}}, args.out)


if __name__ == "__main__":
    main()
