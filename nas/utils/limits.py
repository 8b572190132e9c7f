"""Upper bounds on values that only ever exhaust memory when set huge (each error names its key and bound).

Checked by ``nas.config`` for run configs and by ``python -m nas.cost.latency`` for its arguments.
"""
MAX_SEED = 2**32 - 1            # NumPy's seed range; the data order mixes the seed into 64-bit generator seeds
MAX_BATCH = 65536
MAX_IMAGE_SIZE = 1024           # data.image_size and data.cutout, in pixels
MAX_SYNTHETIC = 1_000_000       # data.synthetic_size
MAX_SYNTHETIC_BYTES = 8 << 30   # the synthetic train + test images, uint8
MAX_CHANNELS = 1024             # model.C (the last stage has 4x as many)
MAX_CELLS = 64                  # model.N
MAX_GUMBEL_RAO_SAMPLES = 1000   # search.gumbel_rao_samples: K noise vectors of the logits' size per sample
MAX_SELECT_SAMPLES = 256        # search.select_samples: val-split evaluations per (edge, op) at the end of a search
MAX_SELECT_SWEEPS = 100         # search.select_sweeps: passes of the local search over the edges
MAX_SELECT_POOL = 1_000_000     # search.select_pool / select_top: cells a proxy_top selection scores
MAX_ARCH_SAMPLES = 64           # search.arch_samples: forward and backward passes of the supernet per arch step
