"""Configuration: schema, validation, defaults and ``--set`` overrides.

The schema below is the single source of truth for every config key: its type, its
default and its one-line documentation. ``docs/config.md`` is checked against it by a
test, and the resolved config (defaults included) is stored in every artifact.

A config is a YAML mapping::

    workdir: runs/demo
    data:
      sampling_rate: 4.0
      animals:
        - {name: worm1, path: worm1.csv}
      stimuli: stimuli.csv
    affinity: {method: differential}
    factorize: {rank: auto}
    communities: {method: leiden}

Paths are relative to the config file's folder. Unknown keys are errors.
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import validation
from .errors import ConfigError

REQUIRED = object()  # marker: the key has no default and must be given

# Upper bounds that keep every request finite and answerable (a duration × a rate must stay
# a sensible number of frames; counts of fits must finish): far beyond real experiments.
MAX_SECONDS = 1e7  # ~116 days
MAX_RATE = 1e5  # Hz
MAX_FITS = 10_000  # restarts, Leiden runs


@dataclass(frozen=True)
class Key:
    """One config key: what it holds, its default and what it means (for docs and errors)."""

    kind: str  # int | float | bool | str | str_list | choice | path | rank | int_range | size | walltime | animals | stimuli | states
    default: Any = REQUIRED
    doc: str = ""
    choices: tuple = ()
    low: float | None = None  # smallest allowed value (inclusive unless low_open)
    low_open: bool = False
    high: float | None = None
    nullable: bool = False  # `null` allowed (means "not set / use the natural default")
    aliases: tuple = ()  # (old name, its current name) pairs accepted for a choice


# ----------------------------------------------------------------------------- schema
ANIMAL_SCHEMA: dict[str, Key] = {
    "name": Key("str", doc="Animal identifier used in every output."),
    "path": Key(
        "path",
        doc="Trace file or folder: .csv/.tsv (header = neuron names), .npy/.npz, .h5/.hdf5, "
        ".mat, .nwb, or a suite2p plane folder.",
    ),
    "format": Key(
        "choice",
        None,
        "File format; null = chosen from the extension (a folder is read as suite2p).",
        choices=("csv", "tsv", "npy", "npz", "hdf5", "mat", "nwb", "suite2p"),
        nullable=True,
    ),
    "dataset": Key("str", None, "HDF5 dataset path (hdf5) or array name (npz).", nullable=True),
    "variable": Key(
        "str",
        None,
        "mat: the variable holding the traces (`a.b` for a struct field); null = the only "
        "2-D numeric variable.",
        nullable=True,
    ),
    "series": Key(
        "str",
        None,
        "nwb: the RoiResponseSeries to read (`name` or `Container/name`); null = the only one.",
        nullable=True,
    ),
    "name_column": Key(
        "str",
        None,
        "nwb: column of the ROI table (PlaneSegmentation) holding neuron names.",
        nullable=True,
    ),
    "neuropil_coefficient": Key(
        "float", 0.7, "suite2p: traces are F − coefficient·Fneu.", low=0
    ),
    "time_axis": Key("int", 0, "Axis of the array that is time (0: rows are frames).", low=0, high=1),
    "neurons": Key(
        "path",
        None,
        "Names file `index,name` (0-based column index; blank name = unidentified). "
        "Required for .npy/.npz/.h5/.mat; overrides names a file carries.",
        nullable=True,
    ),
    "header": Key(
        "bool",
        None,
        "csv/tsv: whether the first row holds the neuron names. null = yes, and a first row "
        "of numbers only is refused (it looks like data: a file without a header); `false`: "
        "every row is a frame and `neurons:` gives the names; `true`: the first row is the "
        "names even when they are numbers (ROI ids).",
        nullable=True,
    ),
    "drop_unlabeled": Key(
        "bool", False, "Drop neurons without a name instead of keeping them as `<animal>#<index>`."
    ),
    "sampling_rate": Key(
        "float",
        None,
        "This animal's imaging rate, Hz; null = the file's own rate, else data.sampling_rate.",
        low=0,
        low_open=True,
        high=MAX_RATE,
        nullable=True,
    ),
    "offset_s": Key(
        "float",
        0.0,
        "Protocol time of this animal's first frame, s (aligns a protocol across animals; "
        "negative = the recording started before the protocol).",
        low=-MAX_SECONDS,
        high=MAX_SECONDS,
    ),
    "covariates": Key(
        "path",
        None,
        "Behaviour covariates: CSV with a header of covariate names and one row per frame, "
        "or other rows with a `time_s` column (interpolated onto the frames); null = none.",
        nullable=True,
    ),
}

SCHEMA: dict[str, Any] = {
    "workdir": Key(
        "path", "runs/{config}", "Work directory for artifacts; `{config}` = config file stem."
    ),
    "data": {
        "sampling_rate": Key(
            "float",
            None,
            "Imaging rate, Hz, of every animal whose file does not give one (NWB and suite2p "
            "do); null = every file must give its rate.",
            low=0,
            low_open=True,
            high=MAX_RATE,
            nullable=True,
        ),
        "resample": Key(
            "float",
            None,
            "Resample every animal onto this rate, Hz (needed when animals were recorded at "
            "different rates); null = keep the animals' common rate.",
            low=0,
            low_open=True,
            high=MAX_RATE,
            nullable=True,
        ),
        "layout": Key(
            "choice",
            "aligned",
            "`aligned`: all animals follow one protocol clock (pairs × time × animals); "
            "`concatenated`: each animal keeps its own clock and length (pairs × all animals' "
            "time bins one after another).",
            choices=("aligned", "concatenated"),
        ),
        "animals": Key("animals", REQUIRED, "List of animals (see the animal keys)."),
        "stimuli": Key(
            "stimuli",
            None,
            "Stimulus epochs: CSV `label,start_s,stop_s` or an inline list of the same; "
            "null = none.",
            nullable=True,
        ),
        "covariates": Key(
            "str_list",
            None,
            "Covariate columns kept from the animals' covariate files; null = every column "
            "found.",
            nullable=True,
        ),
    },
    "ingest": {
        "name_case": Key(
            "choice",
            "upper",
            "Neuron names lose all whitespace and, with `upper`, are upper-cased "
            "(` aval ` → `AVAL`); `keep` keeps their case.",
            choices=("upper", "keep"),
        ),
        "exclude": Key(
            "str_list",
            [],
            "Neurons dropped from every animal: names or glob patterns (`*`, `?`, `[LR]`), "
            "matched after name normalisation.",
        ),
        "merge_bilateral": Key(
            "bool",
            False,
            "Average left/right homologs into one neuron (AVAL + AVAR → AVA) when both names "
            "occur in the data (see docs/config.md).",
        ),
        "detrend": Key(
            "choice",
            "none",
            "Before normalising: `linear` subtracts each trace's least-squares line; "
            "`exponential` divides raw fluorescence by an exponential bleaching curve fitted "
            "to its running baseline; `none`.",
            choices=("none", "linear", "exponential"),
        ),
        "normalize": Key(
            "choice",
            "dff",
            "Per-neuron normalisation: `dff` ΔF/F against a running low-percentile baseline, "
            "`zscore` baseline-subtracted and divided by a robust SD (for traces that can be "
            "≤ 0), `none`.",
            choices=("dff", "zscore", "none"),
        ),
        "baseline_seconds": Key(
            "float", 60.0, "Window of the running baseline (photobleaching), s.", low=0, low_open=True,
            high=MAX_SECONDS
        ),
        "baseline_percentile": Key(
            "float", 10.0, "Percentile of the running baseline.", low=0, high=100
        ),
        "max_gap_seconds": Key(
            "float",
            2.0,
            "NaN gaps up to this long are linearly interpolated; longer gaps stay missing.",
            low=0,
            high=MAX_SECONDS,
        ),
        "max_crop_fraction": Key(
            "float",
            0.05,
            "Animals whose lengths differ by at most this fraction are cropped to the shortest "
            "(with a warning); a larger difference is an error.",
            low=0,
            high=1,
        ),
        "smooth_seconds": Key(
            "float",
            0.0,
            "SD of a Gaussian smoothing of the normalised traces, s; 0 = none.",
            low=0,
            high=MAX_SECONDS,
        ),
        "start_s": Key(
            "float",
            None,
            "Keep frames from this protocol time on, s (each animal's own clock when "
            "concatenated); null = from 0.",
            low=0,
            high=MAX_SECONDS,
            nullable=True,
        ),
        "stop_s": Key(
            "float",
            None,
            "Keep frames before this protocol time, s; null = to the end.",
            low=0,
            low_open=True,
            high=MAX_SECONDS,
            nullable=True,
        ),
    },
    "affinity": {
        "method": Key(
            "choice",
            "differential",
            "`differential` (default, see docs/method.md), `mtd` (Shine et al. 2015), "
            "`window-corr` (sliding-window Pearson).",
            choices=("differential", "mtd", "window-corr"),
        ),
        "bin_seconds": Key(
            "float", 5.0, "Width of the time bins the affinity is averaged into, s.", low=0, low_open=True,
            high=MAX_SECONDS
        ),
        "smooth_seconds": Key(
            "float",
            0.5,
            "SD of the Gaussian derivative filter (differential, mtd), s.",
            low=0,
            low_open=True,
            high=MAX_SECONDS,
        ),
        "noise_threshold": Key(
            "float",
            1.0,
            "differential: changes below this many noise SDs count as no change.",
            low=0,
        ),
        "window_seconds": Key(
            "float", 30.0, "window-corr: width of the correlation window, s.", low=0, low_open=True,
            high=MAX_SECONDS
        ),
        "shared_level": Key(
            "float", 0.5, "Each bin's affinities are taken above this quantile of that bin's "
            "affinities over the pairs recorded in its animal: co-activation that most pairs share "
            "at once (a motion artefact, a brain-wide event) says nothing about which pairs "
            "interact. 0.5 = the median; 0 = none. Needs ≥ 10 neurons recorded in the animal.",
            low=0, high=0.95,
        ),
        "lag_seconds": Key(
            "float", 0.0, "differential: two neurons' changes up to this far apart count as "
            "together (each neuron's change is spread to its maximum over ±lag/2 before the "
            "product), for neurons of one circuit that respond with latencies of their own. "
            "0 = the instantaneous product (the default: on the two shared worms 1 s lowered "
            "every measure, docs/benchmarks.md).", low=0, high=MAX_SECONDS,
        ),
    },
    "factorize": {
        "rank": Key("rank", "auto", "Number of components, or `auto` (rank selection)."),
        "ranks": Key(
            "int_range", [2, 10], "`auto`: smallest and largest rank tried, inclusive."
        ),
        "restarts": Key("int", 5, "Random restarts; the lowest-loss fit is kept.", low=1, high=MAX_FITS),
        "max_iter": Key("int", 500, "Maximum iterations per fit.", low=1, high=10**7),
        "tol": Key("float", 1e-6, "Stop when the relative loss change falls below this.", low=0),
        "seed": Key("int", 0, "Random seed (restarts derive their own seeds from it).", low=0, high=2**63 - 1),
        "init": Key("choice", "random", "Initialisation.", choices=("random", "nndsvd")),
        "backend": Key(
            "choice", "numpy", "Array library of the solver: `numpy` (CPU), or `pytorch` (CUDA when "
            "available, else CPU; needs PyTorch installed).", choices=("numpy", "pytorch"),
        ),
        "method": Key(
            "choice", "hals", "`hals`: our masked HALS solver. `tensorly-hals`: tensorly's "
            "`non_negative_parafac_hals`, a slower reference (no missing pairs, no checkpoints).",
            choices=("hals", "tensorly-hals"),
        ),
        "sweep_max_iter": Key("int", 200, "`auto`: maximum iterations of each fit of the rank sweep.", low=1,
                              high=10**7),
        "sweep_tol": Key("float", 1e-4, "`auto`: relative loss change that ends a fit of the rank sweep.", low=0),
        "similarity_threshold": Key(
            "float", 0.85, "`auto`: a rank is stable when its restarts' mean similarity to the best "
            "restart is at least this (`reached-elbow`: the restarts that reach its best fit).", low=0, high=1,
        ),
        "rank_rule": Key(
            "choice", "parallel-analysis", "`auto`: the rank rule. `parallel-analysis`: the rank whose "
            "components explain the most beyond `null_ratio` times what components explain on a null "
            "copy of the tensor, every pair's course shifted in time (docs/factorization.md). "
            "`stable-elbow`: the largest stable rank "
            "before the gain elbow. `reached-elbow`: stability judged by the restarts that reach the best "
            "fit, the sweep ends at the first ambiguous rank (docs/factorization.md). `stable-run`: as "
            "`stable-elbow`, but the sweep ends at the first unstable rank after a stable one.",
            choices=("parallel-analysis", "stable-elbow", "stable-run", "reached-elbow", "largest-confirmed"),
        ),
        "null_ratio": Key(
            "float", 1.5, "`auto` with `rank_rule: parallel-analysis`: a component is worth it when it "
            "explains at least this many times what a component explains on the shifted null.", low=0,
        ),
        "rank_similarity": Key(
            "choice", "factors", "`auto`: how restarts are compared. `factors`: factor congruence of the "
            "fitted factors. `observed`: each pair loading weighed by its evidence first, so loadings of "
            "pairs not recorded where a component lives do not count (docs/factorization.md).",
            choices=("factors", "observed"),
        ),
        "min_gain": Key(
            "float", 0.002, "`auto`: a rank is worth its components when each added component explains "
            "at least this fraction of the observed sum of squares.", low=0,
        ),
        "merge_similarity": Key(
            "float", 0.4, "Components whose pair patterns have at least this Pearson correlation, and whose "
            "animals are complementary or whose time courses agree, are one motif and reported merged "
            "(docs/method.md); above 1 disables merging.", low=-1,
        ),
        "merge_max_overlap": Key(
            "float", 0.5, "Animals are complementary when the cosine of two components' per-animal "
            "energy profiles is at most this.", low=0, high=1,
        ),
        "merge_time_similarity": Key(
            "float", 0.2, "Time courses agree when the Pearson correlation of two components' time x "
            "animal courses is at least this (one motif whose pairs the fit split); above 1 merges only "
            "across complementary animals.", low=-1,
        ),
        "time_courses": Key(
            "choice", "per_animal", "`shared`: one time course per component, scaled per animal (CP). "
            "`per_animal`: each component has its own time course in each animal (for activity not locked "
            "to the protocol, e.g. behaviour); factors.h5 then also holds `/factors/time_by_animal` "
            "(docs/method.md). The concatenated layout always fits per-animal courses.",
            choices=("shared", "per_animal"),
        ),
        "unobserved_penalty": Key(
            "float", 0.1, "Weight, as zeros, of a pair's unrecorded (time, animal) entries, counting only "
            "the component's energy there beyond its energy where the pair was recorded (on the "
            "diagonal of that pair's Gram): a loading the data leave free — a pair recorded only where "
            "the component is weak — is shrunk toward 0, one recorded where the component mostly "
            "lives is untouched (docs/factorization.md, 'Unobserved penalty'); 0 = the entries are "
            "ignored. 0.1 with `rank_rule: stable-run`: docs/benchmarks.md, 'The excess penalty with "
            "stable-run, the default'.", low=0,
        ),
        "checkpoint_seconds": Key(
            "float", 30.0, "Seconds between checkpoints of a running factorization (an interrupted "
            "run resumes from the last one). Does not change the result.", low=0, high=MAX_SECONDS,
        ),
    },
    "communities": {
        "method": Key(
            "choice",
            "wsbm",
            "`wsbm` (weighted degree-corrected SBM, minimum description length; "
            "docs/communities.md), or `leiden-modularity`, `leiden-rb`, `leiden-cpm`.",
            choices=("wsbm", "leiden-modularity", "leiden-rb", "leiden-cpm"),
            # DESIGN.md's example config says `method: leiden`: it means weighted modularity
            aliases=(("leiden", "leiden-modularity"),),
        ),
        "n_runs": Key(
            "int", 3, "Runs per component (different seeds); the best is kept, their "
            "agreement is the stability.", low=1, high=MAX_FITS
        ),
        "resolution": Key(
            "float", 1.0, "Resolution of `leiden-rb` and `leiden-cpm`.", low=0, low_open=True
        ),
        "level": Key(
            "int", 0, "Nested level reported as the communities (0 = finest).", low=0
        ),
        "seed": Key("int", 0, "Random seed.", low=0, high=2**63 - 1),
        "min_strength": Key(
            "float",
            0.05,
            "Neurons whose strength in a component is below this fraction of the strongest "
            "neuron's are left out of that component's graph.",
            low=0,
            high=1,
        ),
        "evidence": Key(
            "choice", "shrink", "Edge weight of a pair in a component: `shrink` (its loading pulled toward "
            "the component's mean by the share of the component's energy where the pair was not recorded; "
            "docs/communities.md), `evidence` (× the share where it was), `sqrt` (× its square root), or "
            "`none` (the raw loading).",
            choices=("shrink", "evidence", "sqrt", "none"),
        ),
        "max_edges_per_node": Key(
            "int", 300, "Component graphs where a neuron has more pairs than this are sparsified: each "
            "neuron keeps its this-many strongest pairs (union; docs/communities.md). The default "
            "leaves every graph of ≤ 301 neurons complete; 0 never sparsifies.", low=0,
        ),
        "min_contrast": Key(
            "float", 2.0, "A community, and each of its members, stays only when its mean weight inside "
            "is more than this multiple of its mean weight to the other neurons; the rest are "
            "unassigned (0 keeps the partition as it came).", low=0,
        ),
        "max_event_share": Key(
            "float", 0.5, "A component that puts more than this share of its fitted energy in one time bin "
            "of one animal is one transient event (a motion artefact or a brain-wide burst), not a "
            "recurring interaction: it gets no communities (docs/communities.md, \"Transient "
            "components\"); 1 partitions every component.",
            low=0, high=1,
        ),
        "join_fraction": Key(
            "float", 0.0, "After the contrast test, an unassigned neuron joins the community it is closest "
            "to when its mean weight to the members is at least this fraction of the community's mean "
            "weight inside (a neuron shared with another motif; docs/communities.md, \"Shared neurons\"); "
            "0 never (the default: measured to add more wrong neurons than shared ones on data with a "
            "background network).",
            low=0, high=1,
        ),
    },
    "report": {
        "active_threshold": Key(
            "float",
            0.5,
            "A component is active where its temporal loading is at least this fraction of its "
            "maximum; in an epoch when its mean loading there is.",
            low=0,
            high=1,
        ),
        "cohesion_threshold": Key(
            "float",
            1.0,
            "A community (of at least 2 neurons) is cohesive, and drawn in colour, when its mean "
            "pair loading is at least this multiple of its component's mean pair loading.",
            low=0,
        ),
        "network_neighbors": Key(
            "int",
            3,
            "The network drawings show each neuron's this many strongest edges.",
            low=1,
        ),
        "dpi": Key("float", 300, "Resolution of the PNG figures (also embedded in report.html).", low=30,
                   high=600),
        "workers": Key(
            "int",
            0,
            "Processes drawing the figures and running the surrogates; 0 = one per CPU core, at most 4.",
            low=0,
        ),
        "surrogates": Key(
            "int",
            20,
            "Surrogate datasets (each neuron's trace circularly shifted by its own random lag) run "
            "through affinity, factorize and communities for the p-values of communities and "
            "components; 0 = none (no p-values, no significance flags).",
            low=0,
            high=MAX_FITS,
        ),
        "seed": Key("int", 0, "Random seed of the surrogates and of the covariates' shift tests.", low=0,
                    high=2**63 - 1),
        "alpha": Key(
            "float",
            0.05,
            "Significance level: a community or component with p ≥ alpha is flagged `not_significant`.",
            low=0,
            low_open=True,
            high=1,
        ),
        "covariate_lag_bins": Key(
            "int",
            2,
            "Behaviour covariates: the correlation with each component is taken at the best lag "
            "within this many time bins either way.",
            low=0,
            high=1000,
        ),
        "covariate_shifts": Key(
            "int",
            999,
            "Behaviour covariates: circular shifts of the covariate behind each correlation's p-value.",
            low=1,
            high=10**6,
        ),
        "reference_graphs": Key(
            "str_list",
            ["auto"],
            "Reference graphs tested for links inside each cohesive community (permutation p): "
            "`auto` (C. elegans synapses of White 1986 and Witvliet 2021, chemical and gap "
            "junctions, and the signal propagation atlas, Randi 2023, when the optional extra "
            "`dynconn[worm]` is installed; nothing otherwise), such names one by one "
            "(`white1986:electrical`, `randi2023`, …) or a CSV edge list `source,target,weight` "
            "(any species; relative to the config file); [] = none.",
        ),
        "reference_permutations": Key(
            "int",
            999,
            "Random groups behind each community's reference-enrichment p-value.",
            low=1,
            high=10**6,
        ),
        "states": Key(
            "states",
            None,
            "Atlas rows by behavioural state: `{covariate: NAME, thresholds: [t1, ...], labels: "
            "[below t1, ..., at or above the last]}` (the covariate's mean over each time bin "
            "decides the bin's state); null = none.",
            nullable=True,
        ),
    },
    "compute": {
        "cache_size": Key(
            "size",
            10 << 30,
            "Bound of the work directory's result cache (earlier results, restored instead of "
            "recomputed): a size (`10GB`, `512MiB`) or bytes; least recently kept results go "
            "first; 0 = keep none.",
        ),
        "memory_budget": Key(
            "size",
            None,
            "Memory the affinity tensor may take (`2GB`, `512MiB` or bytes): a larger tensor is "
            "written to affinity.h5 by blocks of pairs and streamed from it by the factorization "
            "and the report, never held whole; the report's surrogates (each holds a tensor) run at "
            "most budget ÷ tensor at a time, none over it. null = half of the memory available "
            "when the stage starts. The results do not depend on it.",
            nullable=True,
        ),
        "scheduler": Key(
            "choice",
            "local",
            "`local`: every task runs in this process, one after another; `dask`: independent "
            "tasks (restarts, the rank sweep's fits, community fits, surrogates) run on a Dask "
            "cluster (needs `pip install 'dynconn[dask]'`; docs/scaling.md). The results do not "
            "depend on it.",
            choices=("local", "dask"),
        ),
        "address": Key(
            "str",
            None,
            "dask: address of a running Dask scheduler (`tcp://host:8786`) whose workers run the "
            "tasks; null = start a cluster (compute.cluster).",
            nullable=True,
        ),
        "cluster": Key(
            "choice",
            None,
            "dask: the cluster this command starts and stops: `local` (a LocalCluster of "
            "compute.workers single-threaded processes on this machine) or `slurm` "
            "(dask-jobqueue's SLURMCluster, compute.slurm; `pip install 'dynconn[slurm]'`); "
            "null = local, unless compute.address is given.",
            choices=("local", "slurm"),
            nullable=True,
        ),
        "workers": Key(
            "int",
            2,
            "dask: worker processes of the cluster started (local: on this machine; slurm: one "
            "per job). Not with compute.address (a running scheduler has its own workers).",
            low=1,
            high=100_000,
        ),
        "slurm": {
            "queue": Key("str", None, "SLURM partition of the worker jobs (`--partition`); null = the "
                         "site's default.", nullable=True),
            "account": Key("str", None, "SLURM account charged (`--account`); null = your default.",
                           nullable=True),
            "cores": Key("int", 1, "Cores per worker job; each job runs one worker process with this "
                         "many threads.", low=1, high=4096),
            "memory": Key("size", 4 << 30, "Memory per worker job (`4GB`, `16GiB`; `--mem`).", ),
            "walltime": Key("walltime", "01:00:00", "Time limit of each worker job (`HH:MM:SS`, "
                            "`D-HH:MM:SS` or minutes; `--time`)."),
        },
    },
}

#: compute keys that only apply with ``compute.scheduler: dask``
DASK_KEYS = ("address", "cluster", "workers", "slurm")


# ----------------------------------------------------------------------------- validation
_SIZE_UNITS = {"": 1, "B": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def parse_size(text, what: str, allow_zero: bool = False) -> int:
    """A size in bytes: ``"8G"`` → 8 GiB; ``"500M"``, ``"512MiB"``, ``"2GB"``, ``1024``
    likewise (powers of 1024). ConfigError naming ``what`` (a key, option or variable)."""
    s = str(text).strip().upper().removesuffix("IB").removesuffix("B")
    unit = s[-1:] if s[-1:] in _SIZE_UNITS else ""
    number = s[: len(s) - len(unit)].strip()
    try:
        value = float(number)
    except ValueError:
        raise ConfigError(f"{what}: expected a size like 8GB or 500MiB (or bytes), got {text!r}") from None
    if not (value >= 0 if allow_zero else value > 0) or value == float("inf"):
        raise ConfigError(f"{what}: expected a {'non-negative' if allow_zero else 'positive'} size, got {text!r}")
    return int(value * _SIZE_UNITS[unit])



def _describe(value: Any) -> str:
    return validation.describe(value)


def _check_number(path: str, key: Key, value: Any, integer: bool, error=ConfigError) -> Any:
    """A number key's value, by the shared validator (:mod:`dynconn.validation`)."""
    return validation.check_number(path, value, low=key.low, low_open=key.low_open, high=key.high,
                                   integer=integer, error=error)


