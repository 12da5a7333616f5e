"""Run by test_two_processes_hold_the_same_scheduler under `accelerate launch` (2 CPU processes)."""

import sys
from pathlib import Path

import torch
from trainer_setup import make_config, make_data, make_model_and_tokenizer

from bds.training import trainer as trainer_module


def main(out: Path) -> None:
    captured = {}
    original = trainer_module._Run._finish

    def finish(self, *args, **kwargs):
        captured["scheduler"] = self.defense.scheduler.state_dict()
        captured["rank"] = self.accelerator.process_index
        return original(self, *args, **kwargs)

    trainer_module._Run._finish = finish
    model, tok = make_model_and_tokenizer()
    trainer_module.train(
        make_config(epochs=3, drive="conflict"),  # its alignment gradient is averaged over ranks
        out / "run",
        model=model,
        tokenizer=tok,
        data=make_data(),
        progress=False,
    )
    torch.save(captured["scheduler"], out / f"scheduler-rank{captured['rank']}.pt")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
