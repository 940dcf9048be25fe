"""The lowest layer: errors, numbers as people write them, and untrusted input read into the msgspec Structs every
layer builds on."""