def _check_value(path: str, key: Key, value: Any, base: Path | None, error=ConfigError) -> Any:
    """Validate one value against its Key; returns the normalised value. ``error``: the
    exception raised (:class:`ConfigError` for the config; the library's keyword arguments
    are checked against the same keys with :class:`~dynconn.validation.InvalidArgument`)."""
    if value is None:
        if key.nullable:
            return None
        raise error(f"{path}: a value is required")
    kind = key.kind
    if kind == "int":
        return _check_number(path, key, value, integer=True, error=error)
    if kind == "float":
        return _check_number(path, key, value, integer=False, error=error)
    if kind == "bool":
        return validation.check_bool(path, value, error=error)
    if kind == "str":
        if not isinstance(value, str) or not value.strip():
            raise error(f"{path}: expected a non-empty string, got {_describe(value)}")
        if "\x00" in value:
            raise error(f"{path}: a NUL character is not allowed here")
        return value
    if kind == "str_list":
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
            raise error(f"{path}: expected a list of names, got {_describe(value)}")
        return [v.strip() for v in value]
    if kind == "choice":
        return validation.check_choice(path, value, key.choices, aliases=key.aliases, error=error)
    if kind == "path":
        if not isinstance(value, str) or not value.strip():
            raise error(f"{path}: expected a file path, got {_describe(value)}")
        if "\x00" in value:
            raise error(f"{path}: a file path cannot contain a NUL character")
        return str(value)
    if kind == "rank":
        if value == "auto":
            return value
        try:  # a whole number written as a float (1e1) is an integer here too
            return validation.check_int(path, value, low=1, error=error)
        except error:
            raise error(f'{path}: expected an integer ≥ 1 or "auto", got {_describe(value)}') from None
    if kind == "int_range":
        if (
            not isinstance(value, (list, tuple))
            or len(value) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
            or not 1 <= value[0] <= value[1]
        ):
            raise error(
                f"{path}: expected [smallest, largest] with 1 ≤ smallest ≤ largest, "
                f"got {_describe(value) if not isinstance(value, list) else value}"
            )
        return [int(value[0]), int(value[1])]
    if kind == "size":
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise ConfigError(f"{path}: expected a size like 10GB or 512MiB (or bytes), got {_describe(value)}")
        return parse_size(value, path, allow_zero=True)
    if kind == "walltime":
        return _check_walltime(path, value, error)
    if kind == "animals":
        return _check_animals(path, value, base)
    if kind == "stimuli":
        return _check_stimuli(path, value)
    if kind == "states":
        return _check_states(path, value)
    raise AssertionError(f"unknown key kind {kind}")  # pragma: no cover - schema bug


