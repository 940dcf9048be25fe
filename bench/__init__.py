"""Benchmarks and the measurement tools the estimators are checked against (not part of the runtime packages).

Run a benchmark as a script (`python bench/speed.py ...`); tests import its functions as `bench.<module>`.
"""
