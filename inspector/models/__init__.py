"""Qt models: adapters over engine objects reached through a target.

They hold no data of their own beyond caches (row order, a window of decoded rows) and are
updated in batches after the change throttle fires. Each module says what its model emits.
"""