def _check_section(path: str, schema: dict, given: Any, base: Path) -> dict:
    """Validate a mapping against a schema section, filling defaults."""
    if given is None:
        given = {}
    if not isinstance(given, dict):
        raise ConfigError(f"{path or 'config'}: expected a mapping of keys, got {_describe(given)}")
    unknown = [k for k in given if k not in schema]
    if unknown:
        where = f"{path}." if path else ""
        known = ", ".join(schema)
        raise ConfigError(f"{where}{unknown[0]}: unknown key (known keys here: {known})")
    out: dict[str, Any] = {}
    for name, spec in schema.items():
        sub = f"{path}.{name}" if path else name
        if isinstance(spec, dict):
            out[name] = _check_section(sub, spec, given.get(name), base)
        elif name in given:
            out[name] = _check_value(sub, spec, given[name], base)
        elif spec.default is REQUIRED:
            raise ConfigError(f"{sub}: required key is missing")
        else:
            out[name] = copy.deepcopy(spec.default)
    return out


_WALLTIME = re.compile(r"^(\d+-)?\d+(:[0-5]\d){0,2}$")


def _check_walltime(path: str, value: Any, error=ConfigError) -> str:
    """A SLURM time limit: ``MM``, ``HH:MM:SS``, ``D-HH:MM:SS`` (what ``sbatch --time`` takes)."""
    # a string only: YAML reads an unquoted 1:30 as the number 90 (base 60), which sbatch would take
    # as 90 minutes
    text = value.strip() if isinstance(value, str) else None
    if text is None or not _WALLTIME.match(text):
        raise error(f"{path}: expected a time limit like 01:30:00 (HH:MM:SS), 2-00:00:00 or minutes, "
                    f"got {_describe(value)} (quote it in YAML: walltime: '01:30:00')")
    return text


