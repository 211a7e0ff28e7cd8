"""The outputs: one package (or module) per output under this folder, each importing only
the types, the wire codec, the shared base (`edged.outputs.base`) and its own config
section; `edged/tools/layers.py` checks it."""
