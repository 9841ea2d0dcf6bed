"""``python -m hope``: print the preset table (shape, CMS levels, parameters, fast-state memory)."""

import argparse

from hope.config import preset_table

parser = argparse.ArgumentParser(description="Print the HopeConfig preset table.")
parser.add_argument("--seq-len", type=int, default=4096, help="sequence length for the memory columns")
print(preset_table(parser.parse_args().seq_len))