def _check_compute(values: dict, raw: dict) -> None:
    """The compute section's keys together: the dask keys need ``scheduler: dask``, an address
    excludes a cluster (and its workers), the slurm keys need ``cluster: slurm``."""
    compute = values["compute"]
    given = raw.get("compute") if isinstance(raw.get("compute"), dict) else {}
    if compute["scheduler"] == "local":
        for key in DASK_KEYS:
            if key in given and given[key] is not None:
                raise ConfigError(f"compute.{key}: only used with compute.scheduler: dask; set scheduler: "
                                  f"dask or remove compute.{key}")
        return
    if compute["address"] is not None:
        for key in ("cluster", "workers", "slurm"):
            if key in given and given[key] is not None:
                raise ConfigError(f"compute.{key}: not with compute.address (a running scheduler has its own "
                                  f"workers); give either compute.address or compute.cluster")
        if not re.match(r"^[a-z][a-z0-9+]*://\S+$", compute["address"]):
            raise ConfigError(f"compute.address: expected a scheduler address like tcp://host:8786, "
                              f"got {_describe(compute['address'])}")
        return
    if compute["cluster"] is None:
        compute["cluster"] = "local"
    if compute["cluster"] != "slurm" and given.get("slurm") is not None:
        raise ConfigError("compute.slurm: only used with compute.cluster: slurm; set cluster: slurm or remove "
                          "compute.slurm")
    if compute["cluster"] == "slurm" and compute["slurm"]["memory"] <= 0:
        raise ConfigError("compute.slurm.memory: a worker job needs memory; give a size like 16GB")


