"""The ``dynconn`` command line. It only parses, delegates and reports.

Exit status: 0 done; 1 a user error (one line naming the key or file), a resource
problem, or an internal error (one line pointing to a log file); 2 usage errors (click's
own); 128 + signal number when interrupted (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

import click
import numpy as np

from . import __version__
from .config import SCHEMA, apply_overrides
from .console import Console
from .errors import ConfigError, DynconnError
from .simulate import PRESETS
from .stages import ORDER

COMMUNITY_METHODS = SCHEMA["communities"]["method"]


def _interrupted_message(exc: KeyboardInterrupt) -> tuple[str, int]:
    from .errors import Interrupted

    if isinstance(exc, Interrupted):
        where = f" during {exc.stage}" if exc.stage else ""
        saved = f"; partial work saved in {exc.checkpoint}" if exc.checkpoint else ""
        return (f"interrupted by {exc.signame}{where}; finished artifacts are kept{saved}; "
                "rerun the same command to continue"), exc.exit_status
    return "interrupted; finished artifacts are kept; rerun the same command to continue", 130


def _os_error_message(exc: OSError) -> str | None:
    import errno

    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        where = f"{exc.filename}: " if exc.filename else ""
        return f"{where}disk full ({exc.strerror}); free some space or use another --workdir"
    if exc.filename and exc.strerror:
        return f"{exc.filename}: {exc.strerror}"
    return None


def user_errors(func):
    """Every command's guard: stop signals handled (exit 128 + signal); DynconnError →
    one line, exit 1; running out of memory or disk → one line, exit 1; anything else is a
    bug → one line "internal error … details in <log>", exit 1 (DYNCONN_DEBUG=1 re-raises
    it instead, for tests and debugging). A user never sees a traceback."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        import os
        import warnings

        from .console import DynconnWarning
        from .runner.interrupt import check, signals_handled

        try:
            with signals_handled(), warnings.catch_warnings():
                if os.environ.get("DYNCONN_DEBUG", "").strip() in ("", "0"):
                    # library warnings (numpy overflow, matplotlib limits...) are noise for a
                    # user: results are checked for NaN/Inf and named (dynconn.runner.guards), and
                    # what a user must know is a DynconnWarning, shown by the Console
                    warnings.simplefilter("ignore")
                    warnings.simplefilter("default", DynconnWarning)
                result = func(*args, **kwargs)
                check()  # a stop whose exception other code swallowed: not a success
                return result
        except DynconnError as exc:
            _fail(f"error: {exc}")
        except KeyboardInterrupt as exc:
            message, status = _interrupted_message(exc)
            click.echo(one_line(message), err=True)
            sys.exit(status)
        except MemoryError as exc:
            _fail(f"error: ran out of memory ({exc or 'allocation failed'}); lower the request "
                  "(e.g. raise affinity.bin_seconds) or use a machine with more memory")
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except Exception as exc:
            if isinstance(exc, OSError) and (message := _os_error_message(exc)):
                _fail(f"error: {message}")
            if os.environ.get("DYNCONN_DEBUG", "").strip() not in ("", "0"):
                raise
            from .console import write_error_log

            log = write_error_log(exc)
            where = f"details in {log}" if log else "set DYNCONN_DEBUG=1 to see the details"
            summary = " ".join(f"{type(exc).__name__}: {exc}".split())[:300]
            _fail(f"internal error: {summary} — please report it; {where}")

    return wrapper


def one_line(text: str) -> str:
    """The message as one printable line: line breaks and other control characters that
    may come from user data (names, paths, values) are shown escaped."""
    import unicodedata

    return "".join(
        c if c == " " or unicodedata.category(c)[0] not in "CZ" or c in "\u00a0\u3000"
        else c.encode("unicode_escape").decode("ascii")
        for c in text
    )


def _fail(line: str) -> None:
    click.echo(one_line(line), err=True)
    sys.exit(1)


def common_options(func):
    """Options every config-driven command takes."""
    func = click.option("--quiet", "-q", is_flag=True, help="Only warnings and errors.")(func)
    func = click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
                        help="Override a config key (dotted path), e.g. --set factorize.rank=12. Repeatable.")(func)
    func = click.option("--force", is_flag=True, help="Recompute even when up to date.")(func)
    func = click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
                        help="Work directory (default: the config's `workdir`).")(func)
    return func


def load_config(path: Path, overrides):
    from . import config as cfg

    return cfg.load(path, list(overrides))


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="dynconn")
def main():
    """Learn dynamic functional connectomes from whole-brain calcium imaging.

    \b
    Stages:  ingest → affinity → factorize → communities → report
    Quick start:
      dynconn simulate demo             # a simulated dataset with config.yaml
      dynconn run demo/config.yaml      # every stage; prints where the report is

    Every stage writes one artifact into the work directory and is skipped when it is
    already up to date. See `dynconn COMMAND --help` and docs/config.md.
    """


