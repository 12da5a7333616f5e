"""`BDSTrainer`: defended fine-tuning from Python, on the same training path as `bds train`.

It turns its arguments into what the CLI's run is made of - a `RunConfig` (from
`BDSConfig`, the model and the PEFT config) and a `PreparedData` (the user's
`datasets.Dataset` and the alignment set as records) - and calls the one trainer,
`bds.training.trainer.train`. So a run started here writes the same folder (adapter,
weights.csv, train_log.jsonl, summary.json), resumes the same way and gives the same
numbers as `bds train` on the same data.

Why not a `transformers.Trainer` subclass: every BDS step draws an alignment batch beside
the user batch and updates the scheduler from both batches' per-sample losses (gathered
across ranks), an exact resume restores the scheduler's state with the optimizer's, and
the neural scheduler encodes only the step's batch (O(batch)). Trainer's loop, sampler and
checkpoints know none of these; the trainer here is built on accelerate instead, which
brings the same devices, mixed precision, DDP / FSDP / DeepSpeed launch and trackers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bds.api.config import BDSConfig
from bds.errors import BDSInputError

USER_NAME = "train_dataset"  # rows without an `id` column get ids train_dataset/<row>
ALIGNMENT_NAME = "alignment_dataset"
IN_MEMORY = "in-memory model"  # model.name of a loaded model that names no folder or hub id
# LoraConfig fields the trainer reads (-> train.lora); any other non-default one is refused
_LORA_FIELDS = {"r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout"}


@dataclass
class BDSTrainResult:
    """What `BDSTrainer.train` gives back.

    model: the fine-tuned PeftModel (in memory, the "default" adapter active);
    weights: per-sample weights joined on the user's ids - a `datasets.Dataset` with
    id, index (the row in train_dataset), source (benign / harmful / unknown, from the
    data) and weight, in train_dataset's order; None for defenses without per-sample
    weights (sft, mix, lisa, ...);
    output_dir: the run folder; summary: its summary.json as a dict.
    """

    model: Any
    weights: Any
    output_dir: Path
    summary: dict[str, Any]


class BDSTrainer:
    """Fine-tune a LoRA adapter on a user's data with a defense (BDS by default).

        trainer = BDSTrainer(
            model="embedded:smollm2-135m-instruct",   # or a hub id, a folder, a loaded model
            args=BDSConfig(output_dir="runs/x", num_train_epochs=1),
            train_dataset=user_data,                  # datasets.Dataset in a TRL format
            alignment_dataset=None,                   # None: the embedded pyrit-safe refusals
            peft_config=LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]),
        )
        result = trainer.train()   # result.model, result.weights

    train_dataset: any TRL format (text; prompt + completion, strings or messages;
    messages) or instruction / input / response, with optional `id` and `source`
    columns (`args.dataset_fields` maps other column names). Conversations are rendered
    with the model's chat template. alignment_dataset: the same formats; its rows are the
    alignment set (label safe). processing_class: the tokenizer (default: the model's).
    """

    def __init__(
        self,
        model: Any = "embedded:smollm2-135m-instruct",
        args: BDSConfig | None = None,
        train_dataset: Iterable[Mapping[str, Any]] | None = None,
        alignment_dataset: Iterable[Mapping[str, Any]] | None = None,
        peft_config: Any = None,
        processing_class: Any = None,
    ) -> None:
        if args is None:
            raise BDSInputError("BDSTrainer: give args=BDSConfig(output_dir=...)")
        if train_dataset is None:
            raise BDSInputError("BDSTrainer: give train_dataset (a datasets.Dataset of your data)")
        from bds.data.formats import records_from_dataset

        self.args = args
        self.output_dir = Path(args.output_dir)
        user = records_from_dataset(
            train_dataset, USER_NAME, args.dataset_fields or None, args.dataset_label
        )
        self._user_ids = [r.id for r in user.records]
        alignment, alignment_source = self._alignment(alignment_dataset)
        model_name, self._model = _model_name(model)
        self.cfg = args.to_run_config(
            model_name=model_name,
            user_source=f"datasets.Dataset ({USER_NAME}, {len(user.records)} rows)",
            alignment=alignment_source,
            n=len(user.records),
            conversational=any(r.form == "conversation" for r in user.records),
        )
        if peft_config is not None:
            _apply_lora(self.cfg, peft_config)
        self.user = user
        self.alignment = alignment
        self.tokenizer = processing_class
        self.result: BDSTrainResult | None = None

    def _alignment(self, dataset: Iterable[Mapping[str, Any]] | None):
        """(records or None, the source mapping the config records) of the alignment set."""
        if dataset is None:
            return None, None  # the config's default: embedded pyrit-safe, loaded with the data
        from bds.data.formats import records_from_dataset

        loaded = records_from_dataset(dataset, ALIGNMENT_NAME, label="safe")
        source = {"kind": "local", "path": f"datasets.Dataset ({ALIGNMENT_NAME})"}
        return loaded, source

    def train(self) -> BDSTrainResult:
        """Train (resuming from the folder's latest checkpoint, as `bds train` does) and
        return the model and the per-sample weights."""
        from bds.training.trainer import train

        data = self.prepared_data()
        tokenizer = self.tokenizer
        if tokenizer is None and self._model is not None:
            if self.cfg.model.name == IN_MEMORY:
                raise BDSInputError(
                    "BDSTrainer: the model names no folder or hub id to load its tokenizer "
                    "from; give processing_class=tokenizer"
                )
            from bds.models import load_tokenizer

            tokenizer = load_tokenizer(self.cfg.model)
        result = train(self.cfg, self.output_dir, model=self._model, tokenizer=tokenizer, data=data)
        self.result = BDSTrainResult(
            model=result.model,
            weights=self._weights(),
            output_dir=result.output_dir,
            summary=result.summary,
        )
        return self.result

    def prepared_data(self) -> Any:
        """The user records and the alignment set (the given one, else the config's
        embedded pyrit-safe when the defense reads one), sampled as `bds train` does."""
        from bds.data.mixer import Mix, sample_alignment
        from bds.data.pipeline import PreparedData

        sources = {"user": self.user}
        alignment = self.alignment
        if alignment is None and self.cfg.defense.alignment_batch:
            from bds.data.sources import load_source

            alignment = load_source(self.cfg.data.alignment)
        aligned = []
        if alignment is not None:
            sources["alignment"] = alignment
            d = self.cfg.data
            aligned = sample_alignment(alignment.records, d.n_alignment, d.seed)
        records = self.user.records
        counts = [sum(r.source == label for r in records) for label in ("harmful", "benign")]
        mix = Mix(records, *counts, "given")  # labelled counts; unknown rows are neither
        return PreparedData(records, aligned, mix, sources)

    def _weights(self) -> Any:
        """weights.csv joined back onto train_dataset's rows (None: the defense has none)."""
        path = self.output_dir / "weights.csv"
        if not path.is_file():
            return None
        from datasets import Dataset

        from bds.training.outputs import read_weights_table

        by_id = {row["id"]: row for row in read_weights_table(path)}
        rows = [
            {
                "id": rid,
                "index": i,
                "source": by_id[rid]["source"],
                "weight": float(by_id[rid]["weight"]),
            }
            for i, rid in enumerate(self._user_ids)
            if rid in by_id  # a sample dropped for its length has no weight (counted in summary)
        ]
        return Dataset.from_list(rows)

    def save_model(self, output_dir: str | Path | None = None) -> Path:
        """Copy the trained adapter folder (PEFT safetensors + model card) to `output_dir`
        (default: it stays in the run folder's adapter/); returns the folder."""
        import shutil

        adapter = self._adapter_dir()
        if output_dir is None:
            return adapter
        target = Path(output_dir)
        shutil.copytree(adapter, target, dirs_exist_ok=True)
        return target

    def push_to_hub(self, repo_id: str, private: bool = False, token: str | None = None) -> str:
        """Upload the trained adapter folder to the hub repo `repo_id` (created if absent);
        returns the repo's URL. BDSInputError when offline or not logged in."""
        from bds.push import push_adapter

        return push_adapter(self._adapter_dir(), repo_id, private=private, token=token)

    def _adapter_dir(self) -> Path:
        adapter = self.output_dir / "adapter"
        if self.result is None and not (adapter / "adapter_config.json").is_file():
            raise BDSInputError("BDSTrainer: no trained adapter yet; call train() first")
        return adapter


def _model_name(model: Any) -> tuple[str, Any]:
    """(the run config's model.name, the loaded model or None) of `model`."""
    if isinstance(model, str | Path):
        return str(model), None
    if not hasattr(model, "config"):
        raise BDSInputError(
            f"BDSTrainer: model must be a name (embedded:..., a hub id, a folder) or a loaded "
            f"transformers model, got {type(model).__name__}"
        )
    return getattr(model, "name_or_path", "") or IN_MEMORY, model


def _apply_lora(cfg: Any, peft_config: Any) -> None:
    """A peft.LoraConfig's r, alpha, dropout and target modules -> train.lora."""
    from peft import LoraConfig

    if not isinstance(peft_config, LoraConfig):
        raise BDSInputError(
            f"BDSTrainer: peft_config must be a peft.LoraConfig, got {type(peft_config).__name__}"
        )
    lora = cfg.train.lora
    for theirs, ours in _LORA_FIELDS.items():
        setattr(lora, ours, getattr(peft_config, theirs))
    targets = peft_config.target_modules
    if targets is not None:
        if isinstance(targets, str):
            raise BDSInputError(
                "BDSTrainer: peft_config.target_modules is a pattern string; give a list of "
                "module names (e.g. ['q_proj', 'v_proj'])"
            )
        lora.target_modules = sorted(targets)
    ignored = {
        name: getattr(peft_config, name)
        for name, default in _lora_defaults().items()
        if getattr(peft_config, name) != default
    }
    if ignored:
        raise BDSInputError(
            f"BDSTrainer: peft_config sets {', '.join(sorted(ignored))}, which bds does not "
            "apply; it trains LoRA with r, lora_alpha, lora_dropout and target_modules only"
        )
    try:
        lora.validate()
    except Exception as exc:
        raise BDSInputError(f"BDSTrainer: peft_config: {exc}") from None


def _lora_defaults() -> dict[str, Any]:
    """LoraConfig settings (other than those bds reads) a user could change, at their defaults."""
    from peft import LoraConfig

    default = LoraConfig()
    names = ("bias", "use_dora", "use_rslora", "modules_to_save", "layers_to_transform")
    return {name: getattr(default, name) for name in names if hasattr(default, name)}
