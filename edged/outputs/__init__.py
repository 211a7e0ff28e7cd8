"""The outputs: one package (or module) per output under this folder, each importing only
the types, the wire codec, the config, the shared base (`edged.outputs.base`) and the
outputs' config sections (its own: `<name>/settings.py`); `edged/tools/layers.py` checks
it, placing every folder here but `base` as an output."""
