"""Dataset plugins of xclip-pl: one thin module per dataset (import their classes by class_path).

``__xclip_pl__`` marks this package as xclip-pl's: ``datamodules`` is a generic name, and the CLI checks the
marker at start so that another installed or importable package of that name is reported, not half-used.
"""
__xclip_pl__ = True
