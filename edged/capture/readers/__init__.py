"""Camera readers, one module per kind of source; `edged.capture.sources` picks one."""