def _check_animals(path: str, value: Any, base: Path) -> list[dict]:
    if not isinstance(value, list):
        raise ConfigError(f"{path}: expected a list of animals, got {_describe(value)}")
    if not value:
        raise ConfigError(f"{path}: no animals listed; add at least one {{name, path}} entry")
    animals = [_check_section(f"{path}[{i}]", ANIMAL_SCHEMA, a, base) for i, a in enumerate(value)]
    seen: dict[str, int] = {}
    for i, animal in enumerate(animals):
        if animal["name"] in seen:
            raise ConfigError(
                f"{path}[{i}].name: animal name {animal['name']!r} already used by "
                f"{path}[{seen[animal['name']]}]"
            )
        seen[animal["name"]] = i
    return animals


def _check_stimuli(path: str, value: Any) -> Any:
    if isinstance(value, str):
        if "\x00" in value:
            raise ConfigError(f"{path}: a file path cannot contain a NUL character")
        return value
    if not isinstance(value, list):
        raise ConfigError(
            f"{path}: expected a CSV path or a list of {{label, start_s, stop_s}}, "
            f"got {_describe(value)}"
        )
    epochs = []
    for i, item in enumerate(value):
        where = f"{path}[{i}]"
        if not isinstance(item, dict) or set(item) != {"label", "start_s", "stop_s"}:
            raise ConfigError(f"{where}: expected exactly the keys label, start_s, stop_s")
        start = _check_number(f"{where}.start_s", Key("float", low=0), item["start_s"], False)
        stop = _check_number(f"{where}.stop_s", Key("float", low=0), item["stop_s"], False)
        if stop <= start:
            raise ConfigError(f"{where}: stop_s ({stop:g}) must be after start_s ({start:g})")
        epochs.append({"label": str(item["label"]), "start_s": start, "stop_s": stop})
    overlap = first_overlap(epochs)
    if overlap is not None:
        i, j = overlap
        raise ConfigError(f"{path}: {overlap_text(epochs, i, j)}")
    return epochs


