"""Run one trainer job in its own process (for the SIGKILL test): config JSON, checkpoint dir, output JSON.

Prints "step N" after every optimizer step (from the stop poll) so the parent can kill it mid-level.
"""

import json
import sys
from pathlib import Path

import torch

from scaling_sweep.train.imp import run_imp

if __name__ == "__main__":
    torch.set_num_threads(1)  # the same in every process that takes part in a comparison
    config, ckpt_dir, out = json.loads(Path(sys.argv[1]).read_text()), Path(sys.argv[2]), Path(sys.argv[3])
    polls = 0

    def stop() -> bool:
        global polls
        polls += 1
        print(f"step {polls}", flush=True)
        return False

    levels = run_imp(config, "cpu", ckpt_dir, emit=lambda rows: None, stop=stop)
    out.write_text(json.dumps(levels))