@main.command()
@click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(path_type=Path))
@common_options
@click.option("--from", "start", type=click.Choice(ORDER), help="Recompute from this stage on.")
@click.option("--until", "stop", type=click.Choice(ORDER), help="Stop after this stage.")
@user_errors
def run(config_path, workdir, force, overrides, quiet, start, stop):
    """Run the whole pipeline (or --from/--until a part of it)."""
    from .runner.pipeline import run_pipeline

    config = load_config(config_path, overrides)
    console = Console(quiet)
    wd = config.workdir(workdir)
    run_pipeline(config, wd, console, force=force, start=start, stop=stop)
    report = wd / "report.html"
    if report.exists() and (stop in (None, "report")):
        click.echo(f"report: {report}")


def _stage_command(name: str, doc: str):
    @click.argument("config_path", metavar="CONFIG.yaml", type=click.Path(path_type=Path))
    @common_options
    @user_errors
    def command(config_path, workdir, force, overrides, quiet):
        from .runner.pipeline import run_one

        config = load_config(config_path, overrides)
        run_one(name, config, config.workdir(workdir), Console(quiet), force=force)

    command.__doc__ = doc
    return main.command(name)(command)


_stage_command("ingest", "Read, clean and align every animal's traces → ingest.h5.")
_stage_command("affinity", "Time-resolved pair affinities → affinity.h5.")
_stage_command("communities", "Communities of each component's graph → communities.h5.")
_stage_command("report", "The HTML atlas and the exports, from the artifacts.")


@main.command()
@click.argument("config_path", metavar="[CONFIG.yaml]", required=False, type=click.Path(path_type=Path))
@common_options
@click.option("--in", "in_path", type=click.Path(dir_okay=False, path_type=Path),
              help="Factorize this affinity.h5 without a config.")
@click.option("--out", "out_path", type=click.Path(dir_okay=False, path_type=Path), help="Output factors.h5 (with --in).")
@click.option("--rank", help='Number of components or "auto".')
@click.option("--max-iter", type=int, help="Maximum iterations per fit.")
@click.option("--tol", type=float, help="Relative loss-change tolerance.")
@click.option("--seed", type=int, help="Random seed.")
@click.option("--restarts", type=int, help="Random restarts (best kept).")
@click.option("--backend", type=click.Choice(["numpy", "pytorch"]),
              help="Array library of the solver (pytorch: CUDA when available).")
@click.option("--unobserved-penalty", type=float,
              help="Weight of a pair's unrecorded entries beyond its recorded ones, as zeros (factorize.unobserved_penalty; 0 = ignored).")
@user_errors
def factorize(config_path, workdir, force, overrides, quiet, in_path, out_path, rank, max_iter, tol, seed, restarts,
              backend, unobserved_penalty):
    """Non-negative CP factorization of the affinity tensor → factors.h5.

    \b
    With a config:   dynconn factorize CONFIG.yaml
    Standalone:      dynconn factorize --in affinity.h5 --out factors.h5 --rank 8
    """
    options = {"rank": rank, "max_iter": max_iter, "tol": tol, "seed": seed, "restarts": restarts,
               "backend": backend, "unobserved_penalty": unobserved_penalty}
    options = {k: v for k, v in options.items() if v is not None}
    if "rank" in options and options["rank"] != "auto":
        try:
            options["rank"] = int(options["rank"])
        except ValueError:
            raise click.BadParameter(f'expected an integer or "auto", got {rank!r}', param_hint="--rank")
    console = Console(quiet)
    if in_path is not None:
        if config_path is not None or out_path is None:
            raise click.UsageError("use either CONFIG.yaml, or --in AFFINITY.h5 --out FACTORS.h5")
        from .runner.pipeline import factorize_file

        # --set takes the factorize section's keys here (there is no config); the typed options win
        raw = apply_overrides({"factorize": {}}, overrides)
        others = sorted(k for k in raw if k != "factorize")
        if others:
            raise ConfigError(f"--set {others[0]}.…: dynconn factorize --in takes factorize.* keys only")
        factorize_file(in_path, out_path, {**raw["factorize"], **options}, console)
        click.echo(f"factors: {out_path}")
        return
    if config_path is None:
        raise click.UsageError("give CONFIG.yaml, or --in AFFINITY.h5 --out FACTORS.h5")
    from .runner.pipeline import run_one

    # typed values (click parsed them), not text re-read as YAML: `--tol 1e-6` stays 1e-06
    overrides = list(overrides) + [(f"factorize.{k}", v) for k, v in options.items()]
    config = load_config(config_path, overrides)
    run_one("factorize", config, config.workdir(workdir), console, force=force)