def _check_states(path: str, value: Any) -> dict:
    """``report.states``: a covariate name, increasing thresholds and one more label."""
    if not isinstance(value, dict) or set(value) != {"covariate", "thresholds", "labels"}:
        raise ConfigError(f"{path}: expected exactly the keys covariate, thresholds, labels "
                          "(e.g. {covariate: reversal, thresholds: [0.5], labels: [forward, reversal]})")
    name = value["covariate"]
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"{path}.covariate: expected a covariate name, got {_describe(name)}")
    thresholds = value["thresholds"]
    if isinstance(thresholds, (int, float)) and not isinstance(thresholds, bool):
        thresholds = [thresholds]
    if not isinstance(thresholds, list) or not thresholds:
        raise ConfigError(f"{path}.thresholds: expected a list of numbers, got {_describe(thresholds)}")
    thresholds = [_check_number(f"{path}.thresholds[{i}]", Key("float"), t, False) for i, t in enumerate(thresholds)]
    if any(b <= a for a, b in zip(thresholds, thresholds[1:])):
        raise ConfigError(f"{path}.thresholds: must increase strictly, got {thresholds}")
    labels = value["labels"]
    if not isinstance(labels, list) or not all(isinstance(x, str) and x.strip() for x in labels):
        raise ConfigError(f"{path}.labels: expected a list of names, got {_describe(labels)}")
    if len(labels) != len(thresholds) + 1:
        raise ConfigError(f"{path}.labels: {len(thresholds)} threshold(s) make {len(thresholds) + 1} states; "
                          f"give {len(thresholds) + 1} labels, got {len(labels)}")
    if len(set(labels)) != len(labels):
        raise ConfigError(f"{path}.labels: labels must differ, got {labels}")
    return {"covariate": name.strip(), "thresholds": thresholds, "labels": [x.strip() for x in labels]}


