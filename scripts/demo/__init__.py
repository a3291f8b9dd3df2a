"""The demo: ``make_demo_data`` writes the synthetic data set, ``build_demo`` trains, calibrates and
evaluates the demo model on it.
"""
