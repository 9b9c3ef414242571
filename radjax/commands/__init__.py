"""The commands behind `radjax ...` (`cli`, the parser): each parses, calls a library function a
layer down (`radjax.training`, `radjax.data`) and prints or draws what it returns. No command
imports another (tested)."""
