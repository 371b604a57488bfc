"""A training world that sounds like music: songs rendered from sampled instruments, recorded
drum kits and sung words (see `training.world.render`); `python -m training.world` writes one."""
