"""config.yaml -> one resolved *run spec* per training job.

Precedence of hyper-parameters, lowest first:
  methods.<m>.hparams
  methods.<m>.families.<family>          (per-family defaults, e.g. PEARL's per-env settings)
  experiments.<E>.overrides.<m>          (experiment-specific, any scale)
  experiments.<E>.scales.<scale>.hparams (budget-like keys shared by the experiment's methods)
  experiments.<E>.scales.<scale>.families.<family>
  experiments.<E>.scales.<scale>.methods.<m>
  experiments.<E>.scales.<scale>.cells.<m>.<family>.hparams   (one method on one family: E5)
The run length (iterations, eval_every) is the scale's, or experiments.<E>.scales.<scale>.family_budgets.<family>,
or that cell's. Splits are the experiment's, or experiments.<E>.family_splits.<family>'s.
An experiment with a ``protocol`` block (E5) evaluates every method by the common adaptation protocol
with ``protocol.episodes`` (or ``protocol.families.<family>``) episodes per test task.
Each job receives only its resolved spec, so editing one method reruns only its jobs.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    pass


def deep_merge(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else copy.deepcopy(value)
    return out


def validate(config: dict, schema_path=SCHEMA_PATH) -> None:
    """Schema check (types, misspelt keys, allowed names) then cross-references, each error
    naming the offending key and the allowed values."""
    import jsonschema

    schema = yaml.safe_load(Path(schema_path).read_text())
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(config), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"  at '{'.'.join(map(str, e.absolute_path)) or '<top>'}'{_claim_name(config, e.absolute_path)}: "
                 f"{e.message}" for e in errors]
        raise ConfigError("config.yaml is invalid:\n" + "\n".join(lines))
    from metarl.methods import get_algorithm

    methods = config["methods"]
    for exp_name, exp in config["experiments"].items():
        for m in exp["methods"]:
            if m not in methods:
                raise ConfigError(f"experiments.{exp_name}.methods: unknown method {m!r}; defined methods: {sorted(methods)}")
        for method, families in exp.get("method_families", {}).items():
            outside = sorted(set(families) - set(exp["families"]))
            if outside:
                raise ConfigError(f"experiments.{exp_name}.method_families.{method}: {outside} not among the "
                                  f"experiment's families {exp['families']}")
        for where, names in [("overrides", exp.get("overrides", {})), ("method_families", exp.get("method_families", {})),
                             *[(f"scales.{s}.methods", sc.get("methods", {})) for s, sc in exp["scales"].items()]]:
            for m in names:
                if m not in exp["methods"]:
                    raise ConfigError(f"experiments.{exp_name}.{where}: method {m!r} is not among the "
                                      f"experiment's methods {exp['methods']}")
        for where, per_method in [("not_run", exp.get("not_run", {})),
                                  *[(f"scales.{s}.cells", sc.get("cells", {})) for s, sc in exp["scales"].items()]]:
            for m, families in per_method.items():
                if m not in exp["methods"]:
                    raise ConfigError(f"experiments.{exp_name}.{where}: method {m!r} is not among the "
                                      f"experiment's methods {exp['methods']}")
                outside = sorted(set(families) - set(exp["families"]))
                if outside:
                    raise ConfigError(f"experiments.{exp_name}.{where}.{m}: {outside} not among the "
                                      f"experiment's families {exp['families']}")
        for where, keyed in [("family_splits", exp.get("family_splits", {})),
                             ("protocol.families", exp.get("protocol", {}).get("families", {}))]:
            outside = sorted(set(keyed) - set(exp["families"]))
            if outside:
                raise ConfigError(f"experiments.{exp_name}.{where}: {outside} not among the experiment's "
                                  f"families {exp['families']}")
        for scale_name, scale in exp["scales"].items():
            for key in ("families", "family_budgets", "run_families"):
                outside = sorted(set(scale.get(key, {})) - set(exp["families"]))
                if outside:
                    raise ConfigError(f"experiments.{exp_name}.scales.{scale_name}.{key}: {outside} not among the "
                                      f"experiment's families {exp['families']}")
        if config["scale"] not in exp["scales"]:
            raise ConfigError(f"experiments.{exp_name}.scales has no entry for scale {config['scale']!r}; "
                              f"defined: {sorted(exp['scales'])}")
    for spec in run_specs(config):
        algo = get_algorithm(spec["algo"])
        try:
            algo.make_hparams(spec["hparams"])
        except (TypeError, ValueError) as err:
            raise ConfigError(f"method {spec['method']!r} in experiment {spec['experiment']} "
                              f"(family {spec['family']}, scale {config['scale']}): {err}") from None
    from metarl.analysis.claims import check_claims

    check_claims(config)


def _claim_name(config: dict, path) -> str:
    """' (claim 'id')' for a schema error inside a claim, so the message names the claim."""
    path = list(path)
    if len(path) > 1 and path[0] == "claims" and isinstance(path[1], int):
        claim = config["claims"][path[1]]
        if isinstance(claim, dict) and "id" in claim:
            return f" (claim {claim['id']!r})"
    return ""


def enabled_experiments(config: dict) -> list[str]:
    return [name for name, exp in config["experiments"].items() if exp.get("enabled", True)]


def seeds(config: dict, experiment: str) -> list[int]:
    return list(range(config["experiments"][experiment]["scales"][config["scale"]]["seeds"]))


def run_spec(config: dict, experiment: str, family: str, method: str, seed: int) -> dict[str, Any]:
    """The resolved slice of the config that one training job depends on."""
    exp = config["experiments"][experiment]
    scale = exp["scales"][config["scale"]]
    mcfg = config["methods"][method]
    cell = scale.get("cells", {}).get(method, {}).get(family, {})
    hparams = mcfg.get("hparams", {})
    for layer in (mcfg.get("families", {}).get(family), exp.get("overrides", {}).get(method),
                  scale.get("hparams"), scale.get("families", {}).get(family),
                  scale.get("methods", {}).get(method), cell.get("hparams")):
        hparams = deep_merge(hparams, layer or {})
    budget = {"iterations": scale["iterations"], "eval_every": scale["eval_every"],
              **scale.get("family_budgets", {}).get(family, {}),
              **{key: cell[key] for key in ("iterations", "eval_every") if key in cell}}
    split = splits(exp, family)
    # only experiments with the common protocol (E5) carry the key: the others' specs, and so their
    # jobs' parameters and resume hashes, stay as they were
    protocol = {"protocol_episodes": protocol_episodes(exp, family)} if "protocol" in exp else {}
    return {
        "experiment": experiment, "family": family, "method": method, "algo": mcfg["algo"], "seed": seed,
        **budget, "eval_tasks": scale.get("eval_tasks"), **protocol,
        "train_split": split["train_split"], "curve_splits": split["curve_splits"],
        "hparams": hparams, "device": config["device"], "compile": compile_mode(config.get("compile", "off")),
        "threads": config["resources"]["train"]["threads"],
    }


def splits(exp: dict, family: str) -> dict[str, Any]:
    """The family's ``train_split``, ``curve_splits`` and ``eval_splits`` in an experiment."""
    return {**{key: exp[key] for key in ("train_split", "curve_splits", "eval_splits")},
            **exp.get("family_splits", {}).get(family, {})}


