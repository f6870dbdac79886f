"""ml_collections configs; each file's get_config() returns a ConfigDict (load with --config configs/<name>.py).

Installed with the library (as ``selectivity_jax._config_files``, never as a top-level ``configs``): from any
directory, ``selectivity_jax.configs.get_config("<name>")`` returns the same ConfigDict.
"""