@main.command()
@click.argument("graph_path", metavar="GRAPH", type=click.Path(path_type=Path))
@click.option("--out", "out_path", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Membership CSV (node,community).")
@click.option("--method", type=click.Choice(COMMUNITY_METHODS.choices + tuple(dict(COMMUNITY_METHODS.aliases))),
              default=COMMUNITY_METHODS.default,
              show_default=True, help="Same choices and default as `communities.method`.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--runs", "n_runs", type=click.IntRange(min=1), default=3, show_default=True,
              help="Runs with different seeds; the best is kept.")
@click.option("--resolution", type=click.FloatRange(min=0, min_open=True), default=1.0, show_default=True,
              help="Resolution of leiden-rb and leiden-cpm.")
@click.option("--level", type=click.IntRange(min=0), default=0, show_default=True,
              help="Nested level to report (wsbm; 0 = finest).")
@user_errors
def partition(graph_path, out_path, method, seed, n_runs, resolution, level):
    """Communities of one weighted graph (dense symmetric .npy, or CSV source,target,weight).

    Nodes without any edge get community -1.
    """
    from .io.artifacts import atomic_write_bytes
    from .stages.communities import DENSE_GRAPH_OPTIONS, read_graph
    from .methods.wsbm import partition as partition_graph

    method = dict(COMMUNITY_METHODS.aliases).get(method, method)
    graph, labels, dense = read_graph(graph_path)
    options = DENSE_GRAPH_OPTIONS.get(method, {}) if dense else {}
    result = partition_graph(graph, method=method, n_runs=n_runs, resolution=resolution,
                             random_state=seed, **options)
    if level >= len(result.levels):
        raise DynconnError(f"--level {level}: this partition has {len(result.levels)} level(s), "
                           f"0 to {len(result.levels) - 1}")
    membership = np.asarray(result.levels[level])
    rows = "".join(f"{labels[i]},{int(c)}\n" for i, c in enumerate(membership))
    atomic_write_bytes(out_path, ("node,community\n" + rows).encode())
    stability = "" if np.isnan(result.stability) else f", stability {result.stability:.2f}"
    n_communities = len(set(membership[membership >= 0].tolist()))
    click.echo(f"{n_communities} communities among {len(labels)} nodes{stability} → {out_path}")


@main.command()
@click.argument("config_path", metavar="[CONFIG.yaml]", required=False, type=click.Path(path_type=Path))
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path),
              help="Work directory (default: the config's `workdir`).")
@click.option("--all", "clear_all", is_flag=True, help="Remove every cached result.")
@click.option("--keep", "keep_size", metavar="SIZE",
              help="Keep at most this much (e.g. 2GB, 500MiB); default: compute.cache_size.")
@user_errors
def gc(config_path, workdir, clear_all, keep_size):
    """Clear the work directory's cache of earlier results, least recently kept first.

    \b
    dynconn gc CONFIG.yaml               down to the config's compute.cache_size
    dynconn gc --workdir DIR --all       everything
    dynconn gc --workdir DIR --keep 2GB  down to 2 GB
    """
    from .runner.cache import CACHE_DIR
    from .runner.pipeline import collect_cache
    from .runner.resources import format_bytes, parse_bytes

    if config_path is None and workdir is None:
        raise click.UsageError("give CONFIG.yaml or --workdir DIR")
    if clear_all and keep_size is not None:
        raise click.UsageError("use either --all or --keep SIZE")
    config = load_config(config_path, []) if config_path is not None else None
    wd = config.workdir(workdir) if config is not None else workdir.expanduser().absolute()
    if clear_all:
        limit = 0
    elif keep_size is not None:
        limit = parse_bytes(keep_size, what="--keep", allow_zero=True)
    else:
        limit = config["compute"]["cache_size"] if config is not None else SCHEMA["compute"]["cache_size"].default
    if not wd.is_dir():
        raise DynconnError(f"{wd}: no such work directory; give the --workdir of a run")
    removed, remaining = collect_cache(wd, limit, Console())
    for entry in removed:
        click.echo(f"removed {entry.stage} {entry.key[:12]} ({format_bytes(entry.size)})")
    kept = sum(e.size for e in remaining)
    click.echo(f"freed {format_bytes(sum(e.size for e in removed))} ({len(removed)} result(s)) in "
               f"{wd / CACHE_DIR}; {format_bytes(kept)} kept ({len(remaining)} result(s), "
               f"limit {format_bytes(limit)})")


@main.command()
@click.argument("artifact", metavar="ARTIFACT.h5", type=click.Path(path_type=Path))
@user_errors
def inspect(artifact):
    """Show an artifact's datasets (shapes, dtypes), provenance and whether it verifies.

    Exit status 0 when every dataset matches its recorded checksum, 1 when not.
    """
    from .io.artifacts import inspect as inspect_artifact

    result = inspect_artifact(artifact)
    click.echo("\n".join(one_line(line) for line in result.lines))
    if not result.verifies:
        sys.exit(1)


@main.command()
@click.argument("outdir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--preset", type=click.Choice(list(PRESETS)), default="standard", show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@user_errors
def simulate(outdir, preset, seed):
    """Write a simulated multi-animal dataset with planted dynamic communities, its ground
    truth (truth.json) and a ready config.yaml."""
    from .simulate import write_dataset

    config = write_dataset(outdir, preset, seed)
    click.echo(f"config: {config}")
    click.echo(f"next:   dynconn run {config}")


if __name__ == "__main__":  # pragma: no cover
    main()
