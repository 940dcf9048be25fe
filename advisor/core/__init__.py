"""The lowest layer: errors, numbers as people write them, and the checked records every layer builds on."""
