"""The commands behind `radjax ...` (`cli`): evaluate, predict, explain, cv, audit, split and
augment-preview. Each is a library function first; the CLI only parses flags."""
