"""Run by tests/test_distributed.py under torchrun: trains, then checks the ranks' binary weights."""
import sys

import torch
import torch.distributed as dist

from bsnn.config import resolve
from bsnn.nn import binary_parameters
from bsnn.recipes import load_recipe
from bsnn.train import build_trainer


def main(out_dir: str, epochs: int, resume: bool, mode: str) -> None:
    cfg = resolve(load_recipe("digits_tbso"), [
        "train.progress=false", "model.hidden=[32,32]", f"train.epochs={epochs}", "train.limit_batches=6",
        "data.batch_size=16", f"method.mode={mode}", "train.device=cpu"])
    trainer = build_trainer(cfg, out_dir=out_dir, log=lambda *a: None)
    trainer.fit(resume=resume)
    flat = torch.cat([p.detach().flatten() for p in binary_parameters(trainer.net)])
    gathered = [torch.zeros_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    if dist.get_rank() == 0:
        identical = all(torch.equal(g, gathered[0]) for g in gathered)
        with open(f"{out_dir}/ddp_result.txt", "w") as f:
            f.write(f"identical={identical} start_epoch={trainer.start_epoch} "
                    f"epochs={len(trainer.history)} world={dist.get_world_size()}\n")
            f.write(f"{trainer.history[-1]['test_acc']!r}\n")   # what was logged for the saved model
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3] == "resume", sys.argv[4])
