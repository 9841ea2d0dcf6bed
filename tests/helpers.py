"""Small configs shared by the model tests (tiny widths, chunk sizes that do not divide test lengths)."""

from hope import HopeConfig


def micro_config(mixer: str = "smt", **kw) -> HopeConfig:
    base = dict(vocab_size=64, dim=32, n_layers=2, n_heads=2, mixer=mixer, chunk_memory=4, chunk_other=6,
                cms_chunk_sizes=(4, 7, None) if mixer != "attention" else (5, None), cms_hidden=48,
                cms_step_init=0.2, backend="chunk")
    base.update(kw)
    return HopeConfig(**base)
