"""What every command shares: one-line errors, YAML config with dotted overrides, the CLI wrapper,
atomic file writes, training checkpoints and the Accelerate training engine. It sits in the lowest
package because the tokenizer is trained by the same engine as the world models, and imports nothing
from the model modules above it: a training task tells the engine what it needs of its model."""