def first_overlap(epochs: list[dict]) -> tuple[int, int] | None:
    """Indices (in the given order) of the first two epochs that share some time, else None.
    Epochs that only touch (one stops where the next starts) do not overlap."""
    order = sorted(range(len(epochs)), key=lambda k: (epochs[k]["start_s"], epochs[k]["stop_s"]))
    for a, b in zip(order, order[1:]):
        if epochs[b]["start_s"] < epochs[a]["stop_s"]:
            return min(a, b), max(a, b)
    # sorted by start, any overlap shows between neighbours: if a and c overlap with b
    # between them, b starts inside a as well
    return None


def overlap_text(epochs: list[dict], i: int, j: int) -> str:
    """The one-line complaint about overlapping epochs i and j (with the fix)."""
    a, b = epochs[i], epochs[j]
    return (f"epochs {a['label']!r} ({a['start_s']:g}–{a['stop_s']:g} s) and {b['label']!r} "
            f"({b['start_s']:g}–{b['stop_s']:g} s) overlap; each moment belongs to at most one "
            "epoch of the atlas: make them disjoint (give the shared stretch its own label)")


# ----------------------------------------------------------------------------- loading
@dataclass
class Config:
    """A validated config: ``values`` holds every key (defaults filled in), ``base`` the
    folder relative paths are resolved against, ``source`` the config file."""

    values: dict
    base: Path
    source: Path | None = None

    def __getitem__(self, section: str) -> Any:
        return self.values[section]

    def resolve(self, relative: str | Path) -> Path:
        """A path from the config, made absolute against the config file's folder."""
        p = Path(relative).expanduser()
        # normalised (`configs/../runs` -> `runs`) for the messages; symlinks are kept
        return Path(os.path.normpath(p if p.is_absolute() else (self.base / p)))

    def workdir(self, override: str | Path | None = None) -> Path:
        if override is not None:
            return Path(os.path.normpath(Path(override).expanduser().absolute()))
        stem = self.source.stem if self.source else "config"
        return Path(os.path.normpath(self.resolve(self.values["workdir"].replace("{config}", stem)).absolute()))