def protocol_episodes(exp: dict, family: str) -> int:
    """Episodes per test task of the common adaptation protocol (metarl.protocol): K + 1."""
    protocol = exp["protocol"]
    return protocol.get("families", {}).get(family, protocol["episodes"])


def compile_mode(value) -> str:
    """config.yaml's ``compile`` as ``auto``/``on``/``off`` (YAML reads unquoted on/off as booleans)."""
    return ("on" if value else "off") if isinstance(value, bool) else value


def scale_families(config: dict, experiment: str) -> list[str]:
    """The experiment's families run at the config's scale (``run_families``, default all)."""
    exp = config["experiments"][experiment]
    return exp["scales"][config["scale"]].get("run_families", exp["families"])


def runs(config: dict, experiment: str):
    """(family, method, seed) of every training job of an experiment."""
    exp = config["experiments"][experiment]
    restricted, not_run = exp.get("method_families", {}), exp.get("not_run", {})
    for family in scale_families(config, experiment):
        for method in exp["methods"]:
            if family in restricted.get(method, exp["families"]) and family not in not_run.get(method, {}):
                for seed in seeds(config, experiment):
                    yield family, method, seed


def run_specs(config: dict):
    for experiment in enabled_experiments(config):
        for family, method, seed in runs(config, experiment):
            yield run_spec(config, experiment, family, method, seed)


def load(path) -> dict:
    config = yaml.safe_load(Path(path).read_text())
    validate(config)
    return config