def parse_override(text: str) -> tuple[list[str], Any]:
    """``"factorize.rank=12"`` -> (["factorize", "rank"], 12). The value is read as YAML, with
    ``1e-6``, ``1E-6`` and ``.5`` read as numbers (:func:`dynconn.validation.yaml_load`)."""
    if "=" not in text:
        raise ConfigError(f"--set {text}: expected KEY=VALUE, e.g. factorize.rank=12")
    key, raw = text.split("=", 1)
    parts = _key_path(key, f"--set {text}")
    import yaml  # (where a config is read: not loaded by commands that read none)

    try:
        value = validation.yaml_load(raw) if raw.strip() else None
    except (yaml.YAMLError, ValueError, RecursionError):
        value = raw
    return parts, value


def _key_path(key: str, where: str) -> list[str]:
    parts = [p for p in str(key).strip().split(".")]
    if not all(parts):
        raise ConfigError(f"{where}: malformed key path {key!r}")
    return parts


def apply_overrides(raw: dict, overrides=()) -> dict:
    """Apply overrides to the raw (unvalidated) mapping; validation follows.

    ``overrides``: ``--set`` texts ``"KEY=VALUE"`` (the value read as YAML), or a mapping of
    dotted keys to values, used as they are (``{"factorize.tol": 1e-6}``: what the CLI's typed
    options and :func:`dynconn.run` pass; nothing is turned back into text), or a list mixing
    both (a ``(key, value)`` pair for a typed value).
    """
    raw = copy.deepcopy(raw)
    items = overrides.items() if isinstance(overrides, dict) else overrides
    for item in items:
        if isinstance(item, str):
            parts, value = parse_override(item)
        else:
            key, value = item
            parts = _key_path(key, f"--set {key}")
        node = raw
        schema: Any = SCHEMA
        for i, part in enumerate(parts[:-1]):
            where = ".".join(parts[: i + 1])
            if not isinstance(schema, dict) or part not in schema or not isinstance(schema[part], dict):
                raise ConfigError(f"--set {where}: unknown config section")
            schema = schema[part]
            if node.get(part) is None:
                node[part] = {}
            elif not isinstance(node[part], dict):
                raise ConfigError(f"{where}: expected a mapping of keys, got {_describe(node[part])}")
            node = node[part]
        if not isinstance(schema, dict) or parts[-1] not in schema:
            raise ConfigError(f"--set {'.'.join(parts)}: unknown config key")
        node[parts[-1]] = value
    return raw


def validate(raw: Any, base: Path, source: Path | None = None) -> Config:
    """Validate a raw mapping (from YAML) and fill in every default."""
    if raw is None:
        raise ConfigError(f"{source or 'config'}: the config is empty; see docs/config.md")
    values = _check_section("", SCHEMA, raw, base)
    _check_compute(values, raw)
    start, stop = values["ingest"]["start_s"], values["ingest"]["stop_s"]
    if start is not None and stop is not None and stop <= start:
        raise ConfigError(f"ingest.stop_s: {stop:g} must be after ingest.start_s ({start:g})")
    states = values["report"]["states"]
    if states is not None:
        listed = values["data"]["covariates"]
        if not any(a["covariates"] for a in values["data"]["animals"]):
            raise ConfigError(f"report.states: needs behaviour covariates, but no animal has a "
                              f"`covariates` file; add one or set report.states to null")
        if listed is not None and states["covariate"] not in listed:
            raise ConfigError(f"report.states.covariate: {states['covariate']!r} is not among data.covariates "
                              f"({', '.join(listed)}); add it there or name one of them")
    return Config(values=values, base=base, source=source)


def load(path: str | Path, overrides=None) -> Config:
    """Read, override and validate a YAML config file. Raises ConfigError with one line.

    ``overrides``: as :func:`apply_overrides` takes them. Numbers such as ``1e-6`` are read as
    numbers (:func:`dynconn.validation.yaml_load`)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, expected a YAML config file") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror})") from None
    import yaml  # (where a config is read: not loaded by commands that read none)

    try:
        raw = validation.yaml_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "malformed YAML"
        raise ConfigError(f"{path}:{where}: invalid YAML ({problem})") from None
    except ValueError as exc:  # e.g. an integer literal beyond Python's digit limit
        raise ConfigError(f"{path}: invalid YAML ({exc})") from None
    except RecursionError:
        raise ConfigError(f"{path}: invalid YAML (nested too deeply)") from None
    if raw is not None and not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a YAML mapping of sections, got {_describe(raw)}")
    raw = apply_overrides(raw or {}, overrides or [])
    return validate(raw, base=path.resolve().parent, source=path.resolve())


def check_argument(section: str, key: str, value: Any, name: str | None = None) -> Any:
    """A keyword argument of the library checked against config key ``section.key`` (same
    kind, limits and sentence), named ``name`` (default ``key``); raises
    :class:`~dynconn.validation.InvalidArgument`. None is accepted where the key is nullable."""
    return _check_value(name or key, SCHEMA[section][key], value, None, error=validation.InvalidArgument)


def iter_keys(schema: dict = SCHEMA, prefix: str = ""):
    """Yield (dotted_path, Key) for every key in the schema (animal keys under data.animals[])."""
    for name, spec in schema.items():
        dotted = f"{prefix}{name}"
        if isinstance(spec, dict):
            yield from iter_keys(spec, dotted + ".")
        else:
            yield dotted, spec
            if spec.kind == "animals":
                yield from iter_keys(ANIMAL_SCHEMA, dotted + "[].")
